"""Tests for the covariance registry's expansion and sampling.

``gmm_engine.full_covariances`` (the validated (K, D, D) expansion every
caller outside the engine uses) and, per registry entry, ``to_full``,
``from_full`` and ``sample``.  Type names come from the registry; the
hand-built expectations below spell out each type's layout.
"""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from gmm_engine import COVARIANCE_TYPES, _covariance, full_covariances


def random_spd(K, D, rng):
    """K random symmetric positive-definite (D, D) matrices."""
    A = rng.normal(size=(K, D, D))
    return A @ np.swapaxes(A, 1, 2) + 0.5 * np.eye(D)


# ---------------------------------------------------------------------------
# full_covariances


def test_full_covariances_matches_hand_built():
    K, D = 2, 3
    full = np.array(
        [
            [[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.5]],
            [[1.0, -0.4, 0.0], [-0.4, 3.0, 0.7], [0.0, 0.7, 2.0]],
        ]
    )
    np.testing.assert_array_equal(full_covariances(full, "full", K, D), full)

    tied = full[0]
    np.testing.assert_array_equal(full_covariances(tied, "tied", K, D), np.stack([tied, tied]))

    diag = np.array([[1.0, 2.0, 3.0], [0.5, 0.25, 4.0]])
    expected = np.array([np.diag([1.0, 2.0, 3.0]), np.diag([0.5, 0.25, 4.0])])
    np.testing.assert_array_equal(full_covariances(diag, "diag", K, D), expected)

    sph = np.array([0.7, 2.5])
    expected = np.array([0.7 * np.eye(3), 2.5 * np.eye(3)])
    np.testing.assert_array_equal(full_covariances(sph, "spherical", K, D), expected)


def test_full_covariances_returns_independent_copy():
    tied = np.eye(2)
    out = full_covariances(tied, "tied", 3, 2)
    out[0, 0, 0] = 99.0
    assert tied[0, 0] == 1.0 and out[1, 0, 0] == 1.0


# Matches moved from test_plots' expand_covariances, adjusted where the engine
# words the error differently: the unknown type (scikit-learn's "must be one
# of") and non-finite values ("NaN or infinity").
@pytest.mark.parametrize(
    "cov, ctype, K, D, match",
    [
        (np.ones((2, 3)), "fancy", 2, 3, r"covariance_type must be one of .*; got 'fancy'"),
        (np.ones((2, 3)), "full", 2, 3, r"needs \(2, 3, 3\)"),
        (np.eye(3), "tied", 2, 2, r"needs \(2, 2\)"),
        (np.ones(3), "spherical", 2, 3, r"needs \(2,\)"),
        (np.array([[1.0, np.nan], [1.0, 1.0]]), "diag", 2, 2, "NaN or infinity"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "tied", 1, 2, "not symmetric"),
        (np.array([[1.0, -1.0]]), "diag", 1, 2, "variances >= 0"),
        (np.ones(2), "spherical", 0, 2, "n_components must be a positive integer"),
        (np.ones(2), "spherical", True, 2, "n_components must be a positive integer"),
        (np.ones((2, 2)), "diag", 2, 2.0, "n_features must be a positive integer"),
    ],
)
def test_full_covariances_rejects_bad_input(cov, ctype, K, D, match):
    with pytest.raises(ValueError, match=match):
        full_covariances(cov, ctype, K, D)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_full_covariances_is_the_registry_expansion(covariance_type):
    K, D = 3, 4
    entry = _covariance.get(covariance_type)
    cov = entry.from_full(random_spd(K, D, np.random.default_rng(1)))
    np.testing.assert_array_equal(full_covariances(cov, covariance_type, K, D),
                                  entry.to_full(cov, K, D))


# ---------------------------------------------------------------------------
# to_full and from_full


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_to_full_from_full_round_trip(covariance_type):
    """On matrices of the type's own form, from_full and to_full undo each other."""
    K, D = 3, 4
    entry = _covariance.get(covariance_type)
    own = entry.from_full(random_spd(K, D, np.random.default_rng(2)))
    assert own.shape == entry.param_shape(K, D)
    M = entry.to_full(own, K, D)
    assert M.shape == (K, D, D)
    np.testing.assert_allclose(entry.to_full(entry.from_full(M), K, D), M, rtol=1e-15, atol=0)
    np.testing.assert_allclose(entry.from_full(M), own, rtol=1e-15, atol=0)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_to_full_and_from_full_return_new_arrays(covariance_type):
    K, D = 2, 3
    entry = _covariance.get(covariance_type)
    full = random_spd(K, D, np.random.default_rng(3))
    own = entry.from_full(full)
    assert not np.shares_memory(own, full)
    expanded = entry.to_full(own, K, D)
    assert not np.shares_memory(expanded, own)


# ---------------------------------------------------------------------------
# sample


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_equals_scikit_learn_draws(covariance_type):
    """Same RandomState, same rows as sklearn's GaussianMixture.sample (component order)."""
    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 1.0, -2.0], [-3.0, 7.0, 4.0]])
    X = np.concatenate([c + rng.normal(size=(150, 3)) @ rng.normal(size=(3, 3)) for c in centres])
    sk = SklearnGaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    sk.random_state = 11
    expected, _ = sk.sample(700)

    state = np.random.RandomState(11)
    counts = state.multinomial(700, sk.weights_)  # what sklearn draws first
    drawn = _covariance.get(covariance_type).sample(state, sk.means_, sk.covariances_, counts)
    np.testing.assert_array_equal(drawn, expected)
