"""Multi-head self-attention: the base every attention variant of the package extends."""

from __future__ import annotations

import os

import keras
from keras import ops

from keras_vtn.layers.utils import ConfiguredLayer, merge_last, split_last


def scaled_dot_product_attention(
    query, key, value, mask=None, dropout=None, training=None, scale=None
):
    """softmax(q·kᵀ·scale)·v over the key axis, with the softmax in float32.

    Args:
        query: (..., Nq, H, d); key, value: (..., Nk, H, d) with the same leading axes.
        mask: optional boolean, broadcastable to (..., H, Nq, Nk); True = may attend.
        dropout: optional dropout layer applied to the attention probabilities.
        scale: defaults to d ** -0.5; applied to the queries before the product.

    Returns:
        (..., Nq, H, d) in the dtype of `value`.

    Example:
    >>> import numpy as np
    >>> q = np.zeros((1, 4, 2, 8), "float32")
    >>> tuple(scaled_dot_product_attention(q, q, q).shape)
    (1, 4, 2, 8)
    """
    head_dim = query.shape[-1]
    scale = head_dim**-0.5 if scale is None else scale
    # Dropout on the probabilities needs them explicitly, but only while training.
    dropping = dropout is not None and dropout.rate and training
    if mask is None and not dropping and _fused_available(query, key):
        return _fused_attention(query, key, value, scale)
    rows = _query_chunk_rows(query, key)
    if rows:
        chunks = [
            scaled_dot_product_attention(
                query[..., start : start + rows, :, :],
                key,
                value,
                None if mask is None else mask_rows(mask, start, rows),
                dropout,
                training,
                scale,
            )
            for start in range(0, query.shape[-3], rows)
        ]
        return ops.concatenate(chunks, axis=-3)
    logits = ops.einsum("...qhd,...khd->...hqk", ops.multiply(query, scale), key)
    logits = ops.cast(logits, "float32")
    if mask is not None:
        logits = ops.where(mask, logits, ops.full_like(logits, -1e9))
    # Softmax with the division moved after the value product: the (Nq, d) output is divided
    # instead of the (Nq, Nk) probabilities, one pass fewer over the largest tensor (attention
    # core 8-15% faster on TF/XLA, benchmarks/README.md). Dropout scales elements, so it
    # commutes with the division; the max is a shift the result does not depend on.
    weights = ops.exp(logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True)))
    totals = ops.sum(weights, axis=-1, keepdims=True)  # (..., H, Nq, 1)
    late_division = keras.backend.standardize_dtype(value.dtype) != "float16"
    if not late_division:  # sums of up to Nk unnormalised terms could overflow float16
        weights = ops.divide(weights, totals)
    weights = ops.cast(weights, value.dtype)
    if dropout is not None:
        weights = dropout(weights, training=training)
    if not late_division:
        # A matmul, not an einsum: TensorFlow's float16 einsum accumulates in float16 on a
        # CPU (the mean of 4,096 values of 100 came out as 64), its batched matmul in float32.
        return ops.swapaxes(ops.matmul(weights, ops.swapaxes(value, -3, -2)), -3, -2)
    out = ops.einsum("...hqk,...khd->...qhd", weights, value)
    totals = ops.swapaxes(totals, -2, -3)  # (..., Nq, H, 1)
    # In float32 like the softmax it completes (bfloat16 would round the sums to 8 bits).
    return ops.cast(ops.divide(ops.cast(out, "float32"), totals), out.dtype)


# KERAS_VTN_FUSED_ATTENTION=0 forces the explicit path everywhere (for A/B benchmarks).
FUSED_ATTENTION = os.environ.get("KERAS_VTN_FUSED_ATTENTION", "1") != "0"


def _fused_available(query, key) -> bool:
    """Whether `keras.ops.dot_product_attention` may replace the explicit path.

    Only where the backend has a fused kernel that keeps the float32 softmax: PyTorch
    (`scaled_dot_product_attention`, flash kernels on CPU and GPU that never store the
    (N, N) probabilities; 4.4x faster for ViViT-B at 8 frames on CPU, benchmarks/README.md)
    and JAX on accelerators (`jax.nn.dot_product_attention`: cuDNN). On a CPU, JAX's version
    is einsum-softmax-einsum again and measured no faster, and on TensorFlow Keras' version
    is the same einsums as below, so the explicit path stays there.
    """
    backend = keras.backend.backend()
    if not FUSED_ATTENTION or backend not in ("torch", "jax"):
        return False
    if backend == "jax":
        import jax

        if jax.default_backend() == "cpu":
            return False
    q_lead, k_lead = tuple(query.shape[:-3]), tuple(key.shape[:-3])
    return q_lead == k_lead and None not in q_lead


def _fused_attention(query, key, value, scale):
    """Fused attention on (..., N, H, d): leading axes folded into one batch axis."""
    lead = tuple(query.shape[:-3])
    query, key, value = (ops.reshape(x, (-1, *x.shape[-3:])) for x in (query, key, value))
    out = ops.dot_product_attention(query, key, value, scale=scale)
    return ops.reshape(out, (*lead, *out.shape[-3:]))


# Logits per query chunk (elements, per batch element) on JAX/CPU: ~16 MB in float32.
CHUNK_LOGITS = 1 << 22


def _query_chunk_rows(query, key) -> int | None:
    """Query rows per chunk where the explicit path should run in query chunks, else None.

    XLA:CPU has no fused attention: it writes the whole (H, Nq, Nk) logits tensor and reads
    it back for the softmax and the second product, so long sequences run at memory speed.
    Chunks of queries keep each softmax near the cache and give exactly the same rows (every
    chunk still sees every key). Measured on JAX/CPU: one ViViT-B Model 1 attention over
    3,137 tokens 0.85 → 0.50 s, the whole model 12.0 → 6.6 s (benchmarks/README.md); on
    TensorFlow/XLA chunking made no difference, so only JAX on CPU chunks.
    """
    if keras.backend.backend() != "jax" or not FUSED_ATTENTION:
        return None
    import jax

    if jax.default_backend() != "cpu":
        return None
    num_queries, heads = query.shape[-3], query.shape[-2]
    num_keys = key.shape[-3]
    if None in (num_queries, heads, num_keys) or heads * num_queries * num_keys <= 2 * CHUNK_LOGITS:
        return None
    return max(1, CHUNK_LOGITS // (heads * num_keys))


def mask_rows(mask, start: int, rows: int):
    """Query rows [start, start + rows) of a mask broadcastable to (..., Nq, Nk)."""
    if len(mask.shape) < 2 or mask.shape[-2] == 1:
        return mask
    return mask[..., start : start + rows, :]


@keras.saving.register_keras_serializable(package="keras_vtn")
class MultiHeadSelfAttention(ConfiguredLayer):
    """Multi-head self-attention over the token axis (-2) of (..., N, D) inputs.

    Separate `query`, `key`, `value` Dense layers (kernels (D, H·d)) and an `output` Dense
    (H·d → D). Every leading axis is a batch axis, so (batch, T, N, D) inputs attend within
    each frame. The head width `head_dim` may differ from D / H.

    Subclasses change one step: `build_projections` (which Dense layers exist; `qkv_denses`
    makes a query/key/value set), `project_qkv` (what q, k, v are), `attend` (which tokens
    meet) or `transform_heads` (what happens to the per-head outputs before the merge), and
    list the constructor arguments they add in `config_arguments`.

    `call(..., query_tokens=n)` computes the output of the first n tokens only (their
    queries against every key): what a last block needs when only its CLS output is used.
    Layers where a query's keys depend on its position set `supports_query_tokens = False`.

    Example:
    >>> import numpy as np
    >>> tuple(MultiHeadSelfAttention(num_heads=2)(np.zeros((1, 5, 8), "float32")).shape)
    (1, 5, 8)
    """

    config_arguments = (
        "num_heads",
        "qkv_bias",
        "output_bias",
        "attention_dropout_rate",
        "kernel_initializer",
        "bias_initializer",
    )

    def __init__(
        self,
        num_heads: int,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        output_bias: bool = True,
        attention_dropout_rate: float = 0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self._head_dim = head_dim
        self.qkv_bias = qkv_bias
        self.output_bias = output_bias
        self.attention_dropout_rate = attention_dropout_rate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.attention_dropout = keras.layers.Dropout(
            attention_dropout_rate, dtype=self.dtype_policy, name="attention_dropout"
        )

    def _dense(self, units: int, use_bias: bool, name: str, input_dim: int):
        layer = keras.layers.Dense(
            units,
            use_bias=use_bias,
            kernel_initializer=keras.initializers.get(
                keras.initializers.serialize(self.kernel_initializer)
            ),
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name=name,
        )
        layer.build((None, input_dim))
        return layer

    def build(self, input_shape):
        dim = input_shape[-1]
        if self._head_dim is None and dim % self.num_heads:
            raise ValueError(f"Width {dim} is not divisible by num_heads={self.num_heads}.")
        self.head_dim = int(self._head_dim or dim // self.num_heads)
        inner = self.num_heads * self.head_dim
        self.build_projections(dim, inner)
        self.output_dense = self._dense(dim, self.output_bias, "output", inner)

    def build_projections(self, dim: int, inner: int):
        self.query, self.key, self.value = self.qkv_denses(dim, inner)

    def qkv_denses(self, dim: int, inner: int, suffix: str = ""):
        """Query, key and value Dense layers (D → H·d) named query{suffix}, key{suffix}..."""
        return tuple(
            self._dense(inner, self.qkv_bias, name + suffix, dim)
            for name in ("query", "key", "value")
        )

    def split_heads(self, x):
        return split_last(x, (-1, self.head_dim))

    supports_query_tokens = True

    def project_qkv(self, inputs, query_tokens: int | None = None):
        """Returns q (..., Nq, H, d) for the first `query_tokens` tokens (all by default)
        and k, v (..., N, H, d)."""
        queries = inputs if query_tokens is None else inputs[..., :query_tokens, :]
        return (
            self.split_heads(self.query(queries)),
            self.split_heads(self.key(inputs)),
            self.split_heads(self.value(inputs)),
        )

    def attend(self, query, key, value, attention_mask=None, training=None):
        return scaled_dot_product_attention(
            query, key, value, attention_mask, self.attention_dropout, training
        )

    def transform_heads(self, heads):
        """Hook on the per-head outputs (..., N, H, d) before the heads are merged."""
        return heads

    def call(self, inputs, attention_mask=None, training=None, query_tokens: int | None = None):
        query, key, value = self.project_qkv(inputs, query_tokens)
        if query_tokens is not None and attention_mask is not None:
            attention_mask = mask_rows(attention_mask, 0, query_tokens)
        return self.merge_heads(self.attend(query, key, value, attention_mask, training))

    def merge_heads(self, heads):
        """The layer output from the per-head outputs (..., N, H, d): `transform_heads`, then
        the heads merged and projected by `output`."""
        return self.output_dense(merge_last(self.transform_heads(heads), 2))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        # The argument, not the width `build` resolves it to (None follows the input width).
        return {**super().get_config(), "head_dim": self._head_dim}
