"""Temporal shift: parameter-free ±1-frame channel shifts (TSM, TokenShift, LAPS periodic shift)."""

from __future__ import annotations

import keras
from keras import ops

from keras_vtn.layers.utils import ConfiguredLayer, check_choice, merge_last, split_last

SHIFT_MODES = ("tsm", "token", "periodic")


def shift_channels(x, fold: int, time_axis: int = 1):
    """The core op shared by every shift variant, on the last (channel) axis of `x`.

    Channels [0, fold) at frame t take frame t+1's values (the last frame gets zeros);
    channels [fold, 2·fold) take frame t−1's values (the first frame gets zeros); the rest
    pass through. Zero padding, never circular.
    """
    if fold <= 0:
        return x
    rank = len(x.shape)
    axis = time_axis % rank

    def part(time: slice, channels: slice):
        index = [slice(None)] * rank
        index[axis] = time
        index[-1] = channels
        return x[tuple(index)]

    back = part(slice(1, None), slice(0, fold))  # frame t+1 → t
    forth = part(slice(None, -1), slice(fold, 2 * fold))  # frame t−1 → t
    zeros = ops.zeros_like(part(slice(0, 1), slice(0, fold)))
    back = ops.concatenate([back, zeros], axis=axis)
    forth = ops.concatenate([zeros, forth], axis=axis)
    return ops.concatenate([back, forth, part(slice(None), slice(2 * fold, None))], axis=-1)


@keras.saving.register_keras_serializable(package="keras_vtn")
class TemporalShift(ConfiguredLayer):
    """Shifts a part of the channels by ±1 frame along the time axis, with zero padding.

    Inputs are (batch, T, ..., C) with time on `time_axis` (1 by default). `f` channels move
    each way: the first `f` come from frame t+1, the next `f` from frame t−1.

    Modes:
        - `"tsm"` (Lin et al., TSM): every position; f = C // fold_div (TSM's paper uses 8).
        - `"token"` (TokenShift): only token 0 of the token axis (-2), i.e. the CLS token of
          (batch, T, N, C) inputs; f = C // fold_div.
        - `"periodic"` (LAPS P-Shift): per attention head, on an attention output before the
          heads are merged; f = head_dim // fold_div, so the moved channels repeat with period
          head_dim. With `num_heads` the last axis C is split into (num_heads, C // num_heads);
          without it the last axis already is head_dim (inputs (batch, T, N, H, d)).

    Example:
    >>> import keras, numpy as np
    >>> x = np.arange(12, dtype="float32").reshape(1, 3, 1, 4)  # T=3 frames, 4 channels
    >>> keras.ops.convert_to_numpy(TemporalShift("tsm", fold_div=4)(x))[0, :, 0].tolist()
    [[4.0, 0.0, 2.0, 3.0], [8.0, 1.0, 6.0, 7.0], [0.0, 5.0, 10.0, 11.0]]
    """

    config_arguments = ("mode", "fold_div", "num_heads", "time_axis")

    def __init__(
        self,
        mode: str = "tsm",
        fold_div: int = 4,
        num_heads: int | None = None,
        time_axis: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("shift mode", mode, SHIFT_MODES)
        if int(fold_div) < 1:
            raise ValueError(f"`fold_div` must be a positive integer, got {fold_div}.")
        if num_heads is not None and mode != "periodic":
            raise ValueError("`num_heads` only applies to mode='periodic'.")
        self.mode = mode
        self.fold_div = int(fold_div)
        self.num_heads = None if num_heads is None else int(num_heads)
        self.time_axis = int(time_axis)

    def build(self, input_shape):
        rank = len(input_shape)
        if rank < 3 or self.time_axis % rank in (0, rank - 1):
            raise ValueError(
                f"TemporalShift needs (batch, T, ..., C) inputs with time on axis "
                f"{self.time_axis}, got shape {tuple(input_shape)}."
            )
        channels = input_shape[-1]
        if self.mode == "periodic" and self.num_heads and channels % self.num_heads:
            raise ValueError(f"{channels} channels do not split into {self.num_heads} heads.")
        if self.mode == "token" and rank < 4:
            raise ValueError(
                f"mode='token' needs (batch, T, N, C) inputs, got {tuple(input_shape)}."
            )

    def call(self, inputs):
        channels = inputs.shape[-1]
        axis = self.time_axis % len(inputs.shape)  # before any head split adds an axis
        if self.mode == "token":
            token = shift_channels(inputs[..., :1, :], channels // self.fold_div, axis)
            return ops.concatenate([token, inputs[..., 1:, :]], axis=-2)
        if self.mode == "periodic" and self.num_heads:
            heads = split_last(inputs, (self.num_heads, channels // self.num_heads))
            fold = channels // self.num_heads // self.fold_div
            return merge_last(shift_channels(heads, fold, axis), 2)
        return shift_channels(inputs, channels // self.fold_div, axis)

    def compute_output_shape(self, input_shape):
        return input_shape
