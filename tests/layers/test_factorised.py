"""FactorisedDotProductAttention and FactorisedSelfAttentionBlock against NumPy references."""

import doctest
import math

import keras
import numpy as np
import pytest

from keras_vtn.layers import (
    FactorisedDotProductAttention,
    FactorisedSelfAttentionBlock,
    MultiHeadSelfAttention,
)
from keras_vtn.layers import factorised as factorised_module

B, T, N, D = 2, 3, 5, 8


def _inputs(seed=0, shape=(B, T, N, D)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _randomize(layer, seed=1):
    """Random values in every weight (biases and LayerNorm parameters included)."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        value = rng.standard_normal(w.shape) * 0.5
        if w.path.endswith("gamma"):
            value = 1.0 + 0.2 * value
        w.assign(value.astype("float32"))


def _w(layer, suffix):
    matches = [w for w in layer.weights if w.path.endswith(suffix)]
    assert len(matches) == 1, (suffix, [w.path for w in layer.weights])
    return keras.ops.convert_to_numpy(matches[0].value).astype("float64")


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _attention_1d(q, k, v):
    """Plain attention for one sequence: q, k, v (L, d)."""
    return _softmax(q @ k.T / math.sqrt(q.shape[-1])) @ v


def _project(layer, prefix, x, heads):
    """q, k, v of shape (..., heads, d) from the layer's Dense weights."""
    out = []
    for name in ("query", "key", "value"):
        y = x @ _w(layer, f"{prefix}{name}/kernel") + _w(layer, f"{prefix}{name}/bias")
        out.append(y.reshape(*y.shape[:-1], heads, -1))
    return out


def _output(layer, prefix, heads_out):
    merged = heads_out.reshape(*heads_out.shape[:-2], -1)
    return merged @ _w(layer, f"{prefix}output/kernel") + _w(layer, f"{prefix}output/bias")


def _numpy_factorised_dot_product(layer, x, num_heads):
    q, k, v = _project(layer, "", x.astype("float64"), num_heads)
    out = np.zeros_like(q)
    half = num_heads // 2
    for b in range(x.shape[0]):
        for h in range(num_heads):
            if h < half:  # time heads: one sequence of T tokens per spatial position
                for n in range(x.shape[2]):
                    out[b, :, n, h] = _attention_1d(q[b, :, n, h], k[b, :, n, h], v[b, :, n, h])
            else:  # space heads: one sequence of N tokens per frame
                for t in range(x.shape[1]):
                    out[b, t, :, h] = _attention_1d(q[b, t, :, h], k[b, t, :, h], v[b, t, :, h])
    return _output(layer, "", out)


def _layer_norm(layer, prefix, x, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * _w(layer, f"{prefix}/gamma") + _w(
        layer, f"{prefix}/beta"
    )


def _mhsa_rows(layer, prefix, x, heads):
    """Self-attention over axis -2 of x (..., L, D), every leading axis a batch axis."""
    q, k, v = _project(layer, prefix, x, heads)
    out = np.zeros_like(q)
    for idx in np.ndindex(*x.shape[:-2]):
        for h in range(heads):
            out[idx][:, h] = _attention_1d(q[idx][:, h], k[idx][:, h], v[idx][:, h])
    return _output(layer, prefix, out)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _numpy_factorised_block(layer, x, heads, order, eps=1e-6):
    x = x.astype("float64")

    def spatial(x):
        y = _layer_norm(layer, "spatial_norm", x, eps)
        return x + _mhsa_rows(layer, "spatial_attention/", y, heads)

    def temporal(x):
        xt = x.transpose(0, 2, 1, 3)  # (B, N, T, D): each spatial position is a sequence
        y = _layer_norm(layer, "temporal_norm", xt, eps)
        return (xt + _mhsa_rows(layer, "temporal_attention/", y, heads)).transpose(0, 2, 1, 3)

    x = spatial(temporal(x)) if order == "time_space" else temporal(spatial(x))
    y = _layer_norm(layer, "mlp_norm", x, eps)
    y = _gelu_tanh(y @ _w(layer, "fc1/kernel") + _w(layer, "fc1/bias"))
    return x + y @ _w(layer, "fc2/kernel") + _w(layer, "fc2/bias")


def test_factorised_dot_product_matches_numpy():
    x = _inputs()
    layer = FactorisedDotProductAttention(num_heads=4)
    layer.build(x.shape)
    _randomize(layer)
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, _numpy_factorised_dot_product(layer, x, 4), atol=2e-5)


def test_factorised_dot_product_head_groups_differ_from_plain_attention():
    # A plain per-frame attention with the same weights must differ: the time heads mix frames.
    x = _inputs()
    layer = FactorisedDotProductAttention(num_heads=2)
    layer.build(x.shape)
    _randomize(layer)
    plain = MultiHeadSelfAttention(num_heads=2)
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    assert np.abs(keras.ops.convert_to_numpy(plain(x) - layer(x))).max() > 1e-3


@pytest.mark.parametrize("order", ["time_space", "space_time"])
def test_factorised_block_matches_numpy(order):
    x = _inputs()
    layer = FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=16, attention_order=order)
    layer.build(x.shape)
    _randomize(layer)
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, _numpy_factorised_block(layer, x, 2, order), atol=5e-5)


def test_factorised_block_orders_differ():
    x = _inputs()
    a = FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=16, attention_order="time_space")
    b = FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=16, attention_order="space_time")
    a.build(x.shape)
    b.build(x.shape)
    _randomize(a)
    b.set_weights(a.get_weights())
    assert np.abs(keras.ops.convert_to_numpy(a(x) - b(x))).max() > 1e-3


def test_factorised_block_weight_paths():
    layer = FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=16, name="blk")
    layer.build((None, T, N, D))
    paths = {w.path for w in layer.weights}
    for sub in ("spatial_attention", "temporal_attention"):
        for proj in ("query", "key", "value", "output"):
            assert f"blk/{sub}/{proj}/kernel" in paths
    for norm in ("spatial_norm", "temporal_norm", "mlp_norm"):
        assert f"blk/{norm}/gamma" in paths
    assert {"blk/mlp/fc1/kernel", "blk/mlp/fc2/kernel"} <= paths
    assert len(paths) == 2 * 8 + 3 * 2 + 4


@pytest.mark.parametrize(
    "make",
    [
        lambda: FactorisedDotProductAttention(num_heads=4, attention_dropout_rate=0.1),
        lambda: FactorisedSelfAttentionBlock(
            num_heads=2, mlp_dim=16, attention_order="space_time", layer_norm_epsilon=1e-5
        ),
    ],
)
def test_serialization_round_trip(make):
    x = _inputs()
    layer = make()
    layer.build(x.shape)
    _randomize(layer)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.get_config() == layer.get_config()
    if not clone.built:  # deserialisation rebuilds from the saved build config
        clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(layer(x)), atol=1e-6
    )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("cls", ["dot_product", "block"])
def test_mixed_precision(policy, cls):
    x = _inputs()

    def make(dtype):
        if cls == "dot_product":
            return FactorisedDotProductAttention(num_heads=4, dtype=dtype)
        return FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=16, dtype=dtype)

    ref, mixed = make("float32"), make(policy)
    ref.build(x.shape)
    mixed.build(x.shape)
    _randomize(ref)
    mixed.set_weights(ref.get_weights())
    assert all(w.dtype == "float32" for w in mixed.weights)
    out = mixed(x)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    tol = 0.05 if policy == "mixed_float16" else 0.3
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")),
        keras.ops.convert_to_numpy(ref(x)),
        atol=tol,
        rtol=tol,
    )


@pytest.mark.parametrize("cls", ["dot_product", "block"])
def test_shapes_and_symbolic(cls):
    layer = (
        FactorisedDotProductAttention(num_heads=2)
        if cls == "dot_product"
        else FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=16)
    )
    inputs = keras.Input((T, N, D))
    assert layer.compute_output_shape((None, T, N, D)) == (None, T, N, D)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None, T, N, D)
    model = keras.Model(inputs, outputs)
    assert model.predict(_inputs(), verbose=0).shape == (B, T, N, D)


def test_dropout_only_in_training():
    x = _inputs()
    layer = FactorisedSelfAttentionBlock(
        num_heads=2, mlp_dim=16, dropout_rate=0.5, attention_dropout_rate=0.5, drop_path_rate=0.5
    )
    plain = FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=16)
    layer.build(x.shape)
    plain.build(x.shape)
    _randomize(layer)
    plain.set_weights(layer.get_weights())
    inference = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(inference, keras.ops.convert_to_numpy(plain(x)), atol=1e-6)
    # Training is random; one stochastic path (drop path) keeps this cheap under JAX, where
    # every random op shape is compiled.
    dropping = FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=16, drop_path_rate=0.5)
    dropping.build(x.shape)
    dropping.set_weights(layer.get_weights())
    outputs = [keras.ops.convert_to_numpy(dropping(x, training=True)) for _ in range(4)]
    assert max(np.abs(out - inference).max() for out in outputs) > 1e-3


def test_clear_errors():
    with pytest.raises(ValueError, match="num_heads must be even"):
        FactorisedDotProductAttention(num_heads=3).build((None, T, N, 9))
    with pytest.raises(ValueError, match="batch, frames, tokens_per_frame"):
        FactorisedDotProductAttention(num_heads=2).build((None, N, D))
    with pytest.raises(ValueError, match="batch, frames, tokens_per_frame"):
        FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=8).build((None, N, D))
    with pytest.raises(ValueError, match="attention_order"):
        FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=8, attention_order="spacetime")
    layer = FactorisedDotProductAttention(num_heads=2)
    with pytest.raises(ValueError, match="mask"):
        layer(_inputs(), attention_mask=np.ones((T, T), bool))


def test_docstring_examples():
    result = doctest.testmod(factorised_module, verbose=False)
    assert result.attempted >= 2 and result.failed == 0
