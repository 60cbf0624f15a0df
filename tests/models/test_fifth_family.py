"""A fifth family registered from this module alone works everywhere families are read:
the builder function, `keras-vtn convert`, the training config, the demo and `keras-vtn
predict`. It has a tiny graph from keras_vtn layers and its own checkpoint format (a torch
state dict whose names start with `dummy.`), written here."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

import keras_vtn
from keras_vtn import cli
from keras_vtn.data.testing import write_video
from keras_vtn.demo import DEMO_MODELS, demo_config
from keras_vtn.layers import TokenPooling, TransformerBlock, TubeletEmbedding
from keras_vtn.models.families import FAMILIES, Family, build_model, register_family
from keras_vtn.models.pipeline import model_config
from keras_vtn.training import TrainConfig
from keras_vtn.training.run import _build_model
from keras_vtn.weights import CheckpointError

torch = pytest.importorskip("torch")

SIZES = {"tiny": dict(hidden_dim=16, num_heads=2, mlp_dim=32, tubelet_size=(2, 8, 8),
                      num_frames=4, image_size=16)}


def dummy_graph(config: dict) -> keras.Model:
    size = config["image_size"]
    height, width = (size, size) if isinstance(size, int) else size
    frames = keras.Input((config["num_frames"], height, width, 3), name="frames")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocessing")(frames)
    x = TubeletEmbedding(config["hidden_dim"], config["tubelet_size"], name="embed")(x)
    x = TransformerBlock(config["num_heads"], config["mlp_dim"], name="block_0")(x)
    x = TokenPooling("avg", num_prefix_tokens=0, name="pooling")(x)
    x = keras.layers.Dense(config["num_classes"], name="head")(x)
    return keras.Model(frames, x, name="dummy")


def dummy_config(state: dict) -> dict:
    if "dummy.embed.kernel" not in state:
        raise CheckpointError("Not a dummy checkpoint: no `dummy.embed.kernel`.")
    t, h, w, _, dim = state["dummy.embed.kernel"].shape
    return {"hidden_dim": int(dim), "tubelet_size": (int(t), int(h), int(w)),
            "mlp_dim": int(state["dummy.mlp.fc1.weight"].shape[0]),
            "num_classes": int(state["dummy.head.weight"].shape[0])}


def dummy_convert(state: dict, model) -> dict:
    """Our names → variable paths; torch Linear (out, in) → Dense (in, out)."""
    out = {"embed/kernel": state["dummy.embed.kernel"], "embed/bias": state["dummy.embed.bias"],
           "head/kernel": state["dummy.head.weight"].T, "head/bias": state["dummy.head.bias"]}
    block = "block_0/"
    for part in ("query", "key", "value", "output"):
        out[f"{block}attention/{part}/kernel"] = state[f"dummy.attn.{part}.weight"].T
        out[f"{block}attention/{part}/bias"] = state[f"dummy.attn.{part}.bias"]
    for norm in ("norm1", "norm2"):
        out[f"{block}{norm}/gamma"] = state[f"dummy.{norm}.weight"]
        out[f"{block}{norm}/beta"] = state[f"dummy.{norm}.bias"]
    for fc in ("fc1", "fc2"):
        out[f"{block}mlp/{fc}/kernel"] = state[f"dummy.mlp.{fc}.weight"].T
        out[f"{block}mlp/{fc}/bias"] = state[f"dummy.mlp.{fc}.bias"]
    return out


DUMMY = Family(
    name="dummy", graph=dummy_graph, config_from_checkpoint=dummy_config, convert=dummy_convert,
    detect=lambda state: any(name.startswith("dummy.") for name in state), sizes=SIZES,
    demo_model=dict(hidden_dim=16, num_heads=2, mlp_dim=32, tubelet_size=(2, 8, 8)),
    demo_epochs=1,
)


@pytest.fixture(autouse=True)
def dummy_family(monkeypatch):
    monkeypatch.delitem(FAMILIES, "dummy", raising=False)
    register_family(DUMMY)
    yield
    FAMILIES.pop("dummy", None)


def dummy_state(dim=24, mlp=40, classes=3, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def r(*shape):
        return (0.2 * rng.standard_normal(shape)).astype(np.float32)

    state = {"dummy.embed.kernel": r(2, 8, 8, 3, dim), "dummy.embed.bias": r(dim),
             "dummy.head.weight": r(classes, dim), "dummy.head.bias": r(classes),
             "dummy.mlp.fc1.weight": r(mlp, dim), "dummy.mlp.fc1.bias": r(mlp),
             "dummy.mlp.fc2.weight": r(dim, mlp), "dummy.mlp.fc2.bias": r(dim)}
    for part in ("query", "key", "value", "output"):
        state[f"dummy.attn.{part}.weight"] = r(dim, dim)
        state[f"dummy.attn.{part}.bias"] = r(dim)
    for norm in ("norm1", "norm2"):
        state[f"dummy.{norm}.weight"] = 1 + r(dim)
        state[f"dummy.{norm}.bias"] = r(dim)
    return state


@pytest.fixture
def checkpoint(tmp_path):
    state = dummy_state()
    path = tmp_path / "dummy.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    return path, state


def _clip(seed=1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (1, 4, 16, 16, 3)).astype("float32")


def test_the_builder_function_reads_config_and_weights_from_the_checkpoint(checkpoint):
    path, state = checkpoint
    model = build_model("dummy", weights=path)  # a PathLike, as every builder takes
    config = model_config(model)
    assert (config["family"], config["hidden_dim"], config["mlp_dim"]) == ("dummy", 24, 40)
    assert config["num_classes"] == 3  # the checkpoint's head, as no num_classes was given
    values = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    np.testing.assert_array_equal(values["head/kernel"], state["dummy.head.weight"].T)
    rebuilt = DUMMY.graph(config)
    assert [v.shape for v in rebuilt.weights] == [v.shape for v in model.weights]
    with pytest.raises(ValueError, match="hidden_dim=32 conflicts with the checkpoint"):
        build_model("dummy", weights=path, hidden_dim=32)
    with pytest.warns(UserWarning, match="num_classes differs"):
        assert build_model("dummy", weights=path, num_classes=7).output_shape == (None, 7)


def test_convert_detects_the_family_and_load_model_rebuilds_it(checkpoint, tmp_path):
    path, _ = checkpoint
    direct = build_model("dummy", weights=path)
    for output in (tmp_path / "dummy.weights.h5", tmp_path / "dummy.keras"):
        assert cli.main(["convert", str(path), "-o", str(output)]) == 0
        converted = keras_vtn.load_model(output)
        np.testing.assert_allclose(converted.predict_on_batch(_clip()),
                                   direct.predict_on_batch(_clip()), atol=1e-5)
    recorded = json.loads((tmp_path / "dummy.config.json").read_text())
    assert recorded["family"] == "dummy" and recorded["config"]["hidden_dim"] == 24


def test_training_config_and_demo_build_the_family(tmp_path):
    config = TrainConfig(family="dummy", model_kwargs={"size": "tiny"}, num_frames=4,
                         image_size=16)
    model = _build_model(config, num_classes=6)
    assert model.output_shape == (None, 6) and model_config(model)["hidden_dim"] == 16
    assert DEMO_MODELS["dummy"] == DUMMY.demo_model
    demo = demo_config("dummy", str(tmp_path))
    assert demo.family == "dummy" and demo.model_kwargs == dict(DUMMY.demo_model)
    assert _build_model(demo, num_classes=6).output_shape == (None, 6)


def test_predict_from_the_command_line(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    video = os.path.join(tmp_path, "clip.mp4")
    write_video(video, num_frames=20, height=24, width=32)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    assert cli.main(["predict", video, "--family", "dummy", "--weights", str(path),
                     "--labels", str(labels), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["frame_indices"]) == 4 and len(printed["top_k"]) == 3
    assert {row["label"] for row in printed["top_k"]} == {"a", "b", "c"}
