"""Model registry: versioned model directories, the current one, and how it came to be.

``models/<version>/`` is a model saved by ``GaussianMixture.save`` (JSON +
.npy, checksummed) whose metadata carries what scoring needs: the anomaly
threshold, the contamination it was calibrated for, the feature names,
where the training data came from, and the version's lineage (the model it
was derived from, if any, and why).  A version is named
``<UTC time>-<first 8 hex digits of its checksum>`` and never changes once
published.

``models/CURRENT`` names the version scoring uses; it is replaced
atomically, so a scoring run sees the old or the new model, never a mix.
``models/history.json`` records every change of ``CURRENT`` (when, from
which version to which, and why), rewritten atomically under a lock.

Every version a manifest entry names is a directory here: a model given
by path from elsewhere is imported as a version first (:meth:`import_model`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from gmm_engine import GaussianMixture, ModelFormatError, load_model, read_model_document
from gmm_engine.atomic import publish_dir, remove_entry, temp_name, write_json, write_text

from .versions import VERSION_PATTERN, is_version_name

__all__ = ["CURRENT", "HISTORY", "VERSION_PATTERN", "LoadedModel", "ModelRegistry", "is_version_name"]

logger = logging.getLogger(__name__)

CURRENT = "CURRENT"
HISTORY = "history.json"
ATTACHMENTS = "attachments"
_LOCK = ".registry.lock"


def _npy_bytes(arr) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


@dataclass(frozen=True)
class LoadedModel:
    """A registered model with its metadata, version and directory."""

    model: GaussianMixture
    metadata: dict
    version: str
    path: Path
    reference: object = None  # pipeline.drift.DriftReference, None for a model registered without one

    @property
    def threshold(self) -> float:
        try:
            return float(self.metadata["anomaly"]["threshold"])
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(
                f"Model {self.path} has no anomaly threshold in its metadata: it was not "
                "registered by `gmm fit`/`gmm select`; refit it with the fit flow."
            ) from None

    @property
    def lineage(self) -> dict:
        """Where this version came from: ``{"parent": ..., "rule": ..., ...}``; empty for a fit."""
        return dict(self.metadata.get("lineage") or {})


class ModelRegistry:
    """Versioned models under one directory.

    Parameters
    ----------
    root : path
        The ``models/`` directory (created when registering).
    """

    def __init__(self, root):
        self.root = Path(root)

    # -- versions --------------------------------------------------------------

    def register(self, model: GaussianMixture, metadata: dict, *, make_current: bool = True,
                 reason: str = "registered", attachments: dict | None = None) -> str:
        """Save ``model`` as a new version; optionally make it current.

        Parameters
        ----------
        model : GaussianMixture
            Fitted.
        metadata : dict
            JSON-serialisable; its ``lineage`` (if any) is kept with the version.
        make_current : bool
        reason : str
            Recorded in the history when the version becomes current.
        attachments : dict of str to ndarray, optional
            Arrays the pipeline keeps with the version (e.g. the drift
            reference's score sample): ``attachments/<name>.npy``, their
            SHA-256 in the (checksummed) metadata, verified when read.

        Returns
        -------
        str
            The version: UTC time and the first 8 hex digits of the model's checksum.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        files = {name: _npy_bytes(arr) for name, arr in (attachments or {}).items()}
        if files:
            metadata = {**metadata, ATTACHMENTS: {name: {"file": f"{ATTACHMENTS}/{name}.npy", "sha256": _sha256(data)}
                                                  for name, data in files.items()}}
        # The version names the checksum, known only once the model is saved: save it
        # under a temporary name, then publish it under its version (never replacing one).
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        tmp = self.root / temp_name(stamp)
        try:
            model.save(tmp, metadata=metadata)
            for name, data in files.items():
                (tmp / ATTACHMENTS).mkdir(exist_ok=True)
                (tmp / ATTACHMENTS / f"{name}.npy").write_bytes(data)
            version = f"{stamp}-{read_model_document(tmp)['checksum'][:8]}"
            self._publish(tmp, version)
        finally:
            remove_entry(tmp)
        logger.info("registered model %s", version)
        if make_current:
            self.set_current(version, reason=reason)
        return version

    def _publish(self, saved: Path, version: str) -> None:
        with publish_dir(self.root / version) as final:
            for f in list(saved.iterdir()):
                os.rename(f, final / f.name)

    def attachment(self, version: str, name: str):
        """The array ``name`` registered with ``version``, verified against its checksum; None if it has none."""
        from gmm_engine.npy import load_npy_bytes

        entry = (self.metadata(version).get(ATTACHMENTS) or {}).get(name)
        if entry is None:
            return None
        path = self.path_of(version) / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelFormatError(f"Model {version} lacks its attachment {entry['file']}: re-register the model.") from None
        if _sha256(data) != entry["sha256"]:
            raise ModelFormatError(
                f"Model {version}'s attachment {entry['file']} does not match its checksum: it was edited or "
                "corrupted after registration; re-register the model."
            )
        return load_npy_bytes(data)

    def drift_reference(self, version: str):
        """The :class:`pipeline.drift.DriftReference` registered with ``version``, or None (registered before drift detection)."""
        from .drift import DriftReference

        meta = self.metadata(version).get("drift_reference")
        if meta is None:
            return None
        return DriftReference.from_dict(meta, self.attachment(version, "drift_score_sample"))

    def import_model(self, path) -> str:
        """Make the model directory ``path`` a version of this registry (not current); return it.

        A directory already named as a version whose checksum it carries keeps
        its name (importing it twice is a no-op); any other is registered under
        a new version.  The model is verified (checksums, shapes) first.
        """
        path = Path(path)
        doc = read_model_document(path)
        model, metadata = load_model(path)  # verifies every array
        name = path.name
        if is_version_name(name) and name.endswith(doc["checksum"][:8]):
            if (self.root / name).is_dir():
                return name
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / temp_name(name)
            try:
                shutil.copytree(path, tmp)
                self._publish(tmp, name)
            finally:
                remove_entry(tmp)
            logger.info("imported model %s from %s", name, path)
            return name
        lineage = {**(metadata.get("lineage") or {}), "imported_from": str(path.absolute())}
        return self.register(model, {**metadata, "lineage": lineage}, make_current=False)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_version_name(p.name))

    def path_of(self, version: str) -> Path:
        if not is_version_name(version) or not (self.root / version).is_dir():
            raise ModelFormatError(
                f"No model version {version!r} under {self.root}: `gmm models list` shows the "
                "registered versions."
            )
        return self.root / version

    def metadata(self, version: str) -> dict:
        """The stored metadata of ``version`` (read from its document, arrays not loaded)."""
        return read_model_document(self.path_of(version)).get("metadata") or {}

    # -- the current version and its history -------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / _LOCK, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def set_current(self, version: str, *, reason: str = "set by the user") -> None:
        """Make ``version`` the one scoring uses, and record the change with ``reason``."""
        self.path_of(version)
        with self._locked():
            previous = self.current_version()
            events = self.history()
            events.append({"at": _utc_now(), "version": version, "previous": previous, "reason": reason})
            write_json(self.root / HISTORY, events)
            write_text(self.root / CURRENT, version + "\n")
        logger.info("model %s is current (%s)", version, reason)

    def current_version(self) -> str | None:
        pointer = self.root / CURRENT
        if not pointer.is_file():
            return None
        return pointer.read_text().strip() or None

    def history(self) -> list[dict]:
        """Every change of the current version, oldest first."""
        path = self.root / HISTORY
        if not path.is_file():
            return []
        try:
            events = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelFormatError(
                f"{path} is not valid JSON ({exc}): it is written atomically, so it was edited by "
                "hand; restore it or delete it (the registry's versions are not affected)."
            ) from None
        return list(events)

    # -- resolving and loading ---------------------------------------------------

    def resolve(self, spec: str = "current") -> tuple[str, Path]:
        """(version, path) for 'current', a version name, or a model directory of this registry.

        A model directory elsewhere is not a version: :meth:`import_model` it first.
        """
        if spec == "current":
            version = self.current_version()
            if version is None:
                raise ModelFormatError(
                    f"No current model under {self.root}: run `gmm fit` or `gmm select` "
                    "first (they register one), or pass a model directory."
                )
            return version, self.path_of(version)
        if is_version_name(spec):
            return spec, self.path_of(spec)
        path = Path(spec)
        if path.absolute().parent == self.root.absolute() and is_version_name(path.name):
            return path.name, self.path_of(path.name)
        raise ModelFormatError(
            f"{spec!r} is neither 'current', a version name nor a version directory under "
            f"{self.root}; import an outside model directory with ModelRegistry.import_model."
        )

    def load(self, spec: str = "current") -> LoadedModel:
        """The model ``spec`` names, verified, with its metadata and drift reference."""
        version, path = self.resolve(spec)
        model, metadata = load_model(path)
        return LoadedModel(model, metadata, version, path, self.drift_reference(version))

    def load_or_import(self, spec: str = "current") -> LoadedModel:
        """:meth:`load` ``spec``, importing it first when it is a model directory outside the registry."""
        if spec == "current" or is_version_name(spec) or Path(spec).absolute().parent == self.root.absolute():
            return self.load(spec)
        return self.load(self.import_model(spec))

    def load_cached(self, spec: str = "current") -> LoadedModel:
        """:meth:`load`, once per process and version.

        Published versions never change, so a version loaded (and its
        checksums verified) once is the same model for the life of the
        process; 'current' is resolved on every call, so a new current
        version is picked up at once.
        """
        version, path = self.resolve(spec)
        key = str(path.resolve())
        with _CACHE_LOCK:
            if key not in _CACHE:
                _CACHE.clear()  # a scoring run uses one version at a time
                model, metadata = load_model(path)
                _CACHE[key] = LoadedModel(model, metadata, version, path, self.drift_reference(version))
            return _CACHE[key]

    def prune(self, keep: int = 10) -> list[str]:
        """Delete old versions beyond ``keep``, never the current one."""
        current = self.current_version()
        old = [v for v in self.versions() if v != current][: max(0, len(self.versions()) - keep)]
        for v in old:
            shutil.rmtree(self.root / v, ignore_errors=True)
        return old


_CACHE: dict[str, LoadedModel] = {}
_CACHE_LOCK = threading.Lock()
