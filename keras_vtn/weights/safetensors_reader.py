"""Read `.safetensors` files with numpy (no `safetensors` import).

Layout: an 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then one byte buffer; offsets are relative to the buffer start.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from keras_vtn.weights.errors import CheckpointError
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


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a `.safetensors` file."""
    path = os.fspath(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path!r} is too short to be a safetensors file.")
        (length,) = struct.unpack("<Q", head)
        if length > min(file_size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(
                f"{path!r}: safetensors header length {length} exceeds the file; truncated or "
                "not a safetensors file."
            )
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path!r}: unreadable safetensors header ({err}).") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path!r}: the safetensors header is not a JSON object.")
        buffer_size = file_size - 8 - length
        out: dict[str, np.ndarray] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = np.dtype(_DTYPES[info["dtype"]])
                shape = [int(n) for n in info["shape"]]
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(
                    f"{path!r}: tensor {name!r} has an unsupported or malformed header entry "
                    f"{info!r:.200}."
                ) from None
            count = int(np.prod(shape, dtype=np.int64))
            if min(shape, default=0) < 0 or not 0 <= begin <= end <= buffer_size:
                raise CheckpointError(
                    f"{path!r}: tensor {name!r} lies outside the data buffer; the file is "
                    "truncated or corrupt."
                )
            if end - begin != count * dtype.itemsize:
                raise CheckpointError(
                    f"{path!r}: tensor {name!r} of shape {shape} needs {count * dtype.itemsize} "
                    f"bytes but spans {end - begin}; the file is corrupt."
                )
            handle.seek(8 + length + begin)
            array = np.frombuffer(handle.read(end - begin), dtype=dtype).reshape(shape)
            array = array.astype(dtype.newbyteorder("="))
            out[name] = bfloat16_bits_to_float32(array) if info["dtype"] == "BF16" else array
        return out
