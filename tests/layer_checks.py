"""Helpers for layer and model tests: NumPy conversion, random weights, round trips."""

from __future__ import annotations

import keras
import numpy as np


def to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def randomize_weights(layer: keras.layers.Layer, seed: int = 0, scale: float = 0.5) -> None:
    """Gives every weight random values, so no test passes on zeros or ones."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(0.0, scale, weight.shape).astype(weight.dtype))


def weights_by_path(layer: keras.layers.Layer) -> dict[str, np.ndarray]:
    """Variable values keyed by their path relative to `layer`."""
    prefix = layer.path + "/" if layer.path else ""
    return {w.path.removeprefix(prefix): to_numpy(w) for w in layer.weights}


def assert_config_round_trip(layer: keras.layers.Layer, *inputs, atol: float = 1e-6, **call_kwargs):
    """Serialises `layer`, rebuilds it from its config, copies weights, compares outputs."""
    expected = to_numpy(layer(*inputs, **call_kwargs))
    config = keras.saving.serialize_keras_object(layer)
    rebuilt = keras.saving.deserialize_keras_object(config)
    rebuilt(*inputs, **call_kwargs)
    assert len(rebuilt.weights) == len(layer.weights)
    rebuilt.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(rebuilt(*inputs, **call_kwargs)), expected, atol=atol)
    assert rebuilt.get_config() == layer.get_config()


def assert_mixed_precision(make_layer, *inputs, **call_kwargs):
    """Under both mixed policies the layer runs, outputs the compute dtype and stays finite."""
    for policy, compute in (("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")):
        layer = make_layer(dtype=policy)
        output = layer(*inputs, **call_kwargs)
        assert keras.backend.standardize_dtype(output.dtype) == compute, policy
        assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)
        assert np.isfinite(to_numpy(keras.ops.cast(output, "float32"))).all(), policy
