"""Per-iteration checkpoints of a fit, and resuming from them.

A checkpoint directory holds one saved model per kept iteration
(``iter-000012/``, the regular model format of :mod:`gmm_engine._persist`)
and a ``LATEST`` file naming the newest complete one.  ``LATEST`` is
replaced atomically (:func:`gmm_engine.atomic.write_text`) after the
iteration's directory is fully published, so a process killed at any
moment leaves a loadable checkpoint behind.

A fit with ``acceleration='squarem'`` stops between passes of a cycle that
needs more than the model: the cycle's scalars go into the checkpoint's
``model.json`` metadata (under ``acceleration_state``) and each parameter
set it holds into a sibling model directory ``iter-000012.<role>/`` (the
same format), written before the model and deleted with it, so resuming
mid-cycle equals an uninterrupted run.

>>> ckpt = Checkpointer("ckpt/", gm.get_params())            # doctest: +SKIP
>>> gm.fit(X, on_iteration=ckpt)                              # killed ...  # doctest: +SKIP
>>> state, _ = load_checkpoint("ckpt/")                       # doctest: +SKIP
>>> GaussianMixture(**params).resume(X, state)                # same result  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil
from pathlib import Path

from ._em import EMState
from ._fitted import em_state, fitted_params, set_fitted
from ._persist import load_model, save_model
from ._squarem import SquaremCycle
from .atomic import write_text
from .exceptions import ModelFormatError
from .mixture import GaussianMixture

logger = logging.getLogger(__name__)

LATEST = "LATEST"
_ITER_DIR = re.compile(r"^iter-(\d{6,})$")
#: a parameter set of the acceleration state of iteration N: ``iter-N.<role>``
_PART_DIR = re.compile(r"^iter-(\d{6,})\.([a-z][a-z0-9]*)$")
#: the metadata key of the acceleration state in a checkpoint's model.json
ACCELERATION_KEY = "acceleration_state"


def estimator_from_state(state: EMState, params: dict, *, feature_names=None) -> GaussianMixture:
    """A fitted ``GaussianMixture`` holding ``state``'s parameters and history."""
    return set_fitted(GaussianMixture(**params), state, feature_names)


def state_from_estimator(est: GaussianMixture) -> EMState:
    """The :class:`EMState` of a fitted (or checkpointed) estimator: where EM continues from.

    An estimator with ``n_iter_ == 0`` holds a start (``initialize``, or a
    fit with ``max_iter=0``): its state has ``lower_bound=-inf``, as any
    start of EM, so the first iteration is never taken for convergence.
    """
    return em_state(est)


class Checkpointer:
    """An ``on_iteration`` callback that saves the fit every ``every`` iterations.

    Parameters
    ----------
    path : str or Path
        Checkpoint directory (created).
    estimator_params : dict
        ``GaussianMixture.get_params()`` of the fit, stored with each checkpoint.
    feature_names : sequence of str, optional
    every : int, default=1
    keep : int, default=2
        Iteration directories kept; older ones are deleted after ``LATEST`` moves.
    metadata : dict, optional
        JSON-serialisable; stored with every checkpoint (e.g. a fingerprint
        of the training data, checked before resuming).
    """

    def __init__(self, path, estimator_params: dict, *, feature_names=None, every=1, keep=2, metadata=None):
        self.path = Path(path)
        self.params = {k: v for k, v in estimator_params.items()
                       if k not in ("weights_init", "means_init", "precisions_init")}
        self.feature_names = feature_names
        self.every = max(1, int(every))
        self.keep = max(1, int(keep))
        self.metadata = dict(metadata or {})
        self.path.mkdir(parents=True, exist_ok=True)

    def __call__(self, state: EMState) -> None:
        if state.n_iter % self.every and not state.converged:
            return
        self.save(state)

    def save(self, state: EMState) -> Path:
        name = f"iter-{state.n_iter:06d}"
        metadata = {"checkpoint": True, **self.metadata}
        cycle = state.acceleration
        if cycle is not None:
            # the cycle's parameter sets first: the model (and LATEST) only name complete ones
            for role, params in cycle.parts().items():
                part = estimator_from_state(EMState(params, 0, -math.inf), self.params)
                save_model(part, self.path / f"{name}.{role}", metadata={"checkpoint_part": role}, overwrite=True)
            metadata[ACCELERATION_KEY] = cycle.to_document()
        est = estimator_from_state(state, self.params, feature_names=self.feature_names)
        target = self.path / name
        save_model(est, target, metadata=metadata, overwrite=True)
        write_text(self.path / LATEST, name + "\n")
        self._prune(keep_name=name)
        logger.debug("checkpoint %s written", target)
        return target

    def _prune(self, keep_name: str) -> None:
        entries = [(m, p) for p in self.path.iterdir() if (m := _ITER_DIR.match(p.name) or _PART_DIR.match(p.name))]
        kept = int(_ITER_DIR.match(keep_name).group(1))
        complete = sorted({int(m.group(1)) for m, p in entries if m.re is _ITER_DIR})
        old = set(complete[: max(0, len(complete) - self.keep)]) - {kept}
        for m, p in entries:
            n = int(m.group(1))
            # an old iteration, or the parts of one whose model was never written
            if n in old or (m.re is _PART_DIR and n < kept and n not in complete):
                shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path):
    """The newest complete checkpoint in ``path``.

    Returns
    -------
    (state, estimator_params, metadata) or None
        None when the directory holds no checkpoint yet.
    """
    path = Path(path)
    pointer = path / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    if not _ITER_DIR.match(name):
        raise ModelFormatError(
            f"Checkpoint pointer {pointer} names {name!r}, not an iteration directory: "
            "the checkpoint is corrupt; delete the directory to start the fit afresh."
        )
    est, metadata = load_model(GaussianMixture, path / name)
    state = state_from_estimator(est)
    doc = metadata.get(ACCELERATION_KEY)
    if doc is not None:
        state = dataclasses.replace(state, acceleration=_load_cycle(path, name, doc))
    return state, est.get_params(), metadata


def _load_cycle(path: Path, name: str, doc) -> SquaremCycle:
    """The acceleration state a checkpoint's metadata describes, with its parameter sets."""
    roles = doc.get("parts") if isinstance(doc, dict) else None
    if not isinstance(roles, list) or not all(isinstance(r, str) and _PART_DIR.match(f"{name}.{r}") for r in roles):
        raise ModelFormatError(
            f"Checkpoint {path / name} has an invalid {ACCELERATION_KEY} ({doc!r}): the checkpoint is "
            "corrupt; delete the directory to start the fit afresh."
        )
    parts = {role: fitted_params(load_model(GaussianMixture, path / f"{name}.{role}")[0]) for role in roles}
    try:
        return SquaremCycle.from_document(doc, parts)
    except ValueError as exc:
        raise ModelFormatError(
            f"Checkpoint {path / name} has an invalid {ACCELERATION_KEY} ({exc}): the checkpoint is "
            "corrupt; delete the directory to start the fit afresh."
        ) from None
