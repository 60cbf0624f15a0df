"""Sliding-window self-attention with global tokens (Longformer semantics, dense masked form)."""

from __future__ import annotations

import keras
from keras import ops

from keras_vtn.layers.attention import (
    MultiHeadSelfAttention,
    mask_rows,
    scaled_dot_product_attention,
)


def sliding_window_mask(length, window_size: int, num_global_tokens: int):
    """Boolean (length, length) mask: |i − j| ≤ window_size, or key j is a global token."""
    positions = ops.arange(length)
    distance = ops.abs(ops.expand_dims(positions, 1) - ops.expand_dims(positions, 0))
    band = distance <= window_size
    is_global_key = ops.expand_dims(positions < num_global_tokens, 0)
    return ops.logical_or(band, is_global_key)


@keras.saving.register_keras_serializable(package="keras_vtn")
class SlidingWindowAttention(MultiHeadSelfAttention):
    """Longformer self-attention: a ±`window_size` band plus global tokens.

    The first `num_global_tokens` tokens are global (a CLS token, say):
    - every other query i uses the regular `query`/`key`/`value` projections and attends
      to the keys j with |i − j| ≤ window_size and to every global token (through the
      regular key/value; a global token inside the band counts once);
    - a global query attends to all tokens with its own `query_global`, `key_global`,
      `value_global` projections.

    This is the dense, masked form of Hugging Face's `LongformerSelfAttention` (its
    `attention_window` is the total window, `window_size = attention_window // 2`).
    Attention cost is O(N²) in memory, which is small for frame sequences (N ≈ 250).
    `attention_mask` (boolean, broadcastable to (..., H, N, N), True = attend) is combined
    with the band, e.g. to drop padding keys. Other arguments (`qkv_bias`, `output_bias`,
    `attention_dropout_rate`...) are those of `MultiHeadSelfAttention`.

    Example:
    >>> import numpy as np
    >>> layer = SlidingWindowAttention(num_heads=2, window_size=2, num_global_tokens=1)
    >>> tuple(layer(np.zeros((1, 9, 8), "float32")).shape)
    (1, 9, 8)
    """

    supports_query_tokens = False  # the band of query i depends on i
    config_arguments = ("window_size", "num_global_tokens")

    def __init__(
        self,
        num_heads: int,
        window_size: int,
        num_global_tokens: int = 1,
        head_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(num_heads, head_dim=head_dim, **kwargs)
        if window_size < 0 or num_global_tokens < 0:
            raise ValueError(
                f"window_size ({window_size}) and num_global_tokens ({num_global_tokens}) "
                "must be >= 0."
            )
        self.window_size = int(window_size)
        self.num_global_tokens = int(num_global_tokens)

    def build_projections(self, dim: int, inner: int):
        super().build_projections(dim, inner)
        if self.num_global_tokens:
            self.query_global, self.key_global, self.value_global = self.qkv_denses(
                dim, inner, "_global"
            )

    def call(self, inputs, attention_mask=None, training=None):
        length = inputs.shape[-2]
        if length is None:
            length = ops.shape(inputs)[-2]
        mask = sliding_window_mask(length, self.window_size, self.num_global_tokens)
        if attention_mask is not None:
            mask = ops.logical_and(mask, ops.cast(attention_mask, "bool"))
        query, key, value = self.project_qkv(inputs)
        heads = self.attend(query, key, value, mask, training)
        g = self.num_global_tokens
        if g:
            global_query = self.split_heads(self.query_global(inputs[..., :g, :]))
            global_key = self.split_heads(self.key_global(inputs))
            global_value = self.split_heads(self.value_global(inputs))
            global_mask = None
            if attention_mask is not None:  # the global query rows (or a 1-row mask)
                global_mask = mask_rows(ops.cast(attention_mask, "bool"), 0, g)
            global_heads = scaled_dot_product_attention(
                global_query,
                global_key,
                global_value,
                global_mask,
                self.attention_dropout,
                training,
            )
            heads = ops.concatenate([global_heads, heads[..., g:, :, :]], axis=-3)
        return self.merge_heads(heads)
