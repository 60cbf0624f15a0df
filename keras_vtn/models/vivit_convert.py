"""ViViT checkpoint conversion: scenic Flax trees, Hugging Face folders, Google ViT images.

A converter is a name map. Inputs are flat `{name: array}` dicts (Flax trees '/'-joined,
torch names '.'-joined), outputs are `{variable.path: array}` for `keras_vtn.ViViT`.

- scenic (all four variants): weights under `optimizer/target/` (2021 TrainState) or
  `params/` (newer TrainState); everything else in the TrainState (optimizer state, rng,
  step, `model_state`, which is empty for ViViT) is ignored.
- Hugging Face `VivitForVideoClassification` (Model 1), legacy hub names
  (`vivit.encoder.layer.{i}.attention.attention.query`) or transformers 5.x names
  (`vivit.layers.{i}.attention.q_proj`). `vivit.pooler.*` (VivitModel only, no scenic
  counterpart) is ignored.
- Google ViT image checkpoints (`.npz`, pre-Linen names `MultiHeadDotProductAttention_1`,
  `LayerNorm_2`, `MlpBlock_3`, or Linen names) for `weights="imagenet21k"`.
"""

from __future__ import annotations

import math
import re

import numpy as np

from keras_vtn.layers import PositionEmbedding, TubeletEmbedding
from keras_vtn.layers.utils import to_tuple
from keras_vtn.models.convert_utils import (
    CheckpointState,
    agree,
    as_state,
    check_limit,
    check_limits,
    check_no_leftovers,
    check_nonempty,
    count_blocks,
    shape_of,
    tensor_name,
)
from keras_vtn.models.pipeline import model_config
from keras_vtn.models.vit import (
    flax_attention_shape,
    google_vit_config,
    google_vit_names,
    square_patch,
)
from keras_vtn.weights.errors import CheckpointError

_SCENIC_BLOCK = {
    "LayerNorm_0": "norm1",
    "LayerNorm_1": "norm2",
    "MultiHeadDotProductAttention_0": "attention",
    "MlpBlock_0": "mlp",
}
_SCENIC_FSA_BLOCK = {
    "LayerNorm_space": "spatial_norm",
    "MultiHeadDotProductAttention_space": "spatial_attention",
    "LayerNorm_time": "temporal_norm",
    "MultiHeadDotProductAttention_time": "temporal_attention",
    "LayerNorm_mlp": "mlp_norm",
    "MlpBlock": "mlp",
}
_SCENIC_IGNORED_TOP = ("global_step", "rng", "accum_train_time", "metadata", "opt_state")
FAMILY = "ViViT (scenic, Hugging Face) or Google ViT"
# Legacy names back to transformers 5.x names (errors name tensors as the file spells them).
_HF_LEGACY_TO_V5 = [
    (r"^encoder\.layer\.", "layers."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"(?<!attention)\.output\.dense\.", ".mlp.fc2."),
]
_HF_V5_TO_LEGACY = [
    (r"^layers\.", "encoder.layer."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
]


# --- format detection and prefixes ------------------------------------------------------------


def _is_hf(state) -> bool:
    return (
        any(k.startswith(("vivit.", "embeddings.")) for k in state) or "classifier.weight" in state
    )


def _scenic_params(state: dict[str, np.ndarray]) -> CheckpointState:
    """The parameter subtree of a scenic TrainState (or of a bare parameter dict)."""
    state = as_state(state, FAMILY)
    for prefix in ("optimizer/target/", "params/", "opt/target/", ""):
        params = state.under(prefix)
        if "embedding/kernel" in params:
            break
    else:
        raise CheckpointError(
            "Not a ViViT/ViT Flax checkpoint: no `embedding/kernel` at the top level, under "
            "`optimizer/target/` or under `params/`. Found e.g. "
            f"{sorted(state)[:5]}."
        )
    if prefix:
        extra = sorted(
            k
            for k in state
            if not k.startswith(prefix)
            and not k.startswith(("optimizer/state/", "opt/state/", "model_state/"))
            and k.split("/")[0] not in _SCENIC_IGNORED_TOP
        )
        if extra:
            raise CheckpointError(f"Unexpected entries next to the weights: {extra[:8]}")
    return params


def _hf_params(state: dict[str, np.ndarray]) -> CheckpointState:
    """HF names without the `vivit.` prefix, transformers 5.x names mapped to legacy names."""
    out = {}
    for key, value in state.items():
        if key.startswith("vivit.pooler.") or key.startswith("pooler."):
            continue  # VivitModel's pooler: no scenic counterpart, unused by the classifier
        name = key[len("vivit.") :] if key.startswith("vivit.") else key
        for pattern, repl in _HF_V5_TO_LEGACY:
            name = re.sub(pattern, repl, name)
        out[name] = value
    prefixed = any(k.startswith("vivit.") for k in state)
    v5 = any(k.startswith(("vivit.layers.", "layers.")) for k in state)

    def display(name: str) -> str:
        if v5:
            for pattern, repl in _HF_LEGACY_TO_V5:
                name = re.sub(pattern, repl, name)
        return f"vivit.{name}" if prefixed and not name.startswith("classifier.") else name

    return CheckpointState(out, FAMILY, display)


# --- architecture from the tensors ------------------------------------------------------------


def config_from_checkpoint(state: dict[str, np.ndarray], hf_config: dict | None = None) -> dict:
    """Architecture arguments of `keras_vtn.ViViT` readable from a checkpoint.

    Keys: variant (absent when the file cannot tell Model 1-GAP from Model 4), tubelet_size,
    hidden_dim, num_heads (Flax trees; HF only with its config.json), mlp_dim, num_layers or
    num_spatial_layers / num_temporal_layers, classifier, num_classes (when a head is present),
    layer_norm_epsilon (HF config only). Model 3's attention order is not recorded in files.
    """
    if _is_hf(state):
        return _hf_config_from_state(_hf_params(state), hf_config)
    p = _scenic_params(state)
    if len(np.shape(p["embedding/kernel"])) != 5:
        raise CheckpointError(
            f"`embedding/kernel` has shape {np.shape(p['embedding/kernel'])}: an image ViT, not "
            "a ViViT checkpoint. Use weights='imagenet21k'-style initialisation "
            "(convert_vit_image) for image models."
        )
    if "pre_logits/kernel" in p:
        raise CheckpointError(
            "This checkpoint has a `pre_logits` layer (representation_size set); no released "
            "ViViT has one and keras_vtn.ViViT does not build it."
        )
    check_nonempty(p)
    t, h, w, _, dim = shape_of(p, "embedding/kernel", 5)
    check_limits(
        p,
        tubelet_frames=(t, "embedding/kernel"),
        patch=(square_patch(p, "embedding/kernel", h, w), "embedding/kernel"),
        width=(dim, "embedding/kernel"),
    )
    config = {"tubelet_size": (t, h, w), "hidden_dim": int(dim)}
    widths = {"embedding/kernel": dim}
    if "output_projection/kernel" in p:
        widths["output_projection/kernel"], classes = shape_of(p, "output_projection/kernel", 2)
        config["num_classes"] = check_limit("classes", classes, "output_projection/kernel", p)
    if "SpatialTransformer/encoder_norm/scale" in p:
        config["variant"] = "factorised_encoder"
        config["classifier"] = "token" if "cls_SpatialTransformer" in p else "gap"
        spatial_cls, temporal_cls = "cls_SpatialTransformer", "cls_TemporalTransformer"
        if (spatial_cls in p) != (temporal_cls in p):  # a token classifier has both CLS
            raise p.missing(temporal_cls if spatial_cls in p else spatial_cls)
        enc = "SpatialTransformer/encoderblock_0/"
        config["num_spatial_layers"] = count_blocks(p, "SpatialTransformer/encoderblock_")
        config["num_temporal_layers"] = count_blocks(p, "TemporalTransformer/encoderblock_")
        t_enc = "TemporalTransformer/encoderblock_0/"
        for key in ("MultiHeadDotProductAttention_0/query/kernel", "MlpBlock_0/Dense_0/kernel"):
            if t_enc + key in p and p[t_enc + key].shape != p[enc + key].shape:
                raise CheckpointError(
                    "The temporal encoder's heads or MLP width differ from the spatial one's "
                    f"({p[t_enc + key].shape} vs {p[enc + key].shape}); keras_vtn.ViViT uses one "
                    "num_heads and mlp_dim for both (as every released config does)."
                )
        query, mlp = enc + "MultiHeadDotProductAttention_0/query/kernel", enc + "MlpBlock_0"
        tables = {
            "SpatialTransformer/posembed_input/pos_embedding": "frame_positions",
            "TemporalTransformer/posembed_input/pos_embedding": "temporal_tokens",
        }
    else:
        config["num_layers"] = count_blocks(p, "Transformer/encoderblock_")
        enc = "Transformer/encoderblock_0/"
        if enc + "MultiHeadDotProductAttention_space/query/kernel" in p:
            config["variant"] = "factorised_self_attention"
            query, mlp = enc + "MultiHeadDotProductAttention_space/query/kernel", enc + "MlpBlock"
        else:
            query, mlp = enc + "MultiHeadDotProductAttention_0/query/kernel", enc + "MlpBlock_0"
            if "cls" in p:
                config["variant"] = "spatio_temporal"
        config["classifier"] = "token" if "cls" in p else "gap"
        tables = {"Transformer/posembed_input/pos_embedding": "video_positions"}
    for table, quantity in tables.items():
        _, rows, widths[table] = shape_of(p, table, 3)
        check_limit(quantity, rows, table, p)
    for cls in ("cls", "cls_SpatialTransformer", "cls_TemporalTransformer"):
        if cls in p:
            widths[cls] = shape_of(p, cls, 3)[-1]
    widths[query], heads, head_dim = flax_attention_shape(p, query[: -len("/query/kernel")])
    widths[f"{query} (heads × head_dim)"] = heads * head_dim
    mlp = mlp + "/Dense_0/kernel"
    widths[mlp], mlp_dim = shape_of(p, mlp, 2)
    agree("width", widths, p)
    config["num_heads"] = check_limit("heads", heads, query, p)
    config["mlp_dim"] = check_limit("mlp_width", mlp_dim, mlp, p)
    return config


def _hf_config_from_state(p, hf_config):
    check_nonempty(p)
    projection = "embeddings.patch_embeddings.projection.weight"
    dim, _, t, h, w = shape_of(p, projection, 5)  # (D, C, t, h, w)
    positions = "embeddings.position_embeddings"
    mlp = "encoder.layer.0.intermediate.dense.weight"
    query = "encoder.layer.0.attention.attention.query.weight"
    _, rows, positions_width = shape_of(p, positions, 3)
    mlp_dim, mlp_in = shape_of(p, mlp, 2)
    widths = {
        projection: dim,
        positions: positions_width,
        "embeddings.cls_token": shape_of(p, "embeddings.cls_token", 3)[-1],
        query: shape_of(p, query, 2)[1],
        mlp: mlp_in,
    }
    config = {
        "variant": "spatio_temporal",
        "classifier": "token",
        "tubelet_size": (t, h, w),
        "hidden_dim": dim,
        "num_layers": count_blocks(p, "encoder.layer."),
        "mlp_dim": mlp_dim,
    }
    if "classifier.weight" in p:
        config["num_classes"], widths["classifier.weight"] = shape_of(p, "classifier.weight", 2)
        check_limit("classes", config["num_classes"], "classifier.weight", p)
    agree("width", widths, p)
    check_limits(
        p,
        tubelet_frames=(t, projection),
        patch=(square_patch(p, projection, h, w), projection),
        width=(dim, projection),
        video_positions=(rows, positions),
        mlp_width=(mlp_dim, mlp),
    )
    if hf_config:
        act = hf_config.get("hidden_act", "gelu_fast")
        if act not in ("gelu_fast", "gelu_new", "gelu_pytorch_tanh"):
            raise CheckpointError(
                f"HF config hidden_act={act!r}: keras_vtn.ViViT uses the tanh GELU of the "
                "original (gelu_fast); this checkpoint would not reproduce its logits."
            )
        if not hf_config.get("qkv_bias", True):
            raise CheckpointError("HF config qkv_bias=False is not supported (ViViT uses biases).")
        heads = check_limit("heads", int(hf_config["num_attention_heads"]), "config.json")
        if config["hidden_dim"] % heads:
            raise CheckpointError(
                f"config.json: num_attention_heads={heads} does not divide the width "
                f"{config['hidden_dim']} of {tensor_name(p, projection)!r}."
            )
        config["num_heads"] = heads
        if "layer_norm_eps" in hf_config:
            config["layer_norm_epsilon"] = float(hf_config["layer_norm_eps"])
    return config


# --- conversion -------------------------------------------------------------------------------


def _dense(out, dst, kernel, bias):
    out[dst + "/kernel"] = kernel
    out[dst + "/bias"] = bias


def _flax_attention(out, dst, p, src):
    """Flax (D, H, d) / (H, d, D) DenseGeneral kernels -> Dense (D, H·d) / (H·d, D)."""
    for name in ("query", "key", "value"):
        k = p.pop(f"{src}/{name}/kernel")
        _dense(
            out, f"{dst}/{name}", k.reshape(k.shape[0], -1), p.pop(f"{src}/{name}/bias").reshape(-1)
        )
    k = p.pop(f"{src}/out/kernel")
    _dense(out, f"{dst}/output", k.reshape(-1, k.shape[-1]), p.pop(f"{src}/out/bias"))


def _flax_norm(out, dst, p, src):
    out[dst + "/gamma"] = p.pop(src + "/scale")
    out[dst + "/beta"] = p.pop(src + "/bias")


def _flax_block(out, dst, p, src, names):
    for flax_name, keras_name in names.items():
        s, d = f"{src}/{flax_name}", f"{dst}/{keras_name}"
        if flax_name.startswith("LayerNorm"):
            _flax_norm(out, d, p, s)
        elif flax_name.startswith("MultiHead"):
            _flax_attention(out, d, p, s)
        else:
            for i, fc in enumerate(("fc1", "fc2")):
                _dense(
                    out, f"{d}/{fc}", p.pop(f"{s}/Dense_{i}/kernel"), p.pop(f"{s}/Dense_{i}/bias")
                )


def _flax_encoder(out, p, src, dst_prefix, num_layers, names, cls_key=None):
    """One scenic `Encoder` (posemb, blocks, encoder_norm) plus its CLS token."""
    if cls_key is not None and cls_key in p:
        out[f"{dst_prefix}cls_token/token"] = p.pop(cls_key).reshape(-1)
    out[f"{dst_prefix}position_embedding/embeddings"] = p.pop(
        f"{src}/posembed_input/pos_embedding"
    )[0]
    for i in range(num_layers):
        _flax_block(out, f"{dst_prefix}block_{i}", p, f"{src}/encoderblock_{i}", names)
    _flax_norm(out, f"{dst_prefix}norm", p, f"{src}/encoder_norm")


def _convert_scenic(state) -> dict[str, np.ndarray]:
    config = config_from_checkpoint(state)
    p = _scenic_params(state)
    out = {}
    _dense(out, "tubelet_embedding", p.pop("embedding/kernel"), p.pop("embedding/bias"))
    variant = config.get("variant")
    if variant == "factorised_encoder":
        _flax_encoder(
            out,
            p,
            "SpatialTransformer",
            "spatial_",
            config["num_spatial_layers"],
            _SCENIC_BLOCK,
            "cls_SpatialTransformer",
        )
        _flax_encoder(
            out,
            p,
            "TemporalTransformer",
            "temporal_",
            config["num_temporal_layers"],
            _SCENIC_BLOCK,
            "cls_TemporalTransformer",
        )
    else:
        names = _SCENIC_FSA_BLOCK if variant == "factorised_self_attention" else _SCENIC_BLOCK
        _flax_encoder(out, p, "Transformer", "", config["num_layers"], names, "cls")
    if "output_projection/kernel" in p:
        _dense(out, "head", p.pop("output_projection/kernel"), p.pop("output_projection/bias"))
    check_no_leftovers(p, FAMILY, noun="ViViT checkpoint entries")
    return out


def _convert_hf(state) -> dict[str, np.ndarray]:
    p = _hf_params(state)
    config = _hf_config_from_state(p, None)
    out = {}

    def linear(dst, src):
        _dense(out, dst, p.pop(src + ".weight").T, p.pop(src + ".bias"))

    def norm(dst, src):
        out[dst + "/gamma"] = p.pop(src + ".weight")
        out[dst + "/beta"] = p.pop(src + ".bias")

    w = p.pop("embeddings.patch_embeddings.projection.weight")  # (D, C, t, h, w)
    _dense(
        out,
        "tubelet_embedding",
        w.transpose(2, 3, 4, 1, 0),
        p.pop("embeddings.patch_embeddings.projection.bias"),
    )
    out["cls_token/token"] = p.pop("embeddings.cls_token").reshape(-1)
    out["position_embedding/embeddings"] = p.pop("embeddings.position_embeddings")[0]
    for i in range(config["num_layers"]):
        src, dst = f"encoder.layer.{i}.", f"block_{i}/"
        norm(dst + "norm1", src + "layernorm_before")
        for name in ("query", "key", "value"):
            linear(dst + f"attention/{name}", src + f"attention.attention.{name}")
        linear(dst + "attention/output", src + "attention.output.dense")
        norm(dst + "norm2", src + "layernorm_after")
        linear(dst + "mlp/fc1", src + "intermediate.dense")
        linear(dst + "mlp/fc2", src + "output.dense")
    norm("norm", "layernorm")
    if "classifier.weight" in p:
        linear("head", "classifier")
    check_no_leftovers(p, FAMILY, noun="Hugging Face ViViT entries")
    return out


def _model_grid(config: dict) -> tuple[int, int, int]:
    """The (time, height, width) token grid of the model a merged ViViT config builds."""
    t, h, w = config["tubelet_size"]
    height, width = to_tuple(config["image_size"], 2, "image_size")
    return config["num_frames"] // t, height // h, width // w


def _infer_source_grid(num_tokens: int, target: tuple[int, int, int]) -> tuple[int, int, int]:
    """(t, s, s) with t·s² = num_tokens, preferring the model's t or s (one axis changed)."""
    candidates = [
        (num_tokens // (s * s), s, s)
        for s in range(1, math.isqrt(num_tokens) + 1)
        if num_tokens % (s * s) == 0
    ]
    for pick in (
        [c for c in candidates if c[0] == target[0]],
        [c for c in candidates if c[1] == target[1] and c[2] == target[2]],
        [c for c in candidates if c == (16, 14, 14)],  # scenic's 32 frames at 224 px, /16x2
    ):
        if len(pick) == 1:
            return pick[0]
    raise ValueError(
        f"Cannot tell the token grid of a {num_tokens}-token position table (candidates "
        f"(t, h, w): {candidates}). Pass source_grid=(t, h, w) of the checkpoint's clip."
    )


def _resize_positions(out, model, source_grid=None):
    """Resizes position tables to the model's clip size (time linear, space bilinear)."""
    variables = {v.path: tuple(v.shape) for v in model.weights}
    target = _model_grid(model_config(model))
    for path, table in list(out.items()):
        if not path.endswith("position_embedding/embeddings") or path not in variables:
            continue
        if variables[path] == table.shape:
            continue
        prefix = int(path.replace("position_embedding/embeddings", "cls_token/token") in out)
        n = table.shape[0] - prefix
        if path.startswith("temporal_"):
            src, dst = (n,), (target[0],)
        elif path.startswith("spatial_"):
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"{path}: {n} spatial tokens are not a square grid.")
            src, dst = (side, side), target[1:]
        else:
            src = tuple(source_grid) if source_grid else _infer_source_grid(n, target)
            dst = target
        out[path] = PositionEmbedding.resize(table, src, dst, num_prefix_tokens=prefix)


def convert_vivit(state: dict[str, np.ndarray], model, source_grid=None) -> dict[str, np.ndarray]:
    """Maps a scenic Flax or HF ViViT checkpoint to `{variable.path: array}` for `model`.

    Position tables are resized when the model's clip size differs from the checkpoint's.
    An image ViT checkpoint gives scenic's partial initialisation (`convert_vit_image`).
    """
    if is_image_vit(state):
        return convert_vit_image(state, model)
    out = _convert_hf(state) if _is_hf(state) else _convert_scenic(state)
    out = {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
    _resize_positions(out, model, source_grid)
    return out


def convert_vit_image(state: dict[str, np.ndarray], model) -> dict[str, np.ndarray]:
    """Scenic's initialisation of a ViViT from a Google ViT image checkpoint (partial map).

    Tubelet kernel from the image kernel by the central-frame rule; image position table
    tiled over time (CLS slot kept only when the model has a CLS); Model 2: the ViT fills
    the spatial encoder (its CLS table slot included, the CLS tokens themselves stay zero)
    and the temporal encoder stays random; Model 3: the ViT attention fills both the spatial
    and the temporal attention, LayerNorm_0 the spatial norm (the temporal norm keeps its
    init). The image head and `pre_logits` are not used.
    """
    p = _vit_params(state)
    config = model_config(model)
    variant, model_cls = config["variant"], config["classifier"] == "token"
    num_blocks = config["num_spatial_layers" if variant == "factorised_encoder" else "num_layers"]
    kernel = p.pop("embedding/kernel")
    if kernel.ndim != 4:
        raise ValueError(f"Expected an image patch kernel (h, w, C, D), got {kernel.shape}.")
    t, h, w = config["tubelet_size"]
    if kernel.shape[:2] != (h, w):
        raise ValueError(
            f"The image patches are {kernel.shape[:2]} but the model's tubelets are {(t, h, w)}; "
            f"build with tubelet_size=(t, {kernel.shape[0]}, {kernel.shape[1]})."
        )
    out = {
        "tubelet_embedding/kernel": TubeletEmbedding.kernel_from_image(kernel, t, "central_frame"),
        "tubelet_embedding/bias": p.pop("embedding/bias"),
    }
    num_layers = count_blocks(p, "Transformer/encoderblock_")
    prefix = "spatial_" if variant == "factorised_encoder" else ""
    expected = num_blocks
    if num_layers != expected:
        raise ValueError(
            f"The image ViT has {num_layers} blocks but the model's "
            f"{'spatial ' if prefix else ''}encoder has {expected}; build the same size."
        )
    names = dict(_SCENIC_BLOCK)
    for i in range(num_layers):
        src, dst = f"Transformer/encoderblock_{i}", f"{prefix}block_{i}"
        if variant == "factorised_self_attention":
            _flax_norm(out, f"{dst}/spatial_norm", p, f"{src}/LayerNorm_0")
            _flax_norm(out, f"{dst}/mlp_norm", p, f"{src}/LayerNorm_1")
            attn = {
                k: v for k, v in p.items() if k.startswith(f"{src}/MultiHeadDotProductAttention_0/")
            }
            _flax_attention(
                out, f"{dst}/spatial_attention", dict(attn), f"{src}/MultiHeadDotProductAttention_0"
            )
            _flax_attention(
                out, f"{dst}/temporal_attention", p, f"{src}/MultiHeadDotProductAttention_0"
            )
            for j, fc in enumerate(("fc1", "fc2")):
                _dense(
                    out,
                    f"{dst}/mlp/{fc}",
                    p.pop(f"{src}/MlpBlock_0/Dense_{j}/kernel"),
                    p.pop(f"{src}/MlpBlock_0/Dense_{j}/bias"),
                )
        else:
            _flax_block(out, dst, p, src, names)
    _flax_norm(out, f"{prefix}norm", p, "Transformer/encoder_norm")
    table = p.pop("Transformer/posembed_input/pos_embedding")[0]
    image_cls = int("cls" in p)
    image_grid = math.isqrt(table.shape[0] - image_cls)
    nt, nh, nw = _model_grid(config)
    if image_grid * image_grid != table.shape[0] - image_cls:
        raise ValueError(f"Image position table of {table.shape[0]} rows is not CLS + square grid.")
    grid_table = table[image_cls:]
    if variant == "factorised_encoder":
        resized = PositionEmbedding.resize(grid_table, (image_grid,) * 2, (nh, nw))
    else:
        resized = PositionEmbedding.resize(
            grid_table, (image_grid,) * 2, (nt, nh, nw), temporal_method="tile"
        )
    if model_cls:
        # The image CLS slot when there is one; otherwise the model's (random) slot stays.
        cls_row = table[:1] if image_cls else None
        if cls_row is None:
            raise ValueError("The image ViT has no CLS token but the model uses one.")
        resized = np.concatenate([cls_row, resized], axis=0)
    out[f"{prefix}position_embedding/embeddings"] = resized
    if image_cls:
        cls = p.pop("cls").reshape(-1)
        if variant != "factorised_encoder" and model_cls:
            out["cls_token/token"] = cls  # scenic copies `cls` only into a top-level `cls`
    for key in list(p):
        if key.startswith(("head/", "pre_logits/")):
            del p[key]
    check_no_leftovers(p, FAMILY, noun="ViT image checkpoint entries")
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def is_image_vit(state: dict[str, np.ndarray]) -> bool:
    """True for a Google/scenic ViT image checkpoint (2D patch kernel)."""
    if _is_hf(state):
        return False
    try:
        return _scenic_params(state)["embedding/kernel"].ndim == 4
    except ValueError:
        return False


def config_from_image_checkpoint(state: dict[str, np.ndarray]) -> dict:
    """hidden_dim, num_heads, mlp_dim, num_layers of a ViT image checkpoint (checked)."""
    p = _vit_params(state)
    check_nonempty(p)
    config = google_vit_config(p, "MultiHeadDotProductAttention_0", "MlpBlock_0")
    return {k: config[k] for k in ("hidden_dim", "num_heads", "mlp_dim", "num_layers")}


def _vit_params(state):
    """Linen-named parameters of a Google ViT image checkpoint (pre-Linen names renamed)."""
    return google_vit_names(_scenic_params(state), "linen", FAMILY)
