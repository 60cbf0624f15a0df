"""Exceptions of `keras_vtn.weights`.

Every error names the problem and the fix; none carries a chained traceback from the
machinery underneath (urllib, zipfile, pickle) because that would bury the message.
"""

from __future__ import annotations

import errno


class CheckpointError(ValueError):
    """A checkpoint file is unreadable: truncated, corrupt, unknown or unsupported format."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path (or a file a checkpoint folder names) does not exist.

    Also a `FileNotFoundError` (errno ENOENT, `filename` set), so callers that test for a
    missing file keep working; `str()` is the message alone.
    """

    def __init__(self, message: str, filename: str | None = None):
        super().__init__(message)
        self.errno, self.strerror, self.filename = errno.ENOENT, message, filename

    def __str__(self) -> str:
        return self.strerror or ""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks for something that loading must never do (run code, escape a folder).

    Raised *before* anything from the file is executed: the restricted unpickler refuses the
    global at lookup time, so the callable is never resolved, let alone called.
    """


class CheckpointLimitError(UnsafeCheckpointError):
    """A checkpoint would exceed a reader's resource bound: nesting depth, dimensions, or more
    bytes in memory than the file can legitimately describe (a decompression or aliasing bomb).

    Raised before the offending allocation or recursion happens.
    """


class WeightsDownloadError(OSError):
    """Downloading a registry checkpoint failed (offline, HTTP error, truncated, bad hash)."""


class NoReleasedWeightsError(ValueError):
    """The requested pretrained weights were never published by the original authors."""


class UnknownWeightsError(ValueError):
    """`weights=` names neither a registry entry nor an existing file."""


class FamilyNotAvailableError(ImportError):
    """A model family's builder or converter is not part of this installation (yet)."""
