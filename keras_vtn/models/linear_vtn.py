"""LinearVTN (elb3k/vtn "Linformer-VTN"): timm ViT per frame → Linformer over time → head."""

from __future__ import annotations

import os

import keras

from keras_vtn.layers import ClassToken, LinformerAttention, PositionEmbedding
from keras_vtn.models import linear_vtn_convert
from keras_vtn.models.frame_temporal import (
    VIT_BASE_FRAMES,
    classifier_head,
    frame_temporal_hooks,
    frame_temporal_model,
)
from keras_vtn.models.pipeline import build_from_call
from keras_vtn.models.vit import transformer_blocks

SIZES: dict[str, dict] = {
    "base": dict(
        VIT_BASE_FRAMES,
        num_temporal_layers=3,
        num_temporal_heads=12,
        temporal_head_dim=128,
        temporal_mlp_dim=3072,
        linformer_k=8,
        one_kv_head=True,
        share_kv=True,
        num_frames=16,
    ),
}


def _linformer_encoder(args):
    """lucidrains/elb3k `Linformer`: CLS + learned positions (no input norm), pre-LN blocks."""
    dropout_rate, attention_dropout_rate = args["dropout_rate"], args["attention_dropout_rate"]
    embedding_dropout_rate = args["embedding_dropout_rate"]

    def encoder(features, _extra):
        x = ClassToken(initializer="random_uniform", name="temporal_cls_token")(features)
        x = PositionEmbedding(name="temporal_position_embedding")(x)
        if embedding_dropout_rate:
            x = keras.layers.Dropout(embedding_dropout_rate, name="temporal_dropout")(x)
        return transformer_blocks(
            x,
            num_layers=args["num_temporal_layers"],
            num_heads=args["num_temporal_heads"],
            mlp_dim=args["temporal_mlp_dim"],
            layer_norm_epsilon=1e-5,
            dropout_rate=dropout_rate,
            attention_factory=lambda j: LinformerAttention(
                args["num_temporal_heads"],
                projected_length=args["linformer_k"],
                head_dim=args["temporal_head_dim"],
                one_kv_head=args["one_kv_head"],
                share_kv=args["share_kv"],
                attention_dropout_rate=attention_dropout_rate,
                name="attention",
            ),
            prefix="temporal_",
        )

    return encoder


def LinearVTN(
    size: str = "base",
    weights: str | os.PathLike | None = None,
    include_top: bool = True,
    num_classes: int | None = 400,
    classifier_activation: str | None = None,
    pooling: str | None = None,
    num_frames: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    include_preprocessing: bool = True,
    normalization: str | tuple[float, float] | None = None,
    patch_size: int | None = None,
    hidden_dim: int | None = None,
    num_spatial_layers: int | None = None,
    num_spatial_heads: int | None = None,
    spatial_mlp_dim: int | None = None,
    spatial_qkv_bias: bool | None = None,
    num_temporal_layers: int | None = None,
    num_temporal_heads: int | None = None,
    temporal_head_dim: int | None = None,
    temporal_mlp_dim: int | None = None,
    linformer_k: int | None = None,
    one_kv_head: bool | None = None,
    share_kv: bool | None = None,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
    embedding_dropout_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    frame_chunk_size: int | None = None,
    name: str = "linear_vtn",
) -> keras.Model:
    """Builds a Linformer Video Transformer Network (elb3k/vtn, Khoshimjonov 2021).

    A timm ViT runs on every frame (its final-LayerNorm CLS token is the frame vector), a
    learned CLS token and position embedding are added, pre-LN Linformer blocks (LayerNorm
    eps 1e-5, heads × head_dim independent of the width, a per-layer sequence projection E
    of shape (num_frames + 1, k) shared by K and V) mix the frames, and LayerNorm → Dense
    classifies the CLS output.

    Args:
        size: `"base"`: ViT-B/16 at 224 px, 3 Linformer layers of 12 × 128 heads, k = 8,
            one shared K/V head, 16 frames (`lin-vtn.yaml`).
        weights: `None`, a registry name, a Keras `.weights.h5`, or an original elb3k
            checkpoint (`lin-vtn.pth`, `lin-vtn-miil_21k.pth`; the `module.` prefix and the
            unused ViT head are handled). Architecture arguments are read from the file;
            an explicit argument that contradicts it is an error. The head loads only
            when `num_classes` matches.
        num_classes: head size; `None`: the checkpoint's (so its head loads), else 400, as in
            every family. A checkpoint head of another size is not loaded.
        num_frames: clip length. E fixes it: Linformer weights work only at the length they
            were trained with (16 for the released ones).
        normalization: input normalisation when `include_preprocessing`: `"vit"`
            (mean = std = 0.5: `lin-vtn.pth`), `"miil"` ([0, 1]: the MIIL-21k weights) or a
            (mean, std) pair. Default: `"miil"` when the ViT has no qkv bias (the MIIL
            backbone), else `"vit"`.
        pooling: `None`/`"token"` (the CLS output) or `"avg"`: the mean of the encoder's
            output tokens, CLS excluded, as in every family (elb3k's `pool='mean'` also
            averages the CLS). Without the top, the pooled vector is returned before the head
            LayerNorm.
        dropout_rate, attention_dropout_rate, embedding_dropout_rate: temporal encoder
            dropout (elb3k trains with 0.1, 0.1, 0.5); `drop_path_rate`: the ViT's
            stochastic depth.
        frame_chunk_size: run the ViT over this many frames at a time at inference
            (bounded memory); `None` runs all frames at once.

    Example:
    >>> model = LinearVTN(patch_size=8, hidden_dim=32, num_spatial_layers=1,
    ...                   num_spatial_heads=2, spatial_mlp_dim=64, num_temporal_layers=1,
    ...                   num_temporal_heads=2, temporal_head_dim=24, temporal_mlp_dim=48,
    ...                   linformer_k=3, num_frames=4, image_size=32, num_classes=5)
    >>> tuple(model.output.shape)
    (None, 5)
    """
    return build_from_call("linear_vtn", locals())


def _checkpoint_clip_and_heads(call: dict, source, checkpoint: dict | None, explicit: dict) -> None:
    """Linformer weights fix the clip length; per-head K records only heads × head_dim, so
    any explicit split of that width is valid (default: 128-wide heads, as elb3k's)."""
    num_frames = call["num_frames"]
    if checkpoint and num_frames is not None and checkpoint.get("num_frames") != num_frames:
        raise ValueError(
            f"LinearVTN weights fix the clip length: their Linformer projection E covers "
            f"{checkpoint['num_frames']} frames + CLS, but num_frames={num_frames}. Use "
            f"num_frames={checkpoint['num_frames']} (Linformer cannot change its length)."
        )
    if not checkpoint or checkpoint["one_kv_head"] or "num_temporal_heads" not in checkpoint:
        return
    width = checkpoint.pop("num_temporal_heads") * checkpoint.pop("temporal_head_dim")
    heads, head_dim = explicit["num_temporal_heads"], explicit["temporal_head_dim"]
    if heads is None and head_dim is None:
        heads, head_dim = width // 128, 128
    elif heads is None:
        heads = width // head_dim
    elif head_dim is None:
        head_dim = width // heads
    if heads * head_dim != width:
        raise ValueError(
            f"LinearVTN: the checkpoint's Linformer is {width} wide (heads × head_dim), but "
            f"num_temporal_heads={heads} × temporal_head_dim={head_dim} = {heads * head_dim}."
        )
    explicit.update(num_temporal_heads=heads, temporal_head_dim=head_dim)


def _needs_fixed_clip(call: dict, source, args: dict, preset: dict, explicit: dict,
                checkpoint: dict) -> dict:
    if args["num_frames"] is None:
        raise ValueError("LinearVTN needs a fixed num_frames (its Linformer E has a fixed size).")
    return {}


BUILD_HOOKS = frame_temporal_hooks(
    "LinearVTN", SIZES, linear_vtn_convert.config_from_checkpoint,
    check_checkpoint=_checkpoint_clip_and_heads, complete=_needs_fixed_clip,
    # The MIIL-21k backbone has no qkv bias and takes plain [0, 1] inputs.
    normalization=lambda args: "vit" if args["spatial_qkv_bias"] else "miil",
)


def linear_vtn_graph(config: dict) -> keras.Model:
    """The LinearVTN graph of a merged config (`LinearVTN`'s arguments, every architecture
    value set, as `keras_vtn.model_config` returns them). No I/O."""
    return frame_temporal_model(
        config, temporal_encoder=_linformer_encoder(config), head=classifier_head(config)
    )
