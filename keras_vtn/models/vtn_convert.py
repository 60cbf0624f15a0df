"""bomri/SlowFast VTN checkpoints (`VTN_VIT_B_KINETICS.pyth`) → VTN.

A PySlowFast checkpoint is a dict `{epoch, model_state, optimizer_state, cfg}`; only
`model_state` holds the model (no `module.` prefix). It carries the Hugging Face Longformer
buffer `temporal_encoder.embeddings.position_ids` (persistent in transformers 4.3), which is
not a weight and is dropped. Everything else must map, or a ValueError names the leftovers.
"""

from __future__ import annotations

import numpy as np

from keras_vtn.models.convert_utils import check_no_leftovers, count_blocks, strip_prefix
from keras_vtn.models.vit import timm_vit_mapping

BACKBONE = "backbone."
ENCODER = "temporal_encoder."
# Documented ignorables: HF's position-id buffer (an arange, not a weight).
IGNORED = (ENCODER + "embeddings.position_ids",)
GLOBAL_PROJECTIONS = ("query", "key", "value", "query_global", "key_global", "value_global")


def model_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model tensors of a flattened PySlowFast checkpoint (or of a bare state dict)."""
    if any(k.startswith("model_state.") for k in state):
        return {
            k[len("model_state.") :]: v for k, v in state.items() if k.startswith("model_state.")
        }
    return strip_prefix(state, "module.")


def config_from_checkpoint(state: dict[str, np.ndarray]) -> dict:
    """Architecture arguments that the tensor names and shapes determine.

    Head counts and `attention_window` are not recorded in the tensors.
    """
    state = model_state(state)
    if (
        BACKBONE + "patch_embed.proj.weight" not in state
        or ENCODER + ("embeddings.position_embeddings.weight") not in state
    ):
        raise ValueError(
            "Not a bomri/SlowFast VTN checkpoint: expected `backbone.*` and "
            "`temporal_encoder.*` tensors (under `model_state`)."
        )
    hidden, _, patch_size, _ = state[BACKBONE + "patch_embed.proj.weight"].shape
    grid_tokens = state[BACKBONE + "pos_embed"].shape[1] - 1
    side = int(round(grid_tokens**0.5))
    layer0 = ENCODER + "encoder.layer.0."
    config = dict(
        patch_size=int(patch_size),
        hidden_dim=int(hidden),
        num_spatial_layers=count_blocks(state, BACKBONE + "blocks."),
        spatial_mlp_dim=int(state[BACKBONE + "blocks.0.mlp.fc1.weight"].shape[0]),
        spatial_qkv_bias=BACKBONE + "blocks.0.attn.qkv.bias" in state,
        num_temporal_layers=count_blocks(state, ENCODER + "encoder.layer."),
        temporal_mlp_dim=int(state[layer0 + "intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(
            state[ENCODER + "embeddings.position_embeddings.weight"].shape[0]
        ),
        head_hidden_dim=int(state["mlp_head.1.weight"].shape[0]),
        num_classes=int(state["mlp_head.4.weight"].shape[0]),
    )
    if side * side == grid_tokens:
        config["image_size"] = side * int(patch_size)
    return config


def convert_vtn(state: dict[str, np.ndarray], model) -> dict[str, np.ndarray]:
    """Maps a bomri VTN state dict to `{variable.path: array}` of a `VTN` model.

    Torch Linear weights (out, in) become Dense kernels (in, out); embedding tables are copied.
    `head/*` is always returned (the loader drops it when `num_classes` differs or the model
    has no head); `head_norm/*` and `head_hidden/*` only when the model has them.
    """
    state = model_state(state)
    for key in IGNORED:
        state.pop(key, None)
    spatial = {k[len(BACKBONE) :]: v for k, v in state.items() if k.startswith(BACKBONE)}
    rest = {k: v for k, v in state.items() if not k.startswith(BACKBONE)}
    out = timm_vit_mapping(spatial, count_blocks(spatial, "blocks."))

    def take(key):
        return np.asarray(rest.pop(key))

    emb = ENCODER + "embeddings."
    out["temporal_cls_token/token"] = take("cls_token").reshape(-1)
    out["temporal_embedding/position_embeddings"] = take(emb + "position_embeddings.weight")
    out["temporal_embedding/token_type_embeddings"] = take(emb + "token_type_embeddings.weight")
    out["temporal_embedding_norm/gamma"] = take(emb + "LayerNorm.weight")
    out["temporal_embedding_norm/beta"] = take(emb + "LayerNorm.bias")
    for k in range(count_blocks(rest, ENCODER + "encoder.layer.")):
        src, dst = f"{ENCODER}encoder.layer.{k}.", f"temporal_block_{k}/"
        for proj in GLOBAL_PROJECTIONS:
            out[dst + f"attention/{proj}/kernel"] = take(src + f"attention.self.{proj}.weight").T
            out[dst + f"attention/{proj}/bias"] = take(src + f"attention.self.{proj}.bias")
        out[dst + "attention/output/kernel"] = take(src + "attention.output.dense.weight").T
        out[dst + "attention/output/bias"] = take(src + "attention.output.dense.bias")
        out[dst + "norm1/gamma"] = take(src + "attention.output.LayerNorm.weight")
        out[dst + "norm1/beta"] = take(src + "attention.output.LayerNorm.bias")
        out[dst + "mlp/fc1/kernel"] = take(src + "intermediate.dense.weight").T
        out[dst + "mlp/fc1/bias"] = take(src + "intermediate.dense.bias")
        out[dst + "mlp/fc2/kernel"] = take(src + "output.dense.weight").T
        out[dst + "mlp/fc2/bias"] = take(src + "output.dense.bias")
        out[dst + "norm2/gamma"] = take(src + "output.LayerNorm.weight")
        out[dst + "norm2/beta"] = take(src + "output.LayerNorm.bias")
    top = {
        "head_norm/gamma": take("mlp_head.0.weight"),
        "head_norm/beta": take("mlp_head.0.bias"),
        "head_hidden/kernel": take("mlp_head.1.weight").T,
        "head_hidden/bias": take("mlp_head.1.bias"),
    }
    out["head/kernel"] = take("mlp_head.4.weight").T
    out["head/bias"] = take("mlp_head.4.bias")
    check_no_leftovers(
        set(spatial) | set(rest),
        "VTN",
        "Only `temporal_encoder.embeddings.position_ids` is ignored; is this a bomri/SlowFast "
        "VTN (ViT-B + Longformer) checkpoint?",
    )
    paths = {v.path for v in model.weights}
    out.update({k: v for k, v in top.items() if k in paths})
    return out
