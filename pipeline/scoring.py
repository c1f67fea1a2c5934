"""Scoring incoming partitions: per-row log-likelihood, component, responsibility, flag.

:func:`score_partitions` scores a batch of partitions (:func:`score_partition`
one):

1. claims them in the manifest in one transaction (exactly one run scores
   a partition; a claim whose run died is taken over), renewing the
   leases while it works;
2. stages each: :func:`pipeline.ingest.ingest` validates it against the
   model's features (names, order, count, non-numeric columns, NaN/inf
   rows per the bad-rows policy: refused, dropped, or kept and scored on
   their observed features, :mod:`pipeline.marginal_scoring`) into a
   scratch Zarr array under ``staging/`` (not flushed to disk: it is
   deleted after use), or, for a partition small enough to score in this
   process, straight into memory (:func:`pipeline.ingest.read_rows`, the
   same checks);
3. scores it in one pass per chunk, in this process when it is small
   (``local_max_rows``) or on the current Dask scheduler; the same pass
   gives its sufficient statistics (for model updates) and its drift
   counts;
4. publishes its scores store (a temporary store renamed into place);
5. flushes the batch's stores to disk with one filesystem sync, then
   records them in the manifest in one transaction, each with the model
   version, the counts taken while writing and its drift verdict.

A run killed at any point leaves every partition either recorded with a
complete store, or unrecorded (a store without an entry is an orphan that
the next run's reconcile removes): scored once, or not at all.  A failure
of one partition is recorded and reported; it stays unscored and the
others are unaffected.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gmm_engine import open_zarr_array
from gmm_engine.atomic import sync_filesystem
from gmm_engine.scoring import score_rows

from .cluster import scheduler_lost
from .drift import DriftPolicy, PartitionCounts, counts_summary, partition_counts, test_partition
from .ingest import ingest, read_rows
from .manifest import Manifest, ManifestEntry, utc_now_iso
from .marginal_scoring import MARGINALIZE, MarginalScoring, marginal_scoring
from .registry import LoadedModel
from .partitions import Partition, estimated_bytes, safe_child
from .scores_store import write_scores

logger = logging.getLogger(__name__)

LEASE_SECONDS = 600.0
#: Partitions of at most this many rows are scored in the calling process with the
#: NumPy kernels: for them a Dask graph costs more than the arithmetic (~0.25 s per
#: partition of fixed cost on the cluster here, against milliseconds of kernel time).
LOCAL_MAX_ROWS = 65_536


@dataclass(frozen=True)
class PartitionResult:
    partition_id: str
    status: str  # 'scored', 'skipped' (another run has it or it is done) or 'failed'
    n_rows: int = 0
    n_anomalies: int = 0
    mean_loglik: float | None = None
    output_path: str | None = None
    error: str | None = None
    seconds: float = 0.0
    drift: dict | None = None  # the drift verdict recorded with the entry (no sequential step yet)

    def to_dict(self) -> dict:
        return asdict(self)


def _positional_names(partition: Partition, names, storage_options):
    """Model feature names for sources that carry none (.npy, unnamed Zarr), else None.

    Such sources are positional: their columns must come in the model's
    order, and only their count can be checked.
    """
    if names is None:
        return None
    if partition.format == "npy":
        return names
    if partition.format == "zarr":
        z = open_zarr_array(partition.url, storage_options=storage_options)
        return None if z.attrs.get("feature_names") else names
    return None


@contextlib.contextmanager
def _keep_leases(manifest: Manifest, partition_ids, run_id: str, lease_seconds: float):
    """Renew the claims every third of the lease until the block ends."""
    stop = threading.Event()
    live = list(partition_ids)

    def renew():
        while not stop.wait(lease_seconds / 3):
            for pid in list(live):
                try:
                    manifest.renew(pid, run_id)
                except Exception:  # the main thread will find out when it records
                    logger.exception("could not renew the claim on %s", pid)
                    live.remove(pid)

    t = threading.Thread(target=renew, name=f"lease-{live[0] if live else 'none'}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


@dataclass(frozen=True)
class _Run:
    """What the steps of one partition's scoring share."""

    partition: Partition
    model: LoadedModel
    manifest: Manifest
    run_id: str
    bad_rows: str
    storage_options: dict | None
    local_max_rows: int
    drift_policy: DriftPolicy | None
    marginal: MarginalScoring | None = None  # bad_rows='marginalize': rows with gaps scored on what they have


def stage(partition: Partition, model, staged: Path, *, bad_rows: str = "error", storage_options=None,
          in_memory: bool = False):
    """Validate ``partition`` against ``model``'s features into the Zarr array ``staged``; (array, report).

    Parameters
    ----------
    partition : Partition
    model : GaussianMixture
        Fitted; its feature names (or count, for positional sources) are required.
    staged : Path
        Replaced if it exists; the caller deletes it when done.
    in_memory : bool
        Read the validated rows into a NumPy array instead (``staged`` is
        not written): for a partition small enough to score in this
        process, whose staging on disk would cost more than its scoring.
    """
    names = getattr(model, "feature_names_in_", None)
    names = list(names) if names is not None else None
    options = dict(format=partition.format, feature_names=_positional_names(partition, names, storage_options),
                   expected_features=names, bad_rows=bad_rows, storage_options=storage_options)
    if in_memory:
        staged_array, report = read_rows(partition.url, **options)
    else:
        ingested = ingest(partition.url, staged, overwrite=True, **options,
                          compression="none", durable=False)  # staged once, read once, then deleted
        staged_array, report = open_zarr_array(ingested.path), ingested.report
    if staged_array.shape[1] != model.n_features_in_:
        raise ValueError(
            f"Partition {partition.id} has {staged_array.shape[1]} features but the model "
            f"expects {model.n_features_in_}: send partitions with the training features."
        )
    return staged_array, report


def _in_memory(run: _Run) -> bool:
    """Whether the partition is small enough (by its metadata) to read into memory and score here.

    Such a partition would be scored in this process anyway (at most
    about ``local_max_rows`` float64 rows); unknown sizes are staged.
    """
    size = estimated_bytes(run.partition, run.storage_options)
    return size is not None and size <= run.local_max_rows * run.model.model.n_features_in_ * 8


def _stage(run: _Run, staged: Path):
    return stage(run.partition, run.model.model, staged, bad_rows=run.bad_rows, storage_options=run.storage_options,
                 in_memory=_in_memory(run))


def _score_and_write(run: _Run, staged_array, report, out: Path):
    """Score the staged rows in one pass and publish the scores store with its statistics.

    The pass also gives the partition's sufficient statistics (for model
    updates) and its drift counts, computed with the stored scores.
    """
    # a staged Zarr array carries the feature names to check; rows read into memory were checked on reading
    names = getattr(run.model.model, "feature_names_in_", None) if isinstance(staged_array, np.ndarray) else None
    local = isinstance(staged_array, np.ndarray) or staged_array.shape[0] <= run.local_max_rows
    ref = run.model.reference if run.drift_policy is not None else None
    attrs = {
        "partition_id": run.partition.id,
        "model_version": run.model.version,
        "threshold": run.model.threshold,
        "source_url": run.partition.url,
        "run_id": run.run_id,
        "rows_dropped": report.n_bad_rows if run.bad_rows == "drop" else 0,
    }
    if run.marginal is None:
        # the drift counts are taken in the chunk tasks that score the rows
        summary = counts_summary(ref, run.model.threshold) if ref is not None else None
        ll, comp, resp, stats, *counts = score_rows(run.model.model, staged_array, in_memory=local,
                                                    with_stats=True, feature_names=names, chunk_summary=summary)
        flags = ll <= run.model.threshold
        observed, counts = None, (counts[0] if counts else None)
    else:
        ll, comp, resp, observed, stats = score_rows(run.marginal.model, staged_array, in_memory=local,
                                                     with_stats=True, n_observed=True, feature_names=names)
        complete = observed == staged_array.shape[1]
        flags = ll <= run.marginal.row_thresholds(staged_array, local)
        attrs.update(missing=MARGINALIZE, n_incomplete_rows=report.n_incomplete_rows,
                     n_missing_values=report.n_missing_values)
        # per-row thresholds (by observed features) and only the complete rows counted: after the pass
        counts = partition_counts(ll, comp, flags, ref, rows=complete) if ref is not None else None
    return write_scores(
        out, log_likelihood=ll, component=comp, responsibility=resp, is_anomaly=flags, n_observed=observed,
        statistics=stats, extra={"drift": counts} if counts is not None else None, durable=False, attrs=attrs,
    )


def _verdict(run: _Run, summary) -> dict | None:
    """The drift tests of the partition from the counts of its scoring pass (None without a reference)."""
    counts = summary.extra.get("drift")
    if counts is None:
        return None
    if not isinstance(counts, PartitionCounts):  # the lazy form's computed vector
        counts = PartitionCounts.from_vector(counts, run.model.reference)
    if counts.n_rows == 0:
        return None
    return test_partition(counts, run.model.reference, run.drift_policy).to_dict()


def _entry(run: _Run, summary, out: Path) -> ManifestEntry:
    return ManifestEntry(
        partition_id=run.partition.id, model_version=run.model.version, output_path=str(out),
        n_rows=summary.n_rows, n_anomalies=summary.n_anomalies, mean_loglik=summary.mean_loglik,
        threshold=float(run.model.threshold), source_url=run.partition.url,
        scored_at=utc_now_iso(), run_id=run.run_id, drift=_verdict(run, summary),
    )


def _outcome(entry: ManifestEntry, error, seconds: float) -> PartitionResult:
    """What recording an entry came to; a store whose partition another run took over is withdrawn."""
    pid = entry.partition_id
    if error is not None:
        # another run took the partition over while we worked (our lease
        # lapsed): withdraw our store so that run's result stands
        shutil.rmtree(entry.output_path, ignore_errors=True)
        logger.warning("partition %s: %s; discarded this run's scores", pid, error)
        return PartitionResult(pid, "skipped", error=str(error), seconds=seconds)
    logger.info("scored %s: %d rows, %d anomalies, mean log-likelihood %.4f",
                pid, entry.n_rows, entry.n_anomalies, entry.mean_loglik)
    return PartitionResult(pid, "scored", entry.n_rows, entry.n_anomalies, entry.mean_loglik,
                           entry.output_path, None, seconds, entry.drift)


def _fail(run: _Run, exc: Exception, t0: float) -> PartitionResult:
    """Record a failed partition (it stays unscored); a lost scheduler is not the partition's fault."""
    pid = run.partition.id
    if scheduler_lost(exc):
        # leave it unrecorded for the next run, and let connect() say that the cluster went away
        with contextlib.suppress(Exception):
            run.manifest.release(pid, run.run_id)
        raise exc
    message = f"{type(exc).__name__}: {exc}"
    logger.error("partition %s failed: %s", pid, message)
    logger.debug("%s", traceback.format_exc())
    try:
        run.manifest.record_failure(pid, run.run_id, message)
    except Exception:
        logger.exception("could not record the failure of %s", pid)
    return PartitionResult(pid, "failed", error=message, seconds=time.perf_counter() - t0)


def _score_one(run: _Run, outputs_dir: Path, staging_dir: Path, t0: float):
    """Stage, score and publish one claimed partition; its entry to record, or its failure."""
    staged = safe_child(staging_dir, run.partition.id, ".zarr")
    try:
        staged_array, report = _stage(run, staged)
        out = safe_child(outputs_dir, run.partition.id, ".zarr")
        return _entry(run, _score_and_write(run, staged_array, report, out), out)
    except Exception as exc:
        return _fail(run, exc, t0)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def score_partitions(partitions, model: LoadedModel, *, outputs_dir, staging_dir, manifest_path, run_id: str,
                     bad_rows: str = "error", storage_options: dict | None = None,
                     lease_seconds: float = LEASE_SECONDS, local_max_rows: int = LOCAL_MAX_ROWS,
                     drift_policy: DriftPolicy | None = DriftPolicy()) -> list[PartitionResult]:
    """Score a batch of partitions end to end (see the module docs); one result per partition, in order.

    Parameters
    ----------
    partitions : sequence of Partition
    model : LoadedModel
        The model, its metadata (threshold, drift reference) and version.
    outputs_dir, staging_dir : path
    manifest_path : path of the SQLite manifest
    run_id : str
        Identifies this scoring run in the manifest.
    bad_rows : {'error', 'drop', 'marginalize'}
        Policy for rows with NaN or infinity; ``'marginalize'`` scores rows
        with NaN entries on their observed features
        (:mod:`pipeline.marginal_scoring`; a GaussianMixture model only).
    local_max_rows : int
        Partitions with at most this many rows are scored in this process
        (NumPy), larger ones on the current Dask scheduler; 0 sends all to Dask.
    drift_policy : DriftPolicy or None
        When the model has a drift reference, each partition's drift tests
        (from the counts of the same pass) are recorded with its entry under
        this policy; None records none.

    Returns
    -------
    list of PartitionResult
    """
    t0 = time.perf_counter()
    marginal = marginal_scoring(model) if bad_rows == MARGINALIZE else None  # refused before any claim
    manifest = Manifest(manifest_path)
    runs = {p.id: _Run(p, model, manifest, run_id, bad_rows, storage_options, local_max_rows, drift_policy, marginal)
            for p in partitions}
    held = manifest.claim_many(list(runs), run_id, lease_seconds=lease_seconds)
    results = {pid: PartitionResult(pid, "skipped") for pid in runs if pid not in held}
    for pid in results:
        logger.info("partition %s is scored or being scored by another run; skipping", pid)
    with _keep_leases(manifest, held, run_id, lease_seconds):
        entries = []
        for pid in held:
            done = _score_one(runs[pid], Path(outputs_dir), Path(staging_dir), t0)
            if isinstance(done, PartitionResult):
                results[pid] = done
            else:
                entries.append(done)
        if entries:
            # the stores must survive a power loss before the manifest says they exist
            sync_filesystem(outputs_dir)
            seconds = time.perf_counter() - t0
            for entry, error in manifest.record_successes(entries):
                results[entry.partition_id] = _outcome(entry, error, seconds)
    return [results[p.id] for p in partitions]


def score_partition(partition: Partition, model: LoadedModel, **kwargs) -> PartitionResult:
    """Score one partition end to end: :func:`score_partitions` of one (the same keyword arguments)."""
    return score_partitions([partition], model, **kwargs)[0]
