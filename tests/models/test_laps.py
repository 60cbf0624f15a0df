"""LAPSTransformer: parity with the original LAPS code, ablations, errors, precision, saving."""

import os

import keras
import numpy as np
import pytest

from keras_vtn.models.laps import LAPSTransformer, _load_original
from keras_vtn.models.laps_convert import config_from_checkpoint, convert_laps, extract_state
from keras_vtn.weights import NoReleasedWeightsError, read_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "laps")
BACKEND = keras.backend.backend()
TOLERANCE = 2e-5 if BACKEND == "tensorflow" else 1e-4
VIT_TINY = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=4, num_heads=2,
                mlp_dim=64, num_classes=5)
VISFORMER_TINY = dict(image_size=64, stem_width=8, widths=(8, 16, 32), depths=(2, 4, 4),
                      num_heads=2, num_classes=5)
# Builder flags of the repo's ablation networks (fixture logits keys).
ABLATIONS = {
    "laps": {},
    "la": dict(fold_div=0),
    "ps": dict(leap_levels=None),
    "plain_shift": dict(leap_levels=None, shift="tsm"),
    "base2d": dict(leap_levels=None, fold_div=0),
}


# ---------------------------------------------------------------------------------- fixtures


def _fixture(name):
    state = read_checkpoint(os.path.join(FIXTURES, f"{name}.pth"))
    io = dict(np.load(os.path.join(FIXTURES, f"{name}_io.npz")))
    return state, io


@pytest.fixture(scope="module")
def vit_fixture():
    return _fixture("vit_laps_tiny")


@pytest.fixture(scope="module")
def visformer_fixture():
    return _fixture("visformer_laps_tiny")


def predict(model, frames):
    return keras.ops.convert_to_numpy(model(np.asarray(frames, "float32"), training=False))


# ---------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("variant", ["laps", "la", "ps", "base2d"])
def test_vit_parity(vit_fixture, variant):
    state, io = vit_fixture
    model = LAPSTransformer("vit_base", **VIT_TINY, **ABLATIONS[variant])
    _load_original(model, state)
    diff = np.abs(predict(model, io["frames"]) - io[f"logits_{variant}"]).max()
    assert diff <= TOLERANCE, f"ViT {variant}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("variant", list(ABLATIONS))
def test_visformer_parity(visformer_fixture, variant):
    state, io = visformer_fixture
    model = LAPSTransformer("visformer_small", **VISFORMER_TINY, **ABLATIONS[variant])
    _load_original(model, state)
    diff = np.abs(predict(model, io["frames"]) - io[f"logits_{variant}"]).max()
    assert diff <= TOLERANCE, f"Visformer {variant}: max abs diff {diff:.3g}"


def test_variants_differ(vit_fixture, visformer_fixture):
    # The fixtures would not catch a missing shift or leap if the variants agreed anyway.
    for _, io in (vit_fixture, visformer_fixture):
        logits = [v for k, v in io.items() if k.startswith("logits_")]
        for i, a in enumerate(logits):
            for b in logits[i + 1 :]:
                assert np.abs(a - b).max() > 1e-3  # >= 10x the parity tolerance


def test_visformer_image_file(visformer_fixture):
    """{"model": state_dict} image weights: the 2D model reproduces the per-image logits."""
    _, io = visformer_fixture
    image_state = read_checkpoint(os.path.join(FIXTURES, "visformer_image_tiny.pth"))
    image_logits = np.load(os.path.join(FIXTURES, "visformer_image_tiny_io.npz"))["logits"]
    arch = {**VISFORMER_TINY, "num_classes": 7}
    model = LAPSTransformer("visformer_small", leap_levels=None, fold_div=0, **arch)
    _load_original(model, image_state)
    diff = np.abs(predict(model, io["frames"]) - image_logits.mean(axis=1)).max()
    assert diff <= TOLERANCE
    # Into a LAPS model with another class count: the backbone loads, the head is dropped.
    laps = LAPSTransformer("visformer_small", **VISFORMER_TINY)
    head = keras.ops.convert_to_numpy(laps.get_layer("head").kernel)
    with pytest.warns(UserWarning, match="num_classes differs"):
        _load_original(laps, image_state)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(laps.get_layer("head").kernel), head)
    loaded = keras.ops.convert_to_numpy(laps.get_layer("stage3_1_attn").query.kernel)
    np.testing.assert_array_equal(
        loaded, image_state["model.stage3.1.attn.qkv.weight"][:32, :, 0, 0].T
    )


def test_builder_loads_checkpoint_paths(vit_fixture, visformer_fixture):
    """weights=<.pth>: architecture read from the tensors, LA/PS settings from the arguments."""
    path = os.path.join(FIXTURES, "vit_laps_tiny.pth")
    model = LAPSTransformer("vit_base", weights=path, num_classes=5, num_heads=2)
    diff = np.abs(predict(model, vit_fixture[1]["frames"]) - vit_fixture[1]["logits_laps"])
    assert diff.max() <= TOLERANCE
    path = os.path.join(FIXTURES, "visformer_laps_tiny.pth")
    model = LAPSTransformer("visformer_small", weights=path, num_classes=5, num_heads=2,
                            leap_levels=None, shift="tsm")
    diff = np.abs(predict(model, visformer_fixture[1]["frames"]) -
                  visformer_fixture[1]["logits_plain_shift"])
    assert diff.max() <= TOLERANCE
    with pytest.raises(ValueError, match=r"depths=\(7, 4, 4\) conflicts with the checkpoint"):
        LAPSTransformer("visformer_small", weights=path, depths=(7, 4, 4))
    with pytest.raises(ValueError, match="holds a visformer checkpoint"):
        LAPSTransformer("vit_base", weights=path)


def google_vit_npz(state, path):
    """Writes a timm ViT state dict in Google's ViT-B_16.npz layout (the inverse mapping)."""
    s = {k.replace("state_dict.module.base_model.", ""): v for k, v in state.items()}
    dim = s["patch_embed.proj.weight"].shape[0]
    heads = 2
    out = {
        "embedding/kernel": s["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": s["patch_embed.proj.bias"],
        "cls": s["cls_token"],
        "Transformer/posembed_input/pos_embedding": s["pos_embed"],
        "Transformer/encoder_norm/scale": s["norm.weight"],
        "Transformer/encoder_norm/bias": s["norm.bias"],
        "head/kernel": s["head.weight"].T,
        "head/bias": s["head.bias"],
        "pre_logits/kernel": np.eye(dim, dtype="float32"),  # in21k files have it; unused
        "pre_logits/bias": np.zeros(dim, "float32"),
    }
    for i in range(4):
        src, dst = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        for norm, name in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
            out[dst + f"{name}/scale"] = s[src + f"{norm}.weight"]
            out[dst + f"{name}/bias"] = s[src + f"{norm}.bias"]
        mha = dst + "MultiHeadDotProductAttention_1/"
        weight = np.split(s[src + "attn.qkv.weight"], 3)
        bias = np.split(s[src + "attn.qkv.bias"], 3)
        for j, name in enumerate(("query", "key", "value")):
            out[mha + f"{name}/kernel"] = weight[j].T.reshape(dim, heads, -1)
            out[mha + f"{name}/bias"] = bias[j].reshape(heads, -1)
        out[mha + "out/kernel"] = s[src + "attn.proj.weight"].T.reshape(heads, -1, dim)
        out[mha + "out/bias"] = s[src + "attn.proj.bias"]
        for fc, dense in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
            out[dst + f"MlpBlock_3/{dense}/kernel"] = s[src + f"mlp.{fc}.weight"].T
            out[dst + f"MlpBlock_3/{dense}/bias"] = s[src + f"mlp.{fc}.bias"]
    np.savez(path, **out)


def test_google_vit_npz(tmp_path, vit_fixture):
    """The imagenet21k format (Google npz): the same weights give the same LAPS logits."""
    state, io = vit_fixture
    path = str(tmp_path / "ViT-tiny.npz")
    google_vit_npz(state, path)
    config = config_from_checkpoint(read_checkpoint(path))
    assert config["num_heads"] == 2 and config["backbone"] == "vit_base"
    model = LAPSTransformer("vit_base", weights=path, num_classes=5)
    assert np.abs(predict(model, io["frames"]) - io["logits_laps"]).max() <= TOLERANCE


# ------------------------------------------------------------------------------- converter


def test_config_from_checkpoint(vit_fixture, visformer_fixture):
    assert config_from_checkpoint(vit_fixture[0]) == dict(
        backbone="vit_base", num_classes=5, patch_size=8, hidden_dim=32, num_layers=4,
        mlp_dim=64, image_size=32,
    )  # no num_heads: timm tensors do not store it and width 32 is not a standard ViT
    config = config_from_checkpoint(visformer_fixture[0])
    assert config == dict(
        backbone="visformer_small", num_classes=5, stem_width=8, widths=(8, 16, 32),
        depths=(2, 4, 4), mlp_ratio=4.0, image_size=64,
    )
    # The result is builder arguments (what `keras-vtn convert` passes to the builder).
    model = LAPSTransformer(**config, num_heads=2)
    _load_original(model, visformer_fixture[0])
    diff = np.abs(predict(model, visformer_fixture[1]["frames"]) -
                  visformer_fixture[1]["logits_laps"])
    assert diff.max() <= TOLERANCE


def test_converter_strips_prefix_and_rejects_unknown_keys(visformer_fixture):
    state = visformer_fixture[0]
    extracted = extract_state(state)
    assert "stem.0.weight" in extracted and not any(k.startswith("module") for k in extracted)
    assert "stem.1.bn.num_batches_tracked" in extracted  # present, ignored by the converter
    model = LAPSTransformer("visformer_small", **VISFORMER_TINY)
    mapping = convert_laps(state, model)
    assert "stem_bn/moving_variance" in mapping
    assert not any("num_batches" in path for path in mapping)
    with pytest.raises(ValueError, match=r"stage2\.0\.attn\.extra"):
        convert_laps({**state, "state_dict.module.base_model.stage2.0.attn.extra": np.ones(3)},
                     model)


def test_shape_mismatch_is_a_clear_error(vit_fixture):
    model = LAPSTransformer("vit_base", **{**VIT_TINY, "mlp_dim": 48})
    with pytest.raises(ValueError, match="mlp/fc1/kernel"):
        _load_original(model, vit_fixture[0])


# ------------------------------------------------------------------------- errors and flags


def test_k400_weights_raise():
    with pytest.raises(NoReleasedWeightsError, match="no released Kinetics-400 weights"):
        LAPSTransformer("visformer_small", weights="k400")
    with pytest.raises(ValueError, match="imagenet21k"):
        LAPSTransformer("visformer_small", weights="imagenet21k")  # ViT backbones only


@pytest.mark.parametrize(
    "frames,levels,message",
    [
        (8, [4], "Attention block 0: Leap level 4 does not fit a clip of 8 frames"),
        (8, [1, 0], "Attention block 1: Leap level 0"),
        (10, [2], "Leap level 2 does not fit a clip of 10 frames"),
        (5, "default", "No leap level fits a clip of 5 frames"),
    ],
)
def test_invalid_levels(frames, levels, message):
    with pytest.raises(ValueError, match=message):
        LAPSTransformer("vit_base", num_frames=frames, leap_levels=levels, **VIT_TINY)


def test_default_level_schedules():
    model = LAPSTransformer("vit_base", **VIT_TINY)
    assert [model.get_layer(f"block_{i}").attention.level for i in range(4)] == [1, 2, 3, 1]
    vis32 = LAPSTransformer("visformer_small", num_frames=32, **VISFORMER_TINY)
    levels = [vis32.get_layer(f"stage{s}_{j}_attn").level for s in (2, 3) for j in range(4)]
    assert levels == [1, 2, 3, 4, 5, 1, 2, 3]
    vis8 = LAPSTransformer("visformer_small", leap_levels=[[3, 3, 3, 3], [1, 1, 1, 1]],
                           **VISFORMER_TINY)
    levels = [vis8.get_layer(f"stage{s}_{j}_attn").level for s in (2, 3) for j in range(4)]
    assert levels == [3, 3, 3, 3, 1, 1, 1, 1]


def test_ablation_flags_and_pooling():
    frames = np.random.default_rng(0).uniform(0, 255, (2, 8, 32, 32, 3)).astype("float32")
    for flags in (dict(shift="tsm"), dict(shift=None), dict(leap_levels=2, fold_div=8)):
        assert predict(LAPSTransformer("vit_base", **VIT_TINY, **flags), frames).shape == (2, 5)
    avg = LAPSTransformer("vit_base", include_top=False, pooling="avg", **VIT_TINY)
    tokens = predict(keras.Model(avg.input, avg.get_layer("norm").output), frames)
    np.testing.assert_allclose(predict(avg, frames), tokens[:, :, 1:].mean((1, 2)), atol=1e-5)
    for pooling in (None, "token"):
        # Their last block computes only the CLS rows: the same rows as the full block's.
        model = LAPSTransformer("vit_base", include_top=False, pooling=pooling, **VIT_TINY)
        model.set_weights(avg.get_weights())
        np.testing.assert_allclose(predict(model, frames), tokens[:, :, 0].mean(1), atol=2e-5)
    with pytest.raises(ValueError, match="Unknown LAPS backbone"):
        LAPSTransformer("resnet50")


# ------------------------------------------------------------------- precision and saving


@pytest.mark.parametrize("backbone", ["vit_base", "visformer_small"])
def test_mixed_precision_float32_logits(backbone, vit_fixture, visformer_fixture):
    state, io = vit_fixture if backbone == "vit_base" else visformer_fixture
    arch = VIT_TINY if backbone == "vit_base" else VISFORMER_TINY
    policy = "mixed_bfloat16" if BACKEND == "torch" else "mixed_float16"
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = LAPSTransformer(backbone, **arch)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    _load_original(model, state)
    out = model(np.asarray(io["frames"], "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert model.get_layer("head").compute_dtype == "float32"
    error = np.abs(keras.ops.convert_to_numpy(out) - io["logits_laps"]).max()
    assert error < 0.05, f"{policy} logits too far from float32: {error}"


@pytest.mark.parametrize("backbone", ["vit_base", "visformer_small"])
def test_keras_round_trip(tmp_path, backbone, vit_fixture, visformer_fixture):
    state, io = vit_fixture if backbone == "vit_base" else visformer_fixture
    arch = VIT_TINY if backbone == "vit_base" else VISFORMER_TINY
    model = LAPSTransformer(backbone, **arch)
    _load_original(model, state)
    path = str(tmp_path / "laps.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(predict(restored, io["frames"]), io["logits_laps"], atol=TOLERANCE)
    weights = str(tmp_path / "laps.weights.h5")
    model.save_weights(weights)
    reloaded = LAPSTransformer(backbone, weights=weights, **arch)
    np.testing.assert_allclose(predict(reloaded, io["frames"]), io["logits_laps"], atol=TOLERANCE)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="SavedModel export is TensorFlow-only")
def test_savedmodel_export(tmp_path, vit_fixture):
    import tensorflow as tf

    state, io = vit_fixture
    model = LAPSTransformer("vit_base", **VIT_TINY)
    _load_original(model, state)
    model.export(str(tmp_path / "saved"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    out = reloaded.serve(tf.constant(io["frames"], tf.float32)).numpy()
    np.testing.assert_allclose(out, io["logits_laps"], atol=TOLERANCE)


# ----------------------------------------------------------------------- full-size counts


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone,expected", [("vit_base", 86_106_256), ("visformer_small", 39_758_192)]
)
def test_full_size_parameter_counts(backbone, expected):
    laps = LAPSTransformer(backbone)
    assert _trainable(laps) == expected
    plain = LAPSTransformer(backbone, leap_levels=None, fold_div=0)
    assert _trainable(plain) == expected
    if backbone == "visformer_small":  # BN moving statistics are the only non-trainables
        assert laps.count_params() - expected == 2 * (32 + 8 * 192 + 9 * 384 + 10 * 768)


@pytest.mark.parametrize(
    "backbone, tiny, message",
    [
        ("vit_base", VIT_TINY, r"image_size=\(30, 30\).*8 pixels \(patch_size=8\).*24 or 32"),
        ("visformer_small", VISFORMER_TINY, r"height 40.*32 pixels.*32 or 64"),
    ],
)
def test_image_not_filling_patches_is_an_error(backbone, tiny, message):
    """Pixels past the last whole patch would be dropped without a word."""
    size = 30 if backbone == "vit_base" else 40
    with pytest.raises(ValueError, match=message):
        LAPSTransformer(backbone, num_frames=4, **dict(tiny, image_size=size))
