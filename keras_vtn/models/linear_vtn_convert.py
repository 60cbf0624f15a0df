"""elb3k/vtn Linformer-VTN checkpoints (`lin-vtn.pth`, `lin-vtn-miil_21k.pth`) → LinearVTN.

The released files are bare `torch.save(model.state_dict())` dicts of an `nn.DataParallel`
model, so every name starts with `module.`. They hold the timm ViT's classifier
`spatial_transformer.head.*`, which the model never uses (it calls `forward_features`): it is
ignored. Everything else must map, or a CheckpointError names the leftovers.
"""

from __future__ import annotations

import numpy as np

from keras_vtn.models.convert_utils import (
    agree,
    check_limit,
    check_limits,
    check_nonempty,
    count_blocks,
    shape_of,
    strip_prefix,
    torch_names,
)
from keras_vtn.models.vit import (
    finish_frame_conversion,
    frame_vit_config,
    frame_vit_conversion,
    vit_config,
)
from keras_vtn.weights.errors import CheckpointError

SPATIAL = "spatial_transformer."
TEMPORAL = "temporal_transformer."
# Documented ignorables: the unused timm classifier of the per-frame ViT.
IGNORED = (SPATIAL + "head.weight", SPATIAL + "head.bias")
# Variable path under `temporal_block_{j}/` -> torch name under `temporal_transformer.layers.{j}.`
# (lucidrains' PreNorm(fn) wrappers: `0.fn` attention, `1.fn` feed-forward).
LINFORMER_BLOCK = {
    "norm1/gamma": "0.fn.norm.weight",
    "norm1/beta": "0.fn.norm.bias",
    "attention/query/kernel": "0.fn.fn.to_q.weight",
    "attention/key/kernel": "0.fn.fn.to_k.weight",
    "attention/key_sequence_projection": "0.fn.fn.proj_k",
    "attention/output/kernel": "0.fn.fn.to_out.weight",
    "attention/output/bias": "0.fn.fn.to_out.bias",
    "norm2/gamma": "1.fn.norm.weight",
    "norm2/beta": "1.fn.norm.bias",
    "mlp/fc1/kernel": "1.fn.fn.net.0.weight",
    "mlp/fc1/bias": "1.fn.fn.net.0.bias",
    "mlp/fc2/kernel": "1.fn.fn.net.3.weight",
    "mlp/fc2/bias": "1.fn.fn.net.3.bias",
}
SEPARATE_VALUE = {  # share_kv=False: V has its own projection and sequence projection
    "attention/value/kernel": "0.fn.fn.to_v.weight",
    "attention/value_sequence_projection": "0.fn.fn.proj_v",
}
ELB3K_HEAD_DIM = 128  # dim_head of every elb3k Linformer config
FAMILY = "elb3k Linformer-VTN"


def config_from_checkpoint(state: dict[str, np.ndarray]) -> dict:
    """Architecture arguments that the tensor names and shapes determine.

    `one_kv_head` comes from the `to_k` shape ((head_dim, D): one shared K/V head;
    (heads·head_dim, D): one per head); `num_frames` from the sequence projection E
    (num_frames + 1, k); `num_classes` from the classifier. Head counts are not recorded in
    the tensors, except the temporal ones when one_kv_head is True (heads = to_q width /
    to_k width); with per-head K the width is split into elb3k's 128-wide heads when it can be.

    Every value is checked before it is returned (see `convert_utils`): a CheckpointError
    names the tensor that is missing, empty, inconsistent or out of bounds.
    """
    state = strip_prefix(state, "module.", FAMILY)
    if SPATIAL + "patch_embed.proj.weight" not in state or TEMPORAL + "pos_embedding" not in state:
        raise CheckpointError(
            "Not an elb3k Linformer-VTN checkpoint: expected `spatial_transformer.*` and "
            "`temporal_transformer.*` tensors (with or without `module.`)."
        )
    check_nonempty(state)
    spatial = vit_config(state.under(SPATIAL))
    layer0 = TEMPORAL + "layers.0.0.fn.fn."
    mlp0 = TEMPORAL + "layers.0.1.fn.fn.net.0.weight"
    rows, k = shape_of(state, layer0 + "proj_k", 2)
    _, positions, pos_width = shape_of(state, TEMPORAL + "pos_embedding", 3)
    q_width, q_in = shape_of(state, layer0 + "to_q.weight", 2)
    k_width, k_in = shape_of(state, layer0 + "to_k.weight", 2)
    temporal_mlp, mlp_in = shape_of(state, mlp0, 2)
    num_classes, head_in = shape_of(state, "mlp_head.1.weight", 2)
    agree(
        "width",
        {
            SPATIAL + "patch_embed.proj.weight": spatial["hidden_dim"],
            TEMPORAL + "pos_embedding": pos_width,
            layer0 + "to_q.weight": q_in,
            layer0 + "to_k.weight": k_in,
            mlp0: mlp_in,
            "mlp_head.1.weight": head_in,
        },
        state,
    )
    frames = agree(
        "number of frames + CLS",
        {layer0 + "proj_k": rows, TEMPORAL + "pos_embedding": positions},
        state,
    ) - 1
    one_kv_head = k_width != q_width
    check_limits(
        state,
        linformer_frames=(frames, layer0 + "proj_k"),
        linformer_k=(k, layer0 + "proj_k"),
        attention_width=(q_width, layer0 + "to_q.weight"),
        mlp_width=(temporal_mlp, mlp0),
        classes=(num_classes, "mlp_head.1.weight"),
    )
    config = dict(
        **frame_vit_config(spatial),
        num_temporal_layers=count_blocks(state, TEMPORAL + "layers."),
        temporal_mlp_dim=temporal_mlp,
        linformer_k=k,
        one_kv_head=one_kv_head,
        share_kv=layer0 + "to_v.weight" not in state,
        num_frames=frames,
        num_classes=num_classes,
    )
    if one_kv_head:
        if q_width % k_width:
            raise CheckpointError(
                f"Tensor {state.display(layer0 + 'to_q.weight')!r} is {q_width} wide, not a "
                f"multiple of the shared K/V head ({k_width} wide, "
                f"{state.display(layer0 + 'to_k.weight')!r})."
            )
        config["temporal_head_dim"] = check_limit("head_dim", k_width, layer0 + "to_k.weight")
        config["num_temporal_heads"] = check_limit(
            "heads", q_width // k_width, layer0 + "to_q.weight"
        )
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
    state = strip_prefix(state, "module.", FAMILY)
    for key in IGNORED:
        state.pop(key, None)
    out, spatial, rest = frame_vit_conversion(state, SPATIAL)

    def take(key):
        return np.asarray(rest.pop(key))

    out["temporal_cls_token/token"] = take(TEMPORAL + "cls_token").reshape(-1)
    out["temporal_position_embedding/embeddings"] = take(TEMPORAL + "pos_embedding")[0]
    for j in range(count_blocks(rest, TEMPORAL + "layers.")):
        src, dst = f"{TEMPORAL}layers.{j}.", f"temporal_block_{j}/"
        out.update(torch_names(take, LINFORMER_BLOCK, dst, src))
        if src + SEPARATE_VALUE["attention/value/kernel"] in rest:  # share_kv=False
            out.update(torch_names(take, SEPARATE_VALUE, dst, src))
    head_norm = torch_names(take, {"head_norm/gamma": "mlp_head.0.weight",
                                   "head_norm/beta": "mlp_head.0.bias"})
    out.update(
        torch_names(take, {"head/kernel": "mlp_head.1.weight", "head/bias": "mlp_head.1.bias"})
    )
    return finish_frame_conversion(
        out, head_norm, model, (spatial, rest), "Linformer-VTN",
        "Only `spatial_transformer.head.*` is ignored; is this an elb3k `linformer` checkpoint?",
    )
