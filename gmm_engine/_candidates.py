"""Joint fits: several mixtures fitted on the same data, sharing every pass over it.

Model selection fits many candidates (component counts, covariance
types) on one data set.  Fitted one after the other, each reads the data
once per pass; fitted jointly, one pass reads each chunk once and maps a
chunk function that runs every live candidate's chunk function on that
block (:func:`joint_chunk`), so out of core the reads (and on a cluster
the scheduling) of a pass are paid once for all candidates.

Each candidate runs the estimator's own fit (``GaussianMixture._fit_data``:
the scan, its initialisation, plain EM or SQUAREM, its ``tol`` and
``max_iter``) in a thread of its own, on a *lane*: a view of the shared
data whose ``map_reduce`` posts the request and waits.  :meth:`JointFit.step`
waits until every live candidate has posted its next request (or
finished), runs them as one pass, and hands each its value.  A value is
what the candidate's own pass would have returned: the same chunk
function on the same blocks, folded by the same tree
(:func:`~gmm_engine._chunked.merge_all` over the same chunking), so a
candidate fitted jointly ends bit for bit where it ends alone, with
acceleration too.  Requests that are equal (the first scan of every
candidate, the k-means|| rounds of candidates with the same
``n_components`` and ``random_state``) are computed once.  The threads
only wait and run M-steps; every pass runs in the caller's thread.

Between steps every candidate is at rest (waiting for its next pass, or
finished), so :meth:`JointFit.progress` is consistent and
:meth:`JointFit.drop` and :meth:`JointFit.add` take effect before the
next pass: a dropped candidate's fit is unwound (no parameters set), an
added one starts with its own scan.

:func:`joint_criteria` scores several fitted models on the same data in
one pass (BIC, AIC, held-out log-likelihood).
"""

from __future__ import annotations

import contextvars
import copy
import logging
import math
import threading
from dataclasses import dataclass, fields, is_dataclass

import numpy as np

from . import _covariance
from ._chunked import ChunkedData
from ._criteria import InformationCriteria
from ._fitted import fitted_params
from ._input import fitted_data, training_data
from ._passes import CountedData
from ._stats import loglik_chunk, refuse_bad_rows
from ._validation import validate_params

logger = logging.getLogger("gmm_engine")

__all__ = ["CandidateProgress", "JointFit", "joint_chunk", "joint_criteria"]

#: what a candidate is doing, as :class:`CandidateProgress` reports it
RUNNING, FITTED, DROPPED, FAILED = "running", "fitted", "dropped", "failed"

# where a candidate's thread stands (guarded by the joint fit's condition)
_BUSY, _WAITING, _ANSWERED, _DONE = range(4)


# ---------------------------------------------------------------------------
# one pass for several chunk functions


@dataclass(frozen=True, eq=False)
class JointValues:
    """The values of several chunk functions on the same rows, merged element by element."""

    values: tuple

    def merge(self, other: "JointValues") -> "JointValues":
        return JointValues(tuple(a.merge(b) for a, b in zip(self.values, other.values)))


def joint_chunk(block, start, calls, weights=None):
    """Every ``(fn, args)`` of ``calls`` on the same block: one read of the chunk for all.

    Each call is made exactly as ``ChunkedData.map_reduce(fn, *args)``
    makes it (``weights=`` on weighted data only).
    """
    if weights is None:
        return JointValues(tuple(fn(block, start, *args) for fn, args in calls))
    return JointValues(tuple(fn(block, start, *args, weights=weights) for fn, args in calls))


def _fingerprint(value):
    """A hashable value equal for equal arguments (arrays by dtype, shape and bytes).

    Raises ``TypeError`` for anything it does not know, which the caller
    takes as "never shared".
    """
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, (float, np.floating)):
        return ("float", float(value).hex())
    if isinstance(value, np.integer):
        return ("int", int(value))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_fingerprint(item) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(k), _fingerprint(v)) for k, v in value.items())))
    if is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__,
                tuple((f.name, _fingerprint(getattr(value, f.name))) for f in fields(value)))
    raise TypeError(f"no fingerprint for {type(value).__name__}")


def _request_key(fn, args):
    """Equal keys: the same chunk function with the same arguments (exact equality of every value)."""
    try:
        return (fn.__module__, fn.__qualname__, _fingerprint(args))
    except TypeError:  # an argument we cannot compare exactly is simply never shared
        return (id(fn), id(args))


def shared_pass(data: ChunkedData, requests: list) -> list:
    """The values of every ``(fn, args)`` request from one pass over ``data``; equal requests computed once.

    A value computed once is handed to the first request that asked for
    it and a copy to each other one, so no candidate sees another's.
    """
    keys = [_request_key(fn, args) for fn, args in requests]
    distinct = list(dict.fromkeys(keys))
    first = {key: requests[keys.index(key)] for key in distinct}
    if len(distinct) == 1:
        fn, args = first[distinct[0]]
        values = (data.map_reduce(fn, *args),)
    else:
        values = data.map_reduce(joint_chunk, tuple(first[key] for key in distinct)).values
    by_key = dict(zip(distinct, values))
    seen = set()
    out = []
    for key in keys:
        out.append(by_key[key] if key not in seen else copy.deepcopy(by_key[key]))
        seen.add(key)
    return out


# ---------------------------------------------------------------------------
# what the caller sees


@dataclass(frozen=True)
class CandidateProgress:
    """Where one candidate of a joint fit stands between two passes.

    Attributes
    ----------
    index : int
        Its position in the order of :meth:`JointFit.add`.
    estimator : GaussianMixture
        Fitted when ``status`` is 'fitted'; left as it was otherwise.
    status : {'running', 'fitted', 'dropped', 'failed'}
    n_components, covariance_type : int, str
    n_parameters : int
        The free parameters BIC and AIC charge.
    n_iter : int
        EM iterations (with acceleration: EM passes) so far; 0 while initialising.
    lower_bounds : tuple of float
        One per EM iteration of the current initialisation.
    converged : bool
    n_passes : int
        Passes over the data made for this candidate (its ``n_passes_`` when fitted).
    joined_at : int
        Joint passes made before it was added.
    error : Exception or None
        What its fit raised ('failed').
    reason : str or None
        Why it was dropped ('dropped').
    """

    index: int
    estimator: object
    status: str
    n_components: int
    covariance_type: str
    n_parameters: int
    n_iter: int
    lower_bounds: tuple
    converged: bool
    n_passes: int
    joined_at: int
    error: Exception | None = None
    reason: str | None = None

    @property
    def lower_bound(self) -> float:
        """The latest mean log-likelihood (before the last M-step), -inf before EM started."""
        return self.lower_bounds[-1] if self.lower_bounds else -math.inf

    @property
    def live(self) -> bool:
        return self.status == RUNNING


class _Dropped(BaseException):
    """Raised in a candidate's thread by its next pass: the joint fit dropped it.

    A BaseException, so that no ``except Exception`` of the fit's code can swallow it.
    """


@dataclass(frozen=True)
class _Raised:
    """A pass that raised, handed to the candidate that asked for it (its fit raises it, as alone)."""

    exc: BaseException


class _Slot:
    """A candidate's mutable record, read and written under the joint fit's condition."""

    def __init__(self, index, estimator, n_parameters, joined_at):
        self.index, self.estimator, self.n_parameters, self.joined_at = index, estimator, n_parameters, joined_at
        self.state = _BUSY
        self.request = None
        self.answer = None
        self.status = RUNNING
        self.drop_reason = None
        self.error = None
        self.last = None  # the latest EMState
        self.answered = 0  # its passes answered so far

    def progress(self) -> CandidateProgress:
        last = self.last
        est = self.estimator
        return CandidateProgress(
            self.index, est, self.status, int(est.n_components), est.covariance_type, self.n_parameters,
            0 if last is None else int(last.n_iter), () if last is None else tuple(last.lower_bounds),
            bool(last is not None and last.converged), self.answered,
            self.joined_at, self.error, self.drop_reason,
        )


class _Lane(ChunkedData):
    """One candidate's view of the shared data: each pass is a request answered by a joint pass."""

    def __init__(self, joint: "JointFit", slot: _Slot):
        data = joint._data
        self._joint, self._slot = joint, slot
        self.n_samples, self.n_features, self.dtype = data.n_samples, data.n_features, data.dtype
        self.weights, self.values_checked = data.weights, data.values_checked

    def map_reduce(self, fn, *args):
        return self._joint._request(self._slot, fn, args)

    def take(self, indices):
        # a few rows, not a pass: read at once (one reader at a time)
        with self._joint._take_lock:
            return self._joint._data.take(indices)


# ---------------------------------------------------------------------------
# the joint fit


class JointFit:
    """Several ``GaussianMixture`` fits on the same data, sharing every pass over it.

    Each added estimator is fitted as ``estimator.fit(X, sample_weight=...)``
    would fit it (same result, bit for bit: same start, same passes, its
    own ``tol``, ``max_iter`` and ``acceleration``), while one pass over X
    per :meth:`step` serves every live candidate.  Candidates can be
    dropped and added between steps.

    Parameters
    ----------
    X : any input ``GaussianMixture.fit`` accepts
    sample_weight : as for ``GaussianMixture.fit``, optional
        The same row weights for every candidate.
    persist : bool, default=False
        Keep dask input in (cluster) memory for the whole joint fit (the
        estimators' own ``persist`` plays no part: the data is built once).

    Attributes
    ----------
    passes : int
        Joint passes over X so far.
    n_samples, n_features : int
    weighted : bool
        Row weights were given.

    Examples
    --------
    >>> jf = JointFit(X)                                                # doctest: +SKIP
    >>> a = jf.add(GaussianMixture(3, random_state=0))                   # doctest: +SKIP
    >>> b = jf.add(GaussianMixture(8, covariance_type="diag"))           # doctest: +SKIP
    >>> while jf.step():                                                 # doctest: +SKIP
    ...     if jf.progress(b).n_iter >= 5 and jf.progress(b).lower_bound < jf.progress(a).lower_bound:
    ...         jf.drop(b, "behind K=3 after 5 iterations")
    >>> jf.progress(a).estimator.means_                                 # doctest: +SKIP
    """

    def __init__(self, X, *, sample_weight=None, persist=False):
        self._data, self._names = training_data(X, persist=persist, sample_weight=sample_weight)
        self._cond = threading.Condition()
        self._take_lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._threads: list[threading.Thread] = []
        self.passes = 0
        self.n_samples, self.n_features = self._data.n_samples, self._data.n_features
        self.weighted = self._data.weighted

    # -- the caller's side ----------------------------------------------------

    def add(self, estimator) -> int:
        """Start fitting ``estimator`` with the next pass; returns its index.

        Its parameters are validated here (``InvalidParameterError`` as
        ``fit`` raises it); a warm start must fit X's features.
        """
        validate_params(estimator)
        warm = estimator._will_warm_start()
        if warm:
            estimator._check_warm_start(self.n_features)
        K, ct = int(estimator.n_components), estimator.covariance_type
        slot = _Slot(len(self._slots), estimator, _covariance.get(ct).n_parameters(K, self.n_features), self.passes)
        context = contextvars.copy_context()  # the caller's Dask client, if any, for take()
        thread = threading.Thread(target=context.run, args=(self._run, slot, warm), daemon=True,
                                  name=f"joint-fit K={K} {ct} #{slot.index}")
        with self._cond:
            self._slots.append(slot)
        self._threads.append(thread)
        thread.start()
        self._wait_at_rest()
        return slot.index

    def step(self) -> bool:
        """One pass over the data for every live candidate; True while some remain live.

        On return every candidate is at rest again: its progress is current.
        """
        self._wait_at_rest()
        with self._cond:
            waiting = [s for s in self._slots if s.state == _WAITING]
        if not waiting:
            return False
        answers = self._answers([s.request for s in waiting])
        self.passes += 1
        with self._cond:
            for slot, answer in zip(waiting, answers):
                slot.request, slot.answer, slot.state = None, answer, _ANSWERED
            self._cond.notify_all()
        self._wait_at_rest()
        return any(s.state == _WAITING for s in self._slots)

    def drop(self, index: int, reason: str) -> None:
        """Stop candidate ``index`` before the next pass (its estimator is left as it was).

        A candidate no longer running (fitted, failed, dropped) is left alone.
        """
        slot = self._slots[index]
        self._wait_at_rest()
        with self._cond:
            if slot.state != _WAITING:
                return
            slot.drop_reason, slot.answer, slot.state = str(reason), None, _ANSWERED
            self._cond.notify_all()
        self._wait_at_rest()
        logger.info("joint fit: dropped K=%d %s after %d EM iterations: %s", slot.estimator.n_components,
                    slot.estimator.covariance_type, slot.progress().n_iter, reason)

    def progress(self, index: int) -> CandidateProgress:
        """Where candidate ``index`` stands (consistent between steps)."""
        with self._cond:
            return self._slots[index].progress()

    @property
    def candidates(self) -> list:
        """:class:`CandidateProgress` of every candidate, in the order they were added."""
        with self._cond:
            return [s.progress() for s in self._slots]

    def run(self, between_passes=None) -> list:
        """Step until no candidate is live; ``between_passes(self)`` after every pass (it may drop and add).

        Returns
        -------
        list of CandidateProgress
        """
        try:
            while self.step():
                if between_passes is not None:
                    between_passes(self)
        except BaseException:
            self.close()
            raise
        return self.candidates

    def close(self) -> None:
        """Drop every candidate still running (their threads end); idempotent."""
        for slot in list(self._slots):
            with self._cond:
                live = slot.state in (_WAITING, _BUSY)
            if live:
                self.drop(slot.index, "the joint fit was closed")
        for thread in self._threads:
            thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the joint pass -------------------------------------------------------

    def _answers(self, requests):
        """Every request's value from one pass; if that pass raises, each alone, so each gets its own error."""
        try:
            return shared_pass(self._data, requests)
        except Exception:  # noqa: BLE001 - attributed below, request by request
            logger.debug("joint pass failed; retrying its requests one by one", exc_info=True)
        answers = []
        for fn, args in requests:
            try:
                answers.append(self._data.map_reduce(fn, *args))
            except Exception as exc:  # noqa: BLE001 - raised in the candidate that asked, as alone
                answers.append(_Raised(exc))
        return answers

    # -- the candidates' side (their threads) ---------------------------------

    def _wait_at_rest(self):
        with self._cond:
            self._cond.wait_for(lambda: all(s.state in (_WAITING, _DONE) for s in self._slots))

    def _request(self, slot: _Slot, fn, args):
        with self._cond:
            slot.request, slot.state = (fn, args), _WAITING
            self._cond.notify_all()
            self._cond.wait_for(lambda: slot.state == _ANSWERED)
            if slot.drop_reason is not None:
                raise _Dropped(slot.drop_reason)
            answer, slot.answer, slot.state = slot.answer, None, _BUSY
            slot.answered += 1
        if isinstance(answer, _Raised):
            raise answer.exc
        return answer

    def _run(self, slot: _Slot, warm: bool):
        """A candidate's thread: its estimator's own fit on its lane."""
        def hook(state):
            with self._cond:
                slot.last = state

        status, error = FAILED, None
        try:
            slot.estimator._fit_data(CountedData(_Lane(self, slot)), self._names, warm, hook)
            status = FITTED
        except _Dropped:
            status = DROPPED
        except Exception as exc:  # noqa: BLE001 - the candidate failed; the others go on
            error = exc
            logger.info("joint fit: K=%d %s failed: %s", slot.estimator.n_components,
                        slot.estimator.covariance_type, exc)
        finally:  # whatever ended the thread, the joint fit must not wait for it
            with self._cond:
                slot.status, slot.error, slot.state = status, error, _DONE
                self._cond.notify_all()


# ---------------------------------------------------------------------------
# criteria of several fitted models, one pass


def joint_criteria(estimators, X, sample_weight=None) -> list:
    """Log-likelihood, BIC and AIC of X under each fitted estimator, from one pass over X.

    Equal (to rounding: the log-likelihood is summed per chunk) to
    ``[e.information_criteria(X, sample_weight) for e in estimators]``,
    which reads X once per estimator; the mean held-out log-likelihood
    of a model is ``mean_loglik`` of its criteria on the held-out rows.

    Parameters
    ----------
    estimators : sequence of fitted GaussianMixture
        With the same features (count and names).
    X, sample_weight : as for ``information_criteria``

    Returns
    -------
    list of InformationCriteria
    """
    estimators = list(estimators)
    if not estimators:
        return []
    data = fitted_data(X, estimators[0], sample_weight=sample_weight)
    first = estimators[0]
    for est in estimators[1:]:
        names, first_names = getattr(est, "feature_names_in_", None), getattr(first, "feature_names_in_", None)
        same_names = (names is None) == (first_names is None) and (names is None or list(names) == list(first_names))
        if est.n_features_in_ != first.n_features_in_ or not same_names:
            raise ValueError(
                "joint_criteria scores models of the same features: "
                f"{first.n_features_in_} features {None if first_names is None else list(first_names)} and "
                f"{est.n_features_in_} features {None if names is None else list(names)}; score them separately."
            )
    check = not data.values_checked
    # the rows are checked once, with the first model's pass
    calls = [(loglik_chunk, (fitted_params(e, covariances=False).kernel_params(), check and i == 0))
             for i, e in enumerate(estimators)]
    totals = shared_pass(data, calls)
    if totals[0].checks is not None:
        refuse_bad_rows(totals[0].checks, data)
    weighted = data.weighted
    return [
        InformationCriteria.of(t.loglik, data.n_samples, e.n_parameters(),
                               sum_weights=t.sum_weights if weighted else None)
        for t, e in zip(totals, estimators)
    ]
