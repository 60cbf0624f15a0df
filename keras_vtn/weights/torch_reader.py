"""Read PyTorch checkpoints (`torch.save`) without torch and without running code from them.

A `.pth`/`.pyth`/`.bin` file is a pickle, and plain unpickling calls whatever the pickle names.
This reader uses an unpickler whose `find_class` admits only what rebuilding tensors needs: the
tensor/parameter rebuild functions, storage types, dtypes, `collections.OrderedDict` and a few
plain builtins. Each admitted name maps to a local stand-in written here (never to torch's own
function), so even an allowed name cannot reach torch code. Anything else, e.g. `os.system`,
`builtins.eval` or `subprocess.Popen`, raises `UnsafeCheckpointError` naming the global at the
moment it is looked up, before it could be called.

Admitting a name is not enough: the unpickler (the stdlib's pure-Python one, so that every
opcode can be checked) also refuses to set state on, fill or call anything the file did not
build itself, and its stand-ins are frozen and made afresh for each file, so nothing a file
does outlives its read. What a pickle may allocate, how deep it may nest and what its tensors
may materialise are bounded by its size (see `safe_zip.Budget`).

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
from keras_vtn.weights.errors import CheckpointError, CheckpointLimitError, UnsafeCheckpointError
from keras_vtn.weights.safe_zip import describe

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


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for `torch.FloatStorage` & co: a marker carrying the element dtype.

    Frozen, and made afresh for every unpickler: nothing a file does to one can reach the
    next file read in the process.
    """

    name: str
    dtype: str

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


@dataclass(frozen=True)
class _TorchDType:
    """Stand-in for a `torch.dtype` such as `torch.float32`."""

    dtype: str


@dataclass(frozen=True)
class _TypeMarker:
    """Stand-in for `torch.Tensor` / `torch.nn.Parameter` when passed as a type argument."""

    name: str


@dataclass(eq=False)
class _Storage:
    key: str
    dtype: str
    numel: int
    data: bytes | None = None
    big_endian: bool = False

    def raw(self, path: str) -> memoryview:
        """The storage's bytes (numel x itemsize of its own dtype), checked against the file."""
        if self.data is None:
            raise CheckpointError(
                f"{path!r}: storage {describe(self.key)} was referenced but never stored."
            )
        need = self.numel * _itemsize(self.dtype)
        if len(self.data) < need:
            raise CheckpointError(
                f"{path!r}: storage {describe(self.key)} holds {len(self.data)} bytes but {need} "
                "are needed; the file is truncated or corrupt."
            )
        return memoryview(self.data)[:need]


@dataclass(eq=False)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str | None = None  # set by `_rebuild_tensor_v3` (storage is untyped bytes)
    extra: dict = field(default_factory=dict)

    def materialize(self, path: str, budget: safe_zip.Budget) -> np.ndarray:
        """A writable copy of the view, paid for in `budget` before it is allocated."""
        dtype = self.dtype or self.storage.dtype
        raw = "uint16" if dtype == "bfloat16" else dtype
        target = np.dtype(raw).newbyteorder(">" if self.storage.big_endian else "<")
        data = self.storage.raw(path)
        available = len(data) // target.itemsize  # v3 tensors view untyped (byte) storage
        numel = safe_zip.element_count(self.size)
        # A dimension of size 1 is never stepped over, so its stride is irrelevant (and may
        # be anything in a hand-written file); zero it so it cannot overflow numpy's strides.
        stride = tuple(0 if n == 1 else s for n, s in zip(self.size, self.stride, strict=True))
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, stride, strict=True))
        if numel and last >= available:
            raise CheckpointError(
                f"{path!r}: a tensor of shape {self.size} (offset {self.offset}, stride "
                f"{self.stride}) reaches past the end of storage {describe(self.storage.key)} "
                f"({available} elements); the file is corrupt."
            )
        out_itemsize = 4 if dtype == "bfloat16" else target.itemsize
        budget.charge_array(numel * out_itemsize, f"a tensor of shape {self.size}")
        if numel == 0:
            return np.zeros(self.size, dtype=np.dtype(raw) if dtype != "bfloat16" else np.float32)
        base = np.frombuffer(data, dtype=target, count=available)
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=self.size,
            strides=tuple(s * target.itemsize for s in stride),
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
    return safe_zip.check_shape(values, "the pickle", name)


def _tensor(storage, storage_offset, size, stride, dtype=None) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor rebuilt from {type(storage).__name__}, not a storage.")
    (offset,) = _check_ints("a tensor's storage offset", (storage_offset,))
    size = _check_ints("a tensor's size", size)
    stride = _check_ints("a tensor's stride", stride)
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
    if not isinstance(args, tuple):
        raise CheckpointError("_rebuild_from_type_v2 with arguments that are not a tuple.")
    return func(*args)


def _torch_size(values=()):
    if not isinstance(values, (list, tuple)):
        raise CheckpointError(f"torch.Size of {describe(values)}, not a sequence of ints.")
    return tuple(values)


# Dict keys and set members are hashed, and hashing a tuple recurses in C without a depth
# check: a deeply nested tuple key crashes the interpreter. Such values are refused first.
MAX_KEY_DEPTH = 32
MAX_KEY_NODES = 10_000


def _allowed_globals() -> dict[tuple[str, str], object]:
    """The admitted globals, with fresh stand-ins: one table per unpickler, never shared."""
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


_CONTAINER_TYPES = (collections.OrderedDict, collections.Counter, set, frozenset)
_DISPATCH = dict(pickle._Unpickler.dispatch)

# Python objects cost far more than the opcodes that make them (one byte of `]` is a 56-byte
# list), so each opcode is charged what it may allocate: 64 bytes for one that can make an
# object or a memo entry, 8 for one that only moves references. A pickle may allocate at most
# PICKLE_MEMORY_FACTOR x its own size + PICKLE_MEMORY_SLACK; torch.save pickles use 11-16x.
_OPCODE_COST = [64] * 256
for _code in (
    pickle.BINGET, pickle.LONG_BINGET, pickle.GET, pickle.DUP, pickle.POP, pickle.POP_MARK,
    pickle.APPEND, pickle.APPENDS, pickle.SETITEM, pickle.SETITEMS, pickle.NONE,
    pickle.NEWTRUE, pickle.NEWFALSE, pickle.EMPTY_TUPLE, pickle.BININT1, pickle.PROTO,
    pickle.FRAME, pickle.STOP, pickle.BINPERSID, pickle.BUILD,
):
    _OPCODE_COST[_code[0]] = 8
PICKLE_MEMORY_FACTOR = 32
PICKLE_MEMORY_SLACK = 32 << 20
# MARKs open at once: one per container under construction, so a real pickle nests them
# about as deep as its containers.
MAX_OPEN_MARKS = 2 * safe_zip.MAX_NESTING_DEPTH


def _opcode(code: bytes):
    """Register the decorated method as this unpickler's handler of a pickle opcode."""

    def register(method):
        _DISPATCH[code[0]] = method
        return method

    return register


class _BoundedReader:
    """A file view that never reads past `end` and caps text lines (pickle's readline)."""

    MAX_LINE = 1 << 16

    def __init__(self, handle, end: int):
        self._handle, self._end = handle, end

    def _left(self) -> int:
        return max(self._end - self._handle.tell(), 0)

    def read(self, n: int = -1) -> bytes:
        left = self._left()
        return self._handle.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._handle.readline(min(self.MAX_LINE, self._left()))


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler admitting only tensor-rebuilding globals; storages are resolved via a callback.

    Built on the pure-Python unpickler so that every opcode that could change an object is
    checked here: a file may only call the admitted callables (REDUCE, NEWOBJ; INST and OBJ,
    which Python 3 never writes, are refused), and may only fill or set state on containers
    it built itself (APPEND(S), SETITEM(S), ADDITEMS, BUILD). The admitted globals are fresh
    stand-ins for each unpickler and frozen, so nothing a file does outlives its own read.
    """

    dispatch = _DISPATCH

    def __init__(self, file, path: str, storage_for=None, pickle_bytes: int = 0):
        super().__init__(file, encoding="utf-8")
        self._memory_limit = PICKLE_MEMORY_FACTOR * pickle_bytes + PICKLE_MEMORY_SLACK
        self._key_work = 0
        self._key_sizes: dict[int, tuple[object, int]] = {}
        self._path = path
        self._storage_for = storage_for
        self._allowed = _allowed_globals()
        self._callables = {
            id(value): value for value in self._allowed.values() if callable(value)
        }
        self._created: dict[int, object] = {}  # containers this unpickler built, kept alive

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        # Protocol < 3 pickles written by Python 3 name Python 2 modules ("__builtin__.set");
        # map them back exactly like the stdlib's default find_class does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return self._allowed[(module, name)]
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
            raise CheckpointError(f"{self._path!r}: unsupported persistent id {describe(pid)}.")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self._path!r}: persistent id without a storage type.")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError(
                f"{self._path!r}: legacy storage views (torch < 1.0) are not supported; re-save "
                "the state_dict with a recent torch."
            )
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise CheckpointError(
                f"{self._path!r}: malformed storage reference (key {describe(key)}, "
                f"{describe(numel)} elements)."
            )
        return self._storage_for(key, storage_type.dtype, numel)

    def load(self):
        """The stdlib loop, charging every opcode for what it may allocate."""
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        read, dispatch, cost = self.read, self.dispatch, _OPCODE_COST
        charged, limit = 0, self._memory_limit
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError
                charged += cost[key[0]]
                if charged > limit:
                    raise CheckpointLimitError(
                        f"{self._path!r}: the pickle would allocate more than {limit:,} bytes of "
                        f"Python objects ({PICKLE_MEMORY_FACTOR}x its size + "
                        f"{PICKLE_MEMORY_SLACK >> 20} MiB); refusing it (a memory bomb)."
                    )
                dispatch[key[0]](self)
        except pickle._Stop as stopinst:
            return stopinst.value

    @_opcode(pickle.MARK)
    def load_mark(self):
        if len(self.metastack) >= MAX_OPEN_MARKS:
            raise CheckpointLimitError(
                f"{self._path!r}: the pickle nests more than {MAX_OPEN_MARKS} levels of "
                "containers under construction; refusing it."
            )
        self.metastack.append(self.stack)
        self.stack = []
        self.append = self.stack.append

    # --- opcodes that call, fill or set state ---------------------------------------------
    def _refuse(self, what: str) -> UnsafeCheckpointError:
        return UnsafeCheckpointError(
            f"{self._path!r}: the pickle {what}. A weights file never needs that; refused, "
            "nothing from it was executed or changed."
        )

    def _check_key(self, value) -> None:
        """Refuse a dict key / set member whose hash would recurse too deeply or too long.

        Hashing a tuple visits all of it every time (tuples do not cache their hash), so the
        items visited are also charged, 8 bytes each, to the pickle's allocation limit: one
        large memoized tuple used as a key a million times is refused, not hashed for minutes.
        """
        if isinstance(value, (str, int, float, bytes)) or value is None:
            return
        cached = self._key_sizes.get(id(value))
        if cached is not None and cached[0] is value:
            self._charge_key_work(cached[1])
            return
        todo = [(value, 0)]
        seen = 0
        while todo:
            item, depth = todo.pop()
            if isinstance(item, (tuple, frozenset)):
                seen += len(item)
                if depth >= MAX_KEY_DEPTH or seen > MAX_KEY_NODES:
                    raise CheckpointLimitError(
                        f"{self._path!r}: a dict key or set member nests tuples deeper than "
                        f"{MAX_KEY_DEPTH} levels or holds more than {MAX_KEY_NODES} items; "
                        "refusing it (hashing it could crash the interpreter)."
                    )
                todo.extend((child, depth + 1) for child in item)
        self._key_sizes[id(value)] = (value, seen + 1)  # the value is kept alive with its id
        self._charge_key_work(seen + 1)

    def _charge_key_work(self, items: int) -> None:
        self._key_work += 8 * items
        if self._key_work > self._memory_limit:
            raise CheckpointLimitError(
                f"{self._path!r}: hashing the pickle's dict keys and set members would visit "
                f"more than {self._memory_limit // 8:,} items (a large key used many times); "
                "refusing it."
            )

    def _check_keys(self, values) -> None:
        for value in values:
            self._check_key(value)

    def _call(self, func, args):
        if not isinstance(args, tuple):
            raise CheckpointError(f"{self._path!r}: a call with arguments {describe(args)}.")
        if self._callables.get(id(func)) is not func:
            raise self._refuse(f"calls {describe(func)}, not a tensor or container builder")
        if func in _CONTAINER_TYPES:
            return self._build_container(func, args)
        return func(*args)

    def _build_container(self, cls, args):
        if len(args) > 1:
            raise CheckpointError(f"{self._path!r}: {cls.__name__} called with {len(args)} args.")
        source = args[0] if args else ()
        if not isinstance(source, (list, tuple, dict, set, frozenset)):
            raise CheckpointError(
                f"{self._path!r}: {cls.__name__} built from {describe(source)}, not a container."
            )
        if cls is collections.OrderedDict and not isinstance(source, dict):
            if not all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in source):
                raise CheckpointError(f"{self._path!r}: OrderedDict built from non-pairs.")
            self._check_keys(pair[0] for pair in source)
        elif not isinstance(source, dict):
            self._check_keys(source)
        obj = cls(source)
        self._created[id(obj)] = obj
        return obj

    @_opcode(pickle.REDUCE)
    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    @_opcode(pickle.NEWOBJ)
    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in (collections.OrderedDict, collections.Counter) or args != ():
            raise self._refuse(f"creates an instance of {describe(cls)} without calling it")
        self.append(self._call(cls, ()))

    @_opcode(pickle.BUILD)
    def load_build(self):
        self.stack.pop()
        inst = self.stack[-1]
        # torch's state_dict OrderedDict carries `_metadata` (module versions) as state; the
        # reader does not need it, so it is dropped rather than set on anything.
        if self._created.get(id(inst)) is not inst or not isinstance(inst, dict):
            raise self._refuse(f"sets the state of {describe(inst)} (BUILD)")

    def _own_list(self) -> list:
        """The list on top of the stack, which APPEND(S) may fill; refused if not a list."""
        target = self.stack[-1]
        if type(target) is not list:
            raise self._refuse(f"appends to {describe(target)}")
        return target

    @_opcode(pickle.APPEND)
    def load_append(self):
        value = self.stack.pop()
        self._own_list().append(value)

    @_opcode(pickle.APPENDS)
    def load_appends(self):
        items = self.pop_mark()
        self._own_list().extend(items)

    def _set_items(self, target, items) -> None:
        if not isinstance(target, dict):
            raise self._refuse(f"sets items of {describe(target)}")
        if len(items) % 2:
            raise CheckpointError(f"{self._path!r}: SETITEMS with an odd number of values.")
        self._check_keys(items[0::2])
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    @_opcode(pickle.SETITEM)
    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items(self.stack[-1], [key, value])

    @_opcode(pickle.SETITEMS)
    def load_setitems(self):
        items = self.pop_mark()
        self._set_items(self.stack[-1], items)

    @_opcode(pickle.DICT)
    def load_dict(self):
        items = self.pop_mark()
        target: dict = {}
        self._set_items(target, items)
        self.append(target)

    @_opcode(pickle.ADDITEMS)
    def load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise self._refuse(f"adds items to {describe(target)}")
        self._check_keys(items)
        target.update(items)

    @_opcode(pickle.FROZENSET)
    def load_frozenset(self):
        items = self.pop_mark()
        self._check_keys(items)
        self.append(frozenset(items))


# Opcodes that would build objects without an admitted call, or that torch.save never writes.
_REFUSED_OPCODES = {
    pickle.NEWOBJ_EX: "creates an object with keyword arguments (NEWOBJ_EX)",
    pickle.INST: "instantiates a class with the INST opcode",
    pickle.OBJ: "instantiates a class with the OBJ opcode",
    pickle.EXT1: "uses the copyreg extension registry (EXT1)",
    pickle.EXT2: "uses the copyreg extension registry (EXT2)",
    pickle.EXT4: "uses the copyreg extension registry (EXT4)",
    pickle.BYTEARRAY8: "holds a protocol-5 bytearray, which torch.save never writes",
}


def _refusal(what: str):
    def refuse(unpickler: RestrictedUnpickler):
        raise unpickler._refuse(what)

    return refuse


for _code, _what in _REFUSED_OPCODES.items():
    _opcode(_code)(_refusal(_what))


def _unpickle(data_or_file, path: str, storage_for=None, pickle_bytes: int | None = None):
    if isinstance(data_or_file, bytes):
        handle, pickle_bytes = io.BytesIO(data_or_file), len(data_or_file)
    else:
        handle = data_or_file
    try:
        return RestrictedUnpickler(handle, path, storage_for, pickle_bytes or 0).load()
    except CheckpointError as err:
        if path in str(err):
            raise
        raise type(err)(f"{path!r}: {err}") from None  # the stand-ins do not know the path
    except RecursionError:
        raise CheckpointLimitError(f"{path!r}: the pickle nests too deeply; refusing it.") from None
    except MemoryError:
        raise CheckpointLimitError(
            f"{path!r}: the pickle asks for more memory than is available; refusing it."
        ) from None
    except (EOFError, pickle.UnpicklingError, struct.error) as err:
        raise CheckpointError(
            f"{path!r}: the pickle data is truncated or corrupt ({err}); download it again."
        ) from None
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, OverflowError,
            UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path!r}: the pickle does not describe a checkpoint ({type(err).__name__}: "
            f"{describe(str(err), 200)})."
        ) from None


def flatten(obj, separator: str = ".", *, path: str = "the checkpoint",
            budget: safe_zip.Budget | None = None, max_nodes: int | None = None
            ) -> dict[str, np.ndarray]:
    """Flatten nested dicts/lists of tensors into `{'a.b.0.c': array}`; other leaves are dropped.

    Every tensor is materialised through `budget` (by default: what an empty file may make).
    """
    budget = budget if budget is not None else safe_zip.Budget(path, 0)

    def to_array(value):
        return value.materialize(path, budget) if isinstance(value, _TensorRef) else None

    return safe_zip.flatten_nested(obj, separator, to_array, path, budget, max_nodes)


def _max_nodes(pickle_bytes: int) -> int:
    # Each value in an honest pickle costs at least one byte of it; memo references let a
    # small pickle name one container many times, which a tree walk would expand.
    return 16 * pickle_bytes + 100_000


def read_torch_zip(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a `torch.save` zip archive (torch >= 1.6)."""
    path = os.fspath(path)
    with safe_zip.open_zip(path) as archive:
        names = archive.namelist()
        members = set(names)
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if not pickles:
            if any(n.endswith("/constants.pkl") for n in names):
                raise CheckpointError(
                    f"{path!r} is a TorchScript archive (torch.jit.save), not a weights file. Save "
                    "the weights with torch.save(model.state_dict(), path) and load that."
                )
            raise CheckpointError(f"{path!r} is a zip archive without a torch data.pkl.")
        if len(pickles) > 1:
            raise CheckpointError(f"{path!r} holds several torch archives: {pickles[:5]}.")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in members:
            order = safe_zip.read_member(archive, prefix + "byteorder", path).strip()
            if order not in (b"little", b"big"):
                raise CheckpointError(f"{path!r}: unknown byteorder {describe(order)}.")
            big_endian = order == b"big"
        storages: dict[str, _Storage] = {}

        def storage_for(key: str, dtype: str, numel: int) -> _Storage:
            if key in storages:
                return storages[key]
            member = f"{prefix}data/{key}"
            if member not in members:
                raise CheckpointError(f"{path!r}: storage member {describe(member)} is missing.")
            storage = _Storage(key, dtype, numel, big_endian=big_endian)
            storage.data = safe_zip.read_member(archive, member, path)
            storages[key] = storage
            return storage

        data = safe_zip.read_member(archive, pickles[0], path)
        obj = _unpickle(data, path, storage_for)
        budget = safe_zip.Budget(path, safe_zip.stored_bytes(archive))
        return flatten(obj, path=path, budget=budget, max_nodes=_max_nodes(len(data)))


def is_legacy_torch(head: bytes) -> bool:
    """A legacy torch file begins with a pickled int: PROTO n, LONG1 10 bytes (the magic)."""
    return len(head) >= 4 and head[0] == 0x80 and head[1] in (2, 3, 4, 5) and head[2] == 0x8A


def read_torch_legacy(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a `torch.save(..., _use_new_zipfile_serialization=False)` file."""
    path = os.fspath(path)
    with safe_zip.open_regular(path) as handle:
        size = safe_zip.file_size(handle)
        reader = _BoundedReader(handle, size)
        magic = _unpickle(reader, path, pickle_bytes=min(size, 1 << 20))
        if type(magic) is not int or magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(
                f"{path!r} is a pickle but not a torch checkpoint (no torch magic number)."
            )
        protocol = _unpickle(reader, path, pickle_bytes=min(size, 1 << 20))
        if type(protocol) is not int or protocol != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(
                f"{path!r}: unsupported legacy torch protocol {describe(protocol)}."
            )
        # system info; torch writes legacy storages little-endian anyway
        _unpickle(reader, path, pickle_bytes=min(size, 1 << 20))
        storages: dict[str, _Storage] = {}

        def storage_for(key: str, dtype: str, numel: int) -> _Storage:
            if key not in storages:
                storages[key] = _Storage(key, dtype, numel)
            return storages[key]

        start = handle.tell()
        # The main pickle's length is unknown until it is read: bound it by the rest of the file.
        obj = _unpickle(reader, path, storage_for, pickle_bytes=size - start)
        pickle_bytes = handle.tell() - start
        keys = _unpickle(reader, path, pickle_bytes=size - handle.tell())
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CheckpointError(f"{path!r}: malformed storage key list.")
        for key in keys:
            header = handle.read(8)
            if len(header) != 8:
                raise CheckpointError(
                    f"{path!r} is truncated: storage {describe(key)} is missing. Download it again."
                )
            (numel,) = struct.unpack("<q", header)
            storage = storages.get(key)
            if storage is None:
                raise CheckpointError(
                    f"{path!r}: storage {describe(key)} is not used by any tensor."
                )
            if storage.data is not None:
                raise CheckpointError(f"{path!r}: storage {describe(key)} is stored twice.")
            if numel < 0 or numel != storage.numel:
                raise CheckpointError(
                    f"{path!r}: storage {describe(key)} declares {numel} elements, expected "
                    f"{storage.numel}; the file is corrupt."
                )
            nbytes = numel * _itemsize(storage.dtype)
            if nbytes > size - handle.tell():
                raise CheckpointError(
                    f"{path!r} is truncated inside storage {describe(key)} ({nbytes} bytes "
                    "declared, fewer left in the file). Download it again."
                )
            storage.data = safe_zip.read_exactly(handle, nbytes, path, f"storage {key!r}")
        budget = safe_zip.Budget(path, size)
        return flatten(obj, path=path, budget=budget, max_nodes=_max_nodes(pickle_bytes))
