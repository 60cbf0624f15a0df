"""Zip archives read defensively: no traversal names, no bombs, no silent truncation.

`torch.save` (>= 1.6) and `numpy.savez` both write zip files. Nothing is ever extracted to
disk, but a hostile archive can still exhaust memory (a "zip bomb": a small member that
inflates to gigabytes) or carry member names that would escape a folder if some other tool
extracted it; both are refused up front from the central directory, before any member is read.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib

from keras_vtn.weights.errors import CheckpointError, UnsafeCheckpointError

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


def open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    """Open `path` as a zip after validating every member's name and declared sizes."""
    path = os.fspath(path)
    file_size = os.path.getsize(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as err:
        raise CheckpointError(
            f"{path!r} starts like a zip archive (torch.save / numpy.savez format) but its "
            f"central directory cannot be read ({err}). The file is truncated or corrupt: "
            "download it again (compare its size and sha256 with the source)."
        ) from None
    try:
        _check_members(archive, path, file_size)
    except BaseException:
        archive.close()
        raise
    return archive


def _check_members(archive: zipfile.ZipFile, path: str, file_size: int) -> None:
    seen: set[str] = set()
    total = 0
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
        if total > MAX_TOTAL_UNCOMPRESSED:
            raise UnsafeCheckpointError(
                f"{path!r}: members declare more than {MAX_TOTAL_UNCOMPRESSED >> 30} GiB in "
                "total; refusing (zip bomb or not a checkpoint)."
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
