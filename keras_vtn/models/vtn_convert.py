"""bomri/SlowFast VTN checkpoints (`VTN_VIT_B_KINETICS.pyth`) → VTN.

A PySlowFast checkpoint is a dict `{epoch, model_state, optimizer_state, cfg}`; only
`model_state` holds the model (no `module.` prefix). It carries the Hugging Face Longformer
buffer `temporal_encoder.embeddings.position_ids` (persistent in transformers 4.3), which is
not a weight and is dropped. Everything else must map, or a CheckpointError names the
leftovers.
"""

from __future__ import annotations

import numpy as np

from keras_vtn.models.convert_utils import (
    CheckpointState,
    agree,
    as_state,
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

BACKBONE = "backbone."
ENCODER = "temporal_encoder."
# Documented ignorables: HF's position-id buffer (an arange, not a weight).
IGNORED = (ENCODER + "embeddings.position_ids",)
FAMILY = "bomri/SlowFast VTN"
GLOBAL_PROJECTIONS = ("query", "key", "value", "query_global", "key_global", "value_global")
# Variable path under `temporal_block_{k}/` -> HF Longformer name under `encoder.layer.{k}.`.
LONGFORMER_LAYER = {
    **{f"attention/{p}/{w}": f"attention.self.{p}.{t}" for p in GLOBAL_PROJECTIONS
       for w, t in (("kernel", "weight"), ("bias", "bias"))},
    "attention/output/kernel": "attention.output.dense.weight",
    "attention/output/bias": "attention.output.dense.bias",
    "norm1/gamma": "attention.output.LayerNorm.weight",
    "norm1/beta": "attention.output.LayerNorm.bias",
    "mlp/fc1/kernel": "intermediate.dense.weight",
    "mlp/fc1/bias": "intermediate.dense.bias",
    "mlp/fc2/kernel": "output.dense.weight",
    "mlp/fc2/bias": "output.dense.bias",
    "norm2/gamma": "output.LayerNorm.weight",
    "norm2/beta": "output.LayerNorm.bias",
}


def model_state(state: dict[str, np.ndarray]) -> CheckpointState:
    """The model tensors of a flattened PySlowFast checkpoint (or of a bare state dict)."""
    state = as_state(state, FAMILY)
    if any(k.startswith("model_state.") for k in state):
        return state.under("model_state.")
    return strip_prefix(state, "module.", FAMILY)


def config_from_checkpoint(state: dict[str, np.ndarray]) -> dict:
    """Architecture arguments that the tensor names and shapes determine.

    Head counts and `attention_window` are not recorded in the tensors. Every value is
    checked before it is returned (see `convert_utils`): a CheckpointError names the tensor
    that is missing, empty, inconsistent or out of bounds.
    """
    state = model_state(state)
    positions_key = ENCODER + "embeddings.position_embeddings.weight"
    if BACKBONE + "patch_embed.proj.weight" not in state or positions_key not in state:
        raise CheckpointError(
            "Not a bomri/SlowFast VTN checkpoint: expected `backbone.*` and "
            "`temporal_encoder.*` tensors (under `model_state`)."
        )
    check_nonempty(state.outside(IGNORED[0]))
    spatial = vit_config(state.under(BACKBONE))
    layer0 = ENCODER + "encoder.layer.0."
    mlp_key, query = layer0 + "intermediate.dense.weight", layer0 + "attention.self.query.weight"
    positions, positions_width = shape_of(state, positions_key, 2)
    temporal_mlp, mlp_in = shape_of(state, mlp_key, 2)
    head_hidden, head_hidden_in = shape_of(state, "mlp_head.1.weight", 2)
    num_classes, head_in = shape_of(state, "mlp_head.4.weight", 2)
    agree(
        "width",
        {
            BACKBONE + "patch_embed.proj.weight": spatial["hidden_dim"],
            "cls_token": shape_of(state, "cls_token", 3)[-1],
            positions_key: positions_width,
            query: shape_of(state, query, 2)[1],
            mlp_key: mlp_in,
            "mlp_head.1.weight": head_hidden_in,
        },
        state,
    )
    agree("head width", {"mlp_head.1.weight": head_hidden, "mlp_head.4.weight": head_in}, state)
    check_limits(
        state,
        longformer_positions=(positions, positions_key),
        mlp_width=(temporal_mlp, mlp_key),
        width=(head_hidden, "mlp_head.1.weight"),
        classes=(num_classes, "mlp_head.4.weight"),
    )
    config = dict(
        **frame_vit_config(spatial),
        num_temporal_layers=count_blocks(state, ENCODER + "encoder.layer."),
        temporal_mlp_dim=temporal_mlp,
        max_position_embeddings=positions,
        head_hidden_dim=head_hidden,
        num_classes=num_classes,
    )
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
    out, spatial, rest = frame_vit_conversion(state, BACKBONE)

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
        out.update(torch_names(take, LONGFORMER_LAYER, dst, src))
    top = torch_names(take, {"head_norm/gamma": "mlp_head.0.weight",
                             "head_norm/beta": "mlp_head.0.bias",
                             "head_hidden/kernel": "mlp_head.1.weight",
                             "head_hidden/bias": "mlp_head.1.bias"})
    out.update(
        torch_names(take, {"head/kernel": "mlp_head.4.weight", "head/bias": "mlp_head.4.bias"})
    )
    return finish_frame_conversion(
        out, top, model, (spatial, rest), "VTN",
        "Only `temporal_encoder.embeddings.position_ids` is ignored; is this a bomri/SlowFast "
        "VTN (ViT-B + Longformer) checkpoint?",
    )
