"""Writers of original-format checkpoint files without torch or flax (for hostile-file tests).

`write_torch_zip` writes what `torch.save(state_dict)` writes (zip layout, protocol-2 pickle of
`_rebuild_tensor_v2` calls on persistent storages); `write_flax_msgpack` what
`flax.serialization.msgpack_serialize` writes. Both take a flat `{name: array}` dict; the
readers flatten nested containers to the same names, so a read-modify-write round trip keeps
every name.
"""

from __future__ import annotations

import resource
import struct
import time
import zipfile

import msgpack
import numpy as np
import pytest

from keras_vtn.weights import CheckpointError

_STORAGES = {
    "float32": "FloatStorage",
    "float64": "DoubleStorage",
    "float16": "HalfStorage",
    "int64": "LongStorage",
    "int32": "IntStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
}


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def _ints(values) -> bytes:
    return b"(" + b"".join(_int(int(v)) for v in values) + b"t"  # MARK ... TUPLE


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def write_torch_zip(path, state: dict) -> None:
    """`torch.save(state)` for a flat dict of numpy arrays (other values are dropped)."""
    pickle = [b"\x80\x02}("]  # PROTO 2, EMPTY_DICT, MARK
    storages = {}
    for index, (name, value) in enumerate(state.items()):
        if not isinstance(value, (np.ndarray, np.generic)):
            continue
        array = np.array(value, order="C")  # ascontiguousarray would make 0-d arrays 1-d
        key = str(index)
        storages[key] = array.astype(array.dtype.newbyteorder("<")).tobytes()
        strides = [s // array.itemsize for s in array.strides] if array.size else [1] * array.ndim
        pickle += [
            _text(name),
            _global("torch._utils", "_rebuild_tensor_v2"),
            b"(",
            b"(" + _text("storage") + _global("torch", _STORAGES[array.dtype.name]),
            _text(key) + _text("cpu") + _int(array.size) + b"tQ",  # TUPLE, BINPERSID
            _int(0),
            _ints(array.shape),
            _ints(strides),
            b"\x89",  # NEWFALSE: requires_grad
            _global("collections", "OrderedDict") + b")R",  # OrderedDict()
            b"tR",  # TUPLE, REDUCE
        ]
    pickle.append(b"u.")  # SETITEMS, STOP
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"".join(pickle))
        archive.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")


def write_flax_msgpack(path, state: dict) -> None:
    """flax's msgpack of the tree that the '/'-joined names of `state` describe."""
    tree: dict = {}
    for name, value in state.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = np.asarray(value)

    def ext(value):
        array = np.array(value, order="C")
        payload = msgpack.packb(
            (list(array.shape), array.dtype.name, array.tobytes("C")), use_bin_type=True
        )
        return msgpack.ExtType(1 if isinstance(value, np.ndarray) else 3, payload)

    with open(path, "wb") as handle:
        handle.write(msgpack.packb(tree, default=ext, strict_types=True))


def refused(build, *needles: str, seconds: float = 5.0, megabytes: float = 300.0) -> str:
    """Calls `build()`, which must raise CheckpointError quickly, within bounded memory, and
    with every `needles` string in its message; returns the message."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        build()
    elapsed = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    message = str(info.value)
    assert elapsed < seconds, f"refused only after {elapsed:.1f} s: {message}"
    assert grown < megabytes, f"peak memory grew by {grown:.0f} MB before refusing: {message}"
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    return message
