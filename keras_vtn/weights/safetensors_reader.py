"""Read `.safetensors` files with numpy (no `safetensors` import).

Layout: an 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then one byte buffer; offsets are relative to the buffer start.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from keras_vtn.weights import safe_zip
from keras_vtn.weights.errors import CheckpointError, UnsafeCheckpointError
from keras_vtn.weights.safe_zip import describe
from keras_vtn.weights.torch_reader import bfloat16_bits_to_float32

_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8",
    "BOOL": "?",
}
MAX_HEADER_BYTES = 100 << 20


def looks_like_safetensors(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= min(file_size - 8, MAX_HEADER_BYTES) and head[8:9] == b"{"


def _entries(header: dict, path: str, buffer_size: int) -> list[tuple[str, str, tuple, int, int]]:
    """Validated `(name, dtype, shape, begin, end)` of every tensor, before anything is read."""
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise CheckpointError(f"{path!r}: tensor {describe(name)} has no header entry dict.")
        dtype_name, offsets = info.get("dtype"), info.get("data_offsets")
        if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
            raise CheckpointError(
                f"{path!r}: tensor {describe(name)} has an unsupported dtype "
                f"{describe(dtype_name)}."
            )
        shape = safe_zip.check_shape(info.get("shape"), path, f"tensor {describe(name)}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(x) is int for x in offsets)
        ):
            raise CheckpointError(
                f"{path!r}: tensor {describe(name)} has malformed data_offsets "
                f"{describe(offsets)}."
            )
        begin, end = offsets
        if not 0 <= begin <= end <= buffer_size:
            raise CheckpointError(
                f"{path!r}: tensor {describe(name)} lies outside the data buffer; the file is "
                "truncated or corrupt."
            )
        need = safe_zip.element_count(shape) * np.dtype(_DTYPES[dtype_name]).itemsize
        if end - begin != need:
            raise CheckpointError(
                f"{path!r}: tensor {describe(name)} of shape {shape} needs {need} bytes but "
                f"spans {end - begin}; the file is corrupt."
            )
        entries.append((name, dtype_name, shape, begin, end))
    # Each byte of the buffer belongs to at most one tensor (what the safetensors library
    # itself writes and checks): overlapping ranges would let a small file describe the same
    # bytes under thousands of names.
    ranges = sorted((begin, end, name) for name, _, _, begin, end in entries if end > begin)
    for (_, end, name), (next_begin, _, next_name) in zip(ranges, ranges[1:], strict=False):
        if next_begin < end:
            raise UnsafeCheckpointError(
                f"{path!r}: tensors {describe(name)} and {describe(next_name)} overlap in the "
                "data buffer; refusing a file that stores the same bytes under several names."
            )
    return entries


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a `.safetensors` file."""
    path = os.fspath(path)
    with safe_zip.open_regular(path) as handle:
        file_size = safe_zip.file_size(handle)
        head = handle.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path!r} is too short to be a safetensors file.")
        (length,) = struct.unpack("<Q", head)
        if length > min(file_size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(
                f"{path!r}: safetensors header length {length} exceeds the file; truncated or "
                "not a safetensors file."
            )
        raw_header = safe_zip.read_exactly(handle, length, path, "the safetensors header")
        header = safe_zip.load_json(raw_header, path, "safetensors header")
        if not isinstance(header, dict):
            raise CheckpointError(f"{path!r}: the safetensors header is not a JSON object.")
        entries = _entries(header, path, file_size - 8 - length)
        budget = safe_zip.Budget(path, file_size)
        out: dict[str, np.ndarray] = {}
        for name, dtype_name, shape, begin, end in entries:
            dtype = np.dtype(_DTYPES[dtype_name])
            bf16 = dtype_name == "BF16"
            budget.charge_array((end - begin) * (2 if bf16 else 1), f"tensor {describe(name)}")
            handle.seek(8 + length + begin)
            data = safe_zip.read_exactly(handle, end - begin, path, f"tensor {describe(name)}")
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
            array = array.astype(dtype.newbyteorder("="))
            out[name] = bfloat16_bits_to_float32(array) if bf16 else array
        return out
