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

from keras_vtn.weights import safe_zip
from keras_vtn.weights.errors import CheckpointError, CheckpointLimitError
from keras_vtn.weights.safe_zip import describe
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


# An ext-type-4 payload (a tuple) is decoded by a nested `msgpack.unpackb`, whose C decoder
# keeps a ~40 KB stack on the C stack: 200 nested tuples overflow it and kill the process.
MAX_EXT_DEPTH = 8


def _ndarray_from_bytes(payload: bytes, path: str, budget: safe_zip.Budget) -> np.ndarray:
    try:
        record = msgpack.unpackb(payload, raw=True)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise CheckpointError(f"{path!r}: malformed array record ({err}).") from None
    if not isinstance(record, (list, tuple)) or len(record) != 3:
        raise CheckpointError(f"{path!r}: an array record is {describe(record)}, not a triple.")
    shape, dtype_name, buffer = record
    name = dtype_name.decode("ascii", "replace") if isinstance(dtype_name, bytes) else ""
    if name not in _DTYPES:
        raise CheckpointError(f"{path!r}: unsupported array dtype {describe(dtype_name)}.")
    shape = safe_zip.check_shape(shape, path, "an array")
    if not isinstance(buffer, bytes):
        raise CheckpointError(f"{path!r}: an array record without a byte buffer.")
    raw = np.dtype("<u2" if name == "bfloat16" else name).newbyteorder("<")
    nbytes = safe_zip.element_count(shape) * raw.itemsize
    if len(buffer) != nbytes:
        raise CheckpointError(
            f"{path!r}: an array of shape {shape} {name} needs {nbytes} bytes, the msgpack "
            f"record has {len(buffer)}; the file is corrupt."
        )
    budget.charge_array(nbytes * (2 if name == "bfloat16" else 1), f"an array of shape {shape}")
    array = np.frombuffer(buffer, dtype=raw).reshape(shape).astype(raw.newbyteorder("="))
    return bfloat16_bits_to_float32(array) if name == "bfloat16" else array


# What a decoded msgpack container costs in Python objects besides its items: one byte of
# msgpack (an empty map or array) becomes a 64-byte dict or 56-byte list.
CONTAINER_OVERHEAD, ITEM_OVERHEAD = 64, 8


def _container_hooks(budget: safe_zip.Budget) -> dict:
    """msgpack hooks that charge every decoded map and array to the read's budget."""

    def object_hook(value: dict) -> dict:
        budget.charge(CONTAINER_OVERHEAD + 12 * ITEM_OVERHEAD * len(value), "a msgpack map")
        return value

    def list_hook(value: list) -> list:
        budget.charge(CONTAINER_OVERHEAD + ITEM_OVERHEAD * len(value), "a msgpack array")
        return value

    return {"object_hook": object_hook, "list_hook": list_hook}


def _ext_hook(path: str, budget: safe_zip.Budget):
    depth = 0
    hooks = _container_hooks(budget)

    def hook(code: int, payload: bytes):
        nonlocal depth
        if code in (EXT_NDARRAY, EXT_NPSCALAR):
            return _ndarray_from_bytes(payload, path, budget)
        if code == EXT_COMPLEX:
            parts = msgpack.unpackb(payload)
            if not isinstance(parts, (list, tuple)) or len(parts) != 2:
                raise CheckpointError(f"{path!r}: a complex number record is malformed.")
            if not all(type(p) in (int, float) for p in parts):
                raise CheckpointError(f"{path!r}: a complex number record is malformed.")
            return complex(*parts)
        if code == EXT_TUPLE:
            if depth >= MAX_EXT_DEPTH:
                raise CheckpointLimitError(
                    f"{path!r}: tuples nest more than {MAX_EXT_DEPTH} levels deep (msgpack "
                    "extension 4 inside extension 4); refusing the file before the decoder "
                    "runs out of stack."
                )
            depth += 1
            try:
                return tuple(msgpack.unpackb(payload, raw=False, ext_hook=hook, **hooks))
            finally:
                depth -= 1
        raise CheckpointError(f"{path!r}: unknown msgpack extension type {code}; not Flax.")

    return hook


def _chunked_array(tree: dict, path: str, budget: safe_zip.Budget) -> np.ndarray:
    shape_map, chunk_map = tree.get("shape"), tree.get("chunks")
    if not isinstance(shape_map, dict) or not isinstance(chunk_map, dict):
        raise CheckpointError(f"{path!r}: malformed chunked array (no shape/chunks maps).")
    if len(shape_map) > safe_zip.MAX_DIMS:
        raise CheckpointLimitError(
            f"{path!r}: a chunked array declares {len(shape_map)} dimensions; at most "
            f"{safe_zip.MAX_DIMS} are allowed."
        )
    try:
        shape = [shape_map[str(i)] for i in range(len(shape_map))]
        chunks = [chunk_map[str(i)] for i in range(len(chunk_map))]
    except KeyError as err:
        raise CheckpointError(f"{path!r}: malformed chunked array (missing {err}).") from None
    shape = safe_zip.check_shape(shape, path, "a chunked array")
    if not chunks or not all(isinstance(c, np.ndarray) for c in chunks):
        raise CheckpointError(f"{path!r}: malformed chunked array (chunks are not arrays).")
    if sum(c.size for c in chunks) != safe_zip.element_count(shape):
        raise CheckpointError(
            f"{path!r}: a chunked array of shape {shape} has {sum(c.size for c in chunks)} "
            "elements in its chunks; the file is corrupt."
        )
    budget.charge_array(sum(c.nbytes for c in chunks), f"a chunked array of shape {shape}")
    try:
        return np.concatenate([np.ravel(c) for c in chunks]).reshape(shape)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path!r}: malformed chunked array ({err}).") from None


def flatten_tree(tree, separator: str = "/", *, path: str = "the checkpoint",
                 budget: safe_zip.Budget | None = None) -> dict[str, np.ndarray]:
    """Flatten a nested dict into `{'a/b/c': array}`; scalars and strings are dropped.

    Flax's chunked arrays (`{"__msgpack_chunked_array__": True, ...}`) are joined back.
    """
    budget = budget if budget is not None else safe_zip.Budget(path, 0)

    def to_array(value):
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, dict) and value.get(CHUNKED_MARKER) is True:
            return _chunked_array(value, path, budget)
        return None

    return safe_zip.flatten_nested(tree, separator, to_array, path, budget)


def read_flax_msgpack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a Flax msgpack checkpoint into `{'optimizer/target/...': array}`."""
    path = os.fspath(path)
    with safe_zip.open_regular(path) as handle:
        data = safe_zip.read_exactly(handle, safe_zip.file_size(handle), path, "the file")
    budget = safe_zip.Budget(path, len(data))
    try:
        tree = msgpack.unpackb(
            data,
            ext_hook=_ext_hook(path, budget),
            raw=False,
            strict_map_key=False,
            **_container_hooks(budget),
        )
    except CheckpointError:
        raise
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
    return flatten_tree(tree, path=path, budget=budget)
