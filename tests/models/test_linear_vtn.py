"""LinearVTN: logits parity with elb3k/vtn checkpoints, loading rules, serialization."""

import keras
import numpy as np
import pytest
from vtn_helpers import (
    FIXTURES,
    TINY_LINEAR_VTN,
    fixture,
    parity_tolerance,
    pixels,
    to_numpy,
)

import keras_vtn.weights as kvw
from keras_vtn.layers import TokenPooling
from keras_vtn.models import linear_vtn_convert
from keras_vtn.models.linear_vtn import LinearVTN

# fixture name -> (one_kv_head, share_kv, spatial_qkv_bias) the original model was built with
CASES = {
    "lin_vtn": (True, True, True),  # lin-vtn.yaml layout
    "lin_vtn_miil": (False, True, False),  # lin-vtn-miil-21k.yaml: no qkv bias, per-head K
    "lin_vtn_separate_kv": (True, False, True),  # share_kv=False: own to_v and E_v
}


def _build(name, **kwargs):
    extra = {} if CASES[name][0] else dict(num_temporal_heads=2, temporal_head_dim=24)
    return LinearVTN(weights=FIXTURES / f"{name}.pth", **TINY_LINEAR_VTN, **extra, **kwargs)


@pytest.fixture(scope="module")
def lin_vtn():
    return _build("lin_vtn")


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_the_original(name):
    # lin_vtn runs its backbone in chunks of 4 frames (4 + 2 padded to 4).
    model = _build(name, frame_chunk_size=4 if name == "lin_vtn" else None)
    logits = to_numpy(model(pixels("lin_vtn_input.npy")))
    expected = fixture(f"{name}_logits.npy")
    assert logits.dtype == np.float32 and logits.shape == expected.shape == (2, 5)
    diff = np.abs(logits - expected).max()
    print(f"{name} max abs diff {diff:.2e} ({keras.backend.backend()})")
    assert diff <= parity_tolerance()


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_from_checkpoint(name):
    one_kv_head, share_kv, qkv_bias = CASES[name]
    config = linear_vtn_convert.config_from_checkpoint(
        kvw.read_checkpoint(FIXTURES / f"{name}.pth")
    )
    assert config["one_kv_head"] is one_kv_head
    assert config["share_kv"] is share_kv
    assert config["spatial_qkv_bias"] is qkv_bias
    assert (config["num_frames"], config["linformer_k"], config["image_size"]) == (6, 3, 32)
    assert (config["hidden_dim"], config["num_spatial_layers"], config["num_temporal_layers"]) == (
        32,
        2,
        2,
    )
    if one_kv_head:
        assert (config["num_temporal_heads"], config["temporal_head_dim"]) == (2, 24)
    else:  # per-head K records only the width (48): no head split is claimed
        assert "num_temporal_heads" not in config


def test_per_head_k_width_is_split_into_elb3k_128_wide_heads():
    state = kvw.read_checkpoint(FIXTURES / "lin_vtn_miil.pth")
    for j in range(2):  # every layer: layers that differ are refused as inconsistent
        layer = f"module.temporal_transformer.layers.{j}.0.fn.fn."
        state[layer + "to_q.weight"] = np.zeros((256, 32), "float32")
        state[layer + "to_k.weight"] = np.zeros((256, 32), "float32")
    config = linear_vtn_convert.config_from_checkpoint(state)
    assert config["one_kv_head"] is False
    assert (config["num_temporal_heads"], config["temporal_head_dim"]) == (2, 128)


def test_converter_strips_prefix_ignores_vit_head_and_names_strays(lin_vtn):
    state = kvw.read_checkpoint(FIXTURES / "lin_vtn.pth")
    assert all(k.startswith("module.") for k in state)
    assert "module.spatial_transformer.head.weight" in state
    mapping = linear_vtn_convert.convert_linear_vtn(dict(state), lin_vtn)
    assert set(mapping) == {v.path for v in lin_vtn.weights}
    assert mapping["temporal_block_0/attention/key/kernel"].shape == (32, 24)  # one K/V head
    stray = dict(state, **{"module.temporal_transformer.extra": np.zeros(3, "float32")})
    with pytest.raises(ValueError, match="temporal_transformer.extra"):
        linear_vtn_convert.convert_linear_vtn(stray, lin_vtn)


def test_clip_length_is_fixed_by_the_weights():
    with pytest.raises(ValueError, match="Linformer cannot change its length"):
        LinearVTN(weights=FIXTURES / "lin_vtn.pth", num_frames=8, **TINY_LINEAR_VTN)
    with pytest.raises(ValueError, match="LinformerAttention was built for 7 tokens"):
        from keras_vtn.layers import LinformerAttention

        LinformerAttention(2, projected_length=3, sequence_length=7)(np.zeros((1, 9, 32)))


def test_conflicting_explicit_argument_and_missing_file_are_errors():
    with pytest.raises(ValueError, match="no such file"):
        LinearVTN(weights=FIXTURES / "no_such.pth", **TINY_LINEAR_VTN)
    with pytest.raises(ValueError, match="one_kv_head=False conflicts with the checkpoint"):
        LinearVTN(weights=FIXTURES / "lin_vtn.pth", one_kv_head=False, **TINY_LINEAR_VTN)


def test_other_num_classes_keeps_a_fresh_head_and_features_without_top(lin_vtn):
    x = pixels("lin_vtn_input.npy")
    model = _build("lin_vtn", include_top=False)
    assert "head/kernel" not in {v.path for v in model.weights}
    features = to_numpy(model(x))
    assert features.shape == (2, 32)
    # The features are the CLS output the full model's head normalises and classifies.
    head_norm, head = lin_vtn.get_layer("head_norm"), lin_vtn.get_layer("head")
    np.testing.assert_allclose(
        to_numpy(head(head_norm(features))), fixture("lin_vtn_logits.npy"), atol=1e-4
    )
    with pytest.warns(UserWarning, match="num_classes differs"):
        other = LinearVTN(weights=FIXTURES / "lin_vtn.pth", **dict(TINY_LINEAR_VTN, num_classes=7))
    assert to_numpy(other(x)).shape == (2, 7)
    with pytest.raises(ValueError, match="Unknown pooling"):
        _build("lin_vtn", include_top=False, pooling="max")


def test_avg_pooling_is_the_mean_of_all_tokens():
    tokens = np.random.default_rng(0).normal(size=(2, 7, 4)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(TokenPooling("avg")(tokens)), tokens.mean(axis=1), atol=1e-6
    )
    np.testing.assert_array_equal(to_numpy(TokenPooling("token")(tokens)), tokens[:, 0])


def test_keras_archive_round_trip(lin_vtn, tmp_path):
    x = pixels("lin_vtn_input.npy")
    path = tmp_path / "linear_vtn.keras"
    lin_vtn.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(to_numpy(restored(x)), to_numpy(lin_vtn(x)), atol=1e-6)


def test_weights_file_round_trip(lin_vtn, tmp_path):
    path = tmp_path / "linear_vtn.weights.h5"
    lin_vtn.save_weights(path)
    clone = LinearVTN(
        weights=path,
        num_frames=6,
        hidden_dim=32,
        num_spatial_layers=2,
        spatial_mlp_dim=64,
        num_temporal_layers=2,
        num_temporal_heads=2,
        temporal_head_dim=24,
        temporal_mlp_dim=48,
        linformer_k=3,
        **TINY_LINEAR_VTN,
    )
    x = pixels("lin_vtn_input.npy")
    np.testing.assert_allclose(to_numpy(clone(x)), fixture("lin_vtn_logits.npy"), atol=1e-4)


def test_mixed_precision_gives_float32_logits():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = _build("lin_vtn")
    logits = model(pixels("lin_vtn_input.npy"))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert keras.backend.standardize_dtype(model.get_layer("head").compute_dtype) == "float32"
    np.testing.assert_allclose(to_numpy(logits), fixture("lin_vtn_logits.npy"), atol=0.25)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel is TensorFlow")
def test_saved_model_export(lin_vtn, tmp_path):
    import tensorflow as tf

    lin_vtn.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    logits = served.serve(tf.constant(pixels("lin_vtn_input.npy"))).numpy()
    np.testing.assert_allclose(logits, fixture("lin_vtn_logits.npy"), atol=2e-5)


@pytest.mark.slow
def test_full_size_parameter_count():
    assert LinearVTN().count_params() == 107_673_640  # elb3k lin-vtn used parameters


def test_image_not_filling_patches_is_an_error():
    """Pixels past the last whole patch would be dropped without a word."""
    patch = TINY_LINEAR_VTN["patch_size"]
    with pytest.raises(ValueError, match=rf"image_size=.*not a multiple of {patch} pixels"):
        LinearVTN(num_frames=4, **dict(TINY_LINEAR_VTN, image_size=2 * patch + 1))
