"""Download registry checkpoints into the Keras cache, atomically and hash-checked.

Layout under `$KERAS_HOME/keras_vtn` (default `~/.keras/keras_vtn`):

- `originals/<entry cache_dir>/<file name>`: the original files as published;
- `originals/.../<file name>.sha256.json`: the sha256 observed at download time (with size and
  mtime), used to detect later corruption when the registry has no published hash;
- `converted/<family>-<source hash>-<model signature>.weights.h5`: converted Keras weights.

A download streams into `<file name>.part-<host>-<pid>-<random>` and is renamed into place
only after it is complete (the announced length arrived) and its hash verified, so an
interrupted transfer, a stalled server or a killed process never leaves a file that a later
run would take for the real one. Leftover `.part` files of processes that no longer exist on
this host, and any older than a day, are removed by the next download of the same file.

Environment:

- `KERAS_VTN_OFFLINE`: `1`/`true`/`yes`/`on` turns downloads off; `0`/`false`/`no`/`off` or
  empty leaves them on; anything else is an error.
- `KERAS_VTN_DOWNLOAD_TIMEOUT`: seconds (default 30) a connection attempt or a single read
  may wait before the download is abandoned.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
import time
import urllib.error
import urllib.request

from keras_vtn.io_utils import write_json
from keras_vtn.weights.errors import WeightsDownloadError

OFFLINE_ENV = "KERAS_VTN_OFFLINE"
TIMEOUT_ENV = "KERAS_VTN_DOWNLOAD_TIMEOUT"
# Long enough for a slow mirror to start sending, short enough that a dead one is noticed
# before a user gives up; a stalled socket otherwise blocks forever.
DEFAULT_TIMEOUT = 30.0
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")
_STALE_PART_SECONDS = 24 * 3600
_CHUNK = 1 << 20
# Part names carry the host so that a cache shared over a network file system never loses a
# part that a live process on another machine is still writing.
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "localhost"


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


def offline() -> bool:
    """Whether `KERAS_VTN_OFFLINE` turns downloads off (read at call time)."""
    raw = os.environ.get(OFFLINE_ENV)
    value = (raw or "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(
        f"{OFFLINE_ENV}={raw!r} is not understood. Use {', '.join(_ON)} to turn downloads "
        f"off, or {', '.join(v for v in _OFF if v)} (or leave it empty or unset) to allow them."
    )


def download_timeout() -> float:
    """Seconds a connection attempt or one read may wait (`KERAS_VTN_DOWNLOAD_TIMEOUT`)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds (default "
            f"{DEFAULT_TIMEOUT:g})."
        )
    return value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a pid we can judge: keep its part
    return True


def _cleanup_stale_parts(folder: str, fname: str) -> None:
    """Remove parts left by dead processes on this host, and any older than a day."""
    now = time.time()
    prefix = fname + ".part-"
    for name in os.listdir(folder):
        if not name.startswith(prefix):
            continue
        path = os.path.join(folder, name)
        owner = name[len(prefix):].rsplit("-", 2)
        orphan = (
            len(owner) == 3
            and owner[0] == _HOST
            and owner[1].isdigit()
            and not _pid_alive(int(owner[1]))
        )
        try:
            if orphan or now - os.path.getmtime(path) > _STALE_PART_SECONDS:
                os.remove(path)
        except OSError:
            pass


class _Truncated(Exception):
    pass


def _progress_bar(total: int | None):
    if not total:
        return None
    try:
        import keras  # deferred: reading checkpoints must not need keras initialised
    except ImportError:
        return None
    return keras.utils.Progbar(total, unit_name="B")


def _transfer(url: str, part: str, timeout: float) -> None:
    """Stream `url` into `part`; every connect and read waits at most `timeout` seconds."""
    print(f"Downloading data from {url}")
    request = urllib.request.Request(url, headers={"User-Agent": "keras_vtn"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
        announced = response.headers.get("Content-Length")
        total = int(announced) if announced and announced.isdigit() else None
        bar = _progress_bar(total)
        received = 0
        # read1 returns what has arrived, so the part grows as the data comes in and a
        # stall is measured per read rather than per megabyte.
        while block := response.read1(_CHUNK):
            out.write(block)
            received += len(block)
            if bar is not None:
                bar.update(received)
    if total is not None and received != total:
        raise _Truncated(
            f"the connection closed after {received} of {total} bytes (truncated transfer)"
        )


def _is_timeout(err: BaseException) -> bool:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    return isinstance(err, TimeoutError)


def download_file(
    url: str, target: str, sha256: str | None, label: str, first_use: bool = False
) -> str:
    """Download `url` to `target` atomically, with timeouts; verify `sha256`.

    `first_use`: `sha256` is not published but was recorded at the first download.
    """
    if offline():
        raise WeightsDownloadError(
            f"{label}: {target} is not in the cache and downloads are disabled "
            f"({OFFLINE_ENV}={os.environ.get(OFFLINE_ENV)!r}).\n  URL:        {url}\n"
            f"  Cache path: {target}\n" + _manual_hint(url, target, sha256)
        )
    timeout = download_timeout()
    folder, fname = os.path.split(target)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise WeightsDownloadError(
            f"{label}: cannot create the cache folder {folder} ({err.strerror}). Set KERAS_HOME "
            "to a writable folder."
        ) from None
    _cleanup_stale_parts(folder, fname)
    part = os.path.join(folder, f"{fname}.part-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        _transfer(url, part, timeout)
        observed = file_sha256(part)
    except BaseException as err:
        if os.path.exists(part):
            os.remove(part)
        if not isinstance(err, Exception):  # KeyboardInterrupt / SystemExit: keep semantics
            raise
        if _is_timeout(err):
            raise WeightsDownloadError(
                f"{label}: download abandoned: the server sent nothing for {timeout:g} s "
                f"({TIMEOUT_ENV}).\n  URL:        {url}\n  Cache path: {target}\n"
                "The partial download was removed. Run again later; on a slow link raise the "
                f"limit (e.g. {TIMEOUT_ENV}=120). " + _manual_hint(url, target, sha256)
            ) from None
        reason = str(err).strip() or type(err).__name__
        raise WeightsDownloadError(
            f"{label}: download failed.\n  URL:        {url}\n  Cache path: {target}\n"
            f"  Reason:     {reason}\n" + _manual_hint(url, target, sha256)
        ) from None
    if sha256 and observed != sha256.lower():
        os.remove(part)
        origin = (
            f"the hash recorded when this file was first downloaded (no hash is published for "
            f"it; trust on first use). If the file changed upstream on purpose, delete "
            f"{_record_path(target)} to accept the new one"
            if first_use
            else "the published hash"
        )
        raise WeightsDownloadError(
            f"{label}: the downloaded file's sha256 is {observed}, expected {sha256}, "
            f"{origin}. The download was corrupted or the file changed upstream, so it was "
            f"discarded.\n  URL:        {url}\n  Cache path: {target}\n"
            + _manual_hint(url, target, sha256)
        )
    os.replace(part, target)
    write_record(target, observed)
    return target


def ensure_file(url: str, target: str, sha256: str | None, label: str) -> str:
    """Return `target`, downloading it first unless a verified copy is already cached.

    Without a published `sha256` the hash recorded at the first download is the reference
    (trust on first use): a cached copy must match it, and so must a re-download, until the
    record is deleted by hand.
    """
    offline()  # a misspelt setting is reported whether or not this file is cached
    record = read_record(target)
    recorded = record.get("sha256") if record else None
    expected = sha256.lower() if sha256 else recorded
    if os.path.isfile(target):
        observed = cached_sha256(target)
        if expected is None or observed == expected:
            if read_record(target) is None:
                write_record(target, observed)
            return target
        print(
            f"keras_vtn: cached {target} has sha256 {observed}, expected {expected}; "
            "downloading it again."
        )
        os.remove(target)
    return download_file(url, target, expected, label, first_use=not sha256 and bool(recorded))


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
