"""Per-frame Vision Transformer (timm / Google ViT layout), shared by every ViT-based family.

Frames stay on their own axis: tokens are (batch, frames, tokens, width) and every
attention layer of the package treats the leading axes as batch axes, so a plain
attention layer attends within each frame while a video-aware one (leap attention)
sees the whole clip.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np

from keras_vtn.layers import ClassToken, PatchEmbedding, PositionEmbedding, TransformerBlock
from keras_vtn.layers.transformer import layer_norm
from keras_vtn.layers.utils import check_tiling
from keras_vtn.models.convert_utils import (
    CheckpointState,
    agree,
    as_state,
    check_limits,
    check_no_leftovers,
    count_blocks,
    shape_of,
    tensor_name,
)
from keras_vtn.weights.errors import CheckpointError

VIT_SIZES: dict[str, dict] = {
    "base": dict(hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "large": dict(hidden_dim=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "huge": dict(hidden_dim=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}


def drop_path_rates(rate: float, num_layers: int) -> list[float]:
    """timm's linear stochastic-depth ramp: 0 for the first block, `rate` for the last."""
    return [float(r) for r in np.linspace(0.0, rate, num_layers)] if num_layers else []


def transformer_blocks(
    x,
    *,
    num_layers: int,
    num_heads: int,
    mlp_dim: int,
    qkv_bias: bool = True,
    norm_first: bool = True,
    layer_norm_epsilon: float = 1e-6,
    activation: str = "gelu",
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    drop_path_scale: bool = True,
    attention_factory: Callable[[int], keras.layers.Layer | None] | None = None,
    last_block_tokens: int | None = None,
    prefix: str = "",
):
    """`num_layers` blocks named `{prefix}block_{i}` with a linear drop-path ramp.

    Pre-LN by default; `norm_first=False` gives post-LN (BERT / Longformer) blocks.
    `attention_factory(i)` may return block i's attention layer; `None` keeps plain
    multi-head self-attention. `last_block_tokens=n`: the last block outputs only the first
    n tokens (its MLP skips the others; e.g. 1 when only the CLS output is used).
    """
    for i, rate in enumerate(drop_path_rates(drop_path_rate, num_layers)):
        x = TransformerBlock(
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            norm_first=norm_first,
            layer_norm_epsilon=layer_norm_epsilon,
            activation=activation,
            qkv_bias=qkv_bias,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=rate,
            drop_path_scale=drop_path_scale,
            attention=attention_factory(i) if attention_factory else None,
            output_tokens=last_block_tokens if i == num_layers - 1 else None,
            name=f"{prefix}block_{i}",
        )(x)
    return x


def vit_frame_tokens(
    frames,
    *,
    patch_size: int = 16,
    hidden_dim: int = 768,
    layer_norm_epsilon: float = 1e-6,
    dropout_rate: float = 0.0,
    prefix: str = "",
    **block_arguments,
):
    """Applies a ViT to every frame of `frames` (batch, T, H, W, 3).

    `block_arguments` go to `transformer_blocks` (`num_layers`, `num_heads`, `mlp_dim`
    required; `qkv_bias`, `activation`, `attention_dropout_rate`, `drop_path_rate`,
    `attention_factory`, `last_block_tokens`, ...), with this ViT's `layer_norm_epsilon`,
    `dropout_rate` and `prefix`.

    Returns the final-norm tokens (batch, T, 1 + N, hidden_dim); token 0 is each frame's CLS
    (only the first `last_block_tokens` tokens when given). `attention_factory(i)` may
    return the attention layer of block i (e.g. leap attention); `None` keeps plain per-frame
    self-attention. Layer names are `{prefix}patch_embedding`,
    `{prefix}cls_token`, `{prefix}position_embedding`, `{prefix}block_{i}`, `{prefix}norm`.
    """
    check_tiling(
        "image_size", frames.shape[-3:-1], (patch_size, patch_size), f"patch_size={patch_size}"
    )
    x = PatchEmbedding(hidden_dim, patch_size, name=f"{prefix}patch_embedding")(frames)
    x = ClassToken(name=f"{prefix}cls_token")(x)
    x = PositionEmbedding(name=f"{prefix}position_embedding")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name=f"{prefix}position_dropout")(x)
    x = transformer_blocks(
        x, layer_norm_epsilon=layer_norm_epsilon, dropout_rate=dropout_rate, prefix=prefix,
        **block_arguments,
    )
    return layer_norm(layer_norm_epsilon, f"{prefix}norm")(x)


def timm_vit_mapping(state: dict[str, np.ndarray], num_layers: int, prefix: str = "") -> dict:
    """Maps a timm `VisionTransformer` state dict (no outer prefix) to `vit_frame_tokens` paths.

    Fused `qkv` (3C, C) is split into query/key/value; torch Linear weights are transposed;
    the patch conv (D, 3, p, p) becomes (p, p, 3, D). Keys it does not consume are left in
    `state` (the caller decides whether they are ignorable, e.g. an unused `head`).
    """
    out = {}

    def take(key):
        return np.asarray(state.pop(key))

    out[f"{prefix}patch_embedding/kernel"] = take("patch_embed.proj.weight").transpose(2, 3, 1, 0)
    out[f"{prefix}patch_embedding/bias"] = take("patch_embed.proj.bias")
    out[f"{prefix}cls_token/token"] = take("cls_token").reshape(-1)
    out[f"{prefix}position_embedding/embeddings"] = take("pos_embed")[0]
    for i in range(num_layers):
        src, dst = f"blocks.{i}.", f"{prefix}block_{i}/"
        out[dst + "norm1/gamma"] = take(src + "norm1.weight")
        out[dst + "norm1/beta"] = take(src + "norm1.bias")
        out[dst + "norm2/gamma"] = take(src + "norm2.weight")
        out[dst + "norm2/beta"] = take(src + "norm2.bias")
        qkv = take(src + "attn.qkv.weight")
        for name, w in zip(("query", "key", "value"), np.split(qkv, 3, axis=0), strict=False):
            out[dst + f"attention/{name}/kernel"] = w.T
        if src + "attn.qkv.bias" in state:
            qkv_bias = take(src + "attn.qkv.bias")
            for name, b in zip(("query", "key", "value"), np.split(qkv_bias, 3), strict=False):
                out[dst + f"attention/{name}/bias"] = b
        out[dst + "attention/output/kernel"] = take(src + "attn.proj.weight").T
        out[dst + "attention/output/bias"] = take(src + "attn.proj.bias")
        for fc in ("fc1", "fc2"):
            out[dst + f"mlp/{fc}/kernel"] = take(src + f"mlp.{fc}.weight").T
            out[dst + f"mlp/{fc}/bias"] = take(src + f"mlp.{fc}.bias")
    out[f"{prefix}norm/gamma"] = take("norm.weight")
    out[f"{prefix}norm/beta"] = take("norm.bias")
    return out


# Google's released ViT `.npz` files use pre-Linen module names; Linen (big_vision, scenic)
# checkpoints renumber them.
PRE_LINEN_TO_LINEN = {
    "LayerNorm_2": "LayerNorm_1",
    "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
    "MlpBlock_3": "MlpBlock_0",
}


def google_vit_names(state, scheme: str, family: str = "Google ViT") -> CheckpointState:
    """A Google ViT checkpoint's '/'-joined names in `scheme` (`"linen"` or `"pre_linen"`),
    whichever scheme the file uses; errors still name tensors as the file spells them.

    >>> sorted(google_vit_names({"b/MlpBlock_3/w": 1}, "linen"))
    ['b/MlpBlock_0/w']
    """
    state = as_state(state, family)
    renames = PRE_LINEN_TO_LINEN
    if scheme == "pre_linen":
        renames = {linen: pre for pre, linen in PRE_LINEN_TO_LINEN.items()}
    if not any(part in renames for key in state for part in key.split("/")):
        return state
    back = {new: old for old, new in renames.items()}

    def rename(key: str, table: dict) -> str:
        return "/".join(table.get(part, part) for part in key.split("/"))

    return CheckpointState(
        {rename(k, renames): v for k, v in state.items()},
        state.family,
        lambda key: state.display(rename(key, back)),
    )


def google_vit_mapping(state: dict[str, np.ndarray], num_layers: int, prefix: str = "") -> dict:
    """Maps a Google ViT checkpoint (`ViT-B_16.npz` names, '/'-joined) to `vit_frame_tokens`.

    Flax kernels are already (in, out); per-head query/key/value kernels (D, H, d) and the
    output kernel (H, d, D) are flattened to (D, H·d) and (H·d, D). Keys it does not consume
    (`head/*`, the in21k `pre_logits/*`) are left in `state` for the caller.
    """
    out = {}

    def take(key):
        return np.asarray(state.pop(key))

    width = state["embedding/kernel"].shape[-1]
    out[f"{prefix}patch_embedding/kernel"] = take("embedding/kernel")
    out[f"{prefix}patch_embedding/bias"] = take("embedding/bias")
    out[f"{prefix}cls_token/token"] = take("cls").reshape(-1)
    out[f"{prefix}position_embedding/embeddings"] = take(
        "Transformer/posembed_input/pos_embedding"
    )[0]
    for i in range(num_layers):
        src, dst = f"Transformer/encoderblock_{i}/", f"{prefix}block_{i}/"
        for norm, name in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[dst + f"{name}/gamma"] = take(src + f"{norm}/scale")
            out[dst + f"{name}/beta"] = take(src + f"{norm}/bias")
        attention = src + "MultiHeadDotProductAttention_1/"
        for name in ("query", "key", "value"):
            out[dst + f"attention/{name}/kernel"] = take(attention + f"{name}/kernel").reshape(
                width, -1
            )
            out[dst + f"attention/{name}/bias"] = take(attention + f"{name}/bias").reshape(-1)
        out[dst + "attention/output/kernel"] = take(attention + "out/kernel").reshape(-1, width)
        out[dst + "attention/output/bias"] = take(attention + "out/bias")
        for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[dst + f"mlp/{fc}/kernel"] = take(src + f"MlpBlock_3/{dense}/kernel")
            out[dst + f"mlp/{fc}/bias"] = take(src + f"MlpBlock_3/{dense}/bias")
    out[f"{prefix}norm/gamma"] = take("Transformer/encoder_norm/scale")
    out[f"{prefix}norm/beta"] = take("Transformer/encoder_norm/bias")
    return out


def square_patch(state, key: str, height: int, width: int) -> int:
    if height != width:
        raise CheckpointError(
            f"Tensor {tensor_name(state, key)!r} has {height}x{width} patches; these models use "
            "square patches."
        )
    return height


def _image_size(tokens: int, patch: int) -> dict:
    """`image_size` when a position table of `tokens` rows (CLS included) is a square grid."""
    side = math.isqrt(tokens - 1)
    return {"image_size": side * patch} if side * side == tokens - 1 else {}


def _checked_config(state, config: dict, readings: dict, blocks: str,
                    **quantities: tuple[int, str]) -> dict:
    """Completes an image ViT's `config` once the width `readings` agree and every
    `quantity=(value, tensor)` is within limits (`blocks`: the block names' prefix)."""
    agree("width", readings, state)
    check_limits(state, **quantities)
    patch, tokens = quantities["patch"][0], quantities["frame_positions"][0]
    config.update(patch_size=patch, hidden_dim=quantities["width"][0])
    if "heads" in quantities:
        config["num_heads"] = quantities["heads"][0]
    config.update(num_layers=count_blocks(state, blocks), mlp_dim=quantities["mlp_width"][0],
                  **_image_size(tokens, patch))
    return config


def vit_config(state) -> dict:
    """The checked architecture of a timm ViT state dict (no outer prefix).

    Keys: patch_size, hidden_dim, num_layers, mlp_dim, qkv_bias, image_size (square
    position grids only) and num_classes (with a `head`). The width must agree across the
    tensors it is read from, and every value must be within `convert_utils` limits.
    """
    patch_key, qkv = "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"
    fc1 = "blocks.0.mlp.fc1.weight"
    hidden, _, height, width = shape_of(state, patch_key, 4)
    patch = square_patch(state, patch_key, height, width)
    _, tokens, pos_width = shape_of(state, "pos_embed", 3)
    mlp, fc1_in = shape_of(state, fc1, 2)
    qkv_out, qkv_in = shape_of(state, qkv, 2)
    readings = {
        patch_key: hidden,
        "pos_embed": pos_width,
        "cls_token": shape_of(state, "cls_token", 3)[-1],
        qkv: qkv_in,
        f"{qkv} (rows / 3)": qkv_out / 3,
        fc1: fc1_in,
        "norm.weight": shape_of(state, "norm.weight", 1)[0],
    }
    config = {}
    if "head.weight" in state:
        config["num_classes"], readings["head.weight"] = shape_of(state, "head.weight", 2)
        check_limits(state, classes=(config["num_classes"], "head.weight"))
    config["qkv_bias"] = "blocks.0.attn.qkv.bias" in state
    return _checked_config(
        state, config, readings, "blocks.",
        width=(hidden, patch_key),
        patch=(patch, patch_key),
        frame_positions=(tokens, "pos_embed"),
        mlp_width=(mlp, fc1),
    )


def fit_square_position_tables(mapping: dict, model, num_prefix_tokens: int) -> dict:
    """Resizes (bilinearly) each image position table in `mapping` (`.../embeddings`: prefix
    rows + a square grid) whose grid differs from `model`'s, so a checkpoint made at another
    image size loads; tables of another shape are left to the loader's shape check."""
    shapes = {v.path: tuple(v.shape) for v in model.weights}
    for path, table in list(mapping.items()):
        target = shapes.get(path)
        if not path.endswith("embeddings") or target is None or target == np.shape(table):
            continue
        source_side = math.isqrt(table.shape[0] - num_prefix_tokens)
        target_side = math.isqrt(target[0] - num_prefix_tokens)
        if (source_side**2 + num_prefix_tokens != table.shape[0]
                or target_side**2 + num_prefix_tokens != target[0]):
            continue
        mapping[path] = PositionEmbedding.resize(
            table, (source_side,) * 2, (target_side,) * 2, num_prefix_tokens
        )
    return mapping


def frame_vit_config(spatial: dict) -> dict:
    """`vit_config` of a per-frame ViT as the LinearVTN / VTN builder arguments."""
    config = dict(
        patch_size=spatial["patch_size"],
        hidden_dim=spatial["hidden_dim"],
        num_spatial_layers=spatial["num_layers"],
        spatial_mlp_dim=spatial["mlp_dim"],
        spatial_qkv_bias=spatial["qkv_bias"],
    )
    if "image_size" in spatial:
        config["image_size"] = spatial["image_size"]
    return config


def flax_attention_shape(state, attention: str) -> tuple[int, int, int]:
    """(width, heads, head_dim) of a Flax attention module, which its query, key, value
    (D, H, d) and output (H, d, D) kernels must agree on."""
    query = f"{attention}/query/kernel"
    shapes = {query: shape_of(state, query, 3)}
    for name in ("key", "value"):
        shapes[f"{attention}/{name}/kernel"] = shape_of(state, f"{attention}/{name}/kernel", 3)
    heads, head_dim, width = shape_of(state, f"{attention}/out/kernel", 3)
    shapes[f"{attention}/out/kernel"] = (width, heads, head_dim)
    return agree("attention layout (width, heads, head_dim)", shapes, state)


def google_vit_config(state, attention: str = "MultiHeadDotProductAttention_1",
                      mlp: str = "MlpBlock_3") -> dict:
    """The checked architecture of a Google (Flax) ViT image checkpoint ('/'-joined names).

    Keys: patch_size, hidden_dim, num_heads, num_layers, mlp_dim, image_size (square grids)
    and num_classes (with a `head`). `attention`/`mlp` name the block modules (pre-Linen
    `_1`/`_3` in the released `.npz` files, `_0` once renamed to Linen names).
    """
    block = "Transformer/encoderblock_0/"
    query, dense0 = f"{block}{attention}/query/kernel", f"{block}{mlp}/Dense_0/kernel"
    height, width, _, hidden = shape_of(state, "embedding/kernel", 4)
    patch = square_patch(state, "embedding/kernel", height, width)
    query_in, heads, head_dim = flax_attention_shape(state, f"{block}{attention}")
    mlp_in, mlp_width = shape_of(state, dense0, 2)
    _, tokens, pos_width = shape_of(state, "Transformer/posembed_input/pos_embedding", 3)
    readings = {
        "embedding/kernel": hidden,
        "Transformer/posembed_input/pos_embedding": pos_width,
        query: query_in,
        f"{query} (heads × head_dim)": heads * head_dim,
        dense0: mlp_in,
    }
    config = {}
    if "head/kernel" in state:
        head_in, config["num_classes"] = shape_of(state, "head/kernel", 2)
        if "pre_logits/kernel" not in state:  # else the head reads the representation layer
            readings["head/kernel"] = head_in
        check_limits(state, classes=(config["num_classes"], "head/kernel"))
    return _checked_config(
        state, config, readings, "Transformer/encoderblock_",
        width=(hidden, "embedding/kernel"),
        patch=(patch, "embedding/kernel"),
        heads=(heads, query),
        frame_positions=(tokens, "Transformer/posembed_input/pos_embedding"),
        mlp_width=(mlp_width, dense0),
    )


def frame_vit_conversion(state: CheckpointState, prefix: str):
    """`(mapping, spatial, rest)` of a frame → temporal checkpoint: the per-frame timm ViT
    under `prefix` mapped (what it does not consume stays in `spatial`), and the other
    tensors (`rest`), for the family's own names."""
    spatial, rest = state.under(prefix), state.outside(prefix)
    return timm_vit_mapping(spatial, count_blocks(spatial, "blocks.")), spatial, rest


def finish_frame_conversion(
    mapping: dict, optional: dict, model, leftovers, checkpoint: str, hint: str
) -> dict:
    """Ends a frame → temporal conversion: no tensor left unmapped (`leftovers`: the states
    the names were popped from), the `optional` head parts taken only where `model` has
    them, and the ViT's position table (CLS row + grid) fitted to the model's image size."""
    check_no_leftovers(set().union(*leftovers), checkpoint, hint)
    paths = {v.path for v in model.weights}
    mapping.update({k: v for k, v in optional.items() if k in paths})
    return fit_square_position_tables(mapping, model, 1)
