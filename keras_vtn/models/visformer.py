"""Per-frame Visformer (Chen et al., ICCV 2021) with leap attention in its attention stages.

Visformer-S as LAPS uses it: a BatchNorm conv stem, stage 1 of conv-only blocks (1×1 conv,
grouped 3×3 conv, 1×1 conv), and attention stages 2 and 3 whose 1×1-conv q/k/v and output
projections have no bias. BatchNorm (eps 1e-5) everywhere, also as the blocks' "norm1/norm2".
Convolutions fold the frames into the batch; the attention stages keep frames on their own
axis, (batch, T, tokens, width), so leap attention sees the clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_vtn.layers import (
    DropPath,
    GroupedConv2D,
    LeapAttention,
    MLPBlock,
    PatchEmbedding,
    PositionEmbedding,
)
from keras_vtn.layers.transformer import gelu_erf
from keras_vtn.layers.utils import check_tiling

VISFORMER_SIZES: dict[str, dict] = {
    "small": dict(stem_width=32, widths=(192, 384, 768), depths=(7, 4, 4), num_heads=6),
}
# Visformer's stage-1 grouped 3×3 conv and mean/std of the LAPS configs.
STAGE1_GROUPS = 8
VISFORMER_MEAN = (0.486, 0.457, 0.407)
VISFORMER_STD = (0.229, 0.224, 0.225)


def batch_norm(name: str):
    """torch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Keras momentum 0.9)."""
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)


def _residual(x, branch, rate: float, name: str):
    if rate:
        branch = DropPath(rate, name=f"{name}_drop_path")(branch)
    return keras.layers.Add(name=f"{name}_add")([x, branch])


def _conv_block(x, width: int, rate: float, dropout_rate: float, name: str):
    """Stage-1 block on maps (B·T, h, w, C): x + conv1x1 → GELU → gconv3x3 → GELU → conv1x1."""
    y = batch_norm(f"{name}_norm2")(x)
    y = keras.layers.Dense(2 * width, use_bias=False, name=f"{name}_conv1")(y)
    y = keras.layers.Activation(gelu_erf, name=f"{name}_act1")(y)
    if dropout_rate:
        y = keras.layers.Dropout(dropout_rate, name=f"{name}_dropout1")(y)
    y = GroupedConv2D(
        2 * width, 3, padding="same", groups=STAGE1_GROUPS, use_bias=False, name=f"{name}_conv2"
    )(y)
    y = keras.layers.Activation(gelu_erf, name=f"{name}_act2")(y)
    y = keras.layers.Dense(width, use_bias=False, name=f"{name}_conv3")(y)
    if dropout_rate:
        y = keras.layers.Dropout(dropout_rate, name=f"{name}_dropout3")(y)
    return _residual(x, y, rate, name)


def _attention_block(x, *, num_heads, mlp_dim, level, shift, fold_div, rate, dropout_rate,
                     attention_dropout_rate, name):
    """Stage-2/3 block on tokens (B, T, N, C): x + attn(BN(x)); x + mlp(BN(x))."""
    y = batch_norm(f"{name}_norm1")(x)
    y = LeapAttention(
        num_heads,
        level=level,
        shift=shift,
        fold_div=fold_div,
        qkv_bias=False,
        output_bias=False,
        attention_dropout_rate=attention_dropout_rate,
        name=f"{name}_attn",
    )(y)
    if dropout_rate:
        y = keras.layers.Dropout(dropout_rate, name=f"{name}_attn_dropout")(y)
    x = _residual(x, y, rate, f"{name}_attn")
    y = batch_norm(f"{name}_norm2")(x)
    y = MLPBlock(mlp_dim, "gelu", dropout_rate, use_bias=False, name=f"{name}_mlp")(y)
    return _residual(x, y, rate, f"{name}_mlp")


def visformer_frame_features(
    frames,
    *,
    stem_width: int = 32,
    widths: Sequence[int] = (192, 384, 768),
    depths: Sequence[int] = (7, 4, 4),
    num_heads: int = 6,
    mlp_ratio: float = 4.0,
    leap_levels: Sequence[int | None] | None = None,
    shift: str | None = "periodic",
    fold_div: int = 4,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
    drop_path_rate: float = 0.0,
):
    """Visformer over every frame of `frames` (batch, T, H, W, 3); returns (batch, T, N, C).

    The result is the final-BatchNorm feature map of stage 3 flattened row-major into N
    tokens. `leap_levels` has one level (or None) per attention block, stage 2 then stage 3.
    Layer names follow the original modules: `stem_conv`, `stem_bn`, `patch_embed{i}`,
    `patch_embed{i}_norm`, `pos_embed{i}`, `stage{s}_{j}_*`, `norm`.
    """
    num_frames, height, width = frames.shape[1:4]
    # The stride-2 stem and patch strides 4, 2, 2 tile the frame in 32-pixel cells.
    check_tiling("image_size", (height, width), (32, 32), "Visformer's total stride")
    depths = tuple(int(d) for d in depths)
    widths = tuple(int(w) for w in widths)
    attention_blocks = depths[1] + depths[2]
    levels = list(leap_levels) if leap_levels is not None else [None] * attention_blocks
    if len(levels) != attention_blocks:
        raise ValueError(
            f"Visformer has {attention_blocks} attention blocks; got {len(levels)} leap levels."
        )
    rates = [float(r) for r in np.linspace(0.0, drop_path_rate, sum(depths))]

    # Stem and stage 1 are per-image convolutions: frames go into the batch.
    x = ops.reshape(frames, (-1, height, width, frames.shape[-1]))
    x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)  # torch pads 3 on every side
    x = keras.layers.Conv2D(stem_width, 7, strides=2, use_bias=False, name="stem_conv")(x)
    x = batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)

    x = PatchEmbedding(widths[0], 4, name="patch_embed1")(x)  # (B·T, N, C)
    h1, w1 = _grid(height, width, (2, 4))
    x = batch_norm("patch_embed1_norm")(x)
    x = PositionEmbedding(name="pos_embed1")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="pos_dropout1")(x)
    x = keras.layers.Reshape((h1, w1, widths[0]), name="stage1_maps")(x)
    for j in range(depths[0]):
        x = _conv_block(x, widths[0], rates[j], dropout_rate, f"stage1_{j}")

    block = depths[0]
    for stage in (2, 3):
        width_s = widths[stage - 1]
        if stage == 2:
            x = PatchEmbedding(width_s, 2, name="patch_embed2")(x)  # (B·T, N, C)
            x = ops.reshape(x, (-1, num_frames, x.shape[1], width_s))  # frames back out
        else:
            h2, w2 = _grid(height, width, (2, 4, 2))
            x = keras.layers.Reshape((num_frames, h2, w2, widths[1]), name="stage2_maps")(x)
            x = PatchEmbedding(width_s, 2, name="patch_embed3")(x)  # (B, T, N, C)
        x = batch_norm(f"patch_embed{stage}_norm")(x)
        x = PositionEmbedding(name=f"pos_embed{stage}")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name=f"pos_dropout{stage}")(x)
        for j in range(depths[stage - 1]):
            x = _attention_block(
                x,
                num_heads=num_heads,
                mlp_dim=int(width_s * mlp_ratio),
                level=levels[block - depths[0]],
                shift=shift,
                fold_div=fold_div,
                rate=rates[block],
                dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate,
                name=f"stage{stage}_{j}",
            )
            block += 1
    return batch_norm("norm")(x)


def _grid(height: int, width: int, strides: Sequence[int]) -> tuple[int, int]:
    """Feature-map size after the stride-2 stem and the given patch strides (floors each)."""
    h, w = (height + 6 - 7) // 2 + 1, (width + 6 - 7) // 2 + 1
    for s in strides[1:]:
        h, w = h // s, w // s
    return h, w
