"""LAPS checkpoints (ViT / Visformer, torch names) → `LAPSTransformer` variable paths.

Formats:
- LAPS training checkpoints (`ckpt_e*.pth`): `{"epoch", "state_dict", "best_acc1", "optimizer",
  "scheduler"}` with keys `module.base_model.<backbone key>` (DDP-wrapped VideoNet).
- Visformer image weights (`visformer_s_in10k.pth`): `{"model": state_dict}`, no prefix.
- timm ViT image weights (e.g. `jx_vit_base_patch16_224_in21k-e5005f0a.pth`): a plain state dict.
- Google ViT image weights (`ViT-B_16.npz`, the `weights="imagenet21k"` registry entry).

Leap attention and periodic shift have no weights: the level schedule, `fold_div` and the
number of frames come from the builder arguments (the training run name records them as
`..._{T}x{rate}_..._D{fold_div}_SLevel_s2_1_2_3_1_s3_2_3_1_2`).
"""

from __future__ import annotations

import collections
import re

import numpy as np

from keras_vtn.models.convert_utils import (
    CheckpointState,
    agree,
    check_limit,
    check_no_leftovers,
    check_nonempty,
    count_blocks,
    shape_of,
    tensor_name,
)
from keras_vtn.models.vit import (
    fit_square_position_tables,
    google_vit_config,
    google_vit_mapping,
    google_vit_names,
    timm_vit_mapping,
    vit_config,
)
from keras_vtn.weights import safe_zip
from keras_vtn.weights.errors import CheckpointError

PREFIXES = ("module.", "base_model.")
FAMILY = "LAPS (ViT or Visformer)"
# Entries of a training checkpoint that are not weights.
_TRAINING_ENTRIES = ("epoch", "best_acc1", "optimizer", "scheduler", "arch")
# BatchNorm's batch counter has no Keras counterpart; the in21k representation layer is
# dropped by timm when fine-tuning (LAPS never uses it).
_IGNORED = re.compile(r"(^|\.)num_batches_tracked$|^pre_logits[./]")
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
       "running_var": "moving_variance"}


def extract_state(state: dict) -> CheckpointState:
    """The backbone state dict of any LAPS-related checkpoint, without prefixes.

    Accepts a flat dict from `keras_vtn.weights.read_checkpoint` ('.'-joined names, so a
    training checkpoint's weights arrive as `state_dict.module.base_model.*`) or a nested
    dict as `torch.load` returns it. Errors name tensors as the file spells them.
    """
    base = state.display if isinstance(state, CheckpointState) else (lambda key: key)
    state = _flatten(state)
    container = ""
    for name in ("state_dict.", "model."):
        if any(k.startswith(name) for k in state):
            state = {k[len(name):]: v for k, v in state.items() if k.startswith(name)}
            container = name
            break
    else:
        state = {k: v for k, v in state.items() if k.split(".")[0] not in _TRAINING_ENTRIES}
    out, stripped = {}, collections.Counter()
    for key, value in state.items():
        original = key
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        stripped[original[: len(original) - len(key)]] += 1
        out[key] = np.asarray(value)
    prefix = container + (stripped.most_common(1)[0][0] if stripped else "")
    return CheckpointState(out, FAMILY, lambda key: base(prefix + key))


def _flatten(tree: dict) -> dict:
    """'.'-joined names of a nested dict (as `torch.load` returns it); non-containers are leaves."""
    def leaf(value):
        return None if isinstance(value, (dict, list, tuple)) else value

    path = "the checkpoint"
    return safe_zip.flatten_nested(tree, ".", leaf, path, safe_zip.Budget(path, 0))


def checkpoint_backbone(state: dict[str, np.ndarray]) -> str:
    """'vit', 'vit_google' (Flax names) or 'visformer' from the names of an extracted state."""
    if "stem.0.weight" in state or "stage1.0.norm2.bn.weight" in state:
        return "visformer"
    if "patch_embed.proj.weight" in state and "blocks.0.attn.qkv.weight" in state:
        return "vit"
    if "embedding/kernel" in state and "Transformer/encoderblock_0/LayerNorm_0/scale" in state:
        return "vit_google"
    raise CheckpointError(
        "Not a LAPS ViT or Visformer checkpoint: found neither 'stem.0.weight' (Visformer) "
        "nor 'patch_embed.proj.weight' (timm ViT) nor 'embedding/kernel' (Google ViT). "
        f"First keys: {sorted(state)[:5]}"
    )


# Head counts are not stored in timm/Visformer tensors; these are the standard ones by width.
VIT_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def config_from_checkpoint(state: dict) -> dict:
    """`LAPSTransformer` arguments readable from the tensors of a checkpoint.

    `backbone` ("vit_base", "vit_large" or "visformer_small"), `num_classes`, `image_size` and
    the architecture arguments. `num_heads` is stored only in Google (Flax) ViT files; for
    timm ViTs it comes from the standard width → heads table when the width is standard, and
    Visformer checkpoints leave it to the builder (6 for Visformer-S). The leap levels,
    `fold_div` and the number of frames have no tensors: they are builder arguments.
    """
    state = extract_state(state) if not _is_extracted(state) else state
    backbone = checkpoint_backbone(state)
    check_nonempty(state)
    if backbone == "visformer":
        return _visformer_config(state)
    if backbone == "vit_google":
        config = google_vit_config(google_vit_names(state, "pre_linen", FAMILY))
    else:
        config = vit_config(state)
        config.pop("qkv_bias")
        if config["hidden_dim"] in VIT_HEADS_BY_WIDTH:
            config["num_heads"] = VIT_HEADS_BY_WIDTH[config["hidden_dim"]]
    if "image_size" not in config:
        raise CheckpointError(
            f"The position table {tensor_name(state, _POSITIONS[backbone])!r} is not a CLS "
            "row plus a square grid."
        )
    config["backbone"] = "vit_large" if config["hidden_dim"] == 1024 else "vit_base"
    return config


_POSITIONS = {"vit": "pos_embed", "vit_google": "Transformer/posembed_input/pos_embedding"}


def _visformer_config(state) -> dict:
    """Visformer widths, depths and grids, checked to agree across stem, stages and tables."""
    config: dict = {"backbone": "visformer_small"}
    stem, *_ = shape_of(state, "stem.0.weight", 4)
    check_limit("stem_width", stem, "stem.0.weight", state)
    previous, previous_key, widths, side = stem, "stem.0.weight", [], None
    for i in (1, 2, 3):
        embed, table = f"patch_embed{i}.proj.weight", f"pos_embed{i}"
        width, width_in, *_ = shape_of(state, embed, 4)
        _, table_width, height, table_side = shape_of(state, table, 4)
        agree(f"input width of stage {i}", {previous_key: previous, embed: width_in}, state)
        agree(f"width of stage {i}", {embed: width, table: table_width}, state)
        agree(f"side of the stage-{i} grid", {f"{table} (height)": height, table: table_side},
              state)
        if side is not None:  # each stage halves the grid (floor)
            agree(f"side of the stage-{i} grid",
                  {table: table_side, f"pos_embed{i - 1} (halved)": side // 2}, state)
        check_limit("width", width, embed, state)
        widths.append(width)
        previous, previous_key, side = width, embed, table_side
    check_limit("frame_positions", state["pos_embed1"].shape[-1] ** 2, "pos_embed1", state)
    mlp = "stage2.0.mlp.conv1.weight"
    hidden, hidden_in, *_ = shape_of(state, mlp, 4)
    agree("width of stage 2", {"patch_embed2.proj.weight": widths[1], mlp: hidden_in}, state)
    check_limit("mlp_width", hidden, mlp, state)
    if "head.weight" in state:
        config["num_classes"], head_in = shape_of(state, "head.weight", 2)
        agree("width of stage 3", {"patch_embed3.proj.weight": widths[2], "head.weight": head_in},
              state)
        check_limit("classes", config["num_classes"], "head.weight", state)
    config.update(
        stem_width=stem,
        widths=tuple(widths),
        depths=tuple(count_blocks(state, f"stage{i}.") for i in (1, 2, 3)),
        mlp_ratio=hidden / widths[1],
        image_size=int(state["pos_embed1"].shape[-1]) * 8,
    )
    return config


def _is_extracted(state: dict) -> bool:
    return any(k in state for k in ("stem.0.weight", "patch_embed.proj.weight", "embedding/kernel"))


def _conv(w):
    """torch Conv2d weight (O, I/g, kh, kw) → Keras (kh, kw, I/g, O)."""
    return np.asarray(w).transpose(2, 3, 1, 0)


def _dense_from_conv1x1(w):
    """torch 1×1 Conv2d weight (O, I, 1, 1) → Keras Dense kernel (I, O)."""
    return np.asarray(w)[:, :, 0, 0].T


def _visformer_mapping(state: dict, depths) -> dict:
    out = {}

    def take(key):
        return np.asarray(state.pop(key))

    def bn(src, dst):
        for torch_name, keras_name in _BN.items():
            out[f"{dst}/{keras_name}"] = take(f"{src}.bn.{torch_name}")

    out["stem_conv/kernel"] = _conv(take("stem.0.weight"))
    bn("stem.1", "stem_bn")
    for i in (1, 2, 3):
        out[f"patch_embed{i}/kernel"] = _conv(take(f"patch_embed{i}.proj.weight"))
        out[f"patch_embed{i}/bias"] = take(f"patch_embed{i}.proj.bias")
        bn(f"patch_embed{i}.norm", f"patch_embed{i}_norm")
        table = take(f"pos_embed{i}")  # (1, C, h, w) → (h·w, C), row-major like the tokens
        out[f"pos_embed{i}/embeddings"] = table[0].reshape(table.shape[1], -1).T
    for j in range(depths[0]):
        src, dst = f"stage1.{j}.", f"stage1_{j}_"
        bn(src + "norm2", dst + "norm2")
        out[dst + "conv1/kernel"] = _dense_from_conv1x1(take(src + "mlp.conv1.weight"))
        out[dst + "conv2/kernel"] = _conv(take(src + "mlp.conv2.weight"))
        out[dst + "conv3/kernel"] = _dense_from_conv1x1(take(src + "mlp.conv3.weight"))
    for stage in (2, 3):
        for j in range(depths[stage - 1]):
            src, dst = f"stage{stage}.{j}.", f"stage{stage}_{j}_"
            bn(src + "norm1", dst + "norm1")
            bn(src + "norm2", dst + "norm2")
            # qkv output channels are ordered [q|k|v][head][head_dim], like timm's Linear.
            qkv = take(src + "attn.qkv.weight")[:, :, 0, 0]
            for name, w in zip(("query", "key", "value"), np.split(qkv, 3), strict=True):
                out[dst + f"attn/{name}/kernel"] = w.T
            out[dst + "attn/output/kernel"] = _dense_from_conv1x1(take(src + "attn.proj.weight"))
            out[dst + "mlp/fc1/kernel"] = _dense_from_conv1x1(take(src + "mlp.conv1.weight"))
            out[dst + "mlp/fc2/kernel"] = _dense_from_conv1x1(take(src + "mlp.conv3.weight"))
    bn("norm", "norm")
    return out


def convert_laps(state: dict, model) -> dict[str, np.ndarray]:
    """Maps a LAPS (or backbone image) checkpoint onto `model`'s variable paths.

    Returns `{variable.path: array}`; `head/*` is included when the checkpoint has a head (the
    loader drops it when the class count differs). Position tables are resized when the
    model's image size differs from the checkpoint's. Raises CheckpointError naming any key that is
    neither mapped nor a documented ignorable (`num_batches_tracked`, timm's `pre_logits`).
    """
    state = extract_state(state)
    backbone = checkpoint_backbone(state)
    if backbone == "vit_google":
        state = google_vit_names(state, "pre_linen", FAMILY)
        out = google_vit_mapping(state, count_blocks(state, "Transformer/encoderblock_"))
        if "head/kernel" in state:  # Flax Dense: already (in, out)
            out["head/kernel"] = np.asarray(state.pop("head/kernel"))
            out["head/bias"] = np.asarray(state.pop("head/bias"))
    elif backbone == "vit":
        out = timm_vit_mapping(state, count_blocks(state, "blocks."))
    else:
        depths = tuple(count_blocks(state, f"stage{i}.") for i in (1, 2, 3))
        out = _visformer_mapping(state, depths)
    if "head.weight" in state:
        out["head/kernel"] = np.asarray(state.pop("head.weight")).T
        out["head/bias"] = np.asarray(state.pop("head.bias"))
    check_no_leftovers(
        [k for k in state if not _IGNORED.search(k)], f"LAPS {backbone}",
        "Only `num_batches_tracked` and timm's `pre_logits` are ignored.",
    )
    # ViT's tables start with the CLS position; Visformer's have none.
    return fit_square_position_tables(out, model, 0 if backbone == "visformer" else 1)
