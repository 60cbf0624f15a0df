"""GroupedConv2D equals keras.layers.Conv2D (outputs and gradients) with the same weights."""

import keras
import numpy as np
import pytest
from layer_checks import assert_config_round_trip, to_numpy

from keras_vtn.layers import GroupedConv2D


def _gradients(layer, x):
    """d(sum(y²))/d(x, kernel) on the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) ** 2)
        return [to_numpy(g) for g in tape.gradient(loss, [x, layer.kernel])]
    if backend == "jax":
        import jax

        def loss(inputs, kernel):
            variables = [kernel if v is layer.kernel else v.value
                         for v in layer.trainable_variables]
            y, _ = layer.stateless_call(variables, [], inputs)
            return (y**2).sum()

        return [to_numpy(g) for g in jax.grad(loss, argnums=(0, 1))(x, layer.kernel.value)]
    import torch

    inputs = torch.tensor(x, requires_grad=True)
    (layer(inputs) ** 2).sum().backward()
    return [to_numpy(inputs.grad), to_numpy(layer.kernel.value.grad)]


@pytest.mark.parametrize("groups, strides", [(4, 1), (2, 2), (1, 1)])
def test_matches_keras_conv2d(groups, strides):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 7, 8)).astype("float32")
    args = dict(filters=12, kernel_size=3, strides=strides, padding="same", groups=groups)
    reference = keras.layers.Conv2D(**args)
    reference.build(x.shape)
    reference.set_weights([rng.normal(size=w.shape).astype("float32")
                           for w in reference.get_weights()])
    layer = GroupedConv2D(**args)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    assert layer.kernel.shape == (3, 3, 8 // groups, 12)
    np.testing.assert_allclose(to_numpy(layer(x)), to_numpy(reference(x)), atol=1e-4)
    for ours, theirs in zip(_gradients(layer, x), _gradients(reference, x), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)
    assert_config_round_trip(layer, x)
