"""ViViT's factorised attention: separate space and time attention (Models 3 and 4)."""

from __future__ import annotations

import keras
from keras import ops

from keras_vtn.layers.attention import MultiHeadSelfAttention, scaled_dot_product_attention
from keras_vtn.layers.transformer import ACTIVATIONS, ResidualBlock
from keras_vtn.layers.utils import check_choice

ATTENTION_ORDERS = ("time_space", "space_time")


def _swap_time_space(x):
    """(B, T, N, ...) <-> (B, N, T, ...): puts the axis to attend over in the token slot."""
    axes = list(range(len(x.shape)))
    axes[1], axes[2] = axes[2], axes[1]
    return ops.transpose(x, axes)


def _check_video_tokens(input_shape, layer: str):
    if len(input_shape) != 4:
        raise ValueError(
            f"{layer} expects tokens of shape (batch, frames, tokens_per_frame, dim), "
            f"got {tuple(input_shape)}. Reshape flat (batch, frames * tokens, dim) tokens first."
        )


@keras.saving.register_keras_serializable(package="keras_vtn")
class FactorisedDotProductAttention(MultiHeadSelfAttention):
    """Self-attention whose heads are split between time and space (ViViT Model 4).

    Input (batch, T, N, D). The first half of the heads attend along time (for each
    spatial position, over its T tokens); the second half attend within each frame (over
    its N tokens). Each half has its own softmax; the outputs are concatenated in head
    order and projected by the usual `output` Dense, so the weights are those of a plain
    `MultiHeadSelfAttention` (scenic's head order: time first).

    Example:
    >>> import numpy as np
    >>> tuple(FactorisedDotProductAttention(num_heads=4)(np.zeros((1, 3, 5, 8), "float32")).shape)
    (1, 3, 5, 8)
    """

    supports_query_tokens = False  # time heads need every frame's queries

    def build(self, input_shape):
        _check_video_tokens(input_shape, "FactorisedDotProductAttention")
        if self.num_heads % 2:
            raise ValueError(
                f"FactorisedDotProductAttention splits the heads between time and space, so "
                f"num_heads must be even; got {self.num_heads}."
            )
        super().build(input_shape)

    def attend(self, query, key, value, attention_mask=None, training=None):
        if attention_mask is not None:
            raise ValueError("FactorisedDotProductAttention does not support an attention mask.")
        half = self.num_heads // 2
        # Time heads: put T in the token slot, attend, and put it back.
        time = scaled_dot_product_attention(
            *(_swap_time_space(t[..., :half, :]) for t in (query, key, value)),
            dropout=self.attention_dropout,
            training=training,
        )
        space = scaled_dot_product_attention(
            query[..., half:, :],
            key[..., half:, :],
            value[..., half:, :],
            dropout=self.attention_dropout,
            training=training,
        )
        return ops.concatenate([_swap_time_space(time), space], axis=-2)


@keras.saving.register_keras_serializable(package="keras_vtn")
class FactorisedSelfAttentionBlock(ResidualBlock):
    """Factorised self-attention block (ViViT Model 3) on (batch, T, N, D) tokens.

    Two pre-LN attention sub-blocks, each with its own LayerNorm, then a pre-LN MLP:

        spatial:  x += attn_s(LN_s(x))   attention within each frame (over N)
        temporal: x += attn_t(LN_t(x))   attention along time (over T), per spatial position
        mlp:      x += mlp(LN_mlp(x))

    `attention_order="time_space"` (scenic's default) runs the temporal sub-block first,
    `"space_time"` (the paper's equations) the spatial one. Sublayers: `spatial_norm`,
    `spatial_attention`, `temporal_norm`, `temporal_attention`, `mlp_norm`, `mlp`.
    Scenic applies no stochastic depth in this block; `drop_path_rate` defaults to 0.

    Example:
    >>> import numpy as np
    >>> block = FactorisedSelfAttentionBlock(num_heads=2, mlp_dim=16)
    >>> tuple(block(np.zeros((1, 3, 5, 8), "float32")).shape)
    (1, 3, 5, 8)
    """

    config_arguments = (
        "num_heads",
        "mlp_dim",
        "attention_order",
        "layer_norm_epsilon",
        "activation",
        "qkv_bias",
        "dropout_rate",
        "attention_dropout_rate",
        "drop_path_rate",
        "drop_path_scale",
    )

    def __init__(
        self,
        num_heads: int,
        mlp_dim: int,
        attention_order: str = "time_space",
        layer_norm_epsilon: float = 1e-6,
        activation: str = "gelu_tanh",
        qkv_bias: bool = True,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_path_scale: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("attention_order", attention_order, ATTENTION_ORDERS)
        check_choice("activation", activation, ACTIVATIONS)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.attention_order = attention_order
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.qkv_bias = qkv_bias
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.drop_path_scale = drop_path_scale

    def _build_attention(self, name: str, input_shape):
        attention = MultiHeadSelfAttention(
            self.num_heads,
            qkv_bias=self.qkv_bias,
            attention_dropout_rate=self.attention_dropout_rate,
            dtype=self.dtype_policy,
            name=name,
        )
        attention.build(input_shape)
        return attention

    def build(self, input_shape):
        _check_video_tokens(input_shape, "FactorisedSelfAttentionBlock")
        swapped = (input_shape[0], input_shape[2], input_shape[1], input_shape[3])
        self.spatial_norm = self.build_norm("spatial_norm", input_shape)
        self.spatial_attention = self._build_attention("spatial_attention", input_shape)
        self.temporal_norm = self.build_norm("temporal_norm", swapped)
        self.temporal_attention = self._build_attention("temporal_attention", swapped)
        self.mlp_norm = self.build_norm("mlp_norm", input_shape)
        self.build_mlp(input_shape)
        self.build_residual()

    def _spatial(self, x, training):
        attended = self.spatial_attention(self.spatial_norm(x), training=training)
        return x + self.residual(attended, training)

    def _temporal(self, x, training):
        x = _swap_time_space(x)  # attention runs over the token axis, so bring T there
        attended = self.temporal_attention(self.temporal_norm(x), training=training)
        return _swap_time_space(x + self.residual(attended, training))

    def call(self, inputs, training=None):
        x = inputs
        if self.attention_order == "time_space":
            x = self._spatial(self._temporal(x, training), training)
        else:
            x = self._temporal(self._spatial(x, training), training)
        return x + self.mlp_branch(self.mlp_norm(x), training)

    def compute_output_shape(self, input_shape):
        return input_shape
