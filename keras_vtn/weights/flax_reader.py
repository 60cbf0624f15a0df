"""Read Flax msgpack checkpoints (scenic `TrainState`, `flax.serialization`) with numpy only.

`flax.serialization.msgpack_serialize` writes the state dict with msgpack, encoding arrays as
msgpack extension types: code 1 = ndarray, code 2 = Python complex, code 3 = numpy scalar,
code 4 = tuple (newer flax). An ndarray payload is itself a msgpack triple
`(shape, dtype name, C-order bytes)`. Arrays larger than 1 GiB are split into
`{"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}` dicts. Nothing here
imports jax or flax, and msgpack decoding cannot execute code.
"""

from __future__ import annotations

import os

import msgpack
import numpy as np

from keras_vtn.weights.errors import CheckpointError
from keras_vtn.weights.torch_reader import bfloat16_bits_to_float32

EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR, EXT_TUPLE = 1, 2, 3, 4
CHUNKED_MARKER = "__msgpack_chunked_array__"
_DTYPES = {
    "float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
}


def is_msgpack_map(head: bytes) -> bool:
    """A Flax checkpoint is a msgpack map: fixmap (0x81-0x8f), map16 (0xde) or map32 (0xdf)."""
    return bool(head) and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


def _ndarray_from_bytes(payload: bytes) -> np.ndarray:
    try:
        shape, dtype_name, buffer = msgpack.unpackb(payload, raw=True)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise CheckpointError(f"malformed array record in the msgpack file ({err}).") from None
    name = dtype_name.decode("ascii", "replace") if isinstance(dtype_name, bytes) else ""
    if name not in _DTYPES:
        raise CheckpointError(f"unsupported array dtype {dtype_name!r} in the msgpack file.")
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(n, int) and n >= 0 for n in shape
    ):
        raise CheckpointError(f"malformed array shape {shape!r} in the msgpack file.")
    if not isinstance(buffer, bytes):
        raise CheckpointError("array record without a byte buffer in the msgpack file.")
    raw = np.dtype("<u2" if name == "bfloat16" else name).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    if len(buffer) != count * raw.itemsize:
        raise CheckpointError(
            f"array of shape {tuple(shape)} {name} needs {count * raw.itemsize} bytes, the "
            f"msgpack record has {len(buffer)}; the file is corrupt."
        )
    array = np.frombuffer(buffer, dtype=raw).reshape(shape).astype(raw.newbyteorder("="))
    return bfloat16_bits_to_float32(array) if name == "bfloat16" else array


def _ext_hook(code: int, payload: bytes):
    if code in (EXT_NDARRAY, EXT_NPSCALAR):
        return _ndarray_from_bytes(payload)
    if code == EXT_COMPLEX:
        real, imag = msgpack.unpackb(payload)
        return complex(real, imag)
    if code == EXT_TUPLE:
        return tuple(msgpack.unpackb(payload, raw=False, ext_hook=_ext_hook))
    raise CheckpointError(f"unknown msgpack extension type {code}; not a Flax checkpoint.")


def _unchunk(tree):
    if isinstance(tree, dict):
        if tree.get(CHUNKED_MARKER):
            try:
                shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
                chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
                return np.concatenate([np.ravel(c) for c in chunks]).reshape(shape)
            except (KeyError, TypeError, ValueError) as err:
                raise CheckpointError(f"malformed chunked array in msgpack file ({err}).") from None
        return {key: _unchunk(value) for key, value in tree.items()}
    return tree


def flatten_tree(tree, separator: str = "/") -> dict[str, np.ndarray]:
    """Flatten a nested dict into `{'a/b/c': array}`; scalars and strings are dropped."""
    out: dict[str, np.ndarray] = {}

    def visit(value, prefix: str) -> None:
        if isinstance(value, np.ndarray):
            out[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{prefix}{separator}{key}" if prefix else str(key))
        elif isinstance(value, (list, tuple)):
            for key, item in enumerate(value):
                visit(item, f"{prefix}{separator}{key}" if prefix else str(key))

    visit(tree, "")
    return out


def read_flax_msgpack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a Flax msgpack checkpoint into `{'optimizer/target/...': array}`."""
    path = os.fspath(path)
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except CheckpointError as err:
        raise CheckpointError(f"{path!r}: {err}") from None
    except msgpack.ExtraData:
        raise CheckpointError(
            f"{path!r}: trailing bytes after the msgpack state; the file is corrupt."
        ) from None
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise CheckpointError(
            f"{path!r} looks like a Flax msgpack checkpoint but cannot be decoded ({err}); it is "
            "truncated or corrupt: download it again."
        ) from None
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path!r}: a Flax checkpoint must hold a dict at the top level.")
    return flatten_tree(_unchunk(tree))
