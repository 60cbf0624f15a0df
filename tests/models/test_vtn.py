"""VTN: logits parity with the bomri/SlowFast checkpoint (HF Longformer), long clips, backbones."""

import keras
import numpy as np
import pytest
from vtn_helpers import FIXTURES, TINY_VTN, fixture, parity_tolerance, pixels, to_numpy

import keras_vtn.weights as kvw
from keras_vtn.models import vtn_convert
from keras_vtn.models.frame_temporal import FrameEncoder
from keras_vtn.models.vtn import VTN, FrameIndexEmbedding

CHECKPOINT = FIXTURES / "vtn.pyth"
# Random-weight tiny VTN with the fixture's sizes (compiled kernels are shared on JAX).
TINY_RANDOM = dict(
    TINY_VTN,
    hidden_dim=32,
    num_spatial_layers=2,
    spatial_mlp_dim=64,
    num_temporal_layers=2,
    temporal_mlp_dim=48,
    max_position_embeddings=20,
    head_hidden_dim=24,
)


@pytest.fixture(scope="module")
def vtn():
    """The fixture checkpoint as released: indices given, window 4 on a 10-frame clip."""
    return VTN(weights=CHECKPOINT, num_frames=10, frame_indices=True, **TINY_VTN)


def _check(logits, expected, label):
    logits = to_numpy(logits)
    assert logits.dtype == np.float32 and logits.shape == expected.shape
    diff = np.abs(logits - expected).max()
    print(f"{label} max abs diff {diff:.2e} ({keras.backend.backend()})")
    assert diff <= parity_tolerance()


@pytest.mark.parametrize("indices", ["strided", "dense"])
def test_logits_match_the_original(vtn, indices):
    # Strided clip-relative ids (training) and dense absolute ids (test), both past the
    # table's 18 frame rows so the modulo matters; the ±2 band is narrower than the clip.
    inputs = {
        "frames": pixels("vtn_input.npy"),
        "frame_indices": fixture(f"vtn_frame_indices_{indices}.npy"),
    }
    _check(vtn(inputs), fixture(f"vtn_logits_{indices}.npy"), f"vtn {indices}")


def test_long_clip_in_chunks_matches_the_original():
    model = VTN(
        weights=CHECKPOINT, num_frames=40, frame_indices=True, frame_chunk_size=16, **TINY_VTN
    )
    inputs = {
        "frames": pixels("vtn_long_input.npy"),
        "frame_indices": fixture("vtn_long_frame_indices.npy"),
    }
    _check(model(inputs), fixture("vtn_long_logits.npy"), "vtn 40 frames, chunks of 16")


def test_without_frame_indices_positions_are_0_to_t_minus_1(vtn):
    plain = VTN(weights=CHECKPOINT, num_frames=10, **TINY_VTN)
    x = pixels("vtn_input.npy")
    ids = np.tile(np.arange(10, dtype="int32"), (2, 1))
    np.testing.assert_allclose(
        to_numpy(plain(x)), to_numpy(vtn({"frames": x, "frame_indices": ids})), atol=1e-6
    )


def test_frame_index_embedding_matches_formula():
    layer = FrameIndexEmbedding(max_position_embeddings=7)
    tokens = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    layer.build(tokens.shape)
    table = np.random.default_rng(1).normal(size=(7, 3)).astype("float32")
    types = np.random.default_rng(2).normal(size=(2, 3)).astype("float32")
    layer.position_embeddings.assign(table)
    layer.token_type_embeddings.assign(types)
    ids = np.array([[0, 4, 11], [5, 6, 7]])
    got = to_numpy(layer(tokens, ids))
    # Rows: CLS -> 5 (= 7 - 2) with type 1; frames -> id mod 5 with type 0.
    rows = np.array([[5, 0, 4, 1], [5, 0, 1, 2]])
    want = tokens + table[rows] + np.where(np.arange(4)[:, None] == 0, types[1], types[0])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_config_from_checkpoint_and_converter_rules(vtn):
    state = kvw.read_checkpoint(CHECKPOINT)
    assert "model_state.temporal_encoder.embeddings.position_ids" in state
    config = vtn_convert.config_from_checkpoint(state)
    assert config == dict(
        patch_size=8,
        hidden_dim=32,
        num_spatial_layers=2,
        spatial_mlp_dim=64,
        spatial_qkv_bias=True,
        num_temporal_layers=2,
        temporal_mlp_dim=48,
        max_position_embeddings=20,
        head_hidden_dim=24,
        image_size=32,
        num_classes=5,
    )
    mapping = vtn_convert.convert_vtn(dict(state), vtn)
    assert set(mapping) == {v.path for v in vtn.weights}
    stray = dict(state, **{"model_state.temporal_encoder.pooler.dense.weight": np.zeros(2)})
    with pytest.raises(ValueError, match="pooler.dense.weight"):
        vtn_convert.convert_vtn(stray, vtn)


def test_250_frame_video_in_chunks():
    """Whole-video inference as VTN evaluates it, with a bounded backbone batch."""
    x = np.random.default_rng(0).uniform(0, 255, size=(1, 250, 32, 32, 3)).astype("float32")
    model = VTN(num_frames=250, frame_chunk_size=64, **TINY_RANDOM)  # positions 0..249 wrap
    logits = to_numpy(model(x))
    assert logits.shape == (1, 5) and np.isfinite(logits).all()
    # Chunks of 64 (the last one padded) give the features of one pass over all frames.
    encoder = model.get_layer("frame_encoder")
    normalised = model.get_layer("preprocessing")(x)
    whole = FrameEncoder(encoder.backbone, chunk_size=None)
    np.testing.assert_allclose(
        to_numpy(encoder(normalised)), to_numpy(whole(normalised)), atol=1e-5
    )


def test_any_keras_image_model_as_spatial_backbone():
    cnn = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.AveragePooling2D(8),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
        ],
        name="tiny_cnn",
    )
    vit_args = ("patch_size", "hidden_dim")
    temporal = {k: v for k, v in TINY_RANDOM.items() if "spatial" not in k and k not in vit_args}
    model = VTN(spatial_backbone=cnn, num_frames=10, frame_chunk_size=4, **temporal)
    x = pixels("vtn_input.npy")
    assert to_numpy(model(x)).shape == (2, 5)
    # The backbone sees each (normalised) frame on its own.
    normalised = to_numpy(model.get_layer("preprocessing")(x))
    features = to_numpy(model.get_layer("frame_encoder")(normalised))
    np.testing.assert_allclose(features[1, 3], to_numpy(cnn(normalised[1, 3][None]))[0], atol=1e-5)
    # A serialized backbone (what JSON training configurations hold) builds the same model.
    config = keras.saving.serialize_keras_object(cnn)
    rebuilt = VTN(spatial_backbone=config, num_frames=10, **temporal)
    assert rebuilt.get_layer("frame_encoder").backbone.name == "tiny_cnn"
    assert rebuilt.count_params() == model.count_params()


@pytest.mark.slow
def test_keras_applications_resnet50_backbone():
    resnet = keras.applications.ResNet50(
        include_top=False, pooling="avg", weights=None, input_shape=(32, 32, 3)
    )
    model = VTN(spatial_backbone=resnet, num_frames=3, image_size=32, num_temporal_heads=8)
    x = np.zeros((1, 3, 32, 32, 3), "float32")
    assert to_numpy(model(x)).shape == (1, 400)


def test_clear_errors():
    with pytest.raises(ValueError, match="even"):
        VTN(num_frames=4, **dict(TINY_RANDOM, attention_window=5))
    with pytest.raises(ValueError, match="cannot load into a custom spatial_backbone"):
        VTN(weights=CHECKPOINT, spatial_backbone=keras.Sequential([keras.Input((32, 32, 3))]))
    flat = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="ViT arguments"):
        VTN(spatial_backbone=flat, image_size=16, hidden_dim=32)
    with pytest.raises(ValueError, match="map a frame to a vector"):
        VTN(spatial_backbone=flat, image_size=16, num_frames=4)
    with pytest.raises(ValueError, match="max_position_embeddings=30 conflicts"):
        VTN(weights=CHECKPOINT, max_position_embeddings=30, **TINY_VTN)
    with pytest.raises(ValueError, match="positive number of frames"):
        FrameEncoder(flat, chunk_size=0)


def test_keras_archive_round_trip(tmp_path):
    model = VTN(
        weights=CHECKPOINT, num_frames=10, frame_indices=True, frame_chunk_size=4, **TINY_VTN
    )
    inputs = {
        "frames": pixels("vtn_input.npy"),
        "frame_indices": fixture("vtn_frame_indices_dense.npy"),
    }
    model.save(tmp_path / "vtn.keras")
    restored = keras.models.load_model(tmp_path / "vtn.keras")
    assert restored.get_layer("frame_encoder").chunk_size == 4
    np.testing.assert_allclose(
        to_numpy(restored(inputs)), fixture("vtn_logits_dense.npy"), atol=parity_tolerance()
    )


def test_mixed_precision_gives_float32_logits():
    keras.config.set_dtype_policy("mixed_float16")
    model = VTN(weights=CHECKPOINT, num_frames=10, frame_indices=True, **TINY_VTN)
    inputs = {
        "frames": pixels("vtn_input.npy"),
        "frame_indices": fixture("vtn_frame_indices_strided.npy"),
    }
    logits = model(inputs)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(logits), fixture("vtn_logits_strided.npy"), atol=0.05)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel is TensorFlow")
def test_saved_model_export(vtn, tmp_path):
    import tensorflow as tf

    vtn.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    logits = served.serve(
        {
            "frames": tf.constant(pixels("vtn_input.npy")),
            "frame_indices": tf.constant(fixture("vtn_frame_indices_dense.npy"), tf.int32),
        }
    ).numpy()
    np.testing.assert_allclose(logits, fixture("vtn_logits_dense.npy"), atol=2e-5)


@pytest.mark.slow
def test_full_size_parameter_count():
    assert VTN().count_params() == 113_502_352  # bomri VTN state_dict parameters


def test_image_not_filling_patches_is_an_error():
    """Pixels past the last whole patch would be dropped without a word."""
    patch = TINY_RANDOM["patch_size"]
    with pytest.raises(ValueError, match=rf"image_size=.*not a multiple of {patch} pixels"):
        VTN(num_frames=4, **dict(TINY_RANDOM, image_size=patch + 1))
