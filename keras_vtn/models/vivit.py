"""ViViT (Arnab et al., ICCV 2021): the four scenic variants as compositions of shared layers.

- Model 1 `"spatio_temporal"`: tubelets → CLS → joint attention over all tokens.
- Model 2 `"factorised_encoder"`: a spatial ViT shared by every frame (own CLS per frame),
  then a temporal encoder over the frame vectors (own CLS).
- Model 3 `"factorised_self_attention"`: blocks with spatial then temporal (or the reverse)
  attention, separate LayerNorms, global average pooling.
- Model 4 `"factorised_dot_product"`: plain blocks whose heads split between time and space.

Everything follows scenic's `projects/vivit/model.py`: pre-LN blocks, LayerNorm eps 1e-6,
tanh-approximate GELU, a final encoder LayerNorm, a linear head, inputs in [-1, 1].
"""

from __future__ import annotations

import os

import keras

import keras_vtn.weights as kvw
from keras_vtn.layers import (
    ClassToken,
    FactorisedDotProductAttention,
    FactorisedSelfAttentionBlock,
    PositionEmbedding,
    TokenPooling,
    TubeletEmbedding,
)
from keras_vtn.layers.transformer import layer_norm
from keras_vtn.layers.utils import check_tiling, to_tuple
from keras_vtn.models.convert_utils import naming_file
from keras_vtn.models.pipeline import build_from_call, merge_config, num_classes_default
from keras_vtn.models.vit import VIT_SIZES, transformer_blocks

VARIANTS = (
    "spatio_temporal",
    "factorised_encoder",
    "factorised_self_attention",
    "factorised_dot_product",
)
SIZES = {
    "base": dict(VIT_SIZES["base"], tubelet_size=(2, 16, 16)),
    "large": dict(VIT_SIZES["large"], tubelet_size=(2, 16, 16)),
    # ViViT-H/14x2 (paper); ViT-H uses 14x14 patches.
    "huge": dict(VIT_SIZES["huge"], tubelet_size=(2, 14, 14)),
}
CLASSIFIERS = ("token", "gap")
# The architecture arguments a checkpoint may fix (an explicit one must agree with it).
ARCHITECTURE = (
    "tubelet_size", "hidden_dim", "num_heads", "mlp_dim", "num_layers", "num_spatial_layers",
    "num_temporal_layers", "classifier", "attention_order", "layer_norm_epsilon",
)


def _encoder_input(x, *, prefix, use_cls, dropout_rate):
    """Optional CLS token, learned position embedding (covering the CLS), dropout."""
    if use_cls:
        x = ClassToken(name=f"{prefix}cls_token")(x)
    x = PositionEmbedding(
        initializer=keras.initializers.RandomNormal(stddev=0.02),
        name=f"{prefix}position_embedding",
    )(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name=f"{prefix}position_dropout")(x)
    return x


def _resolve_architecture(variant, size, overrides, checkpoint_config):
    """Preset < checkpoint < explicit arguments; an explicit value that contradicts the
    checkpoint is an error (building a model the weights cannot fill)."""
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}; use one of {tuple(SIZES)}.")
    config = dict(SIZES[size])
    config.update(
        num_spatial_layers=config["num_layers"],
        num_temporal_layers=4,
        attention_order="time_space",
        layer_norm_epsilon=1e-6,
    )
    checkpoint_config = dict(checkpoint_config or {})
    if variant is None:
        variant = checkpoint_config.get(
            "variant", "factorised_encoder" if not checkpoint_config else None
        )
        if variant is None:
            raise ValueError(
                "This checkpoint has no CLS token and plain blocks: it fits both Model 1 with "
                "GAP and Model 4 (same weights). Pass variant='spatio_temporal' or "
                "variant='factorised_dot_product'."
            )
    elif "variant" in checkpoint_config and checkpoint_config["variant"] != variant:
        raise ValueError(
            f"variant={variant!r} but the checkpoint holds a {checkpoint_config['variant']!r} "
            f"model. Drop the argument or pass variant={checkpoint_config['variant']!r}."
        )
    checkpoint_config.pop("variant", None)
    checkpoint_config.pop("num_classes", None)
    config["classifier"] = "token" if variant in VARIANTS[:2] else "gap"
    if overrides.get("tubelet_size") is not None:
        overrides = dict(overrides, tubelet_size=to_tuple(overrides["tubelet_size"], 3,
                                                          "tubelet_size"))
    config = merge_config("ViViT", config, checkpoint_config, overrides, conflict="contradicts")
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; use one of {VARIANTS}.")
    if config["classifier"] not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier {config['classifier']!r}; use one of {CLASSIFIERS}.")
    if variant in VARIANTS[2:] and config["classifier"] == "token":
        raise ValueError(
            f"{variant!r} has no CLS token (scenic asserts this); use classifier='gap'."
        )
    return variant, config


def ViViT(
    variant: str | None = None,
    size: str = "base",
    weights: str | os.PathLike | None = None,
    include_top: bool = True,
    num_classes: int | None = None,
    classifier_activation: str | None = None,
    pooling: str | None = None,
    num_frames: int = 32,
    image_size: int | tuple[int, int] = 224,
    include_preprocessing: bool = True,
    tubelet_size: tuple[int, int, int] | None = None,
    hidden_dim: int | None = None,
    num_heads: int | None = None,
    mlp_dim: int | None = None,
    num_layers: int | None = None,
    num_spatial_layers: int | None = None,
    num_temporal_layers: int | None = None,
    classifier: str | None = None,
    attention_order: str | None = None,
    layer_norm_epsilon: float | None = None,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    source_grid: tuple[int, int, int] | None = None,
    name: str | None = None,
) -> keras.Model:
    """Builds a ViViT video classifier (scenic's four variants).

    Args:
        variant: `"spatio_temporal"` (Model 1), `"factorised_encoder"` (Model 2, the default
            without a checkpoint), `"factorised_self_attention"` (Model 3) or
            `"factorised_dot_product"` (Model 4). Read from the checkpoint when `weights` is
            one (Model 1 with GAP and Model 4 share a layout: give it then).
        size: `"base"`, `"large"` or `"huge"` presets (ViT-B/16, ViT-L/16, ViT-H/14).
        weights: `None`; a registry name of `keras_vtn.weights.list(family="vivit")`:
            `"k400"` (B Model 1, B FE, L FE, chosen by `variant`/`size`), `"k400_hf"` (the HF
            port of B Model 1), `"k600"` (L FE), `"imagenet21k"` (Google ViT image weights,
            spatial initialisation as scenic does it); a Keras `.weights.h5`/`.keras`; or an
            original checkpoint: a scenic Flax msgpack, a Hugging Face
            `VivitForVideoClassification` folder (Model 1) or a Google ViT `.npz`.
        num_classes: head size; default: the checkpoint's when `weights` is a video
            checkpoint, else 400. A checkpoint head of another size is not loaded.
        include_top, classifier_activation, pooling: the head; without it,
            `pooling` `None` gives the classifier's vector, `"avg"` the mean of the encoder's
            output tokens, CLS excluded (as in every family), `"token"` the CLS output.
        num_frames, image_size: the clip size; position tables of a checkpoint made for
            another size are resized (linear in time, bilinear in space).
        include_preprocessing: inputs are RGB in [0, 255], mapped to [-1, 1] as in scenic.
        tubelet_size: (t, h, w) (scenic writes (h, w, t)).
        hidden_dim, num_heads, mlp_dim, num_layers: encoder sizes (Models 1, 3, 4).
        num_spatial_layers, num_temporal_layers: Model 2 depths (temporal default 4, as in
            the paper; the released L FE checkpoints have 24, read from the file).
        classifier: `"token"` (Models 1, 2) or `"gap"` (all; required for Models 3, 4).
        attention_order: Model 3 only, `"time_space"` (scenic's default) or `"space_time"`.
            Checkpoints do not record it.
        dropout_rate, attention_dropout_rate, drop_path_rate: regularisation; stochastic
            depth follows scenic (linear ramp from 0, no rescaling; none in Model 3 blocks).
        source_grid: (t, h, w) token grid of a Model 1/3/4 checkpoint's position table when
            it cannot be inferred (only needed to resize to another clip size).

    Example:
    >>> model = ViViT("spatio_temporal", hidden_dim=32, num_heads=2, mlp_dim=64,
    ...               num_layers=1, num_frames=4, image_size=32, tubelet_size=(2, 16, 16),
    ...               num_classes=5)
    >>> model.output_shape
    (None, 5)
    """
    return build_from_call("vivit", locals())


def _registry_key(call: dict) -> dict:
    return {"variant": call["variant"] or "factorised_encoder", "size": call["size"]}


def _read(source, call: dict) -> tuple[dict | None, dict | None]:
    """(state, architecture) of a registry entry (its recorded config; its tensors are read
    once later, or never when the converted cache has them), a scenic/HF video checkpoint or
    a Google ViT image checkpoint (whose depth is the spatial encoder's in Model 2)."""
    from keras_vtn.models import vivit_convert

    if source is None or source.is_keras:
        return None, None
    state = None
    if source.entry is not None:
        checkpoint_config = _entry_config(source.entry)
        image = source.entry["kind"] != "video"
    else:
        state = kvw.read_checkpoint(source.path)
        image = vivit_convert.is_image_vit(state)
        with naming_file(source.path):
            if image:
                checkpoint_config = vivit_convert.config_from_image_checkpoint(state)
            else:
                hf_config = (
                    kvw.readers.read_hf_config(source.path)
                    if source.format == "hf_folder"
                    else None
                )
                checkpoint_config = vivit_convert.config_from_checkpoint(state, hf_config)
    if image and call["variant"] in (None, "factorised_encoder"):
        if call["variant"] is None:  # an image ViT initialises Model 2 by default
            checkpoint_config["variant"] = "factorised_encoder"
        checkpoint_config["num_spatial_layers"] = checkpoint_config.pop("num_layers")
    return state, checkpoint_config


def _merge(call: dict, source, found: dict | None) -> dict:
    overrides = {key: call[key] for key in ARCHITECTURE}
    num_classes = num_classes_default(call["num_classes"], found)  # a video head, else 400
    variant, config = _resolve_architecture(call["variant"], call["size"], overrides, found)
    return {**config, "variant": variant, "num_classes": num_classes}


def _load(model, source, state, call: dict):
    """Loads `source` into `model` through keras_vtn.weights (shape/coverage checks, head
    handling, converted-weights cache for registry downloads)."""
    from keras_vtn.models.vivit_convert import convert_vivit

    def convert(checkpoint, target):
        return convert_vivit(checkpoint, target, source_grid=call["source_grid"])

    with naming_file(source.path):
        return kvw.load_source(model, source, "vivit", convert, state)


# No `prepare`: the size is checked with the variant, once the checkpoint has said which.
BUILD_HOOKS = dict(prepare=lambda call: call, registry_key=_registry_key, read=_read,
                   merge=_merge, load=_load)


def vivit_graph(config: dict) -> keras.Model:
    """The ViViT graph of a merged config (`ViViT`'s arguments, every architecture value set,
    as `keras_vtn.model_config` returns them). No I/O: weights are applied afterwards."""
    c = config
    variant, pooling = c["variant"], c["pooling"]
    if pooling not in (None, "avg", "token"):
        raise ValueError(f"Unknown pooling {pooling!r}; use None, 'avg' or 'token'.")
    use_cls = c["classifier"] == "token"
    if pooling == "token" and not use_cls:
        raise ValueError(f"pooling='token' needs a CLS token; {variant!r} here has none.")
    num_frames = c["num_frames"]
    height, width = to_tuple(c["image_size"], 2, "image_size")
    t, h, w = c["tubelet_size"]
    if num_frames < t or height < h or width < w:
        raise ValueError(
            f"A {num_frames}x{height}x{width} clip is smaller than the tubelet {(t, h, w)}."
        )
    tubelet = f"tubelet_size={(t, h, w)}"
    check_tiling("num_frames", (num_frames,), (t,), tubelet, "frames")
    check_tiling("image_size", (height, width), (h, w), tubelet)

    inputs = keras.Input((num_frames, height, width, 3), name="video")
    x = inputs
    if c["include_preprocessing"]:
        # scenic / DMVR zero-centring: x * 2 / 255 - 1.
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocessing")(x)
    x = TubeletEmbedding(
        c["hidden_dim"], c["tubelet_size"], flatten=variant != "factorised_encoder",
        name="tubelet_embedding",
    )(x)
    grid = (num_frames // t, (height // h) * (width // w))
    x = _vivit_encoders(x, c, grid)
    mode = {None: "token" if use_cls else "avg", "avg": "avg", "token": "token"}[pooling]
    x = TokenPooling(mode, num_prefix_tokens=int(use_cls), name="pooling")(x)
    if c["include_top"]:
        x = keras.layers.Dense(
            c["num_classes"],
            activation=c["classifier_activation"],
            kernel_initializer="zeros",  # scenic's head init
            dtype="float32",  # float32 logits under mixed precision
            name="head",
        )(x)
    return keras.Model(inputs, x, name=c["name"] or f"vivit_{variant}_{c['size']}")


def _vivit_encoders(x, c: dict, grid: tuple[int, int]):
    """Tubelet tokens → the variant's encoder(s) → final LayerNorm (before pooling)."""
    variant, eps = c["variant"], c["layer_norm_epsilon"]
    dropout_rate, attention_dropout_rate = c["dropout_rate"], c["attention_dropout_rate"]
    use_cls = c["classifier"] == "token"
    # When only an encoder's CLS output is used, its last block computes that row alone.
    cls_only = 1 if use_cls else None
    final_cls_only = cls_only if c["pooling"] != "avg" else None

    def encoder(x, prefix, num_layers, last_block_tokens, **kwargs):
        # scenic's Encoder blocks: tanh GELU, unscaled stochastic depth on a linear ramp.
        x = _encoder_input(x, prefix=prefix, use_cls=use_cls, dropout_rate=dropout_rate)
        return transformer_blocks(
            x, prefix=prefix, num_layers=num_layers, num_heads=c["num_heads"],
            mlp_dim=c["mlp_dim"], layer_norm_epsilon=eps, activation="gelu_tanh",
            dropout_rate=dropout_rate, attention_dropout_rate=attention_dropout_rate,
            drop_path_scale=False, drop_path_rate=c["drop_path_rate"],
            last_block_tokens=last_block_tokens, **kwargs,
        )

    if variant == "factorised_encoder":
        # Spatial ViT on every frame (leading axes are batch axes: shared weights and CLS).
        x = encoder(x, "spatial_", c["num_spatial_layers"], cls_only)
        x = layer_norm(eps, "spatial_norm")(x)
        x = TokenPooling("token" if use_cls else "avg", name="spatial_pooling")(x)
        x = encoder(x, "temporal_", c["num_temporal_layers"], final_cls_only)
        return layer_norm(eps, "temporal_norm")(x)
    if variant == "spatio_temporal":
        x = encoder(x, "", c["num_layers"], final_cls_only)
        return layer_norm(eps, "norm")(x)
    # Factorised variants work on (batch, T, N, D); the position table is over all tokens.
    x = _encoder_input(x, prefix="", use_cls=use_cls, dropout_rate=dropout_rate)
    x = keras.layers.Reshape((*grid, c["hidden_dim"]), name="to_time_space")(x)
    if variant == "factorised_self_attention":
        for i in range(c["num_layers"]):
            x = FactorisedSelfAttentionBlock(
                c["num_heads"], c["mlp_dim"], attention_order=c["attention_order"],
                layer_norm_epsilon=eps, activation="gelu_tanh", dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate, name=f"block_{i}",
            )(x)
    else:
        x = transformer_blocks(
            x, prefix="", num_layers=c["num_layers"], num_heads=c["num_heads"],
            mlp_dim=c["mlp_dim"], layer_norm_epsilon=eps, activation="gelu_tanh",
            dropout_rate=dropout_rate, attention_dropout_rate=attention_dropout_rate,
            drop_path_scale=False, drop_path_rate=c["drop_path_rate"],
            attention_factory=lambda i: FactorisedDotProductAttention(
                c["num_heads"], attention_dropout_rate=attention_dropout_rate, name="attention"
            ),
        )
    x = keras.layers.Reshape((grid[0] * grid[1], c["hidden_dim"]), name="to_tokens")(x)
    return layer_norm(eps, "norm")(x)


def _entry_config(entry: dict) -> dict:
    """Architecture arguments recorded in a registry entry (clip size excluded)."""
    config = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in entry["config"].items()
        if k not in ("size", "num_frames", "image_size", "patch_size")
    }
    if entry["kind"] != "video":
        config.pop("variant", None)
    return config
