"""ViViT: parity with scenic and Hugging Face logits, serialisation, resizing, errors."""

import doctest
import os

import keras
import numpy as np
import pytest

import keras_vtn
from keras_vtn.layers import PositionEmbedding
from keras_vtn.models import vivit as vivit_module
from keras_vtn.models import vivit_convert
from keras_vtn.models.vivit import ViViT

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "vivit")
TOLERANCE = 2e-5 if keras.backend.backend() == "tensorflow" else 1e-4


def fixture(name):
    return os.path.join(FIXTURES, name)


def read_state(name):
    return keras_vtn.weights.read_checkpoint(fixture(name))


def clip(height=32):
    return np.load(fixture("clip.npy")).astype("float32")[:, :, :height]


def reference(key):
    if key == "hf":
        return np.load(fixture("hf_logits.npy"))
    return np.load(fixture("scenic_logits.npz"))[key]


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


# (reference key, checkpoint, builder kwargs, frame height)
CASES = [
    ("spatio_temporal", "scenic_spatio_temporal.msgpack", {}, 32),
    ("factorised_encoder", "scenic_factorised_encoder.msgpack", {}, 32),
    ("factorised_encoder_gap", "scenic_factorised_encoder_gap.msgpack", {}, 32),
    (
        "factorised_self_attention_time_space",
        "scenic_factorised_self_attention.msgpack",
        {"attention_order": "time_space"},
        24,
    ),
    (
        "factorised_self_attention_space_time",
        "scenic_factorised_self_attention.msgpack",
        {"attention_order": "space_time"},
        24,
    ),
    (
        "factorised_dot_product",
        "scenic_factorised_dot_product.msgpack",
        {"variant": "factorised_dot_product"},
        32,
    ),
    ("hf", "hf_legacy", {}, 32),
    ("hf", "hf_v5", {}, 32),
]


def from_fixture(checkpoint, height=32, **kwargs):
    kwargs = {"num_frames": 8, "image_size": (height, 32), "num_classes": 5, **kwargs}
    return ViViT(weights=fixture(checkpoint), **kwargs)


@pytest.mark.parametrize("key,checkpoint,kwargs,height", CASES, ids=[c[1] for c in CASES])
def test_parity_with_original_logits(key, checkpoint, kwargs, height):
    model = from_fixture(checkpoint, height, **kwargs)
    diff = np.abs(predict(model, clip(height)) - reference(key)).max()
    assert diff <= TOLERANCE, f"{checkpoint}: max abs diff {diff:.2e}"


def test_architecture_read_from_checkpoint():
    config = vivit_convert.config_from_checkpoint(read_state("scenic_factorised_encoder.msgpack"))
    assert config == {
        "variant": "factorised_encoder",
        "classifier": "token",
        "tubelet_size": (2, 8, 8),
        "hidden_dim": 32,
        "num_heads": 4,
        "mlp_dim": 64,
        "num_spatial_layers": 2,
        "num_temporal_layers": 3,
        "num_classes": 5,
    }
    model = from_fixture("scenic_factorised_encoder.msgpack")
    assert {"spatial_block_1", "temporal_block_2"} <= {layer.name for layer in model.layers}
    assert "temporal_block_3" not in {layer.name for layer in model.layers}
    m3 = vivit_convert.config_from_checkpoint(
        read_state("scenic_factorised_self_attention.msgpack")
    )
    assert (m3["variant"], m3["num_heads"], m3["classifier"]) == (
        "factorised_self_attention",
        2,
        "gap",
    )
    # Model 4 and a GAP Model 1 have the same tree: the variant is left to the caller.
    assert "variant" not in vivit_convert.config_from_checkpoint(
        read_state("scenic_factorised_dot_product.msgpack")
    )
    hf = vivit_convert.config_from_checkpoint(
        read_state("hf_v5"), keras_vtn.weights.readers.read_hf_config(fixture("hf_v5"))
    )
    assert (hf["variant"], hf["num_heads"], hf["num_layers"]) == ("spatio_temporal", 4, 2)


def test_preprocessing_matches_zero_centring():
    with_pre = from_fixture("scenic_spatio_temporal.msgpack")
    without = from_fixture("scenic_spatio_temporal.msgpack", include_preprocessing=False)
    x = clip()
    np.testing.assert_allclose(
        predict(with_pre, x), predict(without, x * 2.0 / 255.0 - 1.0), atol=1e-5
    )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_gives_float32_logits(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = from_fixture("scenic_factorised_encoder.msgpack")
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("spatial_block_0").compute_dtype == policy.split("_")[1]
    out = model(clip(), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    tol = 0.05 if policy == "mixed_float16" else 0.25
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), reference("factorised_encoder"), atol=tol
    )


# The fixtures' sizes: under JAX every new weight shape costs an XLA compile of its
# initializer, so the tests reuse one set of shapes.
TINY = dict(
    hidden_dim=32,
    num_heads=4,
    mlp_dim=64,
    num_frames=8,
    image_size=32,
    tubelet_size=(2, 8, 8),
    num_classes=5,
)
VARIANT_KWARGS = {
    "spatio_temporal": dict(num_layers=1),
    "factorised_encoder": dict(num_spatial_layers=1, num_temporal_layers=1),
    "factorised_self_attention": dict(num_layers=1, attention_order="space_time"),
    "factorised_dot_product": dict(num_layers=1),
}


def tiny(variant, **kwargs):
    model = ViViT(variant, **{**TINY, **VARIANT_KWARGS[variant], **kwargs})
    rng = np.random.default_rng(0)
    for w in model.weights:  # non-trivial values everywhere (zero head, zero CLS by default)
        w.assign(rng.standard_normal(w.shape).astype("float32") * 0.3)
    return model


def tiny_clip():
    return np.random.default_rng(1).uniform(0, 255, (2, 8, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("variant", vivit_module.VARIANTS)
def test_keras_save_and_load(variant, tmp_path):
    model = tiny(variant)
    path = str(tmp_path / f"{variant}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(predict(loaded, tiny_clip()), predict(model, tiny_clip()))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export: TF only")
@pytest.mark.parametrize(
    "variant", ["factorised_encoder", "factorised_dot_product", "factorised_self_attention"]
)
def test_saved_model_export(variant, tmp_path):
    import tensorflow as tf

    model = tiny(variant)
    path = str(tmp_path / variant)
    model.export(path, verbose=False)
    reloaded = tf.saved_model.load(path)
    out = reloaded.serve(tf.constant(tiny_clip())).numpy()
    np.testing.assert_allclose(out, predict(model, tiny_clip()), atol=1e-6)


def test_position_tables_resize_to_other_clip_sizes():
    state = read_state("scenic_spatio_temporal.msgpack")
    table = state["optimizer/target/Transformer/posembed_input/pos_embedding"][0]
    # Both axes change: the 64-token table's grid is ambiguous, so it must be given.
    with pytest.raises(ValueError, match="Pass source_grid"):
        from_fixture("scenic_spatio_temporal.msgpack", num_frames=12, image_size=48)
    model = from_fixture(
        "scenic_spatio_temporal.msgpack", num_frames=12, image_size=48, source_grid=(4, 4, 4)
    )
    got = keras.ops.convert_to_numpy(model.get_layer("position_embedding").embeddings)
    expected = PositionEmbedding.resize(table, (4, 4, 4), (6, 6, 6), num_prefix_tokens=1)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # One axis changes (the model keeps 4 time steps): the grid is inferred.
    wider = from_fixture("scenic_spatio_temporal.msgpack", image_size=(40, 24))
    got = keras.ops.convert_to_numpy(wider.get_layer("position_embedding").embeddings)
    expected = PositionEmbedding.resize(table, (4, 4, 4), (4, 5, 3), num_prefix_tokens=1)
    np.testing.assert_allclose(got, expected, atol=1e-6)

    fe = from_fixture("scenic_factorised_encoder.msgpack", num_frames=4, image_size=(40, 24))
    spatial = keras.ops.convert_to_numpy(fe.get_layer("spatial_position_embedding").embeddings)
    temporal = keras.ops.convert_to_numpy(fe.get_layer("temporal_position_embedding").embeddings)
    assert spatial.shape == (1 + 5 * 3, 32) and temporal.shape == (1 + 2, 32)
    source = read_state("scenic_factorised_encoder.msgpack")
    state_table = source["optimizer/target/TemporalTransformer/posembed_input/pos_embedding"][0]
    np.testing.assert_allclose(temporal[0], state_table[0])  # the CLS slot is kept
    assert predict(fe, np.zeros((1, 4, 40, 24, 3), "float32")).shape == (1, 5)


def test_class_count_defaults_to_the_checkpoint():
    model = ViViT(
        weights=fixture("scenic_factorised_encoder_gap.msgpack"), num_frames=8, image_size=32
    )
    assert model.output_shape == (None, 5)
    diff = np.abs(predict(model, clip()) - reference("factorised_encoder_gap")).max()
    assert diff <= TOLERANCE


def test_head_dropped_when_class_count_differs():
    with pytest.warns(UserWarning, match="num_classes differs"):
        model = from_fixture("scenic_spatio_temporal.msgpack", num_classes=7)
    assert model.output_shape == (None, 7)
    source = from_fixture("scenic_spatio_temporal.msgpack")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("norm").gamma),
        keras.ops.convert_to_numpy(source.get_layer("norm").gamma),
    )


def test_features_and_activation():
    features = from_fixture("scenic_spatio_temporal.msgpack", include_top=False)
    assert features.output_shape == (None, 32)
    avg = from_fixture("scenic_spatio_temporal.msgpack", include_top=False, pooling="avg")
    tokens = predict(keras.Model(avg.input, avg.get_layer("norm").output), clip())
    np.testing.assert_allclose(predict(avg, clip()), tokens[:, 1:].mean(1), atol=1e-5)
    # The CLS features come from a last block that computes only the CLS row.
    assert features.get_layer("norm").output.shape[1] == 1
    np.testing.assert_allclose(predict(features, clip()), tokens[:, 0], atol=2e-5)
    probs = predict(
        from_fixture("scenic_spatio_temporal.msgpack", classifier_activation="softmax"), clip()
    )
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_stochastic_depth_follows_scenic():
    model = ViViT("spatio_temporal", **{**TINY, "num_layers": 3}, drop_path_rate=0.3)
    rates = [model.get_layer(f"block_{i}").drop_path.rate for i in range(3)]
    np.testing.assert_allclose(rates, [0.0, 0.15, 0.3])
    assert not model.get_layer("block_2").drop_path.scale  # scenic does not rescale


def _vit_npz(path, layers=1, dim=32, heads=4, grid=4, patch=8, mlp=64, pre_linen=True, seed=0):
    """A tiny Google ViT image checkpoint in the vision_transformer .npz layout."""
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype("float32")  # noqa: E731
    names = (
        ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
        if pre_linen
        else ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
    )
    d = {
        "cls": r(1, 1, dim),
        "embedding/kernel": r(patch, patch, 3, dim),
        "embedding/bias": r(dim),
        "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, dim),
        "Transformer/encoder_norm/scale": r(dim),
        "Transformer/encoder_norm/bias": r(dim),
        "head/kernel": r(dim, 10),
        "head/bias": r(10),
        "pre_logits/kernel": r(dim, dim),
        "pre_logits/bias": r(dim),
    }
    for i in range(layers):
        b = f"Transformer/encoderblock_{i}/"
        for norm in (names[0], names[2]):
            d[b + norm + "/scale"], d[b + norm + "/bias"] = r(dim), r(dim)
        for proj in ("query", "key", "value"):
            d[f"{b}{names[1]}/{proj}/kernel"] = r(dim, heads, dim // heads)
            d[f"{b}{names[1]}/{proj}/bias"] = r(heads, dim // heads)
        d[f"{b}{names[1]}/out/kernel"] = r(heads, dim // heads, dim)
        d[f"{b}{names[1]}/out/bias"] = r(dim)
        d[f"{b}{names[3]}/Dense_0/kernel"], d[f"{b}{names[3]}/Dense_0/bias"] = r(dim, mlp), r(mlp)
        d[f"{b}{names[3]}/Dense_1/kernel"], d[f"{b}{names[3]}/Dense_1/bias"] = r(mlp, dim), r(dim)
    np.savez(path, **d)
    return d


def _value(model, path):
    (w,) = [w for w in model.weights if w.path == path]
    return keras.ops.convert_to_numpy(w)


@pytest.mark.parametrize("variant", vivit_module.VARIANTS)
def test_image_initialisation_follows_scenic(variant, tmp_path):
    npz = str(tmp_path / "vit.npz")
    d = _vit_npz(npz, pre_linen=variant != "factorised_dot_product")
    kwargs = {**TINY, **VARIANT_KWARGS[variant]}
    model = ViViT(variant, weights=npz, **kwargs)
    kernel = _value(model, "tubelet_embedding/kernel")
    np.testing.assert_array_equal(kernel[1], d["embedding/kernel"])  # slot floor(2 / 2)
    np.testing.assert_array_equal(kernel[0], 0.0)
    image_table = d["Transformer/posembed_input/pos_embedding"][0]
    prefix = "spatial_" if variant == "factorised_encoder" else ""
    table = _value(model, f"{prefix}position_embedding/embeddings")
    blk = f"{prefix}block_0/"
    if variant == "factorised_encoder":
        np.testing.assert_array_equal(table, image_table)  # 4x4 grid + CLS, copied whole
        np.testing.assert_array_equal(_value(model, "spatial_cls_token/token"), 0.0)
        np.testing.assert_array_equal(_value(model, "temporal_cls_token/token"), 0.0)
    elif variant == "spatio_temporal":
        np.testing.assert_array_equal(table[0], image_table[0])
        np.testing.assert_array_equal(table[1:], np.tile(image_table[1:], (4, 1)))
        np.testing.assert_array_equal(_value(model, "cls_token/token"), d["cls"].reshape(-1))
    else:
        np.testing.assert_array_equal(table, np.tile(image_table[1:], (4, 1)))
    src = "Transformer/encoderblock_0/"
    attn = (
        "MultiHeadDotProductAttention_0"
        if variant == "factorised_dot_product"
        else ("MultiHeadDotProductAttention_1")
    )
    q = d[f"{src}{attn}/query/kernel"].reshape(32, -1)
    if variant == "factorised_self_attention":
        np.testing.assert_array_equal(_value(model, blk + "spatial_attention/query/kernel"), q)
        np.testing.assert_array_equal(_value(model, blk + "temporal_attention/query/kernel"), q)
        np.testing.assert_array_equal(
            _value(model, blk + "spatial_norm/gamma"), d[src + "LayerNorm_0/scale"]
        )
        np.testing.assert_array_equal(
            _value(model, blk + "mlp_norm/gamma"), d[src + "LayerNorm_2/scale"]
        )
        np.testing.assert_array_equal(_value(model, blk + "temporal_norm/gamma"), 1.0)
    else:
        np.testing.assert_array_equal(_value(model, blk + "attention/query/kernel"), q)
    np.testing.assert_array_equal(
        _value(model, f"{prefix}norm/gamma"), d["Transformer/encoder_norm/scale"]
    )
    np.testing.assert_array_equal(_value(model, "head/kernel"), 0.0)  # new head (scenic: zeros)
    assert np.isfinite(predict(model, tiny_clip())).all()


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown variant"):
        ViViT("joint", **TINY)
    with pytest.raises(ValueError, match="Unknown size"):
        ViViT("spatio_temporal", size="small")
    with pytest.raises(ValueError, match="no CLS token"):
        ViViT("factorised_dot_product", classifier="token", **TINY)
    with pytest.raises(ValueError, match="num_heads must be even"):
        ViViT("factorised_dot_product", **{**TINY, "num_heads": 1}, num_layers=1)
    with pytest.raises(ValueError, match="smaller than the tubelet"):
        ViViT("spatio_temporal", **{**TINY, "image_size": 4}, num_layers=1)
    with pytest.raises(ValueError, match="num_layers=3 contradicts the checkpoint"):
        from_fixture("scenic_spatio_temporal.msgpack", num_layers=3)
    with pytest.raises(ValueError, match="holds a 'factorised_encoder'"):
        from_fixture("scenic_factorised_encoder.msgpack", variant="spatio_temporal")
    with pytest.raises(ValueError, match="Model 1 with GAP and Model 4"):
        from_fixture("scenic_factorised_dot_product.msgpack")
    with pytest.raises(ValueError, match="no such file"):
        ViViT("spatio_temporal", weights=str(tmp_path / "missing.msgpack"))
    with pytest.raises(ValueError, match="no vivit weights named 'k400' for variant='factoris"):
        ViViT("factorised_self_attention", weights="k400")
    with pytest.raises(ValueError, match="pooling='token' needs a CLS"):
        ViViT("factorised_dot_product", include_top=False, pooling="token", **TINY, num_layers=1)
    state = read_state("scenic_spatio_temporal.msgpack")
    state["optimizer/target/Transformer/surprise/kernel"] = np.zeros(3, "float32")
    model = ViViT("spatio_temporal", **{**TINY, "num_layers": 2})
    with pytest.raises(ValueError, match="Unexpected ViViT checkpoint entries.*surprise"):
        vivit_convert.convert_vivit(state, model)
    hf = read_state("hf_legacy")
    hf["vivit.encoder.layer.0.attention.attention.query.lora"] = np.zeros(3, "float32")
    with pytest.raises(ValueError, match="Unexpected Hugging Face ViViT entries.*lora"):
        vivit_convert.convert_vivit(hf, model)


def test_registry_entries_match_builder_arguments():
    find = keras_vtn.weights.find_entry
    entry = find("k600", "vivit", variant="factorised_encoder", size="large")
    assert entry["files"][0]["url"].endswith("kinetics_600/vivit_large_16x2_fe/checkpoint")
    config = vivit_module._entry_config(entry)
    assert (config["num_temporal_layers"], config["tubelet_size"]) == (24, (2, 16, 16))
    entry = find("k400", "vivit", variant="spatio_temporal", size="base")
    assert "unfactorized" in entry["files"][0]["url"]
    with pytest.raises(ValueError, match="no vivit weights named 'k600'"):
        find("k600", "vivit", variant="factorised_encoder", size="base")


@pytest.mark.slow
def test_full_size_parameter_counts():
    expected = {
        "spatio_temporal": 88_954_000,
        "factorised_encoder": 115_062_928,
        "factorised_self_attention": 117_319_312,
        "factorised_dot_product": 88_952_464,
    }
    for variant, count in expected.items():
        model = ViViT(variant, size="base")
        assert model.count_params() == count, variant
        del model
        keras.backend.clear_session()


def test_docstring_examples():
    result = doctest.testmod(vivit_module, verbose=False)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_frames=7), r"num_frames=7 .*2 frames.*tubelet_size=\(2, 16, 16\).*6 or 8"),
        (dict(image_size=(32, 30)), r"width 30.*16 pixels.*tubelet_size=\(2, 16, 16\).*16 or 32"),
    ],
)
def test_clip_not_filling_tubelets_is_an_error(kwargs, message):
    """Frames or pixels past the last whole tubelet would be dropped without a word."""
    config = dict(hidden_dim=32, num_heads=2, mlp_dim=64, num_layers=1, num_frames=4,
                  image_size=32, tubelet_size=(2, 16, 16), num_classes=3)
    with pytest.raises(ValueError, match=message):
        ViViT("spatio_temporal", **dict(config, **kwargs))
