"""Writers of hostile (and honest) checkpoint files, byte by byte, without torch.

`Pickle` assembles protocol-2 pickles opcode by opcode, so a test can say exactly what a
file does (call a global, set state with BUILD, alias through the memo, nest 5,000 deep)
including things no Python pickler would write. `torch_zip` / `torch_legacy` wrap a pickle in
the two `torch.save` layouts; `safetensors_bytes`, `npy_bytes` write the other formats from
raw parts so headers can lie.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile

import msgpack
import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class G:
    """A pickled global `module.name` (GLOBAL opcode)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class R:
    """`func(*args)` through REDUCE."""

    def __init__(self, func, *args):
        self.func, self.args = func, args


class B:
    """`obj` followed by `state` and BUILD."""

    def __init__(self, obj, state):
        self.obj, self.state = obj, state


class Pid:
    """A persistent id (BINPERSID): how torch refers to a storage."""

    def __init__(self, value):
        self.value = value


class Put:
    """`obj`, then memoize it at `index` (BINPUT / LONG_BINPUT)."""

    def __init__(self, obj, index: int):
        self.obj, self.index = obj, index


class Get:
    """The object memoized at `index` (BINGET / LONG_BINGET)."""

    def __init__(self, index: int):
        self.index = index


class Raw:
    """Opcodes spliced in verbatim."""

    def __init__(self, data: bytes):
        self.data = data


def _int(value: int) -> bytes:
    if -(1 << 31) <= value < (1 << 31):
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    if len(data) < 256:
        return b"\x8a" + bytes([len(data)]) + data
    return b"\x8b" + struct.pack("<i", len(data)) + data


def emit(obj) -> bytes:
    """Opcodes that push `obj` (plain data or the markers above) onto the unpickler's stack."""
    if isinstance(obj, Raw):
        return obj.data
    if isinstance(obj, G):
        return b"c" + f"{obj.module}\n{obj.name}\n".encode()
    if isinstance(obj, R):
        return emit(obj.func) + emit(tuple(obj.args)) + b"R"
    if isinstance(obj, B):
        return emit(obj.obj) + emit(obj.state) + b"b"
    if isinstance(obj, Pid):
        return emit(obj.value) + b"Q"
    if isinstance(obj, Put):
        small = obj.index < 256
        index = b"q" + bytes([obj.index]) if small else b"r" + struct.pack("<I", obj.index)
        return emit(obj.obj) + index
    if isinstance(obj, Get):
        return b"h" + bytes([obj.index]) if obj.index < 256 else b"j" + struct.pack("<I", obj.index)
    if obj is None:
        return b"N"
    if obj is True:
        return b"\x88"
    if obj is False:
        return b"\x89"
    if isinstance(obj, int):
        return _int(obj)
    if isinstance(obj, float):
        return b"G" + struct.pack(">d", obj)
    if isinstance(obj, str):
        data = obj.encode()
        return b"X" + struct.pack("<I", len(data)) + data
    if isinstance(obj, tuple):
        return b"(" + b"".join(emit(item) for item in obj) + b"t" if obj else b")"
    if isinstance(obj, list):
        return b"](" + b"".join(emit(item) for item in obj) + b"e"
    if isinstance(obj, dict):
        body = b"".join(emit(k) + emit(v) for k, v in obj.items())
        return b"}(" + body + b"u"
    raise TypeError(f"cannot emit {type(obj).__name__}")


def dumps(obj) -> bytes:
    """A complete protocol-2 pickle of `obj`."""
    return b"\x80\x02" + emit(obj) + b"."


def tensor(
    key: str,
    numel: int,
    size,
    stride,
    offset: int = 0,
    storage: str = "FloatStorage",
    legacy: bool = False,
):
    """`torch._utils._rebuild_tensor_v2` of a view of storage `key`, as torch.save writes it
    (legacy files add a sixth, empty view-metadata field to the persistent id)."""
    pid = ("storage", G("torch", storage), key, "cpu", numel) + ((None,) if legacy else ())
    pid = Pid(pid)
    return R(
        G("torch._utils", "_rebuild_tensor_v2"),
        pid,
        offset,
        tuple(size),
        tuple(stride),
        False,
        R(G("collections", "OrderedDict")),
    )


def contiguous(key: str, array: np.ndarray, storage: str = "FloatStorage", legacy: bool = False):
    """A tensor record for a whole C-contiguous array stored under `key`."""
    strides = tuple(s // array.itemsize for s in array.strides)
    return tensor(key, array.size, array.shape, strides, storage=storage, legacy=legacy)


def torch_zip(
    path, data_pkl: bytes, storages: dict[str, bytes] | None = None, byteorder: str = "little"
) -> str:
    """A `torch.save` zip archive: archive/data.pkl, byteorder, data/<key> members."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", byteorder)
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
    return os.fspath(path)


def torch_legacy(
    path,
    main_pkl: bytes,
    storages: dict[str, tuple[int, bytes]] | None = None,
    keys: list[str] | None = None,
) -> str:
    """A legacy `torch.save` file: magic, protocol, sys info, main pickle, keys, storages.

    `storages` maps key -> (declared element count, raw bytes).
    """
    storages = storages or {}
    with open(path, "wb") as handle:
        for item in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(item, handle, protocol=2)
        handle.write(main_pkl)
        pickle.dump(list(storages) if keys is None else keys, handle, protocol=2)
        for numel, data in storages.values():
            handle.write(struct.pack("<q", numel) + data)
    return os.fspath(path)


def safetensors_bytes(entries: dict, buffer: bytes, header_json: bytes | None = None) -> bytes:
    """A safetensors file from header entries (written as given) and a raw data buffer."""
    header = header_json if header_json is not None else json.dumps(entries).encode()
    return struct.pack("<Q", len(header)) + header + buffer


def npy_bytes(header: str, data: bytes, version: int = 1) -> bytes:
    """A .npy member with a hand-written header dict literal (padded as numpy pads it)."""
    body = header.encode("latin1")
    if version == 1:
        pad = -(10 + len(body) + 1) % 64
        length = struct.pack("<H", len(body) + pad + 1)
    else:
        pad = -(12 + len(body) + 1) % 64
        length = struct.pack("<I", len(body) + pad + 1)
    magic = b"\x93NUMPY" + bytes([version, 0])
    return magic + length + body + b" " * pad + b"\n" + data


def flax_array_ext(shape, dtype: str, data: bytes, code: int = 1) -> msgpack.ExtType:
    """Flax's ndarray extension record with any (possibly lying) shape."""
    return msgpack.ExtType(code, msgpack.packb((shape, dtype, data), use_bin_type=True))


def nested_tuple_ext(depth: int) -> msgpack.ExtType:
    """Extension 4 (tuple) nested `depth` times: each payload is the next tuple."""
    inner = msgpack.packb(1)
    for _ in range(depth):
        inner = msgpack.packb(msgpack.ExtType(4, inner))
    return msgpack.ExtType(4, inner)


def odict(items) -> Raw:
    """An OrderedDict as torch.save writes it: OrderedDict() then SETITEMS."""
    body = b"".join(emit(k) + emit(v) for k, v in items)
    return Raw(emit(R(G("collections", "OrderedDict"))) + b"(" + body + b"u")


def _bf16_bits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bits = (values.astype("<f4").view("<u4") >> 16).astype("<u2")
    return bits, (bits.astype(np.uint32) << 16).view(np.float32)


def genuine_torch_zip(path) -> dict[str, np.ndarray]:
    """An honest torch.save-layout zip (float32, a transposed view, float16, bfloat16, a v3
    untyped-storage tensor, int64) and the arrays a correct reader returns for it."""
    rng = np.random.default_rng(7)
    f32 = rng.standard_normal((4, 6)).astype("<f4")
    f16 = rng.standard_normal(7).astype("<f2")
    bits, bf16 = _bf16_bits(rng.standard_normal((2, 3)))
    i64 = np.arange(-3, 9, dtype="<i8").reshape(3, 4)
    v3 = R(
        G("torch._utils", "_rebuild_tensor_v3"),
        Pid(("storage", G("torch", "UntypedStorage"), "4", "cpu", f32.nbytes)),
        0,
        (6, 4),
        (4, 1),
        False,
        R(G("collections", "OrderedDict")),
        G("torch", "float32"),
    )
    state = odict(
        [
            ("f32", contiguous("0", f32)),
            ("f32_t", tensor("0", f32.size, (6, 4), (1, 6))),
            ("f16", contiguous("1", f16, "HalfStorage")),
            ("bf16", contiguous("2", bits, "BFloat16Storage")),
            ("i64", contiguous("3", i64, "LongStorage")),
            ("v3", v3),
        ]
    )
    storages = {
        "0": f32.tobytes(),
        "1": f16.tobytes(),
        "2": bits.tobytes(),
        "3": i64.tobytes(),
        "4": f32.tobytes(),
    }
    torch_zip(path, dumps({"model_state": state, "epoch": 3}), storages)
    expected = {
        "f32": f32,
        "f32_t": np.ascontiguousarray(f32.T),
        "f16": f16,
        "bf16": bf16,
        "i64": i64,
        "v3": f32.reshape(6, 4),
    }
    return {f"model_state.{k}": v.astype(v.dtype.newbyteorder("=")) for k, v in expected.items()}


def genuine_safetensors(path) -> dict[str, np.ndarray]:
    """An honest safetensors file (F32, F16, BF16, I64) and its arrays."""
    rng = np.random.default_rng(8)
    bits, bf16 = _bf16_bits(rng.standard_normal(5))
    parts = {
        "a.weight": ("F32", rng.standard_normal((3, 4)).astype("<f4")),
        "a.half": ("F16", rng.standard_normal(6).astype("<f2")),
        "b.bf16": ("BF16", bits),
        "c.count": ("I64", np.arange(4, dtype="<i8")),
    }
    entries, buffer = {}, b""
    for name, (dtype, array) in parts.items():
        entries[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [len(buffer), len(buffer) + array.nbytes],
        }
        buffer += array.tobytes()
    entries["__metadata__"] = {"format": "pt"}
    with open(path, "wb") as handle:
        handle.write(safetensors_bytes(entries, buffer))
    expected = {name: array for name, (_, array) in parts.items()}
    expected["b.bf16"] = bf16
    return {k: v.astype(v.dtype.newbyteorder("=")) for k, v in expected.items()}


def genuine_msgpack(path) -> dict[str, np.ndarray]:
    """An honest Flax msgpack checkpoint (float32, float16, int32, a scalar) and its arrays."""
    from weights_helpers import flax_msgpack_bytes

    rng = np.random.default_rng(9)
    params = {
        "Dense_0": {
            "kernel": rng.standard_normal((3, 2)).astype(np.float32),
            "bias": rng.standard_normal(2).astype(np.float16),
        },
        "steps": np.arange(3, dtype=np.int32),
    }
    with open(path, "wb") as handle:
        handle.write(flax_msgpack_bytes({"params": params, "global_step": np.int64(5)}))
    return {
        "params/Dense_0/kernel": params["Dense_0"]["kernel"],
        "params/Dense_0/bias": params["Dense_0"]["bias"],
        "params/steps": params["steps"],
        "global_step": np.asarray(np.int64(5)),
    }


def _local_header(name: bytes, method: int, crc: int, csize: int, usize: int) -> bytes:
    return (
        struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, csize, usize, len(name), 0
        )
        + name
    )


def _central_header(
    name: bytes, method: int, crc: int, csize: int, usize: int, offset: int
) -> bytes:
    return (
        struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            0,
            method,
            0,
            0,
            crc,
            csize,
            usize,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        + name
    )


def overlapping_sizes(kernel_size: int, names: list[str]) -> list[int]:
    """What each member of `overlapping_zip(path, kernel, names, ...)` inflates to."""
    quoted = [30 + len(name.encode()) for name in names]
    return [kernel_size + sum(quoted[i + 1 :]) for i in range(len(names))]


def overlapping_zip(path, kernel: bytes, names: list[str], head: list[tuple[str, bytes]]):
    """A zip whose members `names` all inflate the same `kernel` bytes (D. Fifield's
    overlapping-member construction): each member's deflate stream quotes the next member's
    local header in a stored block and then runs on into that member's data, so every member
    ends with the one kernel. `head` members are written normally first. Returns each
    overlapping member's inflated size."""
    import zlib

    out, central = bytearray(), []
    for name, data in head:
        raw, crc = name.encode(), zlib.crc32(data)
        central.append(_central_header(raw, 0, crc, len(data), len(data), len(out)))
        out += _local_header(raw, 0, crc, len(data), len(data)) + data
    compressor = zlib.compressobj(0, zlib.DEFLATED, -15)
    stream = compressor.compress(kernel) + compressor.flush()
    quoted: list[bytes] = []  # local headers of the members after the current one
    headers: list[tuple[bytes, int, int, int, bytes]] = []
    csize, usize = len(stream), len(kernel)
    for name in reversed(names):
        crc = zlib.crc32(kernel, zlib.crc32(b"".join(quoted)))
        raw = name.encode()
        header = _local_header(raw, 8, crc, csize, usize)
        headers.append((raw, crc, csize, usize, header))
        quoted.insert(0, header)
        csize += 5 + len(header)
        usize += len(header)
    headers.reverse()
    for index, (raw, crc, csize, usize, header) in enumerate(headers):
        central.append(_central_header(raw, 8, crc, csize, usize, len(out)))
        out += header
        if index + 1 < len(headers):
            following = headers[index + 1][4]
            out += b"\x00" + struct.pack("<HH", len(following), len(following) ^ 0xFFFF)
    out += stream
    directory = len(out)
    for record in central:
        out += record
    out += struct.pack(
        "<4s4H2LH",
        b"PK\x05\x06",
        0,
        0,
        len(central),
        len(central),
        len(out) - directory,
        directory,
        0,
    )
    with open(path, "wb") as handle:
        handle.write(out)
    return [usize for _, _, _, usize, _ in headers]
