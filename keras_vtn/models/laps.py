"""LAPS: Long-term Leap Attention + Short-term Periodic Shift (Zhang et al., ACM MM 2022).

An image transformer applied to every frame, whose attention layers are replaced by leap
attention (frames paired a leap apart attend jointly) with a periodic shift of the per-head
outputs. No parameters beyond the image model. Reference: VideoNetworks/LAPS-transformer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_vtn.layers import LeapAttention, leap_pairs
from keras_vtn.models import laps_convert
from keras_vtn.models.visformer import (
    VISFORMER_MEAN,
    VISFORMER_SIZES,
    VISFORMER_STD,
    visformer_frame_features,
)
from keras_vtn.models.vit import VIT_SIZES, vit_frame_tokens

BACKBONES = ("vit_base", "vit_large", "visformer_small")
# The shipped schedules: ViT configs cycle S2_SKIP_LEVEL over all blocks; Visformer uses
# S2_SKIP_LEVEL for stage 2 and S3_SKIP_LEVEL for stage 3 (configs for T=8 and T=32).
VIT_LEAP_LEVELS = (1, 2, 3, 1)
VISFORMER_LEAP_LEVELS = {8: ((1, 2, 3, 1), (2, 3, 1, 2)), 32: ((1, 2, 3, 4), (5, 1, 2, 3))}
VIT_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16}

NO_KINETICS_WEIGHTS = (
    "No LAPS Kinetics weights exist: the authors never released any (the checkpoint links in "
    "VideoNetworks/LAPS-transformer's MODEL_ZOO.md are empty). Train one from an image "
    "initialisation instead: weights='imagenet21k' (ViT) or the path of Visformer's "
    "'visformer_s_in10k.pth' (Visformer), then fine-tune on Kinetics (the LAPS recipe: SGD "
    "momentum 0.9, LR steps at epochs 10 and 15, 18 epochs, label smoothing 0.1). A LAPS "
    "training checkpoint (.pth) you trained with the original code loads with weights=<path>."
)


def _default_levels(backbone: str, num_frames: int, num_blocks: int):
    if backbone.startswith("vit") and num_frames == 8:
        return list(VIT_LEAP_LEVELS)
    if backbone == "visformer_small" and num_frames in VISFORMER_LEAP_LEVELS and num_blocks == 8:
        stage2, stage3 = VISFORMER_LEAP_LEVELS[num_frames]
        return list(stage2) + list(stage3)
    # No shipped schedule: cycle every level that fits the clip (as the T=32 config does).
    valid = [lv for lv in range(1, num_frames.bit_length()) if _fits(num_frames, lv)]
    if not valid:
        raise ValueError(
            f"No leap level fits a clip of {num_frames} frames (T must be even); pass "
            "leap_levels=None for per-frame attention."
        )
    return valid


def _fits(num_frames: int, level: int) -> bool:
    try:
        leap_pairs(num_frames, level)
    except ValueError:
        return False
    return True


def _block_levels(leap_levels, backbone: str, num_frames: int, num_blocks: int) -> list:
    """One level (or None) per attention block, validated against the clip length."""
    if leap_levels is None:
        return [None] * num_blocks
    if isinstance(leap_levels, str):
        if leap_levels != "default":
            raise ValueError(
                f"leap_levels must be a sequence, None or 'default', got {leap_levels!r}."
            )
        leap_levels = _default_levels(backbone, num_frames, num_blocks)
    elif isinstance(leap_levels, int):
        leap_levels = [leap_levels]
    levels = list(leap_levels)
    # Visformer: (stage-2 levels, stage-3 levels) as in the configs.
    if levels and all(isinstance(lv, (list, tuple)) for lv in levels):
        levels = [lv for stage in levels for lv in stage]
    if not levels:
        raise ValueError("leap_levels is empty; use None for no leap attention.")
    levels = [levels[i % len(levels)] for i in range(num_blocks)]  # a cycle repeats
    for i, level in enumerate(levels):
        if level is None:
            continue
        try:
            leap_pairs(num_frames, level)
        except ValueError as error:
            raise ValueError(f"Attention block {i}: {error}") from None
    return levels


def _preprocessing(backbone: str):
    if backbone.startswith("vit"):  # mean = std = 0.5 on [0, 1]: x / 127.5 − 1
        return keras.layers.Rescaling(1 / 127.5, -1.0, name="preprocessing")
    scale = [1.0 / (255.0 * s) for s in VISFORMER_STD]
    offset = [-m / s for m, s in zip(VISFORMER_MEAN, VISFORMER_STD, strict=True)]
    return keras.layers.Rescaling(scale, offset, name="preprocessing")


def LAPSTransformer(
    backbone: str = "vit_base",
    weights: str | None = None,
    include_top: bool = True,
    num_classes: int | None = 400,
    classifier_activation: str | None = None,
    pooling: str | None = None,
    num_frames: int = 8,
    image_size: int | Sequence[int] | None = None,
    include_preprocessing: bool = True,
    leap_levels: Sequence | str | None = "default",
    fold_div: int = 4,
    shift: str | None = "periodic",
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    patch_size: int | None = None,
    hidden_dim: int | None = None,
    num_layers: int | None = None,
    num_heads: int | None = None,
    mlp_dim: int | None = None,
    stem_width: int | None = None,
    widths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    mlp_ratio: float | None = None,
    name: str | None = None,
) -> keras.Model:
    """LAPS video transformer: ViT-B/L or Visformer-S with leap attention + periodic shift.

    Every attention block becomes `LeapAttention` at its level; the head classifies each
    frame (ViT: its CLS token; Visformer: its average-pooled map) and the logits are averaged
    over time, as the original `VideoNet` "avg" consensus.

    Args:
        backbone: `"vit_base"`, `"vit_large"` (patch 16, LayerNorm eps 1e-6, exact GELU) or
            `"visformer_small"` (BatchNorm eps 1e-5).
        weights: `None`; a path to a LAPS training checkpoint (`.pth`, ViT or Visformer), a
            Visformer image file (`{"model": ...}`), a timm ViT state dict, or a Keras
            `.weights.h5`. `"k400"` raises: no Kinetics weights were released.
        num_frames, image_size: clip size; `image_size` defaults to 224 or the checkpoint's.
        leap_levels: one level per attention block, or a cycle that repeats (ViT default
            [1, 2, 3, 1]; Visformer stage 2 / stage 3 [1, 2, 3, 1] / [2, 3, 1, 2] for T=8 and
            [1, 2, 3, 4] / [5, 1, 2, 3] for T=32). Level s pairs frames t and t + T // 2**s.
            `None` disables leap attention.
        fold_div: periodic shift moves head_dim // fold_div channels each way; 0 = no shift.
        shift: `"periodic"` (LAPS), `"tsm"` (shift of the merged attention output: the
            PlainShift ablation) or `None`.
        The repo's ablations: LA only `fold_div=0`; PS only `leap_levels=None`; PlainShift
        `leap_levels=None, shift="tsm"`; plain per-frame 2D `leap_levels=None, fold_div=0`.
        pooling: with `include_top=False`, `None`/`"token"` (ViT: per-frame CLS; Visformer:
            pooled map, averaged over frames) or `"avg"` (every patch token of every frame).
        Architecture overrides: ViT `patch_size`, `hidden_dim`, `num_layers`, `num_heads`,
        `mlp_dim`; Visformer `stem_width`, `widths`, `depths`, `num_heads`, `mlp_ratio`.

    Example:
    >>> model = LAPSTransformer("vit_base", num_frames=4, image_size=32, patch_size=16,
    ...     hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64, num_classes=5)
    >>> tuple(model.output_shape)
    (None, 5)
    """
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown LAPS backbone {backbone!r}; use one of {BACKBONES}.")
    if weights == "k400":
        raise ValueError(NO_KINETICS_WEIGHTS)
    if pooling not in (None, "token", "avg"):
        raise ValueError(f"pooling must be None, 'token' or 'avg', got {pooling!r}.")
    state = None
    given = dict(patch_size=patch_size, hidden_dim=hidden_dim, num_layers=num_layers,
                 num_heads=num_heads, mlp_dim=mlp_dim, stem_width=stem_width,
                 widths=widths, depths=depths, mlp_ratio=mlp_ratio)
    if weights == "imagenet21k":
        # Lead: route through the keras_vtn.weights registry once it is on main.
        raise ValueError(
            "weights='imagenet21k' needs the keras_vtn.weights registry, which this build "
            "lacks; pass the path of timm's jx_vit_base_patch16_224_in21k-e5005f0a.pth instead."
        )
    if weights is not None and not os.path.exists(weights):
        raise ValueError(
            f"weights={weights!r} is neither a file nor a known LAPS weights name: use None, "
            "the path of a checkpoint (.pth) or of a Keras .weights.h5 file."
        )
    if weights is not None and not str(weights).endswith(".weights.h5"):
        state = laps_convert.extract_state(_read_checkpoint(weights))
        found = laps_convert.config_from_checkpoint(state)
        kind = found.pop("backbone")
        if not backbone.startswith(kind):
            raise ValueError(
                f"{weights} holds a {kind} checkpoint but backbone={backbone!r}; pass "
                f"backbone={'visformer_small' if kind == 'visformer' else 'vit_base'!r}."
            )
        if image_size is None:
            image_size = found.pop("image_size")
        found.pop("image_size", None)
        found.pop("num_classes", None)  # the head loads only when num_classes matches
        found.pop("qkv_bias", None)
        for key, value in found.items():
            if given.get(key) is not None and _differs(given[key], value):
                raise ValueError(
                    f"{key}={given[key]!r} conflicts with the checkpoint {weights} ({value!r}); "
                    f"leave {key} unset to use the checkpoint's value."
                )
            given[key] = value
        if kind == "vit" and given["num_heads"] is None:
            given["num_heads"] = VIT_HEADS_BY_WIDTH.get(given["hidden_dim"])
            if given["num_heads"] is None:
                raise ValueError(
                    "The number of heads is not stored in a ViT checkpoint and width "
                    f"{given['hidden_dim']} has no standard head count: pass num_heads."
                )
    image_size = 224 if image_size is None else image_size
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    frames = keras.Input((num_frames, height, width, 3), name="frames")
    x = _preprocessing(backbone)(frames) if include_preprocessing else frames

    if backbone.startswith("vit"):
        size = VIT_SIZES["base" if backbone == "vit_base" else "large"]
        arch = dict(
            patch_size=given["patch_size"] or 16,
            hidden_dim=given["hidden_dim"] or size["hidden_dim"],
            num_layers=given["num_layers"] or size["num_layers"],
            num_heads=given["num_heads"] or size["num_heads"],
            mlp_dim=given["mlp_dim"] or size["mlp_dim"],
        )
        levels = _block_levels(leap_levels, backbone, num_frames, arch["num_layers"])

        def attention(i):
            if levels[i] is None and (shift is None or not fold_div):
                return None  # plain per-frame attention
            return LeapAttention(
                arch["num_heads"],
                level=levels[i],
                shift=shift,
                fold_div=fold_div,
                attention_dropout_rate=attention_dropout_rate,
                name="attention",
            )

        tokens = vit_frame_tokens(
            x,
            qkv_bias=True,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=drop_path_rate,
            attention_factory=attention,
            **arch,
        )  # (B, T, 1 + N, D)
        per_frame = tokens[:, :, 0]  # each frame's CLS token
        patch_tokens = tokens[:, :, 1:]
    else:
        size = VISFORMER_SIZES["small"]
        arch = dict(
            stem_width=given["stem_width"] or size["stem_width"],
            widths=tuple(given["widths"] or size["widths"]),
            depths=tuple(given["depths"] or size["depths"]),
            num_heads=given["num_heads"] or size["num_heads"],
            mlp_ratio=given["mlp_ratio"] or 4.0,
        )
        blocks = arch["depths"][1] + arch["depths"][2]
        levels = _block_levels(leap_levels, backbone, num_frames, blocks)
        patch_tokens = visformer_frame_features(
            x,
            leap_levels=levels,
            shift=shift if fold_div else None,
            fold_div=fold_div,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=drop_path_rate,
            **arch,
        )  # (B, T, N, C)
        per_frame = ops.mean(patch_tokens, axis=2)  # AdaptiveAvgPool2d(1) per frame

    if include_top:
        if dropout_rate:
            per_frame = keras.layers.Dropout(dropout_rate, name="head_dropout")(per_frame)
        logits = keras.layers.Dense(num_classes, dtype="float32", name="head")(per_frame)
        outputs = keras.layers.GlobalAveragePooling1D(dtype="float32", name="frame_average")(
            logits
        )
        if classifier_activation is not None:
            outputs = keras.layers.Activation(
                classifier_activation, dtype="float32", name="predictions"
            )(outputs)
    elif pooling == "avg":
        outputs = ops.mean(ops.cast(patch_tokens, "float32"), axis=(1, 2))
    else:
        outputs = ops.mean(ops.cast(per_frame, "float32"), axis=1)
    model = keras.Model(frames, outputs, name=name or f"laps_{backbone}")

    if weights is not None:
        if str(weights).endswith(".weights.h5"):
            model.load_weights(weights)
        else:
            _load_original(model, state)
    return model


def _differs(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return tuple(a) != tuple(b)
    return a != b


# --------------------------------------------------------------------------------------------
# Lead: the two helpers below stand in for keras_vtn.weights (read_checkpoint and
# assign_weights); route them through it once it lands on main.


def _read_checkpoint(path) -> dict:
    try:
        from keras_vtn.weights import read_checkpoint
    except ImportError as error:
        raise ImportError(
            "Reading original checkpoints needs keras_vtn.weights.read_checkpoint, which this "
            "build lacks."
        ) from error
    return read_checkpoint(path)


def _load_original(model: keras.Model, source) -> None:
    """Loads a LAPS/backbone checkpoint (path or state dict) into `model`, checking coverage.

    The checkpoint's head loads only when the model has a head of the same size; otherwise it
    is dropped (image-pretrained or different-class checkpoints initialise the backbone).
    """
    state = source if isinstance(source, dict) else _read_checkpoint(source)
    mapping = laps_convert.convert_laps(state, model)
    variables = {v.path: v for v in model.weights}
    head = {p: a for p, a in mapping.items() if p.startswith("head/")}
    if not all(p in variables and tuple(variables[p].shape) == a.shape for p, a in head.items()):
        mapping = {p: a for p, a in mapping.items() if not p.startswith("head/")}
    unknown = sorted(set(mapping) - set(variables))
    if unknown:
        raise ValueError(f"Checkpoint tensors with no model variable: {unknown[:10]}")
    missing = sorted(p for p in variables if p not in mapping and not p.startswith("head/"))
    if missing:
        raise ValueError(f"Model variables the checkpoint does not provide: {missing[:10]}")
    for path, array in mapping.items():
        variable = variables[path]
        if tuple(variable.shape) != array.shape:
            raise ValueError(
                f"Shape mismatch for {path}: model {tuple(variable.shape)}, checkpoint "
                f"{array.shape}. Check the architecture arguments (or image_size)."
            )
        variable.assign(np.asarray(array, dtype=variable.dtype))
