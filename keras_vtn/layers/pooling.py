"""Token pooling: the class token or the mean of the tokens."""

from __future__ import annotations

import keras
from keras import ops

from keras_vtn.layers.utils import ConfiguredLayer, check_choice


@keras.saving.register_keras_serializable(package="keras_vtn")
class TokenPooling(ConfiguredLayer):
    """Reduces the token axis (-2): `"token"` takes token 0 (the CLS), `"avg"` averages
    the tokens after the first `num_prefix_tokens` (mean accumulated in float32).

    Example:
    >>> import numpy as np
    >>> tuple(TokenPooling("avg")(np.ones((2, 3, 5, 8), "float32")).shape)
    (2, 3, 8)
    """

    config_arguments = ("mode", "num_prefix_tokens")

    def __init__(self, mode: str = "token", num_prefix_tokens: int = 0, **kwargs):
        super().__init__(**kwargs)
        check_choice("pooling mode", mode, ("token", "avg"))
        self.mode = mode
        self.num_prefix_tokens = int(num_prefix_tokens)

    def call(self, inputs):
        if self.mode == "token":
            return inputs[..., 0, :]
        tokens = ops.cast(inputs[..., self.num_prefix_tokens :, :], "float32")
        return ops.cast(ops.mean(tokens, axis=-2), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-2], input_shape[-1])
