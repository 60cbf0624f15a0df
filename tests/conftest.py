"""Shared pytest helpers: NumPy conversion, layer round trips and dtype-policy hygiene."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

_slow_seconds = 0.0


def pytest_runtest_setup(item):
    """`make test` runs slow tests on a time budget: past it, the rest are skipped (and say so)."""
    budget = os.environ.get("KERAS_VTN_SLOW_BUDGET_S")
    if budget and item.get_closest_marker("slow") and _slow_seconds > float(budget):
        pytest.skip(f"slow-test budget of {budget} s spent; run `make test-slow` for all of them")


def pytest_runtest_logreport(report):
    global _slow_seconds
    if "slow" in report.keywords:
        _slow_seconds += report.duration


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts and ends in float32, whatever a mixed-precision test set."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


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
