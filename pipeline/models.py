"""Model registry: versioned model directories and the pointer to the current one.

``models/<version>/`` is a model saved by ``GaussianMixture.save`` (JSON +
.npy, checksummed) whose metadata carries what scoring needs: the anomaly
threshold, the contamination it was calibrated for, the feature names and
where the training data came from.  ``models/CURRENT`` names the version
that scoring uses; it is replaced atomically, so a scoring run sees either
the old or the new model, never a mix.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from gmm_engine import GaussianMixture, ModelFormatError, load_model, read_model_document
from gmm_engine.atomic import publish_dir, remove_entry, temp_name, write_text

logger = logging.getLogger(__name__)

CURRENT = "CURRENT"
_VERSION = re.compile(r"^\d{8}T\d{6}(\d{6})?Z-[0-9a-f]{8}$")


@dataclass(frozen=True)
class LoadedModel:
    model: GaussianMixture
    metadata: dict
    version: str
    path: Path

    @property
    def threshold(self) -> float:
        try:
            return float(self.metadata["anomaly"]["threshold"])
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(
                f"Model {self.path} has no anomaly threshold in its metadata: it was not "
                "registered by `gmm fit`/`gmm select`; refit it with the fit flow."
            ) from None


class ModelRegistry:
    """Versioned models under one directory.

    Parameters
    ----------
    root : path
        The ``models/`` directory (created when registering).
    """

    def __init__(self, root):
        self.root = Path(root)

    def register(self, model: GaussianMixture, metadata: dict, *, make_current: bool = True) -> str:
        """Save ``model`` as a new version; optionally make it current.

        Returns
        -------
        str
            The version: UTC time and the first 8 hex digits of the model's checksum.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        # The version names the checksum, known only once the model is saved: save it
        # under a temporary name, then publish it under its version (never replacing one).
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        tmp = self.root / temp_name(stamp)
        try:
            model.save(tmp, metadata=metadata)
            version = f"{stamp}-{read_model_document(tmp)['checksum'][:8]}"
            with publish_dir(self.root / version) as final:
                for f in list(tmp.iterdir()):
                    os.rename(f, final / f.name)
        finally:
            remove_entry(tmp)
        if make_current:
            self.set_current(version)
        logger.info("registered model %s%s", version, " (current)" if make_current else "")
        return version

    def set_current(self, version: str) -> None:
        if not (self.root / version).is_dir():
            raise ModelFormatError(f"No model version {version!r} under {self.root}.")
        write_text(self.root / CURRENT, version + "\n")

    def current_version(self) -> str | None:
        pointer = self.root / CURRENT
        if not pointer.is_file():
            return None
        return pointer.read_text().strip() or None

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name))

    def resolve(self, spec: str = "current") -> tuple[str, Path]:
        """(version, path) for 'current', a version name, or a model directory path."""
        if spec == "current":
            version = self.current_version()
            if version is None:
                raise ModelFormatError(
                    f"No current model under {self.root}: run `gmm fit` or `gmm select` "
                    "first (they register one), or pass a model directory."
                )
            return version, self.root / version
        if _VERSION.match(spec) and (self.root / spec).is_dir():
            return spec, self.root / spec
        path = Path(spec)
        doc = read_model_document(path)
        return f"{path.name}-{doc['checksum'][:8]}", path

    def load(self, spec: str = "current") -> LoadedModel:
        version, path = self.resolve(spec)
        model, metadata = load_model(path)
        return LoadedModel(model, metadata, version, path)

    def prune(self, keep: int = 10) -> list[str]:
        """Delete old versions beyond ``keep``, never the current one."""
        current = self.current_version()
        old = [v for v in self.versions() if v != current][: max(0, len(self.versions()) - keep)]
        for v in old:
            shutil.rmtree(self.root / v, ignore_errors=True)
        return old
