"""Download registry checkpoints into the Keras cache, atomically and hash-checked.

Layout under `$KERAS_HOME/keras_vtn` (default `~/.keras/keras_vtn`):

- `originals/<entry cache_dir>/<file name>`: the original files as published;
- `originals/.../<file name>.sha256.json`: the sha256 observed at download time (with size and
  mtime), used to detect later corruption when the registry has no published hash;
- `converted/<family>-<source hash>-<model signature>.weights.h5`: converted Keras weights.

A download goes to `<file name>.part-<pid>-<random>` through `keras.utils.get_file` and is
renamed into place only after it is complete and its hash verified, so an interrupted transfer
or a crash never leaves a file that a later run would take for the real one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time

from keras_vtn.io_utils import write_json
from keras_vtn.weights.errors import WeightsDownloadError

OFFLINE_ENV = "KERAS_VTN_OFFLINE"
_STALE_PART_SECONDS = 24 * 3600


def keras_home() -> str:
    """`$KERAS_HOME` if set (read at call time), else `~/.keras` (Keras' own default)."""
    return os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))


def cache_root() -> str:
    """Root of keras_vtn's cache: `<keras home>/keras_vtn`."""
    return os.path.join(keras_home(), "keras_vtn")


def originals_dir(entry: dict) -> str:
    return os.path.join(cache_root(), "originals", *entry["cache_dir"].split("/"))


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _record_path(path: str) -> str:
    return path + ".sha256.json"


def read_record(path: str) -> dict | None:
    try:
        with open(_record_path(path), encoding="utf-8") as handle:
            record = json.load(handle)
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def write_record(path: str, sha256: str) -> None:
    """Record the observed hash of `path` next to it (atomically)."""
    stat = os.stat(path)
    record = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    write_json(_record_path(path), record)


def cached_sha256(path: str) -> str:
    """The sha256 of a cached file, rehashing only when size or mtime changed."""
    record = read_record(path)
    stat = os.stat(path)
    if record and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
        return record["sha256"]
    digest = file_sha256(path)
    if record is None:
        write_record(path, digest)
    return digest


def _manual_hint(url: str, target: str, sha256: str | None) -> str:
    check = f" Its sha256 must be {sha256}." if sha256 else ""
    return (
        f"To install it by hand, download {url} on a machine with network access (for example "
        f"`curl -L -o {os.path.basename(target)} '{url}'`) and place it at {target}.{check} "
        "Set KERAS_HOME to move the cache."
    )


def _cleanup_stale_parts(folder: str, fname: str) -> None:
    now = time.time()
    for name in os.listdir(folder):
        if name.startswith(fname + ".part-"):
            path = os.path.join(folder, name)
            try:
                if now - os.path.getmtime(path) > _STALE_PART_SECONDS:
                    os.remove(path)
            except OSError:
                pass


def download_file(url: str, target: str, sha256: str | None, label: str) -> str:
    """Download `url` to `target` via `keras.utils.get_file`, atomically; verify `sha256`."""
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise WeightsDownloadError(
            f"{label}: {target} is not in the cache and downloads are disabled "
            f"({OFFLINE_ENV} is set).\n  URL:        {url}\n  Cache path: {target}\n"
            + _manual_hint(url, target, sha256)
        )
    folder, fname = os.path.split(target)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise WeightsDownloadError(
            f"{label}: cannot create the cache folder {folder} ({err.strerror}). Set KERAS_HOME "
            "to a writable folder."
        ) from None
    _cleanup_stale_parts(folder, fname)
    part = os.path.join(folder, f"{fname}.part-{os.getpid()}-{secrets.token_hex(4)}")
    import keras  # deferred: reading checkpoints must not need keras initialised

    try:
        keras.utils.get_file(
            fname=os.path.basename(part), origin=url, cache_subdir=folder, file_hash=None
        )
        observed = file_sha256(part)
    except BaseException as err:
        if os.path.exists(part):
            os.remove(part)
        if not isinstance(err, Exception):  # KeyboardInterrupt / SystemExit: keep semantics
            raise
        reason = str(err).strip() or type(err).__name__
        raise WeightsDownloadError(
            f"{label}: download failed.\n  URL:        {url}\n  Cache path: {target}\n"
            f"  Reason:     {reason}\n" + _manual_hint(url, target, sha256)
        ) from None
    if sha256 and observed != sha256.lower():
        os.remove(part)
        raise WeightsDownloadError(
            f"{label}: the downloaded file's sha256 is {observed}, expected {sha256}; the "
            f"download was corrupted or the file changed upstream, so it was discarded.\n"
            f"  URL:        {url}\n  Cache path: {target}\n" + _manual_hint(url, target, sha256)
        )
    os.replace(part, target)
    write_record(target, observed)
    return target


def ensure_file(url: str, target: str, sha256: str | None, label: str) -> str:
    """Return `target`, downloading it first unless a verified copy is already cached."""
    if os.path.isfile(target):
        observed = cached_sha256(target)
        if sha256 is None:
            record = read_record(target)
            expected = record.get("sha256") if record else None
        else:
            expected = sha256.lower()
        if expected is None or observed == expected:
            if sha256 is not None and read_record(target) is None:
                write_record(target, observed)
            return target
        print(
            f"keras_vtn: cached {target} has sha256 {observed}, expected {expected}; "
            "downloading it again."
        )
        os.remove(target)
        try:
            os.remove(_record_path(target))
        except OSError:
            pass
    return download_file(url, target, sha256, label)


def fetch_entry(entry: dict) -> str:
    """Local path of a registry entry: its file, or its folder when it has several files."""
    folder = originals_dir(entry)
    paths = [
        ensure_file(item["url"], os.path.join(folder, item["fname"]), item.get("sha256"),
                    f"weights {entry['id']!r}")
        for item in entry["files"]
    ]
    return paths[0] if len(paths) == 1 else folder


def source_sha256(entry: dict, path: str) -> str:
    """A hash identifying an entry's downloaded content (for the converted-weights cache key)."""
    if os.path.isfile(path):
        return cached_sha256(path)
    digest = hashlib.sha256()
    for item in entry["files"]:
        digest.update(cached_sha256(os.path.join(path, item["fname"])).encode())
    return digest.hexdigest()


def forget_download(entry: dict) -> None:
    """Remove an entry's cached files (after they proved unreadable)."""
    folder = originals_dir(entry)
    for item in entry["files"]:
        target = os.path.join(folder, item["fname"])
        for path in (target, _record_path(target)):
            try:
                os.remove(path)
            except OSError:
                pass
