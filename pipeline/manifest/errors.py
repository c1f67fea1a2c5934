"""The manifest's exceptions: one base class, one subclass per way a call can be refused."""

from __future__ import annotations

__all__ = ["ManifestError", "NotAManifestError", "ClaimLost", "ClaimConflict", "AlreadyScored"]


class ManifestError(RuntimeError):
    """Base class for manifest errors."""


class NotAManifestError(ManifestError, ValueError):
    """The file is not a gmm-stream manifest (foreign SQLite file, not SQLite, or too new)."""


class ClaimLost(ManifestError):
    """The run no longer holds the claim it is renewing: stop working on that partition."""


class ClaimConflict(ManifestError):
    """Another run holds a live claim on the partition."""


class AlreadyScored(ManifestError):
    """The partition already has a manifest entry."""
