"""Hostile checkpoints: nothing from the file may run, every case is refused with a clear error.

Each payload would create a canary file if it executed; every test asserts the canary is absent.
Payload files are built both with the real `torch.save` (zip and legacy layouts) and by hand
(same layouts, no torch), so the suite also runs where torch is not installed.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import subprocess
import zipfile
import zlib

import numpy as np
import pytest
from hostile_builders import (
    B,
    G,
    Get,
    Put,
    R,
    Raw,
    contiguous,
    dumps,
    emit,
    nested_tuple_ext,
    tensor,
    torch_zip,
)
from hostile_cases import (
    POISONS,
    assert_all_refused,
    assert_refused,
    deep_nesting_cases,
    genuine_files,
    hf_folder,
    isolated,
    leaky_cases,
    memory_bomb_cases,
    shape_cases,
    special_file_cases,
)

from keras_vtn.weights import CheckpointError, UnsafeCheckpointError, read_checkpoint, safe_zip
from keras_vtn.weights.torch_reader import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION


class _Reduce:
    """Pickles as `callable(*args)`: what an attacker puts in a .pth."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(canary: str) -> dict[str, tuple[object, str]]:
    write = f"open({canary!r}, 'w').write('pwned')"
    return {
        "os.system": (_Reduce(os.system, (f"touch {canary}",)), r"(os|posix)\.system"),
        "eval": (_Reduce(eval, (write,)), r"builtins\.eval"),
        "exec": (_Reduce(exec, (write,)), r"builtins\.exec"),
        "popen": (_Reduce(subprocess.Popen, (["touch", canary],)), r"subprocess\.Popen"),
    }


def _wrap(payload, where: str):
    if where == "top":
        return payload
    return {"model_state": {"blocks.0.weight": [1.0, 2.0], "evil": {"deep": payload}}, "epoch": 1}


def _torch_zip_by_hand(path, obj, protocol=2) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(obj, protocol=protocol))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")


def _torch_legacy_by_hand(path, obj) -> None:
    with open(path, "wb") as handle:
        for item in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(item, handle, protocol=2)
        pickle.dump(obj, handle, protocol=2)
        pickle.dump([], handle, protocol=2)


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "canary"
    yield str(path)
    assert not path.exists(), "a payload from the checkpoint was executed"


WRITERS = ["zip_by_hand", "zip_by_hand_protocol4", "legacy_by_hand", "torch_zip", "torch_legacy"]


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("where", ["top", "nested"])
@pytest.mark.parametrize("kind", ["os.system", "eval", "exec", "popen"])
def test_reduce_payloads_are_refused(tmp_path, canary, writer, where, kind):
    payload, global_name = _payloads(canary)[kind]
    obj = _wrap(payload, where)
    path = tmp_path / "evil.pth"
    if writer.startswith("torch"):
        torch = pytest.importorskip("torch")
        torch.save(obj, path, _use_new_zipfile_serialization=writer == "torch_zip")
    elif writer == "legacy_by_hand":
        _torch_legacy_by_hand(path, obj)
    else:
        _torch_zip_by_hand(path, obj, protocol=4 if writer.endswith("4") else 2)
    with pytest.raises(UnsafeCheckpointError, match=global_name) as info:
        read_checkpoint(path)
    assert "nothing from it was executed" in str(info.value)


def test_payload_in_legacy_magic_slot_is_never_unpickled(tmp_path, canary):
    # A bare pickle (no torch magic first) is refused by sniffing, before any unpickling.
    (tmp_path / "plain.pth").write_bytes(pickle.dumps(_payloads(canary)["eval"][0], protocol=2))
    with pytest.raises(CheckpointError, match="plain Python pickle"):
        read_checkpoint(tmp_path / "plain.pth")


def test_admitted_names_cannot_be_abused(tmp_path, canary):
    # Calling a storage-type stand-in, or wrapping a non-tensor callable in
    # _rebuild_from_type_v2, must fail without running anything.
    calls_storage = b"\x80\x02ctorch\nFloatStorage\nq\x00X\x01\x00\x00\x00xq\x01\x85q\x02Rq\x03."
    with zipfile.ZipFile(tmp_path / "b.pth", "w") as archive:
        archive.writestr("archive/data.pkl", calls_storage)
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "b.pth")
    wraps_set = (
        b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(cbuiltins\nset\nctorch\nTensor\n)}tR."
    )
    with zipfile.ZipFile(tmp_path / "c.pth", "w") as archive:
        archive.writestr("archive/data.pkl", wraps_set)
    with pytest.raises(UnsafeCheckpointError, match="tensor rebuilder"):
        read_checkpoint(tmp_path / "c.pth")


@pytest.mark.parametrize("name", ["../../evil.sh", "archive/../../evil", "/etc/evil", "C:/evil"])
def test_zip_path_traversal(tmp_path, name):
    path = tmp_path / "trav.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr(zipfile.ZipInfo(name), b"payload")
    with pytest.raises(UnsafeCheckpointError, match="path traversal"):
        read_checkpoint(path)
    assert not (tmp_path.parent / "evil.sh").exists()


def _torch_like_zip(path, storage: bytes, compress=zipfile.ZIP_STORED) -> None:
    # The opcodes torch.save writes for {"w": float32 tensor of shape (n,)}, spelled out.
    numel = struct.pack("<i", len(storage) // 4)
    rebuild = (
        b"\x80\x02}(X\x01\x00\x00\x00w"
        b"ctorch._utils\n_rebuild_tensor_v2\n"
        b"((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
        b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ" + numel + b"tQ"
        b"K\x00J" + numel + b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRu."
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", rebuild)
        archive.writestr(zipfile.ZipInfo("archive/data/0"), storage, compress_type=compress)


def test_hand_built_zip_reads(tmp_path):
    # Sanity check for the two tests below: the same layout with honest data is readable.
    _torch_like_zip(tmp_path / "ok.pth", np.arange(4, dtype="<f4").tobytes())
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "ok.pth")["w"], np.arange(4))


def test_zip_bomb_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.pth"
    _torch_like_zip(path, b"\0" * (8 << 20), compress=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 1 << 20
    with pytest.raises(UnsafeCheckpointError, match="zip bomb"):
        read_checkpoint(path)
    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros(2 << 20, np.float32))
    with pytest.raises(UnsafeCheckpointError, match="zip bomb"):
        read_checkpoint(tmp_path / "bomb.npz")


def test_zip_total_size_limit(tmp_path, monkeypatch):
    _torch_like_zip(tmp_path / "big.pth", np.arange(4096, dtype="<f4").tobytes())
    monkeypatch.setattr(safe_zip, "MAX_TOTAL_UNCOMPRESSED", 1024)
    with pytest.raises(UnsafeCheckpointError, match="in total"):
        read_checkpoint(tmp_path / "big.pth")


def test_zip_declared_size_lie(tmp_path):
    """The directories declare 16 bytes; the deflated stream holds 4 MiB: refused, not inflated."""
    with zipfile.ZipFile(io.BytesIO(_zip_bytes(np.arange(4, dtype="<f4").tobytes()))) as src:
        pickled = src.read("archive/data.pkl")
    inflated = b"\x01" * (4 << 20)
    path = tmp_path / "lie.pth"
    path.write_bytes(
        _raw_zip(
            [
                ("archive/data.pkl", pickled, 0, zlib.crc32(pickled), len(pickled)),
                ("archive/data/0", _deflate(inflated), 8, zlib.crc32(inflated[:16]), 16),
            ]
        )
    )
    with pytest.raises(UnsafeCheckpointError, match="inflates beyond"):
        read_checkpoint(path)


def _zip_bytes(storage: bytes) -> bytes:
    buffer = io.BytesIO()
    _torch_like_zip(buffer, storage)
    return buffer.getvalue()


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _raw_zip(members) -> bytes:
    """A zip written byte by byte: (name, payload, method, crc, declared size) per member."""
    out = io.BytesIO()
    central = []
    for name, payload, method, crc, size in members:
        offset, fname = out.tell(), name.encode()
        out.write(
            struct.pack(
                "<4s5H3L2H",
                b"PK\x03\x04",
                20,
                0,
                method,
                0,
                0,
                crc,
                len(payload),
                size,
                len(fname),
                0,
            )
            + fname
            + payload
        )
        central.append(
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
                len(payload),
                size,
                len(fname),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + fname
        )
    start = out.tell()
    for record in central:
        out.write(record)
    out.write(
        struct.pack(
            "<4s4H2LH",
            b"PK\x05\x06",
            0,
            0,
            len(central),
            len(central),
            out.tell() - start,
            start,
            0,
        )
    )
    return out.getvalue()


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95, 0.999])
def test_truncated_torch_files(tmp_path, fraction):
    from weights_helpers import FIXTURES

    for stem in ("linear_vtn_tiny.pth", "vtn_tiny_legacy.pyth"):
        data = open(os.path.join(FIXTURES, stem), "rb").read()
        path = tmp_path / stem
        path.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(CheckpointError, match="truncated|corrupt"):
            read_checkpoint(path)


@pytest.mark.parametrize("seed", range(12))
def test_random_bytes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    head = [b"", b"PK\x03\x04", b"\x80\x02\x8a\x0a", b"\x82", b"\x10\x00\x00\x00\x00\x00\x00\x00{"]
    path = tmp_path / "random.pth"
    path.write_bytes(head[seed % len(head)] + rng.bytes(4096))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


# --- 1. nothing a file does outlives its own read ---------------------------------------------


def _process_state():
    from keras_vtn.weights import torch_reader

    functions = [getattr(torch_reader, n) for n in dir(torch_reader) if n.startswith("_rebuild")]
    return {
        "counter": dict(vars(collections.Counter)),
        "defaults": [(f, f.__defaults__, dict(vars(f))) for f in functions],
    }


def _restore(state) -> None:
    # Only needed when the reader is broken: keep one poisoned test from failing the rest.
    for name in set(vars(collections.Counter)) - set(state["counter"]):
        delattr(collections.Counter, name)
    for name, value in state["counter"].items():
        if vars(collections.Counter).get(name) is not value and not name.startswith("__"):
            setattr(collections.Counter, name, value)
    for func, defaults, attrs in state["defaults"]:
        func.__defaults__ = defaults
        func.__dict__.clear()
        func.__dict__.update(attrs)


def _assert_bit_identical(files) -> None:
    for path, known in files:
        got = read_checkpoint(path)
        assert sorted(got) == sorted(known), path
        for name, array in known.items():
            assert got[name].dtype == array.dtype, (path, name)
            assert got[name].shape == array.shape, (path, name)
            assert got[name].tobytes() == array.tobytes(), (path, name)


@pytest.mark.parametrize("kind", sorted(POISONS))
def test_state_set_by_a_file_does_not_outlive_its_read(tmp_path, canary, kind):
    genuine_dir = tmp_path / "genuine"
    genuine_dir.mkdir()
    genuine = genuine_files(genuine_dir)
    _assert_bit_identical(genuine)  # a fresh state reads them right
    before = _process_state()
    evil = {"poison": POISONS[kind], "then": R(G("os", "system"), f"touch {canary}")}
    path = torch_zip(tmp_path / "evil.pth", dumps(evil), {"0": b"\0" * 4})
    try:
        with pytest.raises(UnsafeCheckpointError):
            read_checkpoint(path)
        after = _process_state()
        assert after["counter"] == before["counter"], "collections.Counter was modified"
        for (func, defaults, attrs), (_, now, now_attrs) in zip(
            before["defaults"], after["defaults"], strict=True
        ):
            assert (now, now_attrs) == (defaults, attrs), f"{func.__name__} was modified"
        _assert_bit_identical(genuine)  # ...and so does the same process after the file
    finally:
        _restore(before)


def test_build_on_containers_the_file_built_is_harmless(tmp_path):
    # torch's state_dict OrderedDict carries `_metadata` through BUILD: still readable.
    state = B(
        Raw(
            emit(R(G("collections", "OrderedDict")))
            + b"("
            + emit("w")
            + emit(contiguous("0", np.ones(2, "<f4")))
            + b"u"
        ),
        {"_metadata": {"": {"version": 1}}},
    )
    path = torch_zip(tmp_path / "meta.pth", dumps(state), {"0": np.ones(2, "<f4").tobytes()})
    np.testing.assert_array_equal(read_checkpoint(path)["w"], np.ones(2, np.float32))


# --- 2, 3, 5: files that crash, hang or exhaust memory are read in a limited child -----------


def test_nested_msgpack_tuples_and_tuple_keys_do_not_crash(tmp_path):
    """Both used to overflow the C stack (SIGSEGV) and kill the interpreter."""
    import msgpack

    ext = tmp_path / "ext" / "checkpoint"
    ext.parent.mkdir()
    ext.write_bytes(msgpack.packb({"params": nested_tuple_ext(200)}))
    assert len(ext.read_bytes()) < 1000
    key = Raw(b")" + b"\x85" * 100_000)  # ((((),),),)... 100,000 deep, then used as a dict key
    deep_key = torch_zip(tmp_path / "key.pth", b"\x80\x02}" + key.data + b"K\x01s.")
    cases = {"ext": str(ext), "key": deep_key}
    results = isolated(cases)
    assert_refused(results["ext"], str(ext), r"more than 8 levels")
    assert_refused(results["key"], deep_key, r"deeper than 32 levels")


def test_deep_nesting_is_a_clear_error_in_every_format(tmp_path):
    cases = deep_nesting_cases(tmp_path)
    results = isolated({name: path for name, (path, _) in cases.items()})
    assert_all_refused(cases, results)


# --- 3. the bytes a read materialises are bounded by the bytes the file stores ---------------


def test_memory_bombs_are_refused_before_allocating(tmp_path):
    cases = {**memory_bomb_cases(tmp_path), **shape_cases(tmp_path)}
    assert os.path.getsize(cases["pth_stride0"][0]) < 1000
    results = isolated({name: path for name, (path, _) in cases.items()})
    assert_all_refused(cases, results)


def test_legitimate_views_and_tied_weights_stay_readable(tmp_path):
    # Within the budget: a transposed view, a slice and one tensor under two names.
    base = np.arange(12, dtype="<f4")
    state = {
        "w": Put(contiguous("0", base.reshape(3, 4)), 1),
        "w_t": tensor("0", 12, (4, 3), (1, 4)),
        "rows": tensor("0", 12, (2, 4), (4, 1), offset=4),
        "tied": Get(1),
    }
    got = read_checkpoint(torch_zip(tmp_path / "views.pth", dumps(state), {"0": base.tobytes()}))
    np.testing.assert_array_equal(got["w_t"], base.reshape(3, 4).T)
    np.testing.assert_array_equal(got["rows"], base[4:].reshape(2, 4))
    np.testing.assert_array_equal(got["tied"], got["w"])


# --- 5. only regular files are opened ------------------------------------------------------------


def test_special_files_are_refused_without_blocking(tmp_path):
    cases = special_file_cases(tmp_path)
    results = isolated({name: path for name, (path, _) in cases.items()}, timeout=60)
    assert_all_refused(cases, results)


def test_missing_files_and_dangling_links(tmp_path):
    from keras_vtn.weights.errors import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="does not exist") as info:
        read_checkpoint(tmp_path / "missing.pth")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CheckpointError)
    os.symlink(tmp_path / "gone.pth", tmp_path / "dangling.pth")
    with pytest.raises(FileNotFoundError, match="symbolic link to .*gone.pth"):
        read_checkpoint(tmp_path / "dangling.pth")
    folder = hf_folder(tmp_path / "hf", {"weight_map": {"w": "model-1.safetensors"}})
    with pytest.raises(CheckpointNotFoundError, match="model-1.safetensors"):
        read_checkpoint(folder)


# --- 6. every failure is a CheckpointError naming the file -------------------------------------


def test_every_failure_is_a_checkpoint_error_naming_the_file(tmp_path):
    cases = leaky_cases(tmp_path)
    results = isolated(cases)
    assert_all_refused({name: (path, None) for name, path in cases.items()}, results)
    # sniff_format has the same boundary.
    from keras_vtn.weights import sniff_format

    with pytest.raises(CheckpointError, match="not a usable path|cannot be"):
        sniff_format(cases["nul_in_path"])
