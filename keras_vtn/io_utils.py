"""Atomic file writes: a reader never sees a partial file, and a failed write keeps the old one."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `target`, moved onto `target` in one step on success.

    Whatever is written to the temporary path replaces `target` only when the block ends
    without an error; on an error or an interrupt the temporary file is removed and `target`
    keeps its old content. The temporary name is hidden (leading dot) so that folder scans
    skip it, and ends with `suffix` for writers that pick a format from the extension.

    Example:
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with atomic_path(target) as tmp:
    ...     with open(tmp, "w") as f:
    ...         _ = f.write("done")
    >>> open(target).read()
    'done'
    """
    target = os.fspath(target)
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    name = f".{os.path.basename(target)}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    tmp = os.path.join(folder, name)
    try:
        yield tmp
        # A killed process loses nothing once the rename is done, but after a power cut the
        # rename can reach the disk before the data: flush the file first, the folder after.
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `target` atomically."""
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_json(target: str | os.PathLike, payload, **dump_kwargs) -> None:
    """Writes `payload` as JSON to `target` atomically; `dump_kwargs` go to `json.dumps`."""
    write_text(target, json.dumps(payload, **dump_kwargs) + "\n")
