"""read_checkpoint against files written by the real libraries (torch, safetensors, msgpack)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from weights_helpers import FIXTURES, flax_msgpack_bytes

from keras_vtn.weights import CheckpointError, read_checkpoint, sniff_format


# --- committed fixtures: true torch.save output, checked even without torch -------------------
@pytest.mark.parametrize("stem", ["linear_vtn_tiny.pth", "vtn_tiny_legacy.pyth"])
def test_committed_torch_fixtures(stem):
    expected = np.load(os.path.join(FIXTURES, "expected.npz"))
    prefix = stem.split(".")[0] + "/"
    want = {k[len(prefix) :]: expected[k] for k in expected.files if k.startswith(prefix)}
    got = read_checkpoint(os.path.join(FIXTURES, stem))
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def test_committed_fixture_formats():
    assert sniff_format(os.path.join(FIXTURES, "linear_vtn_tiny.pth")) == "torch_zip"
    assert sniff_format(os.path.join(FIXTURES, "vtn_tiny_legacy.pyth")) == "torch_legacy"


# --- torch.save written here: every dtype, view and container layout -------------------------
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _tricky_state(torch):
    torch.manual_seed(1)
    base = torch.randn(5, 6)
    return collections.OrderedDict(
        [
            ("f32", torch.randn(2, 3, 4)),
            ("t", base.t()),  # strided (column-major) view
            ("rows", base[1:4]),  # storage offset
            ("cols", base[:, 1::2]),  # offset + stride 2
            ("scalar", torch.tensor(2.5)),
            ("empty", torch.zeros(0, 3)),
            ("f16", torch.randn(7).half()),
            ("bf16", torch.randn(3, 2).bfloat16()),
            ("i64", torch.arange(-3, 9).reshape(3, 4)),
            ("i32", torch.arange(4, dtype=torch.int32)),
            ("u8", torch.arange(4, dtype=torch.uint8)),
            ("bool", torch.tensor([True, False, True])),
            ("f64", torch.randn(2, dtype=torch.float64)),
            ("param", torch.nn.Parameter(torch.randn(3))),
        ]
    )


def _numpy(tensor, torch):
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.float().numpy()  # numpy has no bfloat16; float32 is exact
    return tensor.contiguous().numpy()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_dtypes_views_and_nesting(tmp_path, torch, zip_format):
    state = _tricky_state(torch)
    lin = torch.nn.Linear(3, 2)
    obj = {
        "epoch": 7,
        "model_state": state,
        "state_dict": lin.state_dict(),  # carries OrderedDict._metadata (pickle BUILD)
        "model": {"deep": {"er": [torch.ones(2), {"x": torch.zeros(1)}]}},
        "cfg": "a yaml string",
        "best_acc1": 0.5,
    }
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    got = read_checkpoint(path)
    for name, tensor in state.items():
        want = _numpy(tensor, torch)
        assert got[f"model_state.{name}"].dtype == want.dtype, name
        assert got[f"model_state.{name}"].shape == want.shape, name
        np.testing.assert_array_equal(got[f"model_state.{name}"], want, err_msg=name)
    assert got["model_state.bf16"].dtype == np.float32
    np.testing.assert_array_equal(got["state_dict.weight"], lin.weight.detach().numpy())
    np.testing.assert_array_equal(got["model.deep.er.0"], np.ones(2, np.float32))
    np.testing.assert_array_equal(got["model.deep.er.1.x"], np.zeros(1, np.float32))
    assert "epoch" not in got and "cfg" not in got  # non-tensor leaves are dropped


def test_torch_shared_storage_arrays_are_independent(tmp_path, torch):
    base = torch.arange(12.0)
    torch.save({"a": base, "b": base[4:8].view(2, 2)}, tmp_path / "s.pth")
    got = read_checkpoint(tmp_path / "s.pth")
    got["a"][4] = -1.0  # writable copies: mutating one must not change the other
    np.testing.assert_array_equal(got["b"], np.array([[4.0, 5.0], [6.0, 7.0]], np.float32))


def test_torch_family_layouts(tmp_path, torch):
    """Real container layouts of the released files; the reader keeps every prefix."""
    sd = collections.OrderedDict(
        [("module.temporal_transformer.layers.0.0.fn.fn.to_k.weight", torch.randn(4, 8))]
    )
    torch.save(sd, tmp_path / "lin-vtn.pth")
    assert list(read_checkpoint(tmp_path / "lin-vtn.pth")) == [
        "module.temporal_transformer.layers.0.0.fn.fn.to_k.weight"
    ]
    laps = {
        "epoch": 16,
        "state_dict": collections.OrderedDict(
            [
                ("module.base_model.stem.0.weight", torch.randn(4, 3, 3, 3)),
                ("module.base_model.stem.1.num_batches_tracked", torch.tensor(5)),
            ]
        ),
        "best_acc1": torch.tensor(75.5),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "scheduler": {"last_epoch": 3},
    }
    torch.save(laps, tmp_path / "best_ckpt_e15.pth")
    got = read_checkpoint(tmp_path / "best_ckpt_e15.pth")
    assert got["state_dict.module.base_model.stem.1.num_batches_tracked"].dtype == np.int64
    assert got["best_acc1"].shape == ()
    visformer = {"model": collections.OrderedDict([("stem.0.weight", torch.randn(2, 3, 1, 1))])}
    torch.save(visformer, tmp_path / "Visformer_s_in10k.pth")
    assert list(read_checkpoint(tmp_path / "Visformer_s_in10k.pth")) == ["model.stem.0.weight"]


def test_hf_folder_with_pytorch_model_bin(tmp_path, torch):
    """The hub's google/vivit-b-16x2-kinetics400 main branch ships pytorch_model.bin."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vivit"}))
    sd = {"vivit.embeddings.cls_token": torch.randn(1, 1, 8), "classifier.bias": torch.randn(3)}
    torch.save(sd, tmp_path / "pytorch_model.bin")
    got = read_checkpoint(tmp_path)
    assert sorted(got) == sorted(sd)
    assert sniff_format(tmp_path) == "hf_folder"


def test_torch_not_imported_by_read_checkpoint():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (
        "import sys, types\n"
        # A bare parent package keeps `keras_vtn/__init__` (which imports keras) out of the way,
        # so the check sees exactly what the weights package and its readers import.
        "pkg = types.ModuleType('keras_vtn')\n"
        f"pkg.__path__ = [{os.path.join(root, 'keras_vtn')!r}]\n"
        "sys.modules['keras_vtn'] = pkg\n"
        "import keras_vtn.weights as w\n"
        f"w.read_checkpoint({os.path.join(FIXTURES, 'linear_vtn_tiny.pth')!r})\n"
        f"w.read_checkpoint({os.path.join(FIXTURES, 'vtn_tiny_legacy.pyth')!r})\n"
        "heavy = ('torch', 'jax', 'flax', 'safetensors', 'tensorflow', 'keras')\n"
        "print('IMPORTED', sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "IMPORTED []" in out


# --- Flax msgpack in scenic's TrainState layout ----------------------------------------------
def _scenic_params(rng):
    block = {
        "LayerNorm_0": {
            "scale": rng.standard_normal(8, np.float32),
            "bias": np.zeros(8, np.float32),
        },
        "MultiHeadDotProductAttention_0": {
            "query": {
                "kernel": rng.standard_normal((8, 2, 4)).astype(np.float32),
                "bias": rng.standard_normal((2, 4)).astype(np.float32),
            },
            "out": {
                "kernel": rng.standard_normal((2, 4, 8)).astype(np.float32),
                "bias": rng.standard_normal(8).astype(np.float32),
            },
        },
        "MlpBlock_0": {"Dense_0": {"kernel": rng.standard_normal((8, 16)).astype(np.float32)}},
    }
    return {
        "cls": rng.standard_normal((1, 1, 8)).astype(np.float32),
        "embedding": {
            "kernel": rng.standard_normal((2, 4, 4, 3, 8)).astype(np.float32),
            "bias": np.zeros(8, np.float32),
        },
        "Transformer": {
            "posembed_input": {"pos_embedding": rng.standard_normal((1, 17, 8)).astype(np.float32)},
            "encoderblock_0": block,
            "encoder_norm": {"scale": np.ones(8, np.float32), "bias": np.zeros(8, np.float32)},
        },
        "output_projection": {
            "kernel": rng.standard_normal((8, 5)).astype(np.float32),
            "bias": np.zeros(5, np.float32),
        },
    }


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else key
        out.update(_flat(value, name) if isinstance(value, dict) else {name: value})
    return out


@pytest.mark.parametrize("layout", ["optimizer_target", "params"])
def test_flax_msgpack_scenic_train_state(tmp_path, layout):
    rng = np.random.default_rng(0)
    params = _scenic_params(rng)
    if layout == "optimizer_target":  # 2021 scenic TrainState with a flax.optim optimizer
        state = {
            "global_step": np.int64(30000),
            "optimizer": {"target": params, "state": {"step": np.int64(3), "param_states": {}}},
            "model_state": {},
            "rng": np.array([0, 42], np.uint32),
            "accum_train_time": 12.5,
        }
    else:
        state = {"params": params, "global_step": 7}
    path = tmp_path / "checkpoint"
    path.write_bytes(flax_msgpack_bytes(state))
    assert sniff_format(path) == "flax_msgpack"
    got = read_checkpoint(path)
    prefix = "optimizer/target/" if layout == "optimizer_target" else "params/"
    for name, array in _flat(params).items():
        np.testing.assert_array_equal(got[prefix + name], array, err_msg=name)
        assert got[prefix + name].dtype == array.dtype
    if layout == "optimizer_target":
        assert got["global_step"] == 30000 and got["rng"].dtype == np.uint32
    # A folder with flax's `checkpoint_<step>` naming resolves to the latest file.
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "checkpoint_10").write_bytes(flax_msgpack_bytes({"params": {"a": np.ones(2)}}))
    (folder / "checkpoint_200").write_bytes(flax_msgpack_bytes({"params": {"a": np.zeros(3)}}))
    assert read_checkpoint(folder)["params/a"].shape == (3,)


def test_flax_msgpack_bfloat16_and_chunked_arrays(tmp_path):
    bf16 = np.arange(-4, 4, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 4)
    big = np.arange(10, dtype=np.float32)
    chunked = {  # flax splits arrays above MAX_CHUNK_SIZE like this
        "__msgpack_chunked_array__": True,
        "shape": {"0": 2, "1": 5},
        "chunks": {"0": big[:7], "1": big[7:]},
    }
    path = tmp_path / "checkpoint"
    path.write_bytes(flax_msgpack_bytes({"params": {"bf": bf16, "big": chunked}}))
    got = read_checkpoint(path)
    assert got["params/bf"].dtype == np.float32
    np.testing.assert_array_equal(got["params/bf"], bf16.astype(np.float32))
    np.testing.assert_array_equal(got["params/big"], big.reshape(2, 5))


def test_flax_msgpack_truncated(tmp_path):
    data = flax_msgpack_bytes({"params": {"w": np.ones((64, 64), np.float32)}})
    path = tmp_path / "checkpoint"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)


# --- safetensors / HF folders (files written by the safetensors package) ----------------------
def test_safetensors_and_hf_folder(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {  # HF legacy ViViT names, tiny shapes
        "vivit.embeddings.cls_token": rng.standard_normal((1, 1, 8)).astype(np.float32),
        "vivit.embeddings.patch_embeddings.projection.weight": rng.standard_normal(
            (8, 3, 2, 4, 4)
        ).astype(np.float32),
        "vivit.encoder.layer.0.attention.attention.query.weight": rng.standard_normal(
            (8, 8)
        ).astype(np.float16),
        "classifier.bias": rng.standard_normal(5).astype(np.float64),
        "counts": np.arange(6, dtype=np.int64).reshape(2, 3),
        "bf": np.linspace(-2, 2, 6, dtype=np.float32).astype(ml_dtypes.bfloat16),
    }
    safetensors_numpy.save_file(
        tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"}
    )
    assert sniff_format(tmp_path / "model.safetensors") == "safetensors"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vivit", "num_labels": 5}))
    for source in (tmp_path / "model.safetensors", tmp_path):
        got = read_checkpoint(source)
        assert sorted(got) == sorted(tensors)
        for name, array in tensors.items():
            want = array.astype(np.float32) if array.dtype == ml_dtypes.bfloat16 else array
            assert got[name].dtype == want.dtype
            np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_hf_sharded_folder(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    safetensors_numpy.save_file({"a": np.ones(2, np.float32)}, str(tmp_path / "m-1.safetensors"))
    safetensors_numpy.save_file({"b": np.zeros(3, np.float32)}, str(tmp_path / "m-2.safetensors"))
    index = {"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text("{}")
    assert sorted(read_checkpoint(tmp_path)) == ["a", "b"]


def test_safetensors_corrupt_offsets(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match="outside the data buffer"):
        read_checkpoint(path)


# --- npz (Google ViT image checkpoints) ------------------------------------------------------
def test_npz_vit_names(tmp_path):
    arrays = {
        "embedding/kernel": np.ones((4, 4, 3, 8), np.float32),
        "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel": np.zeros((8, 16), np.float32),
        "cls": np.zeros((1, 1, 8), np.float32),
    }
    np.savez(tmp_path / "ViT-B_16.npz", **arrays)
    got = read_checkpoint(tmp_path / "ViT-B_16.npz")
    assert sorted(got) == sorted(arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    assert sorted(read_checkpoint(tmp_path / "c.npz")) == sorted(arrays)


def test_npz_object_arrays_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="object arrays are refused"):
        read_checkpoint(tmp_path / "obj.npz")


# --- sniffing / clear refusals ----------------------------------------------------------------
def test_unknown_and_empty_files(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="unknown format"):
        read_checkpoint(tmp_path / "text.pth")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "dir").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        read_checkpoint(tmp_path / "dir")


def test_keras_weights_file_is_pointed_to_load_weights(tmp_path):
    (tmp_path / "m.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(CheckpointError, match="load_weights"):
        read_checkpoint(tmp_path / "m.weights.h5")


# --- reads are independent: concurrent and after hostile files ---------------------------------
def test_concurrent_reads_share_no_state(tmp_path):
    """Each read builds its own unpickler tables, so threads reading genuine and poisoning
    files at the same time all get exactly the known arrays."""
    import threading

    from hostile_builders import B, G, dumps, genuine_torch_zip, torch_zip

    expected = genuine_torch_zip(tmp_path / "genuine.pth")
    poison = dumps({"p": B(G("torch", "FloatStorage"), {"dtype": "float16"})})
    evil = torch_zip(tmp_path / "evil.pth", poison)
    failures: list[str] = []

    def read_genuine():
        for _ in range(20):
            got = read_checkpoint(tmp_path / "genuine.pth")
            for name, array in expected.items():
                if got[name].tobytes() != array.tobytes() or got[name].dtype != array.dtype:
                    failures.append(name)

    def read_evil():
        for _ in range(20):
            try:
                read_checkpoint(evil)
                failures.append("the poisoning file was read")
            except CheckpointError:
                pass

    threads = [threading.Thread(target=f) for f in (read_genuine, read_evil) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:5]
