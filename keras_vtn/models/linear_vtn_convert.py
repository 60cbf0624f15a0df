"""elb3k/vtn Linformer-VTN checkpoints (`lin-vtn.pth`, `lin-vtn-miil_21k.pth`) → LinearVTN.

The released files are bare `torch.save(model.state_dict())` dicts of an `nn.DataParallel`
model, so every name starts with `module.`. They hold the timm ViT's classifier
`spatial_transformer.head.*`, which the model never uses (it calls `forward_features`): it is
ignored. Everything else must map, or a ValueError names the leftovers.
"""

from __future__ import annotations

import numpy as np

from keras_vtn.models.convert_utils import check_no_leftovers, count_blocks, strip_prefix
from keras_vtn.models.vit import timm_vit_mapping

SPATIAL = "spatial_transformer."
TEMPORAL = "temporal_transformer."
# Documented ignorables: the unused timm classifier of the per-frame ViT.
IGNORED = (SPATIAL + "head.weight", SPATIAL + "head.bias")
ELB3K_HEAD_DIM = 128  # dim_head of every elb3k Linformer config


def config_from_checkpoint(state: dict[str, np.ndarray]) -> dict:
    """Architecture arguments that the tensor names and shapes determine.

    `one_kv_head` comes from the `to_k` shape ((head_dim, D): one shared K/V head;
    (heads·head_dim, D): one per head); `num_frames` from the sequence projection E
    (num_frames + 1, k); `num_classes` from the classifier. Head counts are not recorded in
    the tensors, except the temporal ones when one_kv_head is True (heads = to_q width /
    to_k width); with per-head K the width is split into elb3k's 128-wide heads when it can be.
    """
    state = strip_prefix(state, "module.")
    if SPATIAL + "patch_embed.proj.weight" not in state or TEMPORAL + "pos_embedding" not in state:
        raise ValueError(
            "Not an elb3k Linformer-VTN checkpoint: expected `spatial_transformer.*` and "
            "`temporal_transformer.*` tensors (with or without `module.`)."
        )
    patch = state[SPATIAL + "patch_embed.proj.weight"]
    hidden, _, patch_size, _ = patch.shape
    grid_tokens = state[SPATIAL + "pos_embed"].shape[1] - 1
    side = int(round(grid_tokens**0.5))
    layer0 = TEMPORAL + "layers.0.0.fn.fn."
    proj_k = state[layer0 + "proj_k"]
    q_width = state[layer0 + "to_q.weight"].shape[0]
    k_width = state[layer0 + "to_k.weight"].shape[0]
    config = dict(
        patch_size=int(patch_size),
        hidden_dim=int(hidden),
        num_spatial_layers=count_blocks(state, SPATIAL + "blocks."),
        spatial_mlp_dim=int(state[SPATIAL + "blocks.0.mlp.fc1.weight"].shape[0]),
        spatial_qkv_bias=SPATIAL + "blocks.0.attn.qkv.bias" in state,
        num_temporal_layers=count_blocks(state, TEMPORAL + "layers."),
        temporal_mlp_dim=int(state[TEMPORAL + "layers.0.1.fn.fn.net.0.weight"].shape[0]),
        linformer_k=int(proj_k.shape[1]),
        one_kv_head=k_width != q_width,
        share_kv=layer0 + "to_v.weight" not in state,
        num_frames=int(proj_k.shape[0]) - 1,
        num_classes=int(state["mlp_head.1.weight"].shape[0]),
    )
    if side * side == grid_tokens:
        config["image_size"] = side * int(patch_size)
    if config["one_kv_head"]:
        config["temporal_head_dim"] = int(k_width)
        config["num_temporal_heads"] = int(q_width // k_width)
    elif q_width % ELB3K_HEAD_DIM == 0:
        # Per-head K: only the width heads × head_dim is recorded; elb3k uses 128-wide heads
        # (LinearVTN accepts any explicit split of the same width).
        config["temporal_head_dim"] = ELB3K_HEAD_DIM
        config["num_temporal_heads"] = int(q_width // ELB3K_HEAD_DIM)
    return config


def convert_linear_vtn(state: dict[str, np.ndarray], model) -> dict[str, np.ndarray]:
    """Maps an elb3k state dict to `{variable.path: array}` of a `LinearVTN` model.

    Torch Linear weights (out, in) become Dense kernels (in, out); E (`proj_k`) is used as is.
    `head/*` is always returned (the loader drops it when `num_classes` differs or the model
    has no head); `head_norm/*` only when the model has it.
    """
    state = strip_prefix(state, "module.")
    for key in IGNORED:
        state.pop(key, None)
    spatial = {k[len(SPATIAL) :]: v for k, v in state.items() if k.startswith(SPATIAL)}
    rest = {k: v for k, v in state.items() if not k.startswith(SPATIAL)}
    num_spatial = count_blocks(spatial, "blocks.")
    out = timm_vit_mapping(spatial, num_spatial)

    def take(key):
        return np.asarray(rest.pop(key))

    out["temporal_cls_token/token"] = take(TEMPORAL + "cls_token").reshape(-1)
    out["temporal_position_embedding/embeddings"] = take(TEMPORAL + "pos_embedding")[0]
    for j in range(count_blocks(rest, TEMPORAL + "layers.")):
        attn, ffn = f"{TEMPORAL}layers.{j}.0.fn.", f"{TEMPORAL}layers.{j}.1.fn."
        dst = f"temporal_block_{j}/"
        out[dst + "norm1/gamma"] = take(attn + "norm.weight")
        out[dst + "norm1/beta"] = take(attn + "norm.bias")
        out[dst + "attention/query/kernel"] = take(attn + "fn.to_q.weight").T
        out[dst + "attention/key/kernel"] = take(attn + "fn.to_k.weight").T
        out[dst + "attention/key_sequence_projection"] = take(attn + "fn.proj_k")
        if attn + "fn.to_v.weight" in rest:  # share_kv=False
            out[dst + "attention/value/kernel"] = take(attn + "fn.to_v.weight").T
            out[dst + "attention/value_sequence_projection"] = take(attn + "fn.proj_v")
        out[dst + "attention/output/kernel"] = take(attn + "fn.to_out.weight").T
        out[dst + "attention/output/bias"] = take(attn + "fn.to_out.bias")
        out[dst + "norm2/gamma"] = take(ffn + "norm.weight")
        out[dst + "norm2/beta"] = take(ffn + "norm.bias")
        out[dst + "mlp/fc1/kernel"] = take(ffn + "fn.net.0.weight").T
        out[dst + "mlp/fc1/bias"] = take(ffn + "fn.net.0.bias")
        out[dst + "mlp/fc2/kernel"] = take(ffn + "fn.net.3.weight").T
        out[dst + "mlp/fc2/bias"] = take(ffn + "fn.net.3.bias")
    head_norm = {
        "head_norm/gamma": take("mlp_head.0.weight"),
        "head_norm/beta": take("mlp_head.0.bias"),
    }
    out["head/kernel"] = take("mlp_head.1.weight").T
    out["head/bias"] = take("mlp_head.1.bias")
    check_no_leftovers(
        set(spatial) | set(rest),
        "Linformer-VTN",
        "Only `spatial_transformer.head.*` is ignored; is this an elb3k `linformer` checkpoint?",
    )
    paths = {v.path for v in model.weights}
    if "head_norm/gamma" in paths:
        out.update(head_norm)
    return out
