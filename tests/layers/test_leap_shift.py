"""LeapAttention, leap_pairs and TemporalShift against independent NumPy computations."""

import keras
import numpy as np
import pytest

from keras_vtn.layers import LeapAttention, TemporalShift, leap_pairs

# --------------------------------------------------------------------------- leap pairs

T8_PAIRS = {
    1: [(0, 4), (1, 5), (2, 6), (3, 7)],
    2: [(0, 2), (1, 3), (4, 6), (5, 7)],
    3: [(0, 1), (2, 3), (4, 5), (6, 7)],
}
T32_PAIRS = {
    1: [(0, 16), (1, 17), (2, 18), (3, 19), (4, 20), (5, 21), (6, 22), (7, 23),
        (8, 24), (9, 25), (10, 26), (11, 27), (12, 28), (13, 29), (14, 30), (15, 31)],
    2: [(0, 8), (1, 9), (2, 10), (3, 11), (4, 12), (5, 13), (6, 14), (7, 15),
        (16, 24), (17, 25), (18, 26), (19, 27), (20, 28), (21, 29), (22, 30), (23, 31)],
    3: [(0, 4), (1, 5), (2, 6), (3, 7), (8, 12), (9, 13), (10, 14), (11, 15),
        (16, 20), (17, 21), (18, 22), (19, 23), (24, 28), (25, 29), (26, 30), (27, 31)],
    4: [(0, 2), (1, 3), (4, 6), (5, 7), (8, 10), (9, 11), (12, 14), (13, 15),
        (16, 18), (17, 19), (20, 22), (21, 23), (24, 26), (25, 27), (28, 30), (29, 31)],
    5: [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15),
        (16, 17), (18, 19), (20, 21), (22, 23), (24, 25), (26, 27), (28, 29), (30, 31)],
}


@pytest.mark.parametrize("level", [1, 2, 3])
def test_leap_pairs_t8(level):
    assert leap_pairs(8, level) == T8_PAIRS[level]


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_leap_pairs_t32(level):
    assert leap_pairs(32, level) == T32_PAIRS[level]


@pytest.mark.parametrize("frames,level", [(8, 0), (8, 4), (8, -1), (10, 2), (7, 1), (32, 6)])
def test_leap_pairs_invalid(frames, level):
    with pytest.raises(ValueError, match="does not fit"):
        leap_pairs(frames, level)


def test_invalid_level_fails_at_build():
    layer = LeapAttention(num_heads=2, level=4)
    with pytest.raises(ValueError, match=r"Valid levels for T=8: \[1, 2, 3\]"):
        layer.build((None, 8, 5, 8))


# --------------------------------------------------------------------------- temporal shift


def frames_by_channel(t, c):
    """x[0, t, 0, c] = 10·(t+1) + c, so every value names its frame and channel."""
    values = 10.0 * (np.arange(t)[:, None] + 1) + np.arange(c)[None, :]
    return values.reshape(1, t, 1, c).astype("float32")


def test_tsm_hand_built():
    x = frames_by_channel(3, 8)  # fold_div 4 → 2 channels each way
    expected = np.array(
        [
            [20, 21, 0, 0, 14, 15, 16, 17],
            [30, 31, 12, 13, 24, 25, 26, 27],
            [0, 0, 22, 23, 34, 35, 36, 37],
        ],
        "float32",
    )
    out = keras.ops.convert_to_numpy(TemporalShift("tsm", fold_div=4)(x))
    np.testing.assert_array_equal(out[0, :, 0], expected)


def test_token_shift_hand_built():
    x = np.concatenate([frames_by_channel(3, 4), 100 + frames_by_channel(3, 4)], axis=2)
    expected_cls = np.array([[20, 0, 12, 13], [30, 11, 22, 23], [0, 21, 32, 33]], "float32")
    out = keras.ops.convert_to_numpy(TemporalShift("token", fold_div=4)(x))
    np.testing.assert_array_equal(out[0, :, 0], expected_cls)
    np.testing.assert_array_equal(out[0, :, 1], x[0, :, 1])  # patch tokens untouched


def test_periodic_shift_hand_built():
    # 2 heads of head_dim 4, fold_div 4 → channel 0 of each head from t+1, channel 1 from t−1.
    x = frames_by_channel(3, 8)
    expected = np.array(
        [
            [20, 0, 12, 13, 24, 0, 16, 17],
            [30, 11, 22, 23, 34, 15, 26, 27],
            [0, 21, 32, 33, 0, 25, 36, 37],
        ],
        "float32",
    )
    merged = TemporalShift("periodic", fold_div=4, num_heads=2)(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(merged)[0, :, 0], expected)
    split = TemporalShift("periodic", fold_div=4)(x.reshape(1, 3, 1, 2, 4))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(split).reshape(3, 8), expected)


def numpy_shift(x, fold):
    """Per-frame loop over (B, T, ..., C): an independent statement of the shift."""
    out = x.copy()
    t_len = x.shape[1]
    for t in range(t_len):
        out[:, t, ..., :fold] = x[:, t + 1, ..., :fold] if t + 1 < t_len else 0
        out[:, t, ..., fold : 2 * fold] = x[:, t - 1, ..., fold : 2 * fold] if t > 0 else 0
    return out


@pytest.mark.parametrize("fold_div", [2, 3, 4, 8])
def test_shift_modes_random(fold_div):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 12)).astype("float32")
    out = keras.ops.convert_to_numpy(TemporalShift("tsm", fold_div=fold_div)(x))
    np.testing.assert_array_equal(out, numpy_shift(x, 12 // fold_div))
    token = keras.ops.convert_to_numpy(TemporalShift("token", fold_div=fold_div)(x))
    expected = x.copy()
    expected[:, :, :1] = numpy_shift(x[:, :, :1], 12 // fold_div)
    np.testing.assert_array_equal(token, expected)
    periodic = TemporalShift("periodic", fold_div=fold_div, num_heads=3)(x)
    heads = numpy_shift(x.reshape(2, 5, 3, 3, 4), 4 // fold_div).reshape(x.shape)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(periodic), heads)


def test_shift_time_axis_and_errors():
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 8)).astype("float32")  # time on axis 2
    out = TemporalShift("tsm", fold_div=4, time_axis=2)(x)
    expected = numpy_shift(x.transpose(0, 2, 1, 3), 2).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), expected)
    with pytest.raises(ValueError, match="Unknown shift mode"):
        TemporalShift("circular")
    with pytest.raises(ValueError, match="fold_div"):
        TemporalShift("tsm", fold_div=0)
    with pytest.raises(ValueError, match="do not split"):
        TemporalShift("periodic", num_heads=3)(x)


def test_shift_serialization_and_dtype():
    layer = TemporalShift("periodic", fold_div=4, num_heads=2, name="s")
    clone = TemporalShift.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    x = np.random.default_rng(2).normal(size=(1, 4, 3, 8)).astype("float32")
    half = TemporalShift("tsm", dtype="mixed_float16")(x)
    assert keras.backend.standardize_dtype(half.dtype) == "float16"
    assert layer.compute_output_shape((None, 4, 3, 8)) == (None, 4, 3, 8)


# --------------------------------------------------------------------------- leap attention


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def numpy_leap(layer, x, level, shift, fold_div):
    """Independent LAPS attention: each frame attends to itself and its partner frame."""
    w = {v.path.split("/")[-2] + "/" + v.name: keras.ops.convert_to_numpy(v) for v in layer.weights}
    b, t_len, n, dim = x.shape
    h = layer.num_heads
    d = dim // h

    def proj(name):
        return (x @ w[f"{name}/kernel"] + w[f"{name}/bias"]).reshape(b, t_len, n, h, d)

    q, k, v = proj("query"), proj("key"), proj("value")
    heads = np.zeros_like(q)
    for t in range(t_len):
        if level is None:
            frames = [t]
        else:
            s = t_len // 2**level
            frames = [t, t + s if (t // s) % 2 == 0 else t - s]
        keys = np.concatenate([k[:, f] for f in frames], axis=1)  # (b, n·|frames|, h, d)
        values = np.concatenate([v[:, f] for f in frames], axis=1)
        logits = np.einsum("bqhd,bkhd->bhqk", q[:, t], keys) / np.sqrt(d)
        heads[:, t] = np.einsum("bhqk,bkhd->bqhd", softmax(logits), values)
    if shift == "periodic" and fold_div:
        heads = numpy_shift(heads, d // fold_div)
    merged = heads.reshape(b, t_len, n, dim)
    if shift == "tsm" and fold_div:
        merged = numpy_shift(merged, dim // fold_div)
    return merged @ w["output/kernel"] + w["output/bias"]


CASES = [
    (8, 1, "periodic", 4),
    (8, 2, "periodic", 4),
    (8, 3, "periodic", 4),
    (8, 2, None, 4),
    (8, 3, "periodic", 0),
    (8, None, "periodic", 4),
    (8, 1, "tsm", 4),
    (4, 2, "periodic", 2),
    (32, 4, "periodic", 4),
]


@pytest.mark.parametrize("frames,level,shift,fold_div", CASES)
def test_leap_attention_matches_numpy(frames, level, shift, fold_div):
    rng = np.random.default_rng(frames + (level or 0))
    x = rng.normal(size=(2, frames, 3, 8)).astype("float32")
    layer = LeapAttention(num_heads=2, level=level, shift=shift, fold_div=fold_div,
                          bias_initializer="random_normal")
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, numpy_leap(layer, x, level, shift, fold_div), atol=2e-5)


def test_leap_attention_pairs_are_isolated():
    # At level 1 for T=8 frame 0 sees only frames 0 and 4: changing frame 3 changes frames 3
    # and 7 (and, through the shift, their neighbours 2, 4, 6), never frame 0 or 1.
    x = np.random.default_rng(3).normal(size=(1, 8, 3, 8)).astype("float32")
    layer = LeapAttention(num_heads=2, level=1)
    base = keras.ops.convert_to_numpy(layer(x))
    x2 = x.copy()
    x2[:, 3] += 1.0
    changed = np.abs(keras.ops.convert_to_numpy(layer(x2)) - base).max(axis=(0, 2, 3)) > 1e-6
    assert changed.tolist() == [False, False, True, True, True, False, True, True]


def test_leap_attention_serialization_and_shapes():
    layer = LeapAttention(num_heads=2, level=2, shift="tsm", fold_div=8, qkv_bias=False)
    x = np.random.default_rng(4).normal(size=(1, 8, 3, 16)).astype("float32")
    out = layer(x)
    config = layer.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert clone.get_config() == config
    if not clone.built:  # serialize_keras_object stores the build shape
        clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(out)
    )
    assert layer.compute_output_shape((None, 8, 3, 16)) == (None, 8, 3, 16)
    # The same variable layout as MultiHeadSelfAttention: LAPS adds no parameters.
    suffixes = sorted(v.path.split("/", 1)[1] for v in layer.weights)
    assert suffixes == [
        "key/kernel", "output/bias", "output/kernel", "query/kernel", "value/kernel"
    ]
    with pytest.raises(ValueError, match="Unknown shift"):
        LeapAttention(num_heads=2, shift="circular")
    with pytest.raises(ValueError, match="batch, frames, tokens, width"):
        LeapAttention(num_heads=2)(np.zeros((1, 8, 16), "float32"))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_leap_attention_mixed_precision(policy):
    x = np.random.default_rng(5).normal(size=(1, 8, 3, 8)).astype("float32")
    reference = LeapAttention(num_heads=2, level=1)
    expected = keras.ops.convert_to_numpy(reference(x))
    layer = LeapAttention(num_heads=2, level=1, dtype=policy)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in layer.weights)
    out = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    np.testing.assert_allclose(out, expected, atol=0.1 if "bfloat" in policy else 2e-2)
