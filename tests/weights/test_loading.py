"""load_weights / assign_weights / converted cache / CLI, on a tiny "toy" family built from
keras_vtn.layers with a timm-style PyTorch state dict (fused qkv, (out, in) Linear weights)."""

from __future__ import annotations

import collections
import os
import warnings

import keras
import numpy as np
import pytest

from keras_vtn import cli
from keras_vtn.layers import TransformerBlock
from keras_vtn.models.families import FAMILIES, Family
from keras_vtn.weights import (
    CheckpointError,
    FamilyNotAvailableError,
    assign_weights,
    load_weights,
    register,
    unregister,
)
from keras_vtn.weights.loading import save_weights_atomically

DIM, MLP, TOKENS = 8, 16, 4


def build_toy(weights=None, num_classes=5, include_top=True, name="toy", **match):
    inputs = keras.Input((TOKENS, DIM))
    x = keras.layers.Dense(DIM, name="proj")(inputs)
    x = TransformerBlock(num_heads=2, mlp_dim=MLP, name="block_0")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    if include_top:
        x = keras.layers.Dense(num_classes, name="head")(x)
    model = keras.Model(inputs, x, name=name)
    load_weights(model, weights, "toy", converter=convert_toy, **match)
    return model


def convert_toy(state: dict, model) -> dict:
    """A converter is a name map: timm names -> variable paths (strip `module.`)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    qkv_w, qkv_b = state["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.bias"]
    out = {
        "proj/kernel": state["proj.weight"].T,
        "proj/bias": state["proj.bias"],
        "block_0/attention/output/kernel": state["blocks.0.attn.proj.weight"].T,
        "block_0/attention/output/bias": state["blocks.0.attn.proj.bias"],
        "norm/gamma": state["norm.weight"],
        "norm/beta": state["norm.bias"],
        "head/kernel": state["head.weight"].T,
        "head/bias": state["head.bias"],
    }
    for i, part in enumerate(("query", "key", "value")):
        out[f"block_0/attention/{part}/kernel"] = qkv_w[i * DIM : (i + 1) * DIM].T
        out[f"block_0/attention/{part}/bias"] = qkv_b[i * DIM : (i + 1) * DIM]
    for keras_name, torch_name in (("norm1", "norm1"), ("norm2", "norm2")):
        out[f"block_0/{keras_name}/gamma"] = state[f"blocks.0.{torch_name}.weight"]
        out[f"block_0/{keras_name}/beta"] = state[f"blocks.0.{torch_name}.bias"]
    for fc in ("fc1", "fc2"):
        out[f"block_0/mlp/{fc}/kernel"] = state[f"blocks.0.mlp.{fc}.weight"].T
        out[f"block_0/mlp/{fc}/bias"] = state[f"blocks.0.mlp.{fc}.bias"]
    return out


def toy_config(state: dict) -> dict:
    return {"num_classes": int(state["module.head.weight"].shape[0])}


@pytest.fixture(autouse=True)
def toy_family(monkeypatch):
    monkeypatch.setitem(
        FAMILIES,
        "toy",
        Family(name="toy", builder=build_toy, config_from_checkpoint=toy_config,
               convert=convert_toy, detect=lambda state: False),
    )


def toy_state(num_classes=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return collections.OrderedDict(
        [
            ("module.proj.weight", r(DIM, DIM)),
            ("module.proj.bias", r(DIM)),
            ("module.blocks.0.norm1.weight", r(DIM)),
            ("module.blocks.0.norm1.bias", r(DIM)),
            ("module.blocks.0.attn.qkv.weight", r(3 * DIM, DIM)),
            ("module.blocks.0.attn.qkv.bias", r(3 * DIM)),
            ("module.blocks.0.attn.proj.weight", r(DIM, DIM)),
            ("module.blocks.0.attn.proj.bias", r(DIM)),
            ("module.blocks.0.norm2.weight", r(DIM)),
            ("module.blocks.0.norm2.bias", r(DIM)),
            ("module.blocks.0.mlp.fc1.weight", r(MLP, DIM)),
            ("module.blocks.0.mlp.fc1.bias", r(MLP)),
            ("module.blocks.0.mlp.fc2.weight", r(DIM, MLP)),
            ("module.blocks.0.mlp.fc2.bias", r(DIM)),
            ("module.norm.weight", r(DIM)),
            ("module.norm.bias", r(DIM)),
            ("module.head.weight", r(num_classes, DIM)),
            ("module.head.bias", r(num_classes)),
        ]
    )


@pytest.fixture
def toy_pth(tmp_path):
    torch = pytest.importorskip("torch")
    state = toy_state()
    path = tmp_path / "toy.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    return path, state


def _values(model) -> dict:
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def test_load_original_checkpoint(toy_pth):
    path, state = toy_pth
    model = build_toy(weights=str(path))
    values = _values(model)
    np.testing.assert_array_equal(values["proj/kernel"], state["module.proj.weight"].T)
    np.testing.assert_array_equal(
        values["block_0/attention/key/kernel"],
        state["module.blocks.0.attn.qkv.weight"][DIM : 2 * DIM].T,
    )
    np.testing.assert_array_equal(values["head/bias"], state["module.head.bias"])


def test_assign_weights_structural_gate():
    model = build_toy()
    mapping = convert_toy(toy_state(), model)
    before = _values(model)

    extra = dict(mapping, **{"block_9/mlp/fc1/kernel": np.zeros((DIM, MLP))})
    with pytest.raises(ValueError, match="block_9/mlp/fc1/kernel"):
        assign_weights(model, extra)
    bad = dict(mapping, **{"proj/kernel": np.zeros((DIM, DIM + 1))})
    with pytest.raises(ValueError, match=r"proj/kernel: checkpoint \(8, 9\) vs model \(8, 8\)"):
        assign_weights(model, bad)
    partial = {k: v for k, v in mapping.items() if k != "norm/gamma"}
    with pytest.raises(ValueError, match="no value for 1 variable.*norm/gamma"):
        assign_weights(model, partial)
    # Nothing was assigned by the refused calls.
    for path, value in _values(model).items():
        np.testing.assert_array_equal(value, before[path])

    report = assign_weights(model, partial, allow_missing=True)  # e.g. an image checkpoint
    assert report.missing == ["norm/gamma"] and not report.complete
    report = assign_weights(model, mapping)
    assert report.complete and len(report.assigned) == len(model.weights)


def test_head_mismatch_keeps_fresh_head(toy_pth):
    path, state = toy_pth
    with pytest.warns(UserWarning, match="num_classes differs"):
        model = build_toy(weights=str(path), num_classes=3)
    values = _values(model)
    np.testing.assert_array_equal(values["proj/kernel"], state["module.proj.weight"].T)
    assert values["head/kernel"].shape == (DIM, 3)
    assert not np.array_equal(values["head/kernel"], state["module.head.weight"][:3].T)


def test_include_top_false_ignores_head(toy_pth):
    path, state = toy_pth
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no head warning: the model simply has no head
        model = build_toy(weights=str(path), include_top=False)
    np.testing.assert_array_equal(_values(model)["norm/beta"], state["module.norm.bias"])


def test_keras_weights_and_archive_with_head_change(tmp_path, toy_pth):
    path, _ = toy_pth
    source = build_toy(weights=str(path))
    source.save_weights(str(tmp_path / "toy.weights.h5"))
    source.save(str(tmp_path / "toy.keras"))
    x = np.random.default_rng(1).standard_normal((2, TOKENS, DIM)).astype(np.float32)
    want = keras.ops.convert_to_numpy(source(x))
    for name in ("toy.weights.h5", "toy.keras"):
        model = build_toy(weights=str(tmp_path / name))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), want, atol=1e-6)
        with pytest.warns(UserWarning, match="num_classes differs"):
            other = build_toy(weights=str(tmp_path / name), num_classes=3)
        np.testing.assert_array_equal(
            _values(other)["block_0/mlp/fc2/kernel"], _values(source)["block_0/mlp/fc2/kernel"]
        )


def test_family_without_converter_is_a_clear_error(toy_pth, monkeypatch):
    path, _ = toy_pth
    model = build_toy()
    with pytest.raises(FamilyNotAvailableError, match="ghost converter.*not available"):
        load_weights(model, str(path), "ghost")


def _toy_entry(server) -> dict:
    """A registry entry for the toy checkpoint served as `toy.pth`."""
    return {
        "id": "toy/k400",
        "name": "k400",
        "family": "toy",
        "match": {},
        "kind": "video",
        "config": {"num_classes": 5},
        "format": "pytorch",
        "files": [{"url": f"{server.base}/files/toy.pth", "fname": "toy.pth", "sha256": None}],
        "cache_dir": "test/toy",
    }


def test_registry_download_convert_and_cache(keras_home, server, toy_pth):
    path, state = toy_pth
    server.files["toy.pth"] = path.read_bytes()
    register(_toy_entry(server))
    try:
        model = build_toy(weights="k400")
        converted = os.listdir(os.path.join(str(keras_home), "keras_vtn", "converted"))
        assert len(converted) == 1 and converted[0].endswith(".weights.h5")
        server.stop()
        again = build_toy(name="toy_again")
        report = load_weights(again, "k400", "toy", converter=convert_toy)
        assert report.from_cache
        for p, value in _values(model).items():
            np.testing.assert_array_equal(_values(again)[p], value)
    finally:
        unregister("toy/k400")


def test_corrupt_download_is_removed(keras_home, server, toy_pth):
    path, _ = toy_pth
    server.files["toy.pth"] = path.read_bytes()[:-200]  # served complete, but truncated upstream
    entry = {
        "id": "toy/bad",
        "name": "bad",
        "family": "toy",
        "match": {},
        "kind": "video",
        "config": {},
        "format": "pytorch",
        "files": [{"url": f"{server.base}/files/toy.pth", "fname": "toy.pth", "sha256": None}],
        "cache_dir": "test/bad",
    }
    register(entry)
    try:
        with pytest.raises(CheckpointError, match="was removed"):
            build_toy(weights="bad")
        assert not os.path.exists(
            os.path.join(str(keras_home), "keras_vtn", "originals", "test", "bad", "toy.pth")
        )
    finally:
        unregister("toy/bad")


def test_atomic_save_never_leaves_a_partial_file(tmp_path):
    model = build_toy()
    target = tmp_path / "cache" / "toy.weights.h5"

    def crash(filepath):
        with open(filepath, "wb") as handle:
            handle.write(b"\x89HDF\r\n\x1a\npartial")
        raise OSError("disk full")

    model.save_weights = crash
    with pytest.raises(OSError, match="disk full"):
        save_weights_atomically(model, str(target))
    assert os.listdir(tmp_path / "cache") == []


def test_cli_convert(tmp_path, toy_pth, capsys):
    path, state = toy_pth
    out = tmp_path / "out.weights.h5"
    assert cli.main(["convert", str(path), "--family", "toy", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    model = build_toy(weights=str(out))
    np.testing.assert_array_equal(_values(model)["head/kernel"], state["module.head.weight"].T)
    # Existing output without --overwrite, undetectable family, missing file: clear errors.
    assert cli.main(["convert", str(path), "--family", "toy", "-o", str(out)]) == 2
    capsys.readouterr()
    # Without --family the names are those of a timm image ViT: refused with the reason.
    assert cli.main(["convert", str(path), "-o", str(tmp_path / "b.weights.h5")]) == 2
    assert "image ViT checkpoint" in capsys.readouterr().err
    assert cli.main(["convert", "missing.pth", "-o", str(tmp_path / "c.weights.h5")]) == 2
    assert cli.main(["convert", str(path), "--family", "toy", "-o", str(tmp_path / "x.h5")]) == 2
    assert ".weights.h5" in capsys.readouterr().err


def test_truncated_converted_cache_is_reported_removed_and_rebuilt(keras_home, server, toy_pth):
    path, _ = toy_pth
    server.files["toy.pth"] = path.read_bytes()
    register(_toy_entry(server))
    try:
        model = build_toy(weights="k400")
        folder = os.path.join(str(keras_home), "keras_vtn", "converted")
        (name,) = os.listdir(folder)
        cache = os.path.join(folder, name)
        size = os.path.getsize(cache)
        with open(cache, "r+b") as handle:  # e.g. a full disk or a copy cut short
            handle.truncate(size // 2)
        again = build_toy(name="toy_again")
        with pytest.warns(UserWarning, match="converted-weights cache") as caught:
            report = load_weights(again, "k400", "toy", converter=convert_toy)
        assert any(cache in str(w.message) for w in caught)
        assert not report.from_cache and report.complete
        for p, value in _values(model).items():
            np.testing.assert_array_equal(_values(again)[p], value)
        assert os.listdir(folder) == [name]  # rebuilt in place, no stray temporary file
        third = build_toy(name="toy_third")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert load_weights(third, "k400", "toy", converter=convert_toy).from_cache
        for p, value in _values(model).items():
            np.testing.assert_array_equal(_values(third)[p], value)
    finally:
        unregister("toy/k400")
