"""Optimizers, schedules, losses and presets of keras_vtn.training (fast, no data)."""

import math

import keras
import numpy as np
import pytest
from training_helpers import to_numpy

from keras_vtn import layers as vtn_layers
from keras_vtn.training import (
    PRESETS,
    SmoothedCrossEntropy,
    StepDecay,
    TrainConfig,
    WarmupCosine,
    build_optimizer,
    build_schedule,
    no_weight_decay_variables,
    scale_learning_rate,
)


def _token_model():
    inputs = keras.Input((4, 8))
    x = vtn_layers.ClassToken(name="cls")(inputs)
    x = vtn_layers.PositionEmbedding(name="pos")(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    outputs = keras.layers.Dense(3, name="head")(x[:, 0])
    return keras.Model(inputs, outputs)


def _rel(model, variable):
    return variable.path.removeprefix(model.name + "/")


def _fill(model, value=1.0):
    for v in model.weights:
        v.assign(np.full(v.shape, value, "float32"))


def test_adamw_decays_kernels_only():
    model = _token_model()
    excluded = {_rel(model, v) for v in no_weight_decay_variables(model)}
    assert excluded == {"cls/token", "pos/embeddings", "norm/gamma", "norm/beta", "head/bias"}
    _fill(model)
    optimizer = build_optimizer("adamw", 0.1, weight_decay=0.5, model=model)
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    optimizer.apply(zeros, model.trainable_variables)
    for v in model.trainable_variables:
        name = _rel(model, v)
        expected = 1.0 if name in excluded else 1.0 - 0.1 * 0.5  # decoupled decay
        np.testing.assert_allclose(to_numpy(v), expected, rtol=1e-6, err_msg=name)


def test_weight_decay_needs_the_model():
    with pytest.raises(ValueError, match="model="):
        build_optimizer("sgd", 0.1, weight_decay=1e-4)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_the_update_rule(nesterov):
    var = keras.Variable(np.array([1.0], "float32"))
    optimizer = build_optimizer("sgd", 0.1, momentum=0.9, nesterov=nesterov)
    velocity, value = 0.0, 1.0
    for grad in (1.0, 0.5, -2.0):
        optimizer.apply([np.array([grad], "float32")], [var])
        velocity = 0.9 * velocity - 0.1 * grad
        value += 0.9 * velocity - 0.1 * grad if nesterov else velocity
        np.testing.assert_allclose(to_numpy(var), [value], rtol=1e-5)


def test_gradient_accumulation_applies_the_mean_every_k_steps():
    var = keras.Variable(np.array([0.0], "float32"))
    optimizer = build_optimizer("sgd", 1.0, momentum=0.0, gradient_accumulation_steps=2)
    optimizer.apply([np.array([1.0], "float32")], [var])
    np.testing.assert_allclose(to_numpy(var), [0.0])  # only accumulated
    optimizer.apply([np.array([3.0], "float32")], [var])
    np.testing.assert_allclose(to_numpy(var), [-2.0])  # lr * mean(1, 3)


def test_global_clipnorm():
    var = keras.Variable(np.zeros(2, "float32"))
    optimizer = build_optimizer("sgd", 1.0, momentum=0.0, global_clipnorm=1.0)
    optimizer.apply([np.array([3.0, 4.0], "float32")], [var])
    np.testing.assert_allclose(to_numpy(var), [-0.6, -0.8], rtol=1e-5)


def test_warmup_cosine_shape():
    s = WarmupCosine(0.4, total_steps=110, warmup_steps=10, warmup_start=0.0)
    values = np.array([float(s(i)) for i in range(111)])
    np.testing.assert_allclose(values[:11], np.linspace(0, 0.4, 11), atol=1e-6)
    expected = 0.2 * (1 + np.cos(math.pi * (np.arange(10, 111) - 10) / 100))
    np.testing.assert_allclose(values[10:], expected, atol=1e-6)
    assert keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(s)).get_config() == s.get_config()


def test_step_schedule_from_epochs():
    s = build_schedule("step", 1e-3, steps_per_epoch=10, epochs=25, milestones=(13, 24))
    assert isinstance(s, StepDecay)
    got = [float(s(step)) for step in (0, 129, 130, 239, 240, 249)]
    np.testing.assert_allclose(got, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-5)


def test_lr_scaling():
    assert scale_learning_rate(0.1, 128, 64) == pytest.approx(0.2)
    assert scale_learning_rate(0.1, 16, 64, "sqrt") == pytest.approx(0.05)
    assert scale_learning_rate(0.1, 16, None) == 0.1


def test_label_smoothing_matches_the_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype("float32")
    labels = np.array([0, 3, 1, 2, 2])
    eps = 0.2
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.full((5, 4), eps / 4) + (1 - eps) * np.eye(4)[labels]
    expected = -(target * log_p).sum(-1).mean()
    loss = SmoothedCrossEntropy(eps)
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(np.eye(4, dtype="float32")[labels], logits)) == pytest.approx(
        expected, rel=1e-5)


def test_presets_are_valid_configs():
    for name in PRESETS:
        config = TrainConfig.from_preset(name, data_root="x")
        assert config.epochs > 0 and config.learning_rate > 0, name
    vivit = TrainConfig.from_preset("vivit_k400")
    assert (vivit.optimizer, vivit.learning_rate, vivit.warmup_epochs, vivit.clipnorm) == (
        "sgd", 0.1, 2.5, 1.0)
    laps = TrainConfig.from_preset("laps_k400")
    assert (laps.gradient_accumulation_steps, laps.milestones, laps.label_smoothing) == (
        10, (10, 15, 18), 0.1)
    assert TrainConfig.from_preset("vtn_k400").nesterov
