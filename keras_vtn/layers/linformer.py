"""Linformer self-attention: keys and values projected along the sequence to `k` positions."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vtn.layers.attention import MultiHeadSelfAttention
from keras_vtn.layers.utils import split_last


@keras.saving.register_keras_serializable(package="keras_vtn")
class LinformerAttention(MultiHeadSelfAttention):
    """Low-rank (Linformer) self-attention over the token axis (-2) of (..., N, D) inputs.

    K = x·W_k is projected along the sequence by a learned E of shape (N, k):
    K' = Eᵀ·K, so each query attends to `k` mixed positions and the cost is linear in N.
    With `share_kv=True` the projected keys are also the values (no `value` layer, one E);
    otherwise V' = E_vᵀ·(x·W_v). With `one_kv_head=True` a single key/value head of width
    `head_dim` serves every query head. `query`/`key`/`value` have no bias by default
    (lucidrains/elb3k), `output` has one. The head width may differ from D / num_heads
    (elb3k: 12 × 128 on a 768-wide model).

    The sequence length N is fixed by E: an input with another token count is an error.

    Args:
        num_heads: number of query heads H.
        projected_length: k, the number of projected key/value positions.
        head_dim: per-head width d (default D // H).
        sequence_length: N; default taken from the input when the layer is built.
        one_kv_head: one shared key/value head instead of H.
        share_kv: the projected keys double as values.
        qkv_bias: bias on the query/key/value projections.
        **kwargs: `output_bias`, `attention_dropout_rate` and the other arguments of
            `MultiHeadSelfAttention`.

    Weights: `query/kernel` (D, H·d), `key/kernel` (D, d or H·d), `value/kernel` (unless
    `share_kv`), `key_sequence_projection` (N, k), `value_sequence_projection` (N, k, unless
    `share_kv`), `output/kernel` (H·d, D) and `output/bias`.

    Example:
    >>> import numpy as np
    >>> layer = LinformerAttention(num_heads=2, projected_length=3, head_dim=6, one_kv_head=True)
    >>> tuple(layer(np.zeros((1, 7, 8), "float32")).shape)
    (1, 7, 8)
    """

    config_arguments = ("projected_length", "sequence_length", "one_kv_head", "share_kv")

    def __init__(
        self,
        num_heads: int,
        projected_length: int,
        head_dim: int | None = None,
        sequence_length: int | None = None,
        one_kv_head: bool = False,
        share_kv: bool = True,
        qkv_bias: bool = False,
        **kwargs,
    ):
        super().__init__(num_heads, head_dim=head_dim, qkv_bias=qkv_bias, **kwargs)
        self.projected_length = int(projected_length)
        self.sequence_length = None if sequence_length is None else int(sequence_length)
        self.one_kv_head = bool(one_kv_head)
        self.share_kv = bool(share_kv)

    def build(self, input_shape):
        length = input_shape[-2]
        if self.sequence_length is None:
            if length is None:
                raise ValueError(
                    "LinformerAttention needs a static token count to size its sequence "
                    "projection: give `sequence_length` or build it on a fixed-length input."
                )
            self.sequence_length = int(length)
        self._check_length(length)
        super().build(input_shape)

    def _check_length(self, length):
        if length is not None and int(length) != self.sequence_length:
            raise ValueError(
                f"LinformerAttention was built for {self.sequence_length} tokens (its sequence "
                f"projection E is {self.sequence_length}×{self.projected_length}) but got "
                f"{length}. Linformer cannot change its sequence length: use inputs with "
                f"{self.sequence_length} tokens or build a new layer."
            )

    def _sequence_projection(self, name: str):
        # lucidrains' init: U(-1/sqrt(k), 1/sqrt(k)), the bound from E's last axis.
        bound = 1.0 / math.sqrt(self.projected_length)
        return self.add_weight(
            name=name,
            shape=(self.sequence_length, self.projected_length),
            initializer=keras.initializers.RandomUniform(-bound, bound),
        )

    def build_projections(self, dim: int, inner: int):
        kv_width = self.head_dim if self.one_kv_head else inner
        self.query = self._dense(inner, self.qkv_bias, "query", dim)
        self.key = self._dense(kv_width, self.qkv_bias, "key", dim)
        self.key_sequence_projection = self._sequence_projection("key_sequence_projection")
        if not self.share_kv:
            self.value = self._dense(kv_width, self.qkv_bias, "value", dim)
            self.value_sequence_projection = self._sequence_projection("value_sequence_projection")

    def _project_sequence(self, x, projection):
        # (..., N, C) -> (..., k, C): K'[j] = sum_n E[n, j] K[n].
        projected = ops.einsum("...nc,nk->...kc", x, ops.cast(projection, x.dtype))
        heads = split_last(projected, (-1, self.head_dim))
        if self.one_kv_head:
            heads = ops.repeat(heads, self.num_heads, axis=-2)
        return heads

    def project_qkv(self, inputs, query_tokens: int | None = None):
        self._check_length(inputs.shape[-2])
        queries = inputs if query_tokens is None else inputs[..., :query_tokens, :]
        query = self.split_heads(self.query(queries))
        key = self._project_sequence(self.key(inputs), self.key_sequence_projection)
        if self.share_kv:
            return query, key, key
        value = self._project_sequence(self.value(inputs), self.value_sequence_projection)
        return query, key, value

    def call(self, inputs, attention_mask=None, training=None, query_tokens: int | None = None):
        if attention_mask is not None:
            raise ValueError(
                "LinformerAttention mixes all tokens into `projected_length` positions, so a "
                "token attention mask cannot apply; pass attention_mask=None."
            )
        return super().call(inputs, training=training, query_tokens=query_tokens)
