"""The model pipeline (weights → config → graph → weights applied), the same in every family."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_vtn
from keras_vtn.models.families import FAMILIES, build_model
from keras_vtn.models.pipeline import merge_config
from keras_vtn.models.vit import PRE_LINEN_TO_LINEN

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LAPS_VIT = FIXTURES / "laps" / "vit_laps_tiny.pth"  # width 32, 2 heads, 5 classes
VTN_TINY = dict(num_spatial_heads=2, num_temporal_heads=2, attention_window=4, num_classes=5)


def _shapes(model) -> dict:
    return {v.path: tuple(v.shape) for v in model.weights}


@pytest.mark.parametrize("family", ["vivit", "linear_vtn", "vtn", "laps"])
def test_model_config_rebuilds_the_same_graph(family):
    model = build_model(family, **FAMILIES[family].demo_model, num_frames=8, image_size=32,
                        num_classes=6)
    config = keras_vtn.model_config(model)
    assert config["family"] == family and config["num_classes"] == 6
    rebuilt = FAMILIES[family].graph(config)
    assert _shapes(rebuilt) == _shapes(model)
    assert rebuilt.output_shape == model.output_shape


def test_merge_config_is_preset_then_checkpoint_then_explicit():
    merged = merge_config("Toy", {"a": 1, "b": 2, "c": 3}, {"b": 20, "c": 30}, {"c": 30, "a": 9})
    assert merged == {"a": 9, "b": 20, "c": 30}
    assert merge_config("Toy", {}, {"t": (2, 16, 16)}, {"t": [2, 16, 16]}) == {"t": [2, 16, 16]}
    with pytest.raises(ValueError, match="Toy: b=5 conflicts with the checkpoint, which has b=20"):
        merge_config("Toy", {}, {"b": 20}, {"b": 5})


def test_num_classes_none_takes_the_checkpoint_head_in_every_family():
    laps = keras_vtn.LAPSTransformer(weights=LAPS_VIT, num_heads=2, num_classes=None)
    assert laps.output_shape == (None, 5)
    vtn = keras_vtn.VTN(weights=FIXTURES / "vtn" / "vtn.pyth", num_frames=10,
                        **{**VTN_TINY, "num_classes": None})
    assert vtn.output_shape == (None, 5)
    assert keras_vtn.LAPSTransformer(num_frames=4, image_size=32, patch_size=16, hidden_dim=32,
                                     num_layers=1, num_heads=2, mlp_dim=64,
                                     num_classes=None).output_shape == (None, 400)


def test_laps_takes_size_as_well_as_backbone():
    tiny = dict(num_frames=4, image_size=32, num_classes=3)
    small = keras_vtn.LAPSTransformer(size="small", stem_width=8, widths=(8, 16, 32),
                                      depths=(1, 1, 1), num_heads=2, **tiny)
    assert keras_vtn.model_config(small)["backbone"] == "visformer_small"
    with pytest.raises(ValueError, match="contradicts backbone='vit_large'"):
        keras_vtn.LAPSTransformer("vit_large", size="small", **tiny)


def test_frame_models_load_a_checkpoint_made_at_another_image_size():
    path = FIXTURES / "vtn" / "vtn.pyth"
    same = keras_vtn.VTN(weights=path, num_frames=10, **VTN_TINY)
    larger = keras_vtn.VTN(weights=os.fspath(path), num_frames=10, image_size=48, **VTN_TINY)
    tables = [p for p in _shapes(larger) if p.endswith("position_embedding/embeddings")]
    assert tables and all(_shapes(larger)[p][0] == 1 + 6 * 6 for p in tables)
    assert all(_shapes(same)[p][0] == 1 + 4 * 4 for p in tables)
    clip = np.random.default_rng(0).uniform(0, 255, (1, 10, 48, 48, 3)).astype("float32")
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(larger(clip))))


def _google_vit(rng, linen: bool) -> dict[str, np.ndarray]:
    """A tiny Google ViT image checkpoint (width 32, 2 heads, 1 block, 32 px, patch 16)."""
    def r(*shape):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    block = "Transformer/encoderblock_0/"
    state = {"embedding/kernel": r(16, 16, 3, 32), "embedding/bias": r(32), "cls": r(1, 1, 32),
             "Transformer/posembed_input/pos_embedding": r(1, 5, 32),
             "Transformer/encoder_norm/scale": r(32), "Transformer/encoder_norm/bias": r(32)}
    for norm in ("LayerNorm_0", "LayerNorm_2"):
        state.update({f"{block}{norm}/scale": r(32), f"{block}{norm}/bias": r(32)})
    attention = f"{block}MultiHeadDotProductAttention_1/"
    for name in ("query", "key", "value"):
        state[f"{attention}{name}/kernel"] = r(32, 2, 16)
        state[f"{attention}{name}/bias"] = r(2, 16)
    state.update({f"{attention}out/kernel": r(2, 16, 32), f"{attention}out/bias": r(32)})
    for i, (fan_in, fan_out) in enumerate(((32, 64), (64, 32))):
        state.update({f"{block}MlpBlock_3/Dense_{i}/kernel": r(fan_in, fan_out),
                      f"{block}MlpBlock_3/Dense_{i}/bias": r(fan_out)})
    if linen:
        state = {"/".join(PRE_LINEN_TO_LINEN.get(part, part) for part in key.split("/")): value
                 for key, value in state.items()}
    return state


def test_laps_reads_google_vit_checkpoints_in_both_name_schemes(tmp_path):
    models = []
    for linen in (False, True):
        path = tmp_path / f"vit_{'linen' if linen else 'pre_linen'}.npz"
        np.savez(path, **_google_vit(np.random.default_rng(0), linen))
        models.append(keras_vtn.LAPSTransformer(weights=path, num_frames=4, num_classes=3))
    assert keras_vtn.model_config(models[0])["num_heads"] == 2
    old, new = ({v.path: keras.ops.convert_to_numpy(v) for v in m.weights if
                 not v.path.startswith("head/")} for m in models)
    assert old.keys() == new.keys()
    for key in old:
        np.testing.assert_array_equal(old[key], new[key])


@pytest.mark.parametrize("family", ["vivit", "linear_vtn", "vtn"])
def test_avg_pooling_is_the_token_mean_without_the_cls_in_every_family(family):
    model = build_model(family, **FAMILIES[family].demo_model, num_frames=8, image_size=32,
                        include_top=False, pooling="avg")
    tokens = keras.Model(model.input, model.get_layer("pooling").input)
    clip = np.random.default_rng(0).uniform(0, 255, (1, 8, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(tokens(clip))[:, 1:].mean(axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(clip)), expected, atol=1e-5)


def test_clip_shape_is_read_from_the_frames_input_of_a_dict_input_model():
    """VTN with `frame_indices` takes `{"frames", "frame_indices"}`; Keras lists its input shapes
    by key, frame indices first, and the clip shape must still be the frames'."""
    from keras_vtn.models.families import model_clip_shape, takes_frame_indices

    model = keras_vtn.VTN(patch_size=8, hidden_dim=32, num_spatial_layers=1, spatial_mlp_dim=64,
                          num_temporal_layers=1, temporal_mlp_dim=48, max_position_embeddings=20,
                          head_hidden_dim=24, num_frames=6, image_size=32, frame_indices=True,
                          **VTN_TINY)
    assert takes_frame_indices(model)
    assert model_clip_shape(model) == (6, 32, 32)
