import math

import keras
import numpy as np
import pytest
from layer_checks import (
    assert_config_round_trip,
    assert_mixed_precision,
    randomize_weights,
    to_numpy,
    weights_by_path,
)

from keras_vtn.layers import (
    DropPath,
    FactorisedDotProductAttention,
    LeapAttention,
    LinformerAttention,
    MultiHeadSelfAttention,
    SlidingWindowAttention,
    TransformerBlock,
)
from keras_vtn.layers import attention as attention_module


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu(x, approximate):
    if approximate:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def attention_reference(x, w, heads, head_dim, mask=None, prefix="attention/"):
    """Multi-head self-attention over axis -2, every leading axis a batch axis."""

    def dense(name, v):
        y = v @ w[f"{prefix}{name}/kernel"]
        return y + w.get(f"{prefix}{name}/bias", 0.0)

    q, k, v = (
        dense(n, x).reshape(*x.shape[:-1], heads, head_dim) for n in ("query", "key", "value")
    )
    logits = np.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(head_dim)
    if mask is not None:
        logits = np.where(mask, logits, -1e9)
    out = np.einsum("...hqk,...khd->...qhd", softmax(logits), v)
    return dense("output", out.reshape(*x.shape[:-1], heads * head_dim))


@pytest.mark.parametrize("head_dim", [None, 5])
def test_attention_matches_numpy(head_dim, rng):
    x = rng.normal(size=(2, 3, 6, 8)).astype("float32")  # (B, T, N, D): attends within frames
    layer = MultiHeadSelfAttention(num_heads=2, head_dim=head_dim, name="attention")
    layer.build(x.shape)
    randomize_weights(layer)
    d = head_dim or 4
    assert layer.query.kernel.shape == (8, 2 * d)
    w = {"attention/" + k: v for k, v in weights_by_path(layer).items()}
    np.testing.assert_allclose(to_numpy(layer(x)), attention_reference(x, w, 2, d), atol=1e-5)

    mask = rng.random((1, 1, 6, 6)) > 0.3
    mask[..., 0] = True  # every query keeps at least one key
    np.testing.assert_allclose(
        to_numpy(layer(x, attention_mask=mask)), attention_reference(x, w, 2, d, mask), atol=1e-5
    )


def test_long_attention_in_query_chunks_gives_the_same_rows(monkeypatch, rng):
    """JAX on CPU runs long attention in query chunks (here: 2 rows, the last chunk 1 row);
    every backend must give the unchunked softmax, masks included."""
    monkeypatch.setattr(attention_module, "CHUNK_LOGITS", 40)
    q, k, v = (rng.normal(size=(2, 9, 2, 4)).astype("float32") for _ in range(3))
    chunked = attention_module._query_chunk_rows(q, k)
    assert chunked == (2 if keras.backend.backend() == "jax" else None)
    mask = rng.random((1, 1, 9, 9)) > 0.3
    mask[..., 0] = True
    for m in (None, mask, mask[..., :1, :]):
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
        if m is not None:
            logits = np.where(m, logits, -1e9)
        expected = np.einsum("bhqk,bkhd->bqhd", softmax(logits), v)
        out = to_numpy(attention_module.scaled_dot_product_attention(q, k, v, m))
        np.testing.assert_allclose(out, expected, atol=1e-5)


class _FixedDropout:
    """Stands in for a Dropout layer with a known keep mask (scaled by 1 / keep rate)."""

    rate = 0.5

    def __init__(self, keep):
        self.keep = keep

    def __call__(self, probs, training=None):
        return probs * keras.ops.cast(self.keep, probs.dtype) * 2.0


def test_attention_dropout_acts_on_the_normalised_probabilities(rng):
    """The division by the softmax sums comes after the value product; dropout must still
    give dropout(softmax) · v."""
    q, k, v = (rng.normal(size=(2, 5, 2, 4)).astype("float32") for _ in range(3))
    keep = rng.random((2, 2, 5, 5)) > 0.5
    out = attention_module.scaled_dot_product_attention(
        q, k, v, dropout=_FixedDropout(keep), training=True
    )
    probs = softmax(np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0) * keep * 2.0
    np.testing.assert_allclose(to_numpy(out), np.einsum("bhqk,bkhd->bqhd", probs, v), atol=1e-5)


def test_float16_attention_over_many_keys_stays_finite(rng):
    """Unnormalised sums over 4,096 keys of values near 100 would pass float16's 65,504, and
    a float16 accumulation of the 4,096 products would stall below 100."""
    q = rng.normal(size=(1, 3, 1, 8)).astype("float16")
    k = np.zeros((1, 4096, 1, 8), "float16")
    v = np.full((1, 4096, 1, 8), 100.0, "float16")
    out = to_numpy(attention_module.scaled_dot_product_attention(q, k, v))
    np.testing.assert_allclose(out.astype("float32"), 100.0, rtol=1e-3)


def test_attention_query_tokens_are_the_leading_rows(rng):
    """`query_tokens=n`: the first n output rows of the full attention, mask rows included."""
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    layer = MultiHeadSelfAttention(num_heads=2, name="attention")
    layer.build(x.shape)
    randomize_weights(layer)
    w = {"attention/" + k: v for k, v in weights_by_path(layer).items()}
    mask = rng.random((1, 1, 7, 7)) > 0.3
    mask[..., 0] = True
    for m in (None, mask, mask[..., :1, :]):  # full rows, and one row broadcast to all
        expected = attention_reference(x, w, 2, 4, m)[:, :2]
        out = to_numpy(layer(x, attention_mask=m, query_tokens=2))
        assert out.shape == (2, 2, 8)
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_attention_without_biases_and_dropout_only_in_training(rng):
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    layer = MultiHeadSelfAttention(2, qkv_bias=False, output_bias=False, attention_dropout_rate=0.5)
    layer.build(x.shape)
    assert len(layer.weights) == 4
    np.testing.assert_array_equal(to_numpy(layer(x)), to_numpy(layer(x)))
    assert not np.allclose(to_numpy(layer(x, training=True)), to_numpy(layer(x)))


def block_reference(x, w, heads, norm_first, eps, approximate):
    def ln(name, v):
        return layer_norm(v, w[f"{name}/gamma"], w[f"{name}/beta"], eps)

    def mlp(v):
        h = gelu(v @ w["mlp/fc1/kernel"] + w["mlp/fc1/bias"], approximate)
        return h @ w["mlp/fc2/kernel"] + w["mlp/fc2/bias"]

    head_dim = x.shape[-1] // heads
    if norm_first:
        x = x + attention_reference(ln("norm1", x), w, heads, head_dim)
        return x + mlp(ln("norm2", x))
    x = ln("norm1", x + attention_reference(x, w, heads, head_dim))
    return ln("norm2", x + mlp(x))


@pytest.mark.parametrize(
    "norm_first, eps, activation",
    [(True, 1e-6, "gelu"), (False, 1e-12, "gelu"), (True, 1e-6, "gelu_tanh")],
)
def test_block_matches_numpy(norm_first, eps, activation, rng):
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    block = TransformerBlock(
        num_heads=2,
        mlp_dim=16,
        norm_first=norm_first,
        layer_norm_epsilon=eps,
        activation=activation,
    )
    block.build(x.shape)
    randomize_weights(block)
    expected = block_reference(
        x, weights_by_path(block), 2, norm_first, eps, approximate=activation == "gelu_tanh"
    )
    np.testing.assert_allclose(to_numpy(block(x)), expected, atol=2e-5)
    assert block.norm1.epsilon == eps


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_output_tokens_keeps_the_leading_rows(norm_first, rng):
    """`output_tokens=1` returns exactly the CLS row of the full block (its query still
    attends to every token)."""
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    full = TransformerBlock(num_heads=2, mlp_dim=16, norm_first=norm_first)
    full.build(x.shape)
    randomize_weights(full)
    expected = block_reference(x, weights_by_path(full), 2, norm_first, 1e-6, False)[:, :1]
    cls_only = TransformerBlock(num_heads=2, mlp_dim=16, norm_first=norm_first, output_tokens=1)
    cls_only.build(x.shape)
    cls_only.set_weights(full.get_weights())
    out = to_numpy(cls_only(x))
    assert out.shape == (2, 1, 8) == cls_only.compute_output_shape(x.shape)
    np.testing.assert_allclose(out, expected, atol=2e-5)
    assert_config_round_trip(cls_only, x)
    with pytest.raises(ValueError, match="positive"):
        TransformerBlock(num_heads=2, output_tokens=0)


@pytest.mark.parametrize(
    "make_attention, query_only",
    [
        (lambda: LeapAttention(2, level=1, name="attention"), True),
        (lambda: LinformerAttention(2, projected_length=3, name="attention"), True),
        (lambda: SlidingWindowAttention(2, window_size=1, name="attention"), False),
        (lambda: FactorisedDotProductAttention(2, name="attention"), False),
    ],
)
def test_block_output_tokens_with_every_attention(make_attention, query_only, rng):
    """Every attention layer gives the full block's leading rows under `output_tokens`: the
    query-only path where it is supported, the slice after the attention elsewhere."""
    x = rng.normal(size=(2, 4, 5, 8)).astype("float32")  # (B, T, N, D)
    full = TransformerBlock(mlp_dim=16, attention=make_attention())
    full.build(x.shape)
    randomize_weights(full)
    expected = to_numpy(full(x))[..., :2, :]
    leading = TransformerBlock(mlp_dim=16, attention=make_attention(), output_tokens=2)
    leading.build(x.shape)
    leading.set_weights(full.get_weights())
    assert leading.attention.supports_query_tokens is query_only
    np.testing.assert_allclose(to_numpy(leading(x)), expected, atol=2e-5)


def test_block_with_pluggable_attention(rng):
    x = rng.normal(size=(1, 4, 8)).astype("float32")
    attention = MultiHeadSelfAttention(4, head_dim=3, qkv_bias=False, name="attention")
    block = TransformerBlock(mlp_dim=8, attention=attention)
    block.build(x.shape)
    assert block.attention is attention
    assert block.attention.query.kernel.shape == (8, 12)
    randomize_weights(block)
    assert_config_round_trip(block, x)


def test_drop_path_conventions(rng):
    x = np.ones((64, 3, 4), "float32")
    assert np.array_equal(to_numpy(DropPath(0.5)(x)), x)
    scaled = to_numpy(DropPath(0.5, seed=1)(x, training=True))
    assert set(np.unique(scaled)) <= {0.0, 2.0} and 0 < scaled.sum() < scaled.size * 2
    kept = to_numpy(DropPath(0.5, scale=False, seed=1)(x, training=True))
    assert set(np.unique(kept)) <= {0.0, 1.0}
    # a whole example is kept or dropped together
    assert all(len(np.unique(example)) == 1 for example in kept)


def test_block_stochastic_depth_inactive_at_inference(rng):
    x = rng.normal(size=(4, 5, 8)).astype("float32")
    block = TransformerBlock(num_heads=2, mlp_dim=16, drop_path_rate=0.9, dropout_rate=0.5)
    block.build(x.shape)
    np.testing.assert_array_equal(to_numpy(block(x)), to_numpy(block(x, training=False)))
    assert not np.allclose(to_numpy(block(x, training=True)), to_numpy(block(x)))


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_serialization_and_mixed_precision(norm_first, rng):
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    block = TransformerBlock(num_heads=2, mlp_dim=16, norm_first=norm_first, drop_path_rate=0.1)
    block.build(x.shape)
    randomize_weights(block)
    assert_config_round_trip(block, x)
    assert_mixed_precision(
        lambda **kw: TransformerBlock(num_heads=2, mlp_dim=16, norm_first=norm_first, **kw), x
    )
    assert_mixed_precision(lambda **kw: MultiHeadSelfAttention(2, **kw), x)


def test_block_in_saved_model(tmp_path, rng):
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    inputs = keras.Input((5, 8))
    outputs = TransformerBlock(num_heads=2, mlp_dim=16, name="block")(inputs)
    model = keras.Model(inputs, outputs)
    randomize_weights(model)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(to_numpy(restored(x)), to_numpy(model(x)), atol=1e-6)


def test_block_needs_heads_or_attention():
    with pytest.raises(ValueError, match="num_heads"):
        TransformerBlock(mlp_dim=8)
