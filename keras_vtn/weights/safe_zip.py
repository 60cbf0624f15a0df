"""Defensive reading shared by every checkpoint reader.

A checkpoint may be hostile, so nothing a reader does may be steered by the file into
unbounded work. This module holds the guards the readers share:

- `open_regular`: only regular files are opened (a FIFO would block forever, `/dev/zero`
  never ends, a symlink loop must say so rather than "does not exist");
- zip archives (`torch.save` >= 1.6, `numpy.savez`) are validated from the central directory
  before any member is read: no traversal names, no bombs (a small member that inflates to
  gigabytes), no silent truncation; nothing is ever extracted to disk;
- `Budget`: the bytes a reader materialises (arrays and tensor names) are bounded by a small
  multiple of the bytes stored in the file, checked before each allocation, so aliasing one
  tensor under thousands of names or a stride-0 view cannot expand a small file into gigabytes;
- `check_shape`, `element_count`: declared shapes are validated as non-negative Python ints
  with an exact product and a dimension cap before anything is sized from them;
- `load_json`, `flatten_nested`: nesting depth is bounded explicitly (no recursion on the
  file's structure), so a deep file is a clear error instead of a RecursionError or a crash.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib

import numpy as np

from keras_vtn.weights.errors import (
    CheckpointError,
    CheckpointLimitError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
)

# Containers (dicts, lists, JSON objects, msgpack maps) may nest at most this deep. Real
# checkpoints nest fewer than 15 levels (optimizer/target/Transformer/encoderblock_0/...).
MAX_NESTING_DEPTH = 100
# numpy's own limit; torch tensors in checkpoints have at most a handful of dimensions.
MAX_DIMS = 64
# No single dimension or tensor may declare more elements than this (2**48: 1 PB of float32).
MAX_ELEMENTS = 1 << 48
# A reader may materialise at most MATERIALISE_FACTOR x the file's stored bytes plus
# MATERIALISE_SLACK. The factor covers bfloat16 -> float32 (2x) and views that legitimately
# overlap (a weight stored once and saved again as a transposed or sliced view).
MATERIALISE_FACTOR = 4
MATERIALISE_SLACK = 16 << 20
# What one numpy array object costs besides its data: a file of many tiny arrays is charged
# for the Python objects it makes, not only for their few bytes each.
ARRAY_OVERHEAD = 112
# JSON sidecars (config.json, shard indexes) are small; a larger one is not a checkpoint's.
MAX_JSON_SIDECAR_BYTES = 64 << 20

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def describe(value, limit: int = 60) -> str:
    """A short, always-safe description of a value from a file, for error messages.

    `repr` of a file's data can recurse (a deeply nested tuple), be huge, or raise (an int
    with more than 4300 digits), so messages never call it on anything but short scalars.
    """
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        bits = value.bit_length()
        return repr(value) if bits <= 128 else f"<int of {bits} bits>"
    if isinstance(value, (str, bytes)):
        text = repr(value[:limit])
        return text + ("..." if len(value) > limit else "")
    size = len(value) if isinstance(value, (list, tuple, dict, set, frozenset)) else None
    suffix = f" of {size} items" if size is not None else ""
    return f"<{type(value).__name__}{suffix}>"


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_error(path: str, err: OSError, what: str) -> CheckpointError:
    if err.errno == errno.ELOOP:
        return CheckpointError(
            f"{what} {path!r} is a symbolic link loop (or a chain of more than 40 links); "
            "point it at the real file."
        )
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return CheckpointNotFoundError(
                f"{what} {path!r} is a symbolic link to {target!r}, which does not exist.", path
            )
        return CheckpointNotFoundError(f"{what} {path!r} does not exist.", path)
    if err.errno in (errno.EACCES, errno.EPERM):
        return CheckpointError(f"{what} {path!r} cannot be read: permission denied.")
    return CheckpointError(f"{what} {path!r} cannot be opened ({err.strerror or err}).")


def _not_regular(path: str, mode: int, what: str) -> CheckpointError:
    return CheckpointError(
        f"{what} {path!r} is {_file_kind(mode)}, not a regular file; refusing to read it "
        "(a pipe could block forever and a device could never end)."
    )


def open_regular(path: str | os.PathLike, what: str = "checkpoint"):
    """Open a regular file for binary reading; anything else is a `CheckpointError`.

    The path is checked with `os.stat` (symlinks resolved) before opening, so a device is never
    opened, and opened with `O_NONBLOCK`, so a FIFO swapped in between cannot block; the open
    descriptor is checked again with `fstat`, which is what the reads will see.
    """
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except OSError as err:
        raise _open_error(path, err, what) from None
    except ValueError as err:  # an embedded NUL byte
        raise CheckpointError(f"{what} {path!r} is not a usable path ({err}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, info.st_mode, what)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        raise _open_error(path, err, what) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path, info.st_mode, what)
        if getattr(os, "O_NONBLOCK", 0):  # the open above was non-blocking (POSIX)
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_size(handle) -> int:
    """Size of an open regular file, from the descriptor (not the path, which may change)."""
    return os.fstat(handle.fileno()).st_size


def read_exactly(handle, count: int, path: str, what: str) -> bytes:
    """`count` bytes or a truncation error (the file may have shrunk since it was sized)."""
    data = handle.read(count)
    if len(data) != count:
        raise CheckpointError(f"{path!r} is truncated inside {what}; download it again.")
    return data


def element_count(shape: tuple[int, ...]) -> int:
    """Exact product of a validated shape (Python ints never wrap, unlike `np.prod`)."""
    return math.prod(shape)


def check_shape(shape, path: str, what: str) -> tuple[int, ...]:
    """A declared shape as a tuple of Python ints, refused unless every dimension is a
    non-negative int (not a bool or float), there are at most MAX_DIMS of them and the
    element count is at most MAX_ELEMENTS."""
    if not isinstance(shape, (list, tuple)):
        raise CheckpointError(f"{path!r}: {what} has shape {describe(shape)}, not a list of ints.")
    if len(shape) > MAX_DIMS:
        raise CheckpointLimitError(
            f"{path!r}: {what} declares {len(shape)} dimensions; at most {MAX_DIMS} are allowed."
        )
    for n in shape:
        if type(n) is not int or n < 0:
            raise CheckpointError(
                f"{path!r}: {what} has a dimension {describe(n)}; dimensions must be "
                "non-negative integers."
            )
        if n > MAX_ELEMENTS:
            raise CheckpointLimitError(
                f"{path!r}: {what} declares a dimension of {describe(n)} elements (the limit "
                f"is 2**{MAX_ELEMENTS.bit_length() - 1})."
            )
    shape = tuple(shape)
    if element_count(shape) > MAX_ELEMENTS:
        raise CheckpointLimitError(
            f"{path!r}: {what} of shape {shape} declares more than "
            f"2**{MAX_ELEMENTS.bit_length() - 1} elements."
        )
    return shape


class Budget:
    """How many bytes one read may still materialise, charged before each allocation.

    The limit is MATERIALISE_FACTOR x the bytes stored in the file (+ MATERIALISE_SLACK).
    Every array is charged each time it is made, with its Python object overhead, and so is
    every tensor name: the same storage aliased under many names pays for every copy.
    """

    def __init__(self, path: str, stored_bytes: int):
        self.path = path
        self.stored_bytes = max(int(stored_bytes), 0)
        self.limit = MATERIALISE_FACTOR * self.stored_bytes + MATERIALISE_SLACK
        self.used = 0

    def charge(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise CheckpointLimitError(
                f"{self.path!r}: {what} would bring the memory this read materialises past "
                f"{self.limit:,} bytes ({MATERIALISE_FACTOR}x the file's {self.stored_bytes:,} "
                f"stored bytes + {MATERIALISE_SLACK >> 20} MiB). A checkpoint cannot describe "
                "more data than it stores; this one aliases or repeats its data (a memory "
                "bomb) and was refused before allocating."
            )

    def charge_array(self, nbytes: int, what: str) -> None:
        self.charge(nbytes + ARRAY_OVERHEAD, what)


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_OPENERS = np.zeros(256, np.int8)
_OPENERS[[ord("["), ord("{")]] = 1
_OPENERS[[ord("]"), ord("}")]] = -1


def json_depth(data: bytes) -> int:
    """Deepest bracket nesting of a JSON document, without parsing (strings are skipped)."""
    stripped = _JSON_STRING.sub(b'""', data)
    depth = deepest = 0
    for start in range(0, len(stripped), 1 << 20):
        chunk = np.frombuffer(stripped, np.uint8, min(1 << 20, len(stripped) - start), start)
        levels = np.cumsum(_OPENERS[chunk], dtype=np.int64) + depth
        if levels.size:
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
    return deepest


def load_json(data: bytes, path: str, what: str):
    """Parse JSON from a file, refusing documents nested deeper than MAX_NESTING_DEPTH."""
    depth = json_depth(data)
    if depth > MAX_NESTING_DEPTH:
        raise CheckpointLimitError(
            f"{path!r}: the {what} nests {depth} levels deep; at most {MAX_NESTING_DEPTH} are "
            "allowed (real ones nest 3)."
        )
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path!r}: the {what} is not UTF-8 ({err.reason}).") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, over-long ints
        raise CheckpointError(f"{path!r}: the {what} is not valid JSON ({err}).") from None


def read_json_file(path: str, what: str):
    """A small JSON sidecar file (config.json, a shard index), read defensively."""
    with open_regular(path, what) as handle:
        size = file_size(handle)
        if size > MAX_JSON_SIDECAR_BYTES:
            raise CheckpointLimitError(
                f"{what} {path!r} is {size:,} bytes; more than the "
                f"{MAX_JSON_SIDECAR_BYTES >> 20} MiB such a file can need."
            )
        data = handle.read(size)
    return load_json(data, path, what)


def _name_of(node, separator: str, path: str) -> str:
    keys = []
    while node is not None:
        node, key = node
        keys.append(key)
    parts = []
    for key in reversed(keys):
        try:
            parts.append(key if isinstance(key, str) else str(key))
        except (ValueError, RecursionError):  # an int beyond str()'s digit limit
            raise CheckpointError(f"{path!r}: a key {describe(key)} cannot be a name.") from None
    return separator.join(parts)


def flatten_nested(root, separator: str, to_array, path: str, budget: Budget,
                   max_nodes: int | None = None) -> dict[str, np.ndarray]:
    """Flatten nested dicts/lists/tuples into `{'a.b.0.c': array}`; other leaves are dropped.

    `to_array(value)` returns the array a leaf stands for, or None for anything else. The walk
    is iterative (no recursion on the file's structure), refuses nesting deeper than
    MAX_NESTING_DEPTH and, where containers can be shared (pickle memo references make a
    DAG that a tree walk would expand exponentially), visits at most `max_nodes` values.
    Names are built only for arrays and are charged to `budget`.
    """
    out: dict[str, np.ndarray] = {}
    stack = [(root, None, 0)]
    visited = 1
    while stack:
        value, node, depth = stack.pop()
        array = to_array(value)
        if array is not None:
            name = _name_of(node, separator, path)
            budget.charge(len(name), "a tensor name")
            if name in out:
                raise CheckpointError(f"{path!r}: two tensors flatten to the same name {name!r}.")
            out[name] = array
            continue
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        else:
            continue
        if not items:
            continue
        if depth >= MAX_NESTING_DEPTH:
            raise CheckpointLimitError(
                f"{path!r}: containers nest more than {MAX_NESTING_DEPTH} levels deep; real "
                "checkpoints nest fewer than 15. Refusing the file."
            )
        visited += len(items)
        if max_nodes is not None and visited > max_nodes:
            raise CheckpointLimitError(
                f"{path!r}: walking its containers would visit more than {max_nodes:,} values "
                "(containers referenced many times over: an expansion bomb). Refusing the file."
            )
        for key, item in reversed(items):
            stack.append((item, (node, key), depth + 1))
    return out


# A deflated member may expand at most this much; real checkpoints are float noise that
# barely compresses (numpy.savez_compressed of weights gives ~1.1x), zeros give ~1000x.
MAX_COMPRESSION_RATIO = 100
# Ratios are only judged above this size, so tiny metadata members never trip the check.
RATIO_CHECK_MIN_BYTES = 1 << 20
# Upper bound on the total uncompressed size of one archive.
MAX_TOTAL_UNCOMPRESSED = 64 << 30
_ALLOWED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def is_zip(head: bytes) -> bool:
    """Whether a file starting with `head` is a zip archive (local header or empty archive)."""
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def _unsafe_name(name: str) -> bool:
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return True
    parts = name.split("/")
    if ":" in parts[0]:  # a Windows drive ("C:...")
        return True
    return any(part == ".." for part in parts)


class _OwningZipFile(zipfile.ZipFile):
    """A ZipFile over a handle from `open_regular` that closes the handle with the archive."""

    def __init__(self, handle):
        self._owned_handle = handle
        super().__init__(handle)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._owned_handle.close()


def open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    """Open `path` as a zip after validating every member's name and declared sizes."""
    path = os.fspath(path)
    handle = open_regular(path)
    try:
        size = file_size(handle)
        try:
            archive = _OwningZipFile(handle)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, struct.error,
                NotImplementedError, UnicodeDecodeError) as err:
            raise CheckpointError(
                f"{path!r} starts like a zip archive (torch.save / numpy.savez format) but its "
                f"central directory cannot be read ({err}). The file is truncated or corrupt: "
                "download it again (compare its size and sha256 with the source)."
            ) from None
    except BaseException:
        handle.close()
        raise
    try:
        _check_members(archive, path, size)
    except BaseException:
        archive.close()
        raise
    return archive


def stored_bytes(archive: zipfile.ZipFile) -> int:
    """Bytes an archive's members hold once inflated (each bounded by the zip checks)."""
    return sum(info.file_size for info in archive.infolist())


def _check_members(archive: zipfile.ZipFile, path: str, file_size: int) -> None:
    seen: set[str] = set()
    total = 0
    extents: list[tuple[int, int, str]] = []
    for info in archive.infolist():
        name = info.filename
        if _unsafe_name(name):
            raise UnsafeCheckpointError(
                f"{path!r}: archive member {name!r} has an absolute or parent-relative path "
                "(path traversal). Refusing to read this archive; nothing was extracted."
            )
        if name in seen:
            raise UnsafeCheckpointError(
                f"{path!r}: archive member {name!r} appears twice; refusing an ambiguous archive."
            )
        seen.add(name)
        if info.compress_type not in _ALLOWED_COMPRESSION:
            raise CheckpointError(
                f"{path!r}: member {name!r} uses zip compression method {info.compress_type}; "
                "only stored and deflated members (what torch and numpy write) are supported."
            )
        if info.header_offset + info.compress_size > file_size:
            raise CheckpointError(
                f"{path!r}: member {name!r} extends past the end of the file "
                f"({file_size} bytes). The file is truncated: download it again."
            )
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise CheckpointError(
                f"{path!r}: stored member {name!r} declares {info.file_size} bytes but occupies "
                f"{info.compress_size}; the archive is corrupt."
            )
        if (
            info.file_size > RATIO_CHECK_MIN_BYTES
            and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
        ):
            raise UnsafeCheckpointError(
                f"{path!r}: member {name!r} would inflate {info.compress_size} bytes to "
                f"{info.file_size} (ratio > {MAX_COMPRESSION_RATIO}); this looks like a zip "
                "bomb, refusing to decompress it."
            )
        total += info.file_size
        # 30 bytes of local header + the data: a lower bound of the member's extent.
        extents.append((info.header_offset, 30 + info.compress_size, name))
        if total > MAX_TOTAL_UNCOMPRESSED:
            raise UnsafeCheckpointError(
                f"{path!r}: members declare more than {MAX_TOTAL_UNCOMPRESSED >> 30} GiB in "
                "total; refusing (zip bomb or not a checkpoint)."
            )
    # Members whose data overlap let a small file declare the same bytes under many names
    # (an overlapping-member zip bomb); torch and numpy write every member once, in order.
    extents.sort()
    for (start, length, name), (next_start, _, next_name) in zip(
        extents, extents[1:], strict=False
    ):
        if next_start < start + length:
            raise UnsafeCheckpointError(
                f"{path!r}: members {name!r} and {next_name!r} overlap in the file; refusing an "
                "archive that stores the same bytes under several names (zip bomb)."
            )


def read_member(archive: zipfile.ZipFile, name: str, path: str = "") -> bytes:
    """Read one member, checking that its data yields exactly its declared size and CRC.

    The raw bytes are located through the local header and inflated here with an output cap
    of the declared size + 1, so a member that inflates beyond what the central directory
    declares (a disguised bomb) is caught after at most one extra byte.
    """
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path!r}: the archive has no member {name!r}.") from None
    handle = archive.fp
    if handle is None:
        raise CheckpointError(f"{path!r}: the archive is closed.")
    handle.seek(info.header_offset)
    local = handle.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise CheckpointError(f"{path!r}: member {name!r} has no valid local header; corrupt.")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    local_name = handle.read(name_len)
    if local_name.decode("utf-8", "replace") != name and local_name.decode("cp437") != name:
        raise UnsafeCheckpointError(
            f"{path!r}: member {name!r} is called {local_name!r} in its local header; refusing "
            "an archive whose two directories disagree."
        )
    handle.seek(extra_len, os.SEEK_CUR)
    raw = handle.read(info.compress_size)
    if len(raw) != info.compress_size:
        raise CheckpointError(f"{path!r}: member {name!r} is truncated; download it again.")
    if info.compress_type == zipfile.ZIP_STORED:
        data = raw
    else:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(raw, info.file_size + 1)
        except zlib.error as err:
            raise CheckpointError(f"{path!r}: member {name!r} is corrupt ({err}).") from None
        if len(data) > info.file_size:
            raise UnsafeCheckpointError(
                f"{path!r}: member {name!r} inflates beyond its declared {info.file_size} bytes "
                "(zip bomb or forged sizes); refusing it."
            )
        if not inflater.eof:
            raise CheckpointError(f"{path!r}: member {name!r} is truncated or corrupt.")
    if len(data) != info.file_size:
        raise CheckpointError(
            f"{path!r}: member {name!r} yields {len(data)} bytes, its header declares "
            f"{info.file_size}; the archive is corrupt."
        )
    if zlib.crc32(data) != info.CRC:
        raise CheckpointError(f"{path!r}: member {name!r} fails its CRC check; corrupt.")
    return data
