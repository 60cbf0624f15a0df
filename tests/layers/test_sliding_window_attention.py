"""SlidingWindowAttention against a row-by-row NumPy Longformer reference."""

import keras
import numpy as np
import pytest
from layer_checks import randomize_weights, to_numpy, weights_by_path

from keras_vtn.layers import MultiHeadSelfAttention, SlidingWindowAttention, TransformerBlock


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _reference(x, w, heads, window, num_global, key_valid=None):
    """Longformer, one query row at a time.

    Row i >= G: regular q/k/v, keys {j : |i-j| <= window} ∪ {global tokens}.
    Row i < G: query_global/key_global/value_global over every (valid) key.
    """
    b, n, dim = x.shape
    d = dim // heads

    def proj(name, rows):
        return (rows @ w[f"{name}/kernel"] + w[f"{name}/bias"]).reshape(*rows.shape[:-1], heads, d)

    out = np.zeros((b, n, heads, d))
    for bi in range(b):
        valid = np.ones(n, bool) if key_valid is None else key_valid[bi]
        for i in range(n):
            if i < num_global:
                q = proj("query_global", x[bi, i])
                k, v = proj("key_global", x[bi]), proj("value_global", x[bi])
                keys = [j for j in range(n) if valid[j]]
            else:
                q = proj("query", x[bi, i])
                k, v = proj("key", x[bi]), proj("value", x[bi])
                keys = [
                    j for j in range(n) if valid[j] and (abs(i - j) <= window or j < num_global)
                ]
            for h in range(heads):
                scores = np.array([q[h] @ k[j, h] for j in keys]) / np.sqrt(d)
                out[bi, i, h] = _softmax(scores) @ v[keys, h]
    return out.reshape(b, n, dim) @ w["output/kernel"] + w["output/bias"]


@pytest.mark.parametrize("window,num_global", [(2, 1), (1, 2), (0, 1), (3, 0)])
def test_matches_row_by_row_reference(window, num_global):
    layer = SlidingWindowAttention(2, window_size=window, num_global_tokens=num_global)
    x = np.random.default_rng(1).normal(size=(2, 9, 8)).astype("float32")
    layer.build(x.shape)
    randomize_weights(layer)
    w = weights_by_path(layer)
    assert ("query_global/kernel" in w) == bool(num_global)
    got = to_numpy(layer(x))
    want = _reference(x.astype(np.float64), w, 2, window, num_global)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_key_padding_mask_applies_to_local_and_global_rows():
    layer = SlidingWindowAttention(2, window_size=2, num_global_tokens=1)
    x = np.random.default_rng(2).normal(size=(2, 8, 8)).astype("float32")
    layer.build(x.shape)
    randomize_weights(layer, 3)
    valid = np.ones((2, 8), bool)
    valid[0, 6:] = False
    valid[1, 3] = False
    mask = valid[:, None, None, :]  # (B, 1, 1, N): broadcast over heads and queries
    got = to_numpy(layer(x, attention_mask=mask))
    want = _reference(x.astype(np.float64), weights_by_path(layer), 2, 2, 1, key_valid=valid)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_wide_window_without_globals_is_full_attention():
    x = np.random.default_rng(3).normal(size=(1, 6, 8)).astype("float32")
    layer = SlidingWindowAttention(2, window_size=5, num_global_tokens=0)
    full = MultiHeadSelfAttention(2)
    layer.build(x.shape)
    full.build(x.shape)
    randomize_weights(layer, 4)
    full.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(layer(x)), to_numpy(full(x)), atol=1e-5)


def test_leading_batch_axes_and_output_shape():
    layer = SlidingWindowAttention(2, window_size=1)
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 8)).astype("float32")
    y = to_numpy(layer(x))
    assert y.shape == x.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y[0, 1], to_numpy(layer(x[0:1, 1]))[0], atol=1e-5)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="must be >= 0"):
        SlidingWindowAttention(2, window_size=-1)


def test_serialization_round_trip_inside_post_ln_block():
    x = np.random.default_rng(5).normal(size=(2, 9, 8)).astype("float32")
    attention = SlidingWindowAttention(2, window_size=2, num_global_tokens=1, name="attention")
    block = TransformerBlock(
        mlp_dim=16, norm_first=False, layer_norm_epsilon=1e-12, attention=attention
    )
    y = to_numpy(block(x))
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(block))
    assert clone.built  # build_config restores the built state
    clone.set_weights(block.get_weights())
    cfg = clone.attention.get_config()
    assert (cfg["window_size"], cfg["num_global_tokens"]) == (2, 1)
    np.testing.assert_allclose(to_numpy(clone(x)), y, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    x = np.random.default_rng(6).normal(size=(2, 9, 8)).astype("float32")
    ref = SlidingWindowAttention(2, window_size=2)
    want = to_numpy(ref(x))
    layer = SlidingWindowAttention(2, window_size=2, dtype=policy)
    layer.build(x.shape)
    layer.set_weights(ref.get_weights())
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    got = to_numpy(keras.ops.cast(y, "float32"))
    np.testing.assert_allclose(got, want, atol=0.1, rtol=0.05)


def test_dropout_only_in_training():
    layer = SlidingWindowAttention(2, window_size=2, attention_dropout_rate=0.5)
    x = np.random.default_rng(7).normal(size=(2, 9, 8)).astype("float32")
    a = to_numpy(layer(x))
    np.testing.assert_array_equal(a, to_numpy(layer(x, training=False)))
    assert not np.allclose(a, to_numpy(layer(x, training=True)))
