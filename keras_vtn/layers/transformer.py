"""Transformer encoder block (pre-LN or post-LN) with a pluggable attention layer."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vtn.layers.attention import MultiHeadSelfAttention
from keras_vtn.layers.utils import ConfiguredLayer, check_choice

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


@keras.saving.register_keras_serializable(package="keras_vtn")
def gelu_erf(x):
    """Exact GELU, x * (1 + erf(x / sqrt(2))) / 2, written as PyTorch computes it.

    Not `keras.activations.gelu(approximate=False)`: TensorFlow builds that from `erfc`,
    which no ONNX opset has, so tf2onnx output would not load in onnxruntime; `erf` maps
    to ONNX `Erf`.

    >>> import numpy as np
    >>> round(float(gelu_erf(np.float32(1.0))), 4)
    0.8413
    """
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def get_activation(name: str):
    """`"gelu"` is the exact (erf) GELU of PyTorch; `"gelu_tanh"` is Flax's default."""
    if name == "gelu":
        return gelu_erf
    if name == "gelu_tanh":
        return lambda x: keras.activations.gelu(x, approximate=True)
    check_choice("activation", name, ACTIVATIONS)
    return keras.activations.relu


@keras.saving.register_keras_serializable(package="keras_vtn")
class DropPath(ConfiguredLayer):
    """Stochastic depth: drops a residual branch per example, in training only.

    `scale=True` divides kept branches by the keep probability (timm); `scale=False`
    keeps them as they are (scenic's convention).

    Example:
    >>> import numpy as np
    >>> x = np.ones((4, 3), "float32")
    >>> bool((np.asarray(DropPath(0.5)(x)) == x).all())  # inference: identity
    True
    """

    config_arguments = ("rate", "scale", "seed")

    def __init__(self, rate: float = 0.0, scale: bool = True, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.scale = scale
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        mask = ops.cast(keras.random.uniform(shape, seed=self.seed_generator) < keep, inputs.dtype)
        return inputs * mask / keep if self.scale else inputs * mask

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_vtn")
class MLPBlock(ConfiguredLayer):
    """Dense(mlp_dim) → activation → dropout → Dense(D) → dropout.

    Example:
    >>> import numpy as np
    >>> tuple(MLPBlock(mlp_dim=16)(np.zeros((2, 5, 8), "float32")).shape)
    (2, 5, 8)
    """

    config_arguments = ("mlp_dim", "activation", "dropout_rate", "use_bias")

    def __init__(
        self,
        mlp_dim: int,
        activation: str = "gelu",
        dropout_rate: float = 0.0,
        use_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mlp_dim = int(mlp_dim)
        self.activation = activation
        self.activation_fn = get_activation(activation)
        self.dropout_rate = dropout_rate
        # Visformer's 1x1-conv MLPs have no biases.
        self.use_bias = use_bias

    def build(self, input_shape):
        dim = input_shape[-1]
        self.fc1 = keras.layers.Dense(
            self.mlp_dim, use_bias=self.use_bias, dtype=self.dtype_policy, name="fc1"
        )
        self.fc1.build((None, dim))
        self.fc2 = keras.layers.Dense(
            dim, use_bias=self.use_bias, dtype=self.dtype_policy, name="fc2"
        )
        self.fc2.build((None, self.mlp_dim))
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def call(self, inputs, training=None):
        x = self.dropout(self.activation_fn(self.fc1(inputs)), training=training)
        return self.dropout(self.fc2(x), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape


def layer_norm(epsilon: float, name: str, dtype_policy=None):
    """LayerNorm with an explicit epsilon (Keras' 1e-3 default matches none of the originals)."""
    return keras.layers.LayerNormalization(epsilon=epsilon, dtype=dtype_policy, name=name)


class ResidualBlock(ConfiguredLayer):
    """What the encoder blocks share: LayerNorms, the MLP, and branches that join the
    residual stream through dropout and stochastic depth.

    Subclasses set `layer_norm_epsilon`, `mlp_dim`, `activation`, `dropout_rate`,
    `drop_path_rate` and `drop_path_scale`, and call `build_norm`, `build_mlp` and
    `build_residual` in their `build`.
    """

    def build_norm(self, name: str, input_shape):
        norm = layer_norm(self.layer_norm_epsilon, name, self.dtype_policy)
        norm.build(input_shape)
        return norm

    def build_mlp(self, input_shape):
        self.mlp = MLPBlock(
            self.mlp_dim, self.activation, self.dropout_rate, dtype=self.dtype_policy, name="mlp"
        )
        self.mlp.build(input_shape)

    def build_residual(self):
        # Same dtype policy as the block, or they would cast float16 branches back to float32.
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)
        self.drop_path = DropPath(
            self.drop_path_rate, self.drop_path_scale, dtype=self.dtype_policy, name="drop_path"
        )

    def residual(self, branch, training):
        """An attention branch as it joins the residual stream: dropout, then drop path."""
        return self.drop_path(self.dropout(branch, training=training), training=training)

    def mlp_branch(self, x, training):
        """The MLP branch (the MLP ends in its own dropout), through drop path."""
        return self.drop_path(self.mlp(x, training=training), training=training)


@keras.saving.register_keras_serializable(package="keras_vtn")
class TransformerBlock(ResidualBlock):
    """Transformer encoder block.

    Pre-LN (`norm_first=True`, ViT):   x += attn(LN₁(x)); x += mlp(LN₂(x)).
    Post-LN (`norm_first=False`, BERT): x = LN₁(x + attn(x)); x = LN₂(x + mlp(x)).

    `attention` takes any attention layer of this package (Linformer, sliding window, leap,
    factorised dot-product...); by default a `MultiHeadSelfAttention` is made from
    `num_heads`, `head_dim`, `qkv_bias` and `attention_dropout_rate`.

    `output_tokens=n` outputs only the first n tokens (e.g. 1 in the last block of an
    encoder whose CLS output alone is used), with the same values for them: only their
    queries are attended (when the attention layer `supports_query_tokens`) and the MLP runs
    on n rows instead of all.

    Example:
    >>> import numpy as np
    >>> block = TransformerBlock(num_heads=2, mlp_dim=16, layer_norm_epsilon=1e-6)
    >>> tuple(block(np.zeros((1, 5, 8), "float32")).shape)
    (1, 5, 8)
    """

    config_arguments = (
        "num_heads",
        "mlp_dim",
        "norm_first",
        "layer_norm_epsilon",
        "activation",
        "qkv_bias",
        "head_dim",
        "dropout_rate",
        "attention_dropout_rate",
        "drop_path_rate",
        "drop_path_scale",
        "attention",
        "output_tokens",
    )

    def __init__(
        self,
        num_heads: int | None = None,
        mlp_dim: int = 3072,
        norm_first: bool = True,
        layer_norm_epsilon: float = 1e-6,
        activation: str = "gelu",
        qkv_bias: bool = True,
        head_dim: int | None = None,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_path_scale: bool = True,
        attention: keras.layers.Layer | dict | None = None,
        output_tokens: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention is None and num_heads is None:
            raise ValueError("Give `num_heads` or an `attention` layer.")
        if output_tokens is not None and int(output_tokens) < 1:
            raise ValueError(f"output_tokens must be a positive count, got {output_tokens}.")
        self.output_tokens = None if output_tokens is None else int(output_tokens)
        self.num_heads = num_heads
        self.mlp_dim = int(mlp_dim)
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.qkv_bias = qkv_bias
        self.head_dim = head_dim
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.drop_path_scale = drop_path_scale
        if isinstance(attention, dict):
            attention = keras.saving.deserialize_keras_object(attention)
        if attention is None:
            attention = MultiHeadSelfAttention(
                num_heads,
                head_dim=head_dim,
                qkv_bias=qkv_bias,
                attention_dropout_rate=attention_dropout_rate,
                dtype=self.dtype_policy,
                name="attention",
            )
        self.attention = attention

    def build(self, input_shape):
        if not self.attention.built:  # a deserialised attention arrives built
            self.attention.build(input_shape)
        self.norm1 = self.build_norm("norm1", input_shape)
        self.norm2 = self.build_norm("norm2", input_shape)
        self.build_mlp(input_shape)
        self.build_residual()

    def _keep(self, x):
        return x if self.output_tokens is None else x[..., : self.output_tokens, :]

    def _attend(self, x, attention_mask, training):
        """The attention output, for the kept tokens only where the layer allows it."""
        query_only = getattr(self.attention, "supports_query_tokens", False)
        if self.output_tokens is None or not query_only:
            return self._keep(self.attention(x, attention_mask=attention_mask, training=training))
        return self.attention(
            x, attention_mask=attention_mask, training=training, query_tokens=self.output_tokens
        )

    def call(self, inputs, attention_mask=None, training=None):
        x = inputs
        if self.norm_first:
            attended = self._attend(self.norm1(x), attention_mask, training)
            x = self._keep(x) + self.residual(attended, training)
            return x + self.mlp_branch(self.norm2(x), training)
        attended = self._attend(x, attention_mask, training)
        x = self.norm1(self._keep(x) + self.residual(attended, training))
        return self.norm2(x + self.mlp_branch(x, training))

    def compute_output_shape(self, input_shape):
        if self.output_tokens is None:
            return input_shape
        return (*input_shape[:-2], self.output_tokens, input_shape[-1])
