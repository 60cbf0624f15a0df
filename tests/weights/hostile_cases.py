"""Hostile checkpoint cases shared by test_hostile.py (one regression test per finding) and
test_hostile_corpus.py (all of them at once, with the genuine files read afterwards).

Each `*_cases(folder)` writes its files under `folder` and returns `{name: (path, pattern)}`:
`read_checkpoint(path)` must raise a CheckpointError whose message names the path and matches
the pattern. `isolated` reads files in a resource-limited child (see hostile_runner.py).
"""

from __future__ import annotations

import json
import os
import re
import zipfile

import numpy as np
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
    flax_array_ext,
    genuine_msgpack,
    genuine_safetensors,
    genuine_torch_zip,
    npy_bytes,
    overlapping_sizes,
    overlapping_zip,
    safetensors_bytes,
    tensor,
    torch_legacy,
    torch_zip,
)
from weights_helpers import FIXTURES

POISONS = {
    # The torch.FloatStorage stand-in: every later float32 file would read as float16.
    "storage_type_dtype": B(G("torch", "FloatStorage"), {"dtype": "float16"}),
    "storage_type_slots": B(G("torch", "FloatStorage"), (None, {"dtype": "float16"})),
    # The torch.float32 stand-in used by _rebuild_tensor_v3.
    "torch_dtype": B(G("torch", "float32"), {"dtype": "float16"}),
    # setattr on a rebuild function and on a stdlib class (slot state goes through setattr).
    "function_defaults": B(
        G("torch._utils", "_rebuild_tensor_v2"), (None, {"__defaults__": (True, None, None)})
    ),
    "function_dict": B(G("torch._utils", "_rebuild_tensor"), {"poisoned": True}),
    "stdlib_class": B(
        G("collections", "Counter"), (None, {"most_common": G("torch._utils", "_rebuild_tensor")})
    ),
    "type_marker": B(G("torch", "Tensor"), {"name": "poisoned"}),
    # BUILD on a tensor this file made would skip the size checks.
    "tensor_state": B(tensor("0", 1, (1,), (1,)), {"size": (1 << 40,), "stride": (0,)}),
}


def genuine_files(folder) -> list[tuple[str, dict]]:
    """Honest checkpoints with their known arrays: the committed torch.save fixtures and
    hand-built torch zip (float32, float16, bfloat16, v3), safetensors and msgpack files."""
    expected = np.load(os.path.join(FIXTURES, "expected.npz"))
    out = []
    for stem in ("linear_vtn_tiny.pth", "vtn_tiny_legacy.pyth"):
        prefix = stem.split(".")[0] + "/"
        known = {k[len(prefix) :]: expected[k] for k in expected.files if k.startswith(prefix)}
        out.append((os.path.join(FIXTURES, stem), known))
    for name, build in (
        ("genuine.pth", genuine_torch_zip),
        ("genuine.safetensors", genuine_safetensors),
        ("checkpoint", genuine_msgpack),
    ):
        out.append((str(folder / name), build(folder / name)))
    return out


def isolated(cases, timeout=90):
    """Read `cases` ({name: path}) in a resource-limited child; one result dict per case."""
    from hostile_runner import run

    results, _, _ = run(sorted(cases.items()), timeout=timeout)
    return {r["name"]: r for r in results}


def assert_all_refused(cases, results, **limits) -> None:
    failures = []
    for name, (path, match) in cases.items():
        try:
            result = results.get(name, {"name": name, "crashed": "never reached: the child died"})
            assert_refused(result, path, match, **limits)
        except AssertionError as err:
            failures.append(f"{name}: {err}")
    assert not failures, "\n".join(failures)


def assert_refused(result, path, match=None, max_growth_mb=512, max_seconds=10):
    assert "crashed" not in result, f"{result['name']}: {result.get('crashed')}"
    assert result["error"] is not None, f"{result['name']} was read without an error"
    assert "CheckpointError" in result["bases"], f"{result['name']}: {result}"
    assert path in result["message"] or repr(path)[1:-1] in result["message"], result
    if match:
        assert re.search(match, result["message"]), (match, result["message"])
    assert result["seconds"] < max_seconds, result
    if result["rss_growth_mb"] is not None:
        assert result["rss_growth_mb"] < max_growth_mb, result


def deep_pickle(kind: str, depth: int = 5000) -> bytes:
    if kind == "dict":
        return b"\x80\x02" + (b"}" + emit("k")) * depth + b"K\x01" + b"s" * depth + b"."
    return b"\x80\x02" + b"]" * depth + b"K\x01" + b"a" * depth + b"."


def hf_folder(root, index: dict, name="model.safetensors.index.json"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text("{}")
    (root / name).write_text(json.dumps(index))
    return root


def deep_nesting_cases(tmp_path) -> dict[str, tuple[str, str]]:
    import msgpack

    cases = {}
    cases["pickle_dict_5000"] = (
        torch_zip(tmp_path / "dict.pth", deep_pickle("dict")),
        r"more than 100 levels",
    )
    cases["pickle_list_5000"] = (
        torch_legacy(tmp_path / "list.pyth", deep_pickle("list")),
        r"more than 100 levels",
    )
    tree: dict = {}
    node = tree
    for _ in range(990):
        node["a"] = {}
        node = node["a"]
    node["a"] = np.float32(1.0)
    from weights_helpers import flax_msgpack_bytes

    (tmp_path / "maps").write_bytes(flax_msgpack_bytes(tree))
    cases["msgpack_maps_990"] = (str(tmp_path / "maps"), r"more than 100 levels")
    header = b'{"__metadata__": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    (tmp_path / "deep.safetensors").write_bytes(safetensors_bytes({}, b"", header))
    cases["safetensors_json_5000"] = (str(tmp_path / "deep.safetensors"), r"at most 100")
    deep_index = hf_folder(tmp_path / "deep_index", {})
    (deep_index / "model.safetensors.index.json").write_text(
        '{"weight_map": ' + "[" * 5000 + "]" * 5000 + "}"
    )
    cases["hf_index_json_5000"] = (str(deep_index), r"at most 100")
    cases["hf_index_names_itself"] = (
        str(hf_folder(tmp_path / "self", {"weight_map": {"w": "model.safetensors.index.json"}})),
        r"bad shard name",
    )
    cases["hf_index_dot"] = (
        str(hf_folder(tmp_path / "dot", {"weight_map": {"w": "."}})),
        r"bad shard name",
    )
    outer = hf_folder(tmp_path / "outer", {"weight_map": {"w": "inner"}})
    hf_folder(outer / "inner", {"weight_map": {"w": ".."}})
    cases["hf_index_folder_loop"] = (str(outer), r"directory")
    linked = hf_folder(tmp_path / "linked", {"weight_map": {"w": "loop.safetensors"}})
    os.symlink(".", linked / "loop.safetensors")
    cases["hf_index_symlink_to_folder"] = (str(linked), r"directory")
    bin_index = hf_folder(
        tmp_path / "bin",
        {"weight_map": {"w": "pytorch_model.bin.index.json"}},
        name="pytorch_model.bin.index.json",
    )
    cases["hf_bin_index_names_itself"] = (str(bin_index), r"bad shard name")
    del msgpack
    return cases


MB = 1 << 20


def memory_bomb_cases(tmp_path) -> dict[str, tuple[str, str]]:
    cases = {}
    # 375 bytes: one stored float viewed 550 million times with stride 0 (2.2 GB).
    stride0 = dumps({"w": tensor("0", 1, (550_000_000,), (0,))})
    cases["pth_stride0"] = (torch_zip(tmp_path / "s0.pth", stride0, {"0": b"\0" * 4}), "memory")
    # 1 MB: one tensor memoized once and named 2,200 times (2.2 GB).
    first = Put(contiguous("0", np.zeros(MB // 4, "<f4")), 1)
    names = Raw(
        b"}("
        + emit("n0")
        + emit(first)
        + b"".join(emit(f"n{i}") + emit(Get(1)) for i in range(1, 2200))
        + b"u"
    )
    cases["pth_memo_alias"] = (
        torch_zip(tmp_path / "alias.pth", dumps(names), {"0": b"\0" * MB}),
        "memory",
    )
    # Lists that each hold the previous one twice: 2**40 paths to one tensor.
    dag = b"](" + emit(contiguous("0", np.zeros(1, "<f4"))) + b"eq\x00"
    for level in range(1, 41):
        dag += b"](h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"eq" + bytes([level])
    cases["pth_memo_dag"] = (
        torch_zip(tmp_path / "dag.pth", b"\x80\x02" + dag + b".", {"0": b"\0" * 4}),
        "expansion bomb|memory",
    )
    # A 1 MB key above 100,000 references to one tiny tensor: 100 GB of names.
    leaf = Put(contiguous("0", np.zeros(1, "<f4")), 1)
    leaves = b"](" + emit(leaf) + b"h\x01" * 100_000 + b"e"
    names_pkl = b"\x80\x02}" + emit("k" * MB) + leaves + b"s."
    cases["pth_long_names"] = (
        torch_zip(tmp_path / "names.pth", names_pkl, {"0": b"\0" * 4}),
        "memory",
    )
    # Legacy layout, stride 0 again.
    legacy = dumps({"w": tensor("0", 1, (550_000_000,), (0,), legacy=True)})
    cases["legacy_stride0"] = (
        torch_legacy(tmp_path / "s0.pyth", legacy, {"0": (1, b"\0" * 4)}),
        "memory",
    )
    # 2,200 safetensors entries over the same 1 MB.
    entries = {
        f"t{i}": {"dtype": "F32", "shape": [MB // 4], "data_offsets": [0, MB]} for i in range(2200)
    }
    (tmp_path / "overlap.safetensors").write_bytes(safetensors_bytes(entries, b"\0" * MB))
    cases["safetensors_overlap"] = (str(tmp_path / "overlap.safetensors"), "overlap")
    # 600 zip members that all inflate the same 1 MB (overlapping-member zip bomb).
    count = 600
    keys = [f"archive/data/{i}" for i in range(count)]
    sizes = overlapping_sizes(MB, keys)
    pkl = dumps(
        {f"t{i}": tensor(str(i), sizes[i] // 4, (sizes[i] // 4,), (1,)) for i in range(count)}
    )
    overlapping_zip(tmp_path / "ov.pth", os.urandom(MB), keys, [("archive/data.pkl", pkl)])
    cases["zip_overlapping_members"] = (str(tmp_path / "ov.pth"), "overlap")
    # One-byte opcodes/records that each make an empty container: 2 MB of `]` would be 130 MB
    # of lists (refused at 96 MB: the pure-Python unpickler takes ~1 s per million opcodes),
    # 12 MB of empty msgpack maps 770 MB of dicts.
    lists = b"\x80\x02" + b"]" * (2 * MB) + b"."
    cases["pth_empty_lists"] = (torch_zip(tmp_path / "lists.pth", lists), "memory bomb")
    # A 10,000-item tuple memoized once, then used as a dict key a million times: every use
    # hashes all of it again (10**10 steps).
    big_key = b"(" + b"K\x01" * 10_000 + b"tq\x00"
    uses = b"}" + b"h\x00K\x01s" * 1_000_000
    cases["pth_reused_tuple_key"] = (
        torch_zip(tmp_path / "reused_key.pth", b"\x80\x02" + big_key + b"0" + uses + b"."),
        "large key used many times",
    )
    maps = b"\x81\xa1w\xdd" + (12 * MB).to_bytes(4, "big") + b"\x80" * (12 * MB)
    (tmp_path / "maps").write_bytes(maps)
    cases["msgpack_empty_maps"] = (str(tmp_path / "maps"), "memory")
    return cases


SHAPE_REFUSAL = r"dimension|elements|needs \d+ bytes|declares shape|memory"


def shape_cases(tmp_path) -> dict[str, tuple[str, str]]:
    import msgpack

    cases = {}
    shapes = {
        "1e12": [10**6, 10**6],
        "65_dims": [1] * 65,
        "2p62": [2**62 + 1, 4],
        "1e30": [10**30],
        "2p64": [2**64 - 1],
    }
    for label, shape in shapes.items():
        pkl = dumps({"w": tensor("0", 1, tuple(shape), (0,) * len(shape))})
        cases[f"pth_shape_{label}"] = (
            torch_zip(tmp_path / f"{label}.pth", pkl, {"0": b"\0" * 4}),
            SHAPE_REFUSAL,
        )
        entries = {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 16]}}
        (tmp_path / f"{label}.safetensors").write_bytes(safetensors_bytes(entries, b"\0" * 16))
        cases[f"safetensors_shape_{label}"] = (
            str(tmp_path / f"{label}.safetensors"),
            SHAPE_REFUSAL,
        )
        if max(shape) < 2**64:
            packed = msgpack.packb({"w": flax_array_ext(shape, "float32", b"\0" * 16)})
            (tmp_path / f"{label}.msgpack").write_bytes(packed)
            cases[f"msgpack_shape_{label}"] = (str(tmp_path / f"{label}.msgpack"), SHAPE_REFUSAL)
        if label in ("1e12", "1e30"):
            dims = ", ".join(map(str, shape))
            header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims},), }}"
            with zipfile.ZipFile(tmp_path / f"{label}.npz", "w") as archive:
                archive.writestr("w.npy", npy_bytes(header, b"\0" * 16))
            cases[f"npz_shape_{label}"] = (str(tmp_path / f"{label}.npz"), SHAPE_REFUSAL)
    (tmp_path / "inf.safetensors").write_bytes(
        safetensors_bytes(
            {}, b"\0" * 16, b'{"w": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 16]}}'
        )
    )
    cases["safetensors_shape_1e999"] = (str(tmp_path / "inf.safetensors"), "non-negative integers")
    return cases


def special_file_cases(tmp_path) -> dict[str, tuple[str, str]]:
    cases = {}
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)
    cases["fifo"] = (str(fifo), "FIFO")
    flax_fifo = tmp_path / "flax_fifo"
    flax_fifo.mkdir()
    os.mkfifo(flax_fifo / "checkpoint")
    cases["flax_folder_fifo"] = (str(flax_fifo), "FIFO")
    zero = tmp_path / "zero.pth"
    os.symlink("/dev/zero", zero)
    cases["dev_zero"] = (str(zero), "character device")
    flax_zero = tmp_path / "flax_zero"
    flax_zero.mkdir()
    os.symlink("/dev/zero", flax_zero / "checkpoint")
    cases["flax_folder_dev_zero"] = (str(flax_zero), "character device")
    loop = tmp_path / "loop.pth"
    os.symlink(tmp_path / "loop2.pth", loop)
    os.symlink(loop, tmp_path / "loop2.pth")
    cases["symlink_loop"] = (str(loop), "symbolic link loop")
    flax_loop = tmp_path / "flax_loop"
    flax_loop.mkdir()
    os.symlink("checkpoint", flax_loop / "checkpoint")
    cases["flax_folder_symlink_loop"] = (str(flax_loop), "symbolic link loop")
    hf_dir = hf_folder(tmp_path / "hf_dir", {"weight_map": {"w": "model-1.safetensors"}})
    (hf_dir / "model-1.safetensors").mkdir()
    cases["hf_shard_directory"] = (str(hf_dir), "directory")
    hf_plain = tmp_path / "hf_plain"
    hf_plain.mkdir()
    (hf_plain / "config.json").write_text("{}")
    (hf_plain / "model.safetensors").mkdir()
    cases["hf_weights_directory"] = (str(hf_plain), "directory")
    hf_fifo = hf_folder(tmp_path / "hf_fifo", {"weight_map": {"w": "model-1.safetensors"}})
    os.mkfifo(hf_fifo / "model-1.safetensors")
    cases["hf_shard_fifo"] = (str(hf_fifo), "FIFO")
    hf_fifo_index = tmp_path / "hf_fifo_index"
    hf_fifo_index.mkdir()
    (hf_fifo_index / "config.json").write_text("{}")
    os.mkfifo(hf_fifo_index / "model.safetensors.index.json")
    cases["hf_index_fifo"] = (str(hf_fifo_index), "FIFO")
    flax_dir = tmp_path / "flax_dir"
    (flax_dir / "checkpoint").mkdir(parents=True)
    cases["flax_folder_checkpoint_directory"] = (str(flax_dir), "directory")
    return cases


def leaky_cases(tmp_path) -> dict[str, str]:
    cases = {}
    cases["pickle_int_key_5000_digits"] = torch_zip(
        tmp_path / "int_key.pth",
        dumps({10**5000: contiguous("0", np.zeros(1, "<f4"))}),
        {"0": b"\0" * 4},
    )
    (tmp_path / "digits.safetensors").write_bytes(
        safetensors_bytes(
            {},
            b"",
            b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 0]}}',
        )
    )
    cases["safetensors_int_5000_digits"] = str(tmp_path / "digits.safetensors")
    (tmp_path / "bool.safetensors").write_bytes(
        safetensors_bytes(
            {"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4
        )
    )
    cases["safetensors_bool_dim"] = str(tmp_path / "bool.safetensors")
    with zipfile.ZipFile(tmp_path / "deep_header.npz", "w") as archive:
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + "(" * 3000 + ")" * 3000
        archive.writestr("w.npy", npy_bytes(header + "}", b""))
    cases["npz_deep_header"] = str(tmp_path / "deep_header.npz")
    with zipfile.ZipFile(tmp_path / "void.npz", "w") as archive:
        archive.writestr(
            "w.npy",
            npy_bytes("{'descr': '|V0', 'fortran_order': False, 'shape': (1000000000000,), }", b""),
        )
    cases["npz_zero_size_dtype"] = str(tmp_path / "void.npz")
    cases["nul_in_path"] = str(tmp_path / "a\0b.pth")
    return cases


def code_execution_cases(folder, canary: str) -> dict[str, tuple[str, str]]:
    """Payloads that would create a file under `canary` if anything from them ran."""
    refused = r"nothing from it was executed|never needs|not a plain numpy array"

    def cmd(name):
        return f"touch {os.path.join(canary, name)}"

    def write(name):
        return f"open({os.path.join(canary, name)!r}, 'w').write('pwned')"

    payloads = {
        "os_system": R(G("os", "system"), cmd("os_system")),
        "posix_system": R(G("posix", "system"), cmd("posix_system")),
        "eval": R(G("builtins", "eval"), write("eval")),
        "exec": R(G("builtins", "exec"), write("exec")),
        "popen": R(G("subprocess", "Popen"), ["touch", os.path.join(canary, "popen")]),
        "getattr": R(R(G("builtins", "getattr"), G("os", "path"), "join"), "a", "b"),
        "py2_builtin_eval": R(G("__builtin__", "eval"), write("py2_eval")),
    }
    cases = {}
    for name, payload in payloads.items():
        state = {"model_state": {"w": [1.0], "evil": {"deep": payload}}, "epoch": 1}
        cases[f"pth_reduce_{name}"] = (torch_zip(folder / f"{name}.pth", dumps(state)), refused)
    stack_global = (
        b"\x80\x04" + emit("os") + emit("system") + b"\x93" + emit((cmd("stack_global"),)) + b"R."
    )
    cases["pth_stack_global"] = (torch_zip(folder / "sg.pth", stack_global), refused)
    inst = b"\x80\x02(" + emit(cmd("inst")) + b"ios\nsystem\n."
    cases["pth_inst_opcode"] = (torch_zip(folder / "inst.pth", inst), refused)
    obj = b"\x80\x02(" + emit(G("os", "system")) + emit(cmd("obj")) + b"o."
    cases["pth_obj_opcode"] = (torch_zip(folder / "obj.pth", obj), refused)
    legacy = dumps({"w": payloads["os_system"]})
    cases["legacy_reduce"] = (torch_legacy(folder / "evil.pyth", legacy), refused)
    cases["legacy_reduce_bin"] = (
        torch_legacy(folder / "pytorch_model.bin", dumps(payloads["eval"])),
        refused,
    )
    # numpy's allow_pickle would unpickle this object array and run the payload.
    with zipfile.ZipFile(folder / "object.npz", "w") as archive:
        header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
        archive.writestr("w.npy", npy_bytes(header, dumps(R(G("os", "system"), cmd("npz")))))
    cases["npz_object_array"] = (str(folder / "object.npz"), "object arrays are refused")
    hf = folder / "hf_evil"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    torch_zip(hf / "pytorch_model.bin", dumps({"w": payloads["popen"]}))
    cases["hf_folder_reduce"] = (str(hf), refused)
    return cases


def poison_cases(folder) -> dict[str, tuple[str, str]]:
    """BUILD on admitted globals: refused, and must not change them for later reads."""
    return {
        f"pth_poison_{name}": (
            torch_zip(folder / f"poison_{name}.pth", dumps({"p": poison}), {"0": b"\0" * 4}),
            r"BUILD",
        )
        for name, poison in POISONS.items()
    }


def misc_cases(folder) -> dict[str, tuple[str, str]]:
    """Corrupt and lying files of every format that are not bombs, loops or payloads."""
    import msgpack

    cases = {}
    whole = dumps({"w": contiguous("0", np.zeros(4, "<f4"))})
    cases["pth_truncated_pickle"] = (
        torch_zip(folder / "trunc.pth", whole[: len(whole) // 2], {"0": b"\0" * 16}),
        "truncated|corrupt|references the Python global 'torch.FloatStor'",
    )
    cases["pth_missing_storage"] = (torch_zip(folder / "nostorage.pth", whole), "missing")
    cases["pth_storage_too_short"] = (
        torch_zip(folder / "short.pth", whole, {"0": b"\0" * 3}),
        "truncated or corrupt",
    )
    cases["pth_view_past_storage"] = (
        torch_zip(folder / "past.pth", dumps({"w": tensor("0", 4, (4,), (2,))}), {"0": b"\0" * 16}),
        "past the end",
    )
    with zipfile.ZipFile(folder / "script.pth", "w") as archive:
        archive.writestr("archive/constants.pkl", b"\x80\x02}.")
    cases["pth_torchscript"] = (str(folder / "script.pth"), "TorchScript")
    (folder / "plain.pth").write_bytes(b"\x80\x02}q\x00.")
    cases["pth_plain_pickle"] = (str(folder / "plain.pth"), "plain Python pickle")
    with zipfile.ZipFile(folder / "traversal.pth", "w") as archive:
        archive.writestr("archive/data.pkl", dumps({}))
        archive.writestr("../../evil.sh", b"payload")
    cases["pth_zip_traversal"] = (str(folder / "traversal.pth"), "path traversal")
    with zipfile.ZipFile(folder / "bomb.pth", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", whole)
        archive.writestr("archive/data/0", b"\0" * (16 << 20))
    cases["pth_zip_bomb"] = (str(folder / "bomb.pth"), "zip bomb")
    bytearray8 = b"\x80\x05\x96" + (1 << 40).to_bytes(8, "little") + b"."
    cases["pth_bytearray8"] = (torch_zip(folder / "ba8.pth", bytearray8), "bytearray")
    frame = b"\x80\x04\x95" + (1 << 62).to_bytes(8, "little") + emit({}) + b"."
    cases["legacy_huge_frame"] = (torch_legacy(folder / "frame.pyth", frame), "corrupt|truncated")
    huge = dumps({"w": tensor("0", 1 << 40, (1 << 40,), (1,), legacy=True)})
    cases["legacy_storage_past_file"] = (
        torch_legacy(folder / "huge.pyth", huge, {"0": (1 << 40, b"\0" * 64)}),
        "truncated",
    )
    cases["legacy_magic_only"] = (str(folder / "magic.pyth"), "truncated|corrupt")
    (folder / "magic.pyth").write_bytes(dumps(0x1950A86A20F9469CFC6C)[:-1] + b".")
    (folder / "ext9").write_bytes(msgpack.packb({"w": msgpack.ExtType(9, b"x")}))
    cases["msgpack_unknown_ext"] = (str(folder / "ext9"), "extension type 9")
    chunked = {
        "__msgpack_chunked_array__": True,
        "shape": {"0": 10**6, "1": 10**6},
        "chunks": {"0": flax_array_ext([4], "float32", b"\0" * 16)},
    }
    (folder / "chunked").write_bytes(msgpack.packb({"w": chunked}))
    cases["msgpack_chunked_lie"] = (str(folder / "chunked"), "chunked array")
    scalar = flax_array_ext([], "float32", b"\0" * 4, code=3)
    long_names = {"k" * MB: {str(i): scalar for i in range(20_000)}}
    (folder / "names").write_bytes(msgpack.packb(long_names))
    cases["msgpack_long_names"] = (str(folder / "names"), "memory")
    (folder / "bool_shape").write_bytes(
        msgpack.packb({"w": flax_array_ext([True, 4], "float32", b"\0" * 16)})
    )
    cases["msgpack_bool_dimension"] = (str(folder / "bool_shape"), "non-negative integers")
    (folder / "complex").write_bytes(msgpack.packb({"w": msgpack.ExtType(2, msgpack.packb("x"))}))
    cases["msgpack_bad_complex"] = (str(folder / "complex"), "complex")
    (folder / "long.safetensors").write_bytes(b"\xff" * 7 + b"\x00{" + b"\0" * 64)
    cases["safetensors_header_past_file"] = (str(folder / "long.safetensors"), "unknown format")
    (folder / "latin1.safetensors").write_bytes(safetensors_bytes({}, b"", b'{"\xe9": 1}'))
    cases["safetensors_not_utf8"] = (str(folder / "latin1.safetensors"), "UTF-8")
    (folder / "neg.safetensors").write_bytes(
        safetensors_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}, b"")
    )
    cases["safetensors_negative_offset"] = (str(folder / "neg.safetensors"), "outside")
    (folder / "dtype.safetensors").write_bytes(
        safetensors_bytes({"w": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    )
    cases["safetensors_unknown_dtype"] = (str(folder / "dtype.safetensors"), "dtype")
    empty = folder / "empty_folder"
    empty.mkdir()
    cases["empty_folder"] = (str(empty), "not a checkpoint folder")
    (folder / "empty.pth").write_bytes(b"")
    cases["empty_file"] = (str(folder / "empty.pth"), "empty")
    return cases
