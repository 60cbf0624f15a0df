"""LinformerAttention against the explicit Linformer formula written out in NumPy."""

import keras
import numpy as np
import pytest
from layer_checks import randomize_weights, to_numpy, weights_by_path

from keras_vtn.layers import LinformerAttention, TransformerBlock


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _reference(x, w, heads, head_dim, one_kv_head, share_kv, qkv_bias):
    """out = concat_h softmax(Q_h (EᵀK)_hᵀ / sqrt(d)) (E_vᵀV)_h · W_o + b_o."""

    def dense(name):
        y = x @ w[f"{name}/kernel"]
        return y + w[f"{name}/bias"] if qkv_bias else y

    b, n, _ = x.shape
    q = dense("query").reshape(b, n, heads, head_dim)
    kv_heads = 1 if one_kv_head else heads
    e_k = w["key_sequence_projection"]
    e_v = e_k if share_kv else w["value_sequence_projection"]
    k_proj = np.einsum("nj,bnc->bjc", e_k, dense("key"))
    v_proj = k_proj if share_kv else np.einsum("nj,bnc->bjc", e_v, dense("value"))
    out = np.zeros((b, n, heads, head_dim), np.float64)
    for h in range(heads):
        kh = 0 if kv_heads == 1 else h
        k_h = k_proj[:, :, kh * head_dim : (kh + 1) * head_dim]
        v_h = v_proj[:, :, kh * head_dim : (kh + 1) * head_dim]
        scores = np.einsum("bnd,bjd->bnj", q[:, :, h], k_h) / np.sqrt(head_dim)
        out[:, :, h] = np.einsum("bnj,bjd->bnd", _softmax(scores), v_h)
    return out.reshape(b, n, heads * head_dim) @ w["output/kernel"] + w["output/bias"]


@pytest.mark.parametrize(
    "one_kv_head,share_kv,qkv_bias",
    [(True, True, False), (False, True, False), (True, False, False), (False, False, True)],
)
def test_matches_explicit_formula(one_kv_head, share_kv, qkv_bias):
    heads, head_dim = 3, 5  # inner width 15 on an 8-wide model: head width independent of D
    layer = LinformerAttention(
        heads,
        projected_length=4,
        head_dim=head_dim,
        one_kv_head=one_kv_head,
        share_kv=share_kv,
        qkv_bias=qkv_bias,
    )
    x = np.random.default_rng(1).normal(size=(2, 7, 8)).astype("float32")
    layer.build(x.shape)
    randomize_weights(layer)
    w = weights_by_path(layer)
    kv_width = head_dim if one_kv_head else heads * head_dim
    assert w["key/kernel"].shape == (8, kv_width)
    assert w["key_sequence_projection"].shape == (7, 4)
    assert ("value/kernel" in w) == (not share_kv)
    assert ("query/bias" in w) == qkv_bias
    got = to_numpy(layer(x))
    want = _reference(x.astype(np.float64), w, heads, head_dim, one_kv_head, share_kv, qkv_bias)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_leading_batch_axes_and_output_shape():
    layer = LinformerAttention(2, projected_length=3)
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 8)).astype("float32")
    y = to_numpy(layer(x))
    assert y.shape == x.shape == layer.compute_output_shape(x.shape)
    # Leading axes are batch axes: each (batch, frame) row is independent.
    np.testing.assert_allclose(y[1, 2], to_numpy(layer(x[1:2, 2]))[0], atol=1e-5)


def test_wrong_sequence_length_is_a_clear_error():
    layer = LinformerAttention(2, projected_length=3, sequence_length=7)
    with pytest.raises(ValueError, match="built for 7 tokens"):
        layer(np.zeros((1, 6, 8), "float32"))
    layer = LinformerAttention(2, projected_length=3)
    layer(np.zeros((1, 7, 8), "float32"))
    with pytest.raises(ValueError, match="cannot change its sequence length"):
        layer(np.zeros((1, 9, 8), "float32"))


def test_attention_mask_is_rejected():
    layer = LinformerAttention(2, projected_length=3)
    with pytest.raises(ValueError, match="attention_mask=None"):
        layer(np.zeros((1, 7, 8), "float32"), attention_mask=np.ones((7, 7), bool))


def test_serialization_round_trip_inside_a_block():
    x = np.random.default_rng(2).normal(size=(2, 5, 8)).astype("float32")
    attention = LinformerAttention(
        2, projected_length=3, head_dim=6, one_kv_head=True, share_kv=False, name="attention"
    )
    block = TransformerBlock(mlp_dim=16, layer_norm_epsilon=1e-5, attention=attention)
    y = to_numpy(block(x))
    config = keras.saving.serialize_keras_object(block)
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.built  # build_config restores the built state
    clone.set_weights(block.get_weights())
    assert isinstance(clone.attention, LinformerAttention)
    cfg = clone.attention.get_config()
    assert (cfg["projected_length"], cfg["head_dim"], cfg["one_kv_head"], cfg["share_kv"]) == (
        3,
        6,
        True,
        False,
    )
    assert cfg["sequence_length"] == 5
    np.testing.assert_allclose(to_numpy(clone(x)), y, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    x = np.random.default_rng(3).normal(size=(2, 7, 8)).astype("float32")
    ref = LinformerAttention(2, projected_length=3, head_dim=4, one_kv_head=True)
    want = to_numpy(ref(x))
    layer = LinformerAttention(2, projected_length=3, head_dim=4, one_kv_head=True, dtype=policy)
    layer.build(x.shape)
    layer.set_weights(ref.get_weights())
    assert all(v.dtype == "float32" for v in layer.weights)
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    got = to_numpy(keras.ops.cast(y, "float32"))
    np.testing.assert_allclose(got, want, atol=0.1, rtol=0.05)


def test_dropout_only_in_training():
    layer = LinformerAttention(2, projected_length=3, attention_dropout_rate=0.5)
    x = np.random.default_rng(4).normal(size=(2, 7, 8)).astype("float32")
    a = to_numpy(layer(x))
    np.testing.assert_array_equal(a, to_numpy(layer(x, training=False)))
    assert not np.allclose(a, to_numpy(layer(x, training=True)))
