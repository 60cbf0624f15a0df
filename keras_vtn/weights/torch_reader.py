"""Read PyTorch checkpoints (`torch.save`) without torch and without running code from them.

A `.pth`/`.pyth`/`.bin` file is a pickle, and plain unpickling calls whatever the pickle names.
This reader uses an unpickler whose `find_class` admits only what rebuilding tensors needs: the
tensor/parameter rebuild functions, storage types, dtypes, `collections.OrderedDict` and a few
plain builtins. Each admitted name maps to a local stand-in written here (never to torch's own
function), so even an allowed name cannot reach torch code. Anything else, e.g. `os.system`,
`builtins.eval` or `subprocess.Popen`, raises `UnsafeCheckpointError` naming the global at the
moment it is looked up, before it could be called.

Both on-disk layouts are supported:
- zip (torch >= 1.6 default): `<archive>/data.pkl` plus one raw member per storage,
  `<archive>/data/<key>`;
- legacy (`_use_new_zipfile_serialization=False`): magic number, protocol version and system
  info pickles, the main pickle, a pickle of storage keys, then each storage as an int64 element
  count followed by its raw bytes.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import struct
from dataclasses import dataclass, field

import numpy as np

from keras_vtn.weights import safe_zip
from keras_vtn.weights.errors import CheckpointError, UnsafeCheckpointError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype name ("bfloat16" is decoded by hand).
_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",
}
# torch dtype attribute name -> numpy dtype name (for `_rebuild_tensor_v3`).
_TORCH_DTYPES = {
    "float64": "float64",
    "double": "float64",
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "short": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
    "complex64": "complex64",
    "complex128": "complex128",
}
_ITEMSIZE = {"bfloat16": 2}


def _itemsize(dtype: str) -> int:
    return _ITEMSIZE.get(dtype) or np.dtype(dtype).itemsize


class _StorageType:
    """Stand-in for `torch.FloatStorage` & co: a marker carrying the element dtype."""

    def __init__(self, name: str, dtype: str):
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


class _TorchDType:
    """Stand-in for a `torch.dtype` such as `torch.float32`."""

    def __init__(self, dtype: str):
        self.dtype = dtype


class _TypeMarker:
    """Stand-in for `torch.Tensor` / `torch.nn.Parameter` when passed as a type argument."""

    def __init__(self, name: str):
        self.name = name


@dataclass
class _Storage:
    key: str
    dtype: str
    numel: int
    data: bytes | None = None
    big_endian: bool = False

    def array(self) -> np.ndarray:
        """The whole storage as a flat numpy array of its own dtype (bf16 as uint16)."""
        if self.data is None:
            raise CheckpointError(f"storage {self.key!r} was referenced but never stored.")
        raw_dtype = "uint16" if self.dtype == "bfloat16" else self.dtype
        dtype = np.dtype(raw_dtype)
        if self.big_endian:
            dtype = dtype.newbyteorder(">")
        need = self.numel * dtype.itemsize
        if len(self.data) < need:
            raise CheckpointError(
                f"storage {self.key!r} holds {len(self.data)} bytes but {need} are needed; the "
                "file is truncated or corrupt."
            )
        return np.frombuffer(self.data, dtype=dtype, count=self.numel)


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str | None = None  # set by `_rebuild_tensor_v3` (storage is untyped bytes)
    extra: dict = field(default_factory=dict)

    def materialize(self) -> np.ndarray:
        dtype = self.dtype or self.storage.dtype
        base = self.storage.array()
        if self.dtype is not None and self.dtype != self.storage.dtype:
            # v3 tensors view untyped (byte) storage: reinterpret the bytes.
            raw = "uint16" if dtype == "bfloat16" else dtype
            target = np.dtype(raw).newbyteorder(">" if self.storage.big_endian else "<")
            nbytes = base.nbytes - base.nbytes % target.itemsize
            base = np.frombuffer(base.tobytes()[:nbytes], dtype=target)
        pairs = zip(self.size, self.stride, strict=True)
        numel_needed = self.offset + 1 + sum((n - 1) * s for n, s in pairs)
        if any(n == 0 for n in self.size):
            numel_needed = 0
        if numel_needed > base.size:
            raise CheckpointError(
                f"a tensor of shape {self.size} (offset {self.offset}, stride {self.stride}) "
                f"reaches past the end of storage {self.storage.key!r} ({base.size} elements); "
                "the file is corrupt."
            )
        if numel_needed == 0:
            out = np.zeros(self.size, dtype=base.dtype)
        else:
            item = base.dtype.itemsize
            view = np.lib.stride_tricks.as_strided(
                base[self.offset :],
                shape=self.size,
                strides=tuple(s * item for s in self.stride),
                writeable=False,
            )
            out = np.array(view)  # copy: independent of shared storages, writable
        if out.dtype.byteorder == ">":
            out = out.astype(out.dtype.newbyteorder("="))
        if dtype == "bfloat16":
            out = bfloat16_bits_to_float32(out)
        return out


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact bfloat16 -> float32: a bfloat16 is the upper half of a float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _check_ints(name: str, values) -> tuple[int, ...]:
    values = tuple(values)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise CheckpointError(f"{name} must be non-negative integers, got {values!r}.")
    return values


def _tensor(storage, storage_offset, size, stride, dtype=None) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor rebuilt from {type(storage).__name__}, not a storage.")
    (offset,) = _check_ints("storage offset", (storage_offset,))
    size = _check_ints("tensor size", size)
    stride = _check_ints("tensor stride", stride)
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} differ in length.")
    return _TensorRef(storage, offset, size, stride, dtype)


# Local stand-ins for torch's rebuild functions (same signatures; they only record views).
def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage,
    storage_offset,
    size,
    stride,
    requires_grad=False,
    backward_hooks=None,
    dtype=None,
    metadata=None,
):
    if not isinstance(dtype, _TorchDType):
        raise CheckpointError("_rebuild_tensor_v3 without a torch dtype.")
    return _tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise CheckpointError("a Parameter must wrap a tensor.")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data)


_TENSOR_BUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
                    _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func, new_type, args, state):
    # torch wraps tensor subclasses (and tensors carrying attributes) this way; only our own
    # builders are accepted as `func`, and the subclass type and its state are dropped.
    if not any(func is builder for builder in _TENSOR_BUILDERS):
        raise UnsafeCheckpointError("_rebuild_from_type_v2 may only wrap a tensor rebuilder.")
    if not isinstance(new_type, _TypeMarker):
        raise UnsafeCheckpointError("_rebuild_from_type_v2 with a type that is not a torch tensor.")
    return func(*args)


def _torch_size(values=()):
    return tuple(values)


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        # MultiStepLR.state_dict() keeps its milestones in a Counter (a dict); training
        # checkpoints that save the scheduler (LAPS' ckpt_e*.pth) contain one.
        ("collections", "Counter"): collections.Counter,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Size"): _torch_size,
    }
    for name, dtype in _STORAGE_DTYPES.items():
        marker = _StorageType(name, dtype)
        allowed[("torch", name)] = marker
        allowed[("torch.storage", name)] = marker
    for name, dtype in _TORCH_DTYPES.items():
        allowed[("torch", name)] = _TorchDType(dtype)
    for module, name in (
        ("torch", "Tensor"),
        ("torch._tensor", "Tensor"),
        ("torch.nn.parameter", "Parameter"),
        ("torch.nn", "Parameter"),
    ):
        allowed[(module, name)] = _TypeMarker(f"{module}.{name}")
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler admitting only tensor-rebuilding globals; storages are resolved via a callback."""

    def __init__(self, file, path: str, storage_for=None):
        super().__init__(file)
        self._path = path
        self._storage_for = storage_for

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        # Protocol < 3 pickles written by Python 3 name Python 2 modules ("__builtin__.set");
        # map them back exactly like the stdlib's default find_class does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._path!r} references the Python global '{module}.{name}', which a weights "
                "file has no reason to contain. keras_vtn only admits tensors, storages and plain "
                "containers, so it refused to load the file; nothing from it was executed. Only "
                "load checkpoints from sources you trust (re-save plain state_dicts if needed)."
            ) from None

    def persistent_load(self, pid):
        if self._storage_for is None:
            raise CheckpointError(f"{self._path!r}: unexpected persistent id in a metadata pickle.")
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointError(f"{self._path!r}: unsupported persistent id {pid!r:.80}.")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self._path!r}: persistent id without a storage type.")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError(
                f"{self._path!r}: legacy storage views (torch < 1.0) are not supported; re-save "
                "the state_dict with a recent torch."
            )
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self._path!r}: malformed storage reference {pid!r:.80}.")
        return self._storage_for(str(key), storage_type.dtype, numel)


def _unpickle(data_or_file, path: str, storage_for=None):
    handle = io.BytesIO(data_or_file) if isinstance(data_or_file, bytes) else data_or_file
    try:
        return RestrictedUnpickler(handle, path, storage_for).load()
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{path!r}: the pickle nests too deeply; refusing it.") from None
    except (EOFError, pickle.UnpicklingError, struct.error) as err:
        raise CheckpointError(
            f"{path!r}: the pickle data is truncated or corrupt ({err}); download it again."
        ) from None
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, MemoryError) as err:
        raise CheckpointError(
            f"{path!r}: the pickle does not describe a checkpoint ({type(err).__name__}: {err})."
        ) from None


def flatten(obj, separator: str = ".") -> dict[str, np.ndarray]:
    """Flatten nested dicts/lists of tensors into `{'a.b.0.c': array}`; other leaves are dropped."""
    out: dict[str, np.ndarray] = {}

    def visit(value, prefix: str) -> None:
        if isinstance(value, _TensorRef):
            if prefix in out:
                raise CheckpointError(f"two tensors flatten to the same name {prefix!r}.")
            out[prefix] = value.materialize()
            return
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, (list, tuple)):
            items = enumerate(value)
        else:
            return
        for key, item in items:
            visit(item, f"{prefix}{separator}{key}" if prefix else str(key))

    visit(obj, "")
    return out


def read_torch_zip(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a `torch.save` zip archive (torch >= 1.6)."""
    path = os.fspath(path)
    with safe_zip.open_zip(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if not pickles:
            if any(n.endswith("/constants.pkl") for n in names):
                raise CheckpointError(
                    f"{path!r} is a TorchScript archive (torch.jit.save), not a weights file. Save "
                    "the weights with torch.save(model.state_dict(), path) and load that."
                )
            raise CheckpointError(f"{path!r} is a zip archive without a torch data.pkl.")
        if len(pickles) > 1:
            raise CheckpointError(f"{path!r} holds several torch archives: {pickles}.")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in names:
            order = safe_zip.read_member(archive, prefix + "byteorder", path).strip()
            if order not in (b"little", b"big"):
                raise CheckpointError(f"{path!r}: unknown byteorder {order!r}.")
            big_endian = order == b"big"
        storages: dict[str, _Storage] = {}

        def storage_for(key: str, dtype: str, numel: int) -> _Storage:
            if key in storages:
                return storages[key]
            member = f"{prefix}data/{key}"
            if member not in names:
                raise CheckpointError(f"{path!r}: storage member {member!r} is missing.")
            storage = _Storage(key, dtype, numel, big_endian=big_endian)
            storage.data = safe_zip.read_member(archive, member, path)
            storages[key] = storage
            return storage

        obj = _unpickle(safe_zip.read_member(archive, pickles[0], path), path, storage_for)
        return flatten(obj)


def is_legacy_torch(head: bytes) -> bool:
    """A legacy torch file begins with a pickled int: PROTO n, LONG1 10 bytes (the magic)."""
    return len(head) >= 4 and head[0] == 0x80 and head[1] in (2, 3, 4, 5) and head[2] == 0x8A


def read_torch_legacy(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a `torch.save(..., _use_new_zipfile_serialization=False)` file."""
    path = os.fspath(path)
    with open(path, "rb") as handle:
        magic = _unpickle(handle, path)
        if magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(
                f"{path!r} is a pickle but not a torch checkpoint (no torch magic number)."
            )
        protocol = _unpickle(handle, path)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(f"{path!r}: unsupported legacy torch protocol {protocol!r}.")
        _unpickle(handle, path)  # system info; torch writes legacy storages little-endian anyway
        storages: dict[str, _Storage] = {}

        def storage_for(key: str, dtype: str, numel: int) -> _Storage:
            if key not in storages:
                storages[key] = _Storage(key, dtype, numel)
            return storages[key]

        obj = _unpickle(handle, path, storage_for)
        keys = _unpickle(handle, path)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CheckpointError(f"{path!r}: malformed storage key list.")
        for key in keys:
            header = handle.read(8)
            if len(header) != 8:
                raise CheckpointError(
                    f"{path!r} is truncated: storage {key!r} is missing. Download it again."
                )
            (numel,) = struct.unpack("<q", header)
            storage = storages.get(key)
            if storage is None:
                raise CheckpointError(f"{path!r}: storage {key!r} is not used by any tensor.")
            nbytes = numel * _itemsize(storage.dtype)
            if numel < 0 or numel != storage.numel:
                raise CheckpointError(
                    f"{path!r}: storage {key!r} declares {numel} elements, expected "
                    f"{storage.numel}; the file is corrupt."
                )
            storage.data = handle.read(nbytes)
            if len(storage.data) != nbytes:
                raise CheckpointError(
                    f"{path!r} is truncated inside storage {key!r}. Download it again."
                )
        return flatten(obj)
