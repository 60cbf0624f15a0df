"""LAPS: Long-term Leap Attention + Short-term Periodic Shift (Zhang et al., ACM MM 2022).

An image transformer applied to every frame, whose attention layers are replaced by leap
attention (frames paired a leap apart attend jointly) with a periodic shift of the per-head
outputs. No parameters beyond the image model. Reference: VideoNetworks/LAPS-transformer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
from keras import ops

from keras_vtn import weights as kvw
from keras_vtn.layers import LeapAttention, leap_pairs
from keras_vtn.models import laps_convert
from keras_vtn.models.convert_utils import naming_file
from keras_vtn.models.frame_temporal import image_size_pair
from keras_vtn.models.pipeline import build_from_call, merge_config, num_classes_default
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
    weights: str | os.PathLike | None = None,
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
    size: str | None = None,
) -> keras.Model:
    """LAPS video transformer: ViT-B/L or Visformer-S with leap attention + periodic shift.

    Every attention block becomes `LeapAttention` at its level; the head classifies each
    frame (ViT: its CLS token; Visformer: its average-pooled map) and the logits are averaged
    over time, as the original `VideoNet` "avg" consensus.

    Args:
        backbone: `"vit_base"`, `"vit_large"` (patch 16, LayerNorm eps 1e-6, exact GELU) or
            `"visformer_small"` (BatchNorm eps 1e-5).
        size: the same choice by size, as the other families take it: `"base"`,
            `"large"` or `"small"` (Visformer-S); a backbone name is accepted too.
        weights: `None`; `"imagenet21k"` (ViT backbones: Google's image checkpoint initialises
            the backbone); a path to a LAPS training checkpoint (`.pth`, ViT or Visformer), a
            Visformer image file (`{"model": ...}`, e.g. `visformer_s_in10k.pth`), a timm or
            Google ViT image checkpoint, or a Keras `.weights.h5`/`.keras`. `"k400"` raises:
            the authors never released Kinetics weights. Architecture arguments not given
            are read from an original checkpoint; conflicting ones are an error.
        num_classes: head size; `None`: the checkpoint's (so its head loads), else 400, as in
            every family. A checkpoint head of another size is not loaded.
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
            pooled map, averaged over frames) or `"avg"`: the mean of the encoder's output
            tokens (every patch token of every frame), CLS excluded, as in every family.
        Architecture overrides: ViT `patch_size`, `hidden_dim`, `num_layers`, `num_heads`,
        `mlp_dim`; Visformer `stem_width`, `widths`, `depths`, `num_heads`, `mlp_ratio`.

    Example:
    >>> model = LAPSTransformer("vit_base", num_frames=4, image_size=32, patch_size=16,
    ...     hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64, num_classes=5)
    >>> tuple(model.output_shape)
    (None, 5)
    """
    return build_from_call("laps", locals())


def _prepare(call: dict) -> dict:
    backbone = _backbone_for_size(call["backbone"], call["size"])
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown LAPS backbone {backbone!r}; use one of {BACKBONES}.")
    if call["pooling"] not in (None, "token", "avg"):
        raise ValueError(f"pooling must be None, 'token' or 'avg', got {call['pooling']!r}.")
    return {**call, "backbone": backbone}


def _read(source, call: dict) -> tuple[dict | None, dict | None]:
    """(state, architecture) of a registry entry (its tensors are read later, or never when
    the converted cache has them) or an original LAPS/backbone checkpoint."""
    if source is None or source.is_keras:
        return None, None
    if source.entry is not None:
        return None, dict(source.entry["config"], backbone=call["backbone"])
    state = laps_convert.extract_state(kvw.read_checkpoint(source.path))
    with naming_file(source.path):
        return state, laps_convert.config_from_checkpoint(state)


def _merge(call: dict, source, found: dict | None) -> dict:
    backbone, num_classes, image_size = call["backbone"], call["num_classes"], call["image_size"]
    given = {key: call[key] for key in (*VIT_ARGUMENTS, *VISFORMER_ARGUMENTS)}
    if found is not None:
        num_classes = num_classes_default(num_classes, found)
        image_size = _fill_from_checkpoint(given, found, backbone, image_size, call["weights"])
    num_classes = num_classes_default(num_classes, None)
    image_size = image_size_pair(224 if image_size is None else image_size)
    return {**_architecture(backbone, given), "backbone": backbone,
            "image_size": image_size, "num_classes": num_classes}


def _load(model, source, state, call: dict) -> None:
    with naming_file(source.path):
        if state is None:  # Keras files, and registry downloads (converted once, cached)
            kvw.load_source(model, source, "laps", laps_convert.convert_laps)
        else:
            _load_original(model, state, partial=source.partial)


BUILD_HOOKS = dict(prepare=_prepare, registry_key=lambda call: {"backbone": call["backbone"]},
                   read=_read, merge=_merge, load=_load)


VIT_ARGUMENTS = ("patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_dim")
VISFORMER_ARGUMENTS = ("stem_width", "widths", "depths", "num_heads", "mlp_ratio")


def _architecture(backbone: str, given: dict) -> dict:
    """The backbone's architecture arguments: those given (or read from a checkpoint), else
    the backbone's standard ones."""
    if backbone.startswith("vit"):
        size = VIT_SIZES["base" if backbone == "vit_base" else "large"]
        return dict(
            patch_size=given["patch_size"] or 16,
            hidden_dim=given["hidden_dim"] or size["hidden_dim"],
            num_layers=given["num_layers"] or size["num_layers"],
            num_heads=given["num_heads"] or size["num_heads"],
            mlp_dim=given["mlp_dim"] or size["mlp_dim"],
        )
    size = VISFORMER_SIZES["small"]
    return dict(
        stem_width=given["stem_width"] or size["stem_width"],
        widths=tuple(given["widths"] or size["widths"]),
        depths=tuple(given["depths"] or size["depths"]),
        num_heads=given["num_heads"] or size["num_heads"],
        mlp_ratio=given["mlp_ratio"] or 4.0,
    )


def laps_graph(config: dict) -> keras.Model:
    """The LAPS graph of a merged config (`LAPSTransformer`'s arguments, every architecture
    value set, as `keras_vtn.model_config` returns them). No I/O."""
    c, backbone = config, config["backbone"]
    height, width = image_size_pair(c["image_size"])
    frames = keras.Input((c["num_frames"], height, width, 3), name="frames")
    x = _preprocessing(backbone)(frames) if c["include_preprocessing"] else frames
    outputs_patches = c["pooling"] == "avg" and not c["include_top"]
    frame_features = _vit_frames if backbone.startswith("vit") else _visformer_frames
    per_frame, patch_tokens = frame_features(x, c, outputs_patches)
    if c["include_top"]:
        if c["dropout_rate"]:
            per_frame = keras.layers.Dropout(c["dropout_rate"], name="head_dropout")(per_frame)
        logits = keras.layers.Dense(c["num_classes"], dtype="float32", name="head")(per_frame)
        outputs = keras.layers.GlobalAveragePooling1D(dtype="float32", name="frame_average")(
            logits
        )
        if c["classifier_activation"] is not None:
            outputs = keras.layers.Activation(
                c["classifier_activation"], dtype="float32", name="predictions"
            )(outputs)
    elif outputs_patches:
        outputs = ops.mean(ops.cast(patch_tokens, "float32"), axis=(1, 2))
    else:
        outputs = ops.mean(ops.cast(per_frame, "float32"), axis=1)
    return keras.Model(frames, outputs, name=c["name"] or f"laps_{backbone}")


def _vit_frames(x, c: dict, outputs_patches: bool):
    """(each frame's CLS token, the patch tokens) of the leap-attention ViT."""
    arch = {key: c[key] for key in VIT_ARGUMENTS}
    levels = _block_levels(c["leap_levels"], c["backbone"], c["num_frames"], arch["num_layers"])
    shift, fold_div = c["shift"], c["fold_div"]

    def attention(i):
        if levels[i] is None and (shift is None or not fold_div):
            return None  # plain per-frame attention
        return LeapAttention(
            arch["num_heads"],
            level=levels[i],
            shift=shift,
            fold_div=fold_div,
            attention_dropout_rate=c["attention_dropout_rate"],
            name="attention",
        )

    tokens = vit_frame_tokens(
        x,
        qkv_bias=True,
        dropout_rate=c["dropout_rate"],
        attention_dropout_rate=c["attention_dropout_rate"],
        drop_path_rate=c["drop_path_rate"],
        attention_factory=attention,
        # Unless the patch tokens are the output, only the CLS rows leave the last block.
        last_block_tokens=None if outputs_patches else 1,
        **arch,
    )  # (B, T, 1 + N, D), or (B, T, 1, D)
    return tokens[:, :, 0], tokens[:, :, 1:]


def _visformer_frames(x, c: dict, outputs_patches: bool):
    """(each frame's average-pooled map, the patch tokens) of the leap-attention Visformer."""
    arch = {key: c[key] for key in VISFORMER_ARGUMENTS}
    arch.update(widths=tuple(arch["widths"]), depths=tuple(arch["depths"]))
    blocks = arch["depths"][1] + arch["depths"][2]
    levels = _block_levels(c["leap_levels"], c["backbone"], c["num_frames"], blocks)
    patch_tokens = visformer_frame_features(
        x,
        leap_levels=levels,
        shift=c["shift"] if c["fold_div"] else None,
        fold_div=c["fold_div"],
        dropout_rate=c["dropout_rate"],
        attention_dropout_rate=c["attention_dropout_rate"],
        drop_path_rate=c["drop_path_rate"],
        **arch,
    )  # (B, T, N, C)
    return ops.mean(patch_tokens, axis=2), patch_tokens  # AdaptiveAvgPool2d(1) per frame


# `size=` names a backbone by its size, as the other families' presets do.
SIZE_BACKBONES = {"base": "vit_base", "large": "vit_large", "small": "visformer_small"}


def _backbone_for_size(backbone: str, size: str | None) -> str:
    if size is None:
        return backbone
    chosen = SIZE_BACKBONES.get(size, size)
    if chosen not in BACKBONES:
        raise ValueError(f"Unknown LAPS size {size!r}; use one of {sorted(SIZE_BACKBONES)} "
                         f"(or backbone= one of {BACKBONES}).")
    if backbone not in ("vit_base", chosen):  # vit_base is the default: size= picks then
        raise ValueError(f"size={size!r} ({chosen}) contradicts backbone={backbone!r}; give one.")
    return chosen


def _fill_from_checkpoint(given: dict, found: dict, backbone: str, image_size, weights):
    """Completes `given` with the checkpoint's architecture; explicit conflicts are errors."""
    found = dict(found)
    kind = "visformer" if found.pop("backbone").startswith("visformer") else "vit"
    if not backbone.startswith(kind):
        raise ValueError(
            f"{weights} holds a {kind} checkpoint but backbone={backbone!r}; pass "
            f"backbone={'visformer_small' if kind == 'visformer' else 'vit_base'!r}."
        )
    if image_size is None:
        image_size = found.get("image_size")
    for key in ("image_size", "num_classes"):  # the head loads only when num_classes matches
        found.pop(key, None)
    given.update(merge_config("LAPSTransformer", {}, found, given, source=os.fspath(weights)))
    if kind == "vit" and given["num_heads"] is None:
        raise ValueError(
            "The number of heads is not stored in a timm ViT checkpoint and width "
            f"{given['hidden_dim']} has no standard head count: pass num_heads."
        )
    return image_size


def _load_original(model: keras.Model, source, partial: bool = False) -> None:
    """Loads an original LAPS/backbone checkpoint (path or state dict) into `model`.

    Every variable but the head must come from the checkpoint. The head loads when the model
    has one of the same size; otherwise it keeps its initialisation (image-pretrained or
    other-class checkpoints initialise the backbone).
    """
    state = source if isinstance(source, dict) else kvw.read_checkpoint(source)
    mapping = laps_convert.convert_laps(state, model)
    missing = sorted(
        v.path for v in model.weights if v.path not in mapping and not v.path.startswith("head/")
    )
    if missing and not partial:
        raise ValueError(
            f"The checkpoint provides no value for {len(missing)} variable(s) of model "
            f"{model.name!r}: {missing[:10]}. Build the model with the checkpoint's architecture."
        )
    # A different-size head keeps its initialisation (assign_weights warns about it).
    kvw.assign_weights(model, mapping, allow_missing=partial or "head/kernel" not in mapping)
