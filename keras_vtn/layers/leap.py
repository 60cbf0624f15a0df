"""Leap attention (LAPS): joint attention over pairs of frames a fixed leap apart."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vtn.layers.attention import MultiHeadSelfAttention, scaled_dot_product_attention
from keras_vtn.layers.shift import TemporalShift
from keras_vtn.layers.utils import check_choice, merge_last, split_last

LEAP_SHIFTS = ("periodic", "tsm")


def leap_pairs(num_frames: int, level: int) -> list[tuple[int, int]]:
    """The frame pairs (t, t + s) of leap attention at `level`, with s = T // 2**level.

    Frame t is the first member of a pair when (t // s) is even. Pairs are listed in the
    order of their first member (LAPS' internal order; it does not change the output).
    Raises ValueError when the level does not fit the clip: level < 1, 2**level > T, or T not
    divisible by 2·s.

    >>> leap_pairs(8, 2)
    [(0, 2), (1, 3), (4, 6), (5, 7)]
    """
    num_frames, level = int(num_frames), int(level)
    step = num_frames // 2**level if level >= 1 else 0
    if level < 1 or step < 1 or num_frames % (2 * step):
        valid = [lv for lv in range(1, num_frames.bit_length()) if _fits(num_frames, lv)]
        raise ValueError(
            f"Leap level {level} does not fit a clip of {num_frames} frames: the leap "
            f"s = T // 2**level must be >= 1 and T divisible by 2·s. Valid levels for "
            f"T={num_frames}: {valid or 'none (T must be even)'}; use None for plain "
            "per-frame attention."
        )
    return [(t, t + step) for t in range(num_frames) if (t // step) % 2 == 0]


def _fits(num_frames: int, level: int) -> bool:
    step = num_frames // 2**level
    return step >= 1 and num_frames % (2 * step) == 0


@keras.saving.register_keras_serializable(package="keras_vtn")
class LeapAttention(MultiHeadSelfAttention):
    """LAPS leap attention with optional periodic shift, on (batch, T, N, D) frame tokens.

    The T frames form T/2 disjoint pairs (t, t + s), s = T // 2**level (see `leap_pairs`).
    The 2N tokens of a pair (first frame's tokens, then the partner's) attend jointly with
    ordinary softmax attention; the outputs go back to time order. `level=None` gives plain
    per-frame attention. No parameters beyond `MultiHeadSelfAttention`'s.

    `shift` acts on the attention output before the output projection, with zero padding:
        - `"periodic"` (LAPS P-Shift): per head, head_dim // fold_div channels from frame t+1
          and as many from t−1.
        - `"tsm"` (the PlainShift ablation): on the merged heads, C // fold_div channels each way.
        - `None` or `fold_div=0`: no shift (the LA-only ablation).

    Example:
    >>> import numpy as np
    >>> layer = LeapAttention(num_heads=2, level=1)
    >>> tuple(layer(np.zeros((1, 4, 5, 8), "float32")).shape)
    (1, 4, 5, 8)
    """

    config_arguments = ("level", "shift", "fold_div")

    def __init__(
        self,
        num_heads: int,
        level: int | None = 1,
        shift: str | None = "periodic",
        fold_div: int = 4,
        **kwargs,
    ):
        super().__init__(num_heads, **kwargs)
        check_choice("shift", shift, (*LEAP_SHIFTS, None))
        if int(fold_div) < 0:
            raise ValueError(f"`fold_div` must be >= 0 (0 = no shift), got {fold_div}.")
        self.level = None if level is None else int(level)
        self.shift = shift
        self.fold_div = int(fold_div)
        self.shifter = None
        if shift is not None and self.fold_div:
            self.shifter = TemporalShift(
                shift, fold_div=self.fold_div, dtype=self.dtype_policy, name="shift"
            )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"LeapAttention expects (batch, frames, tokens, width) inputs, got shape "
                f"{tuple(input_shape)}."
            )
        self.num_frames = input_shape[1]
        if self.num_frames is None and (self.level is not None or self.shifter is not None):
            raise ValueError("LeapAttention needs a static number of frames (input axis 1).")
        if self.level is not None:
            # Validates the level; the pair step s = T // 2**level.
            pairs = leap_pairs(self.num_frames, self.level)
            self._step = pairs[0][1] - pairs[0][0]
        super().build(input_shape)

    def _reorder(self, x, inner: int):
        """Frames (blocks, T / blocks / inner, inner) → (blocks, inner, ...), one transpose.

        Time order t = b·2s + half·s + j becomes pair order (b, j, half) with inner = s, and
        back with inner = 2. A reshape and a rank-5 transpose, not a gather: exporters keep
        it builtin (the torch backend's `take` leaves a Squeeze onnxruntime rejects).
        """
        rest = tuple(ops.shape(x)[2:])  # tensors where a static size is unknown (TF graphs)
        blocks = self.num_frames // (2 * self._step)
        x = ops.reshape(x, (-1, blocks, self.num_frames // blocks // inner, inner, math.prod(rest)))
        x = ops.transpose(x, (0, 1, 3, 2, 4))
        return ops.reshape(x, (-1, self.num_frames, *rest))

    def project_qkv(self, inputs, query_tokens: int | None = None):
        # One gather of the inputs replaces a gather and a transpose of each of q, k and v.
        if self.level is not None:
            inputs = self._reorder(inputs, self._step)  # pair order (a0, b0, a1, b1, ...)
        return super().project_qkv(inputs, query_tokens)

    def attend(self, query, key, value, attention_mask=None, training=None):
        """q, k, v arrive in pair order (see `project_qkv`); the output is in time order."""
        if self.level is None:
            return super().attend(query, key, value, attention_mask, training)
        if attention_mask is not None:
            raise ValueError("LeapAttention with a leap level does not take an attention mask.")
        _, _, n, h, d = ops.shape(query)
        heads = scaled_dot_product_attention(
            *(self._pairs(x) for x in (query, key, value)),
            dropout=self.attention_dropout,
            training=training,
        )
        heads = ops.reshape(heads, (-1, self.num_frames, n, h, d))
        return self._reorder(heads, 2)  # back to time order

    def _pairs(self, x):
        """(B, T, N, H, d) in pair order → (B, T/2, 2N, H, d): each pair's two frames' tokens."""
        _, _, n, h, d = ops.shape(x)
        return ops.reshape(x, (-1, self.num_frames // 2, 2 * n, h, d))

    def transform_heads(self, heads):
        if self.shifter is None:
            return heads
        if self.shift == "periodic":  # per head: the last axis is head_dim
            return self.shifter(heads)
        merged = self.shifter(merge_last(heads, 2))
        return split_last(merged, (self.num_heads, self.head_dim))
