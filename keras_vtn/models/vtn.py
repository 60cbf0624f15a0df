"""VTN (Neimark et al. 2021; bomri/SlowFast): a 2D backbone per frame → Longformer → MLP head."""

from __future__ import annotations

import os

import keras
from keras import ops

from keras_vtn.layers import ClassToken, SlidingWindowAttention
from keras_vtn.layers.transformer import gelu_erf, layer_norm
from keras_vtn.models import vtn_convert
from keras_vtn.models.frame_temporal import (
    VIT_BASE_FRAMES,
    classifier_head,
    default_heads,
    frame_temporal_hooks,
    frame_temporal_model,
    image_size_pair,
)
from keras_vtn.models.pipeline import build_from_call
from keras_vtn.models.vit import transformer_blocks

TEMPORAL = (
    "num_temporal_layers",
    "num_temporal_heads",
    "temporal_mlp_dim",
    "attention_window",
    "max_position_embeddings",
    "head_hidden_dim",
)
SIZES: dict[str, dict] = {
    "base": dict(
        VIT_BASE_FRAMES,
        num_temporal_layers=3,
        num_temporal_heads=12,
        temporal_mlp_dim=3072,
        attention_window=18,
        max_position_embeddings=288,
        head_hidden_dim=768,
    ),
}


@keras.saving.register_keras_serializable(package="keras_vtn")
class FrameIndexEmbedding(keras.layers.Layer):
    """Adds VTN's (Hugging Face Longformer) position and token-type embeddings.

    Input tokens (batch, 1 + T, D) with the CLS first, and optionally the frame indices
    (batch, T): the position of each sampled frame in the source video (0..T−1 if not
    given). A frame's position row is `index mod (max_position_embeddings − 2)`; the CLS
    uses row `max_position_embeddings − 2` (the last row is Longformer's padding row, unused
    here). Token-type row 1 is added to the CLS, row 0 to every frame.

    Weights: `position_embeddings` (max_position_embeddings, D), `token_type_embeddings`
    (2, D).

    Example:
    >>> import numpy as np
    >>> layer = FrameIndexEmbedding(max_position_embeddings=10)
    >>> tokens = np.zeros((2, 4, 8), "float32")
    >>> tuple(layer(tokens, np.array([[0, 8, 16], [3, 4, 5]])).shape)
    (2, 4, 8)
    """

    def __init__(self, max_position_embeddings: int, **kwargs):
        super().__init__(**kwargs)
        if max_position_embeddings < 3:
            raise ValueError(
                "max_position_embeddings must leave room for frames, CLS and padding rows "
                f"(>= 3), got {max_position_embeddings}."
            )
        self.max_position_embeddings = int(max_position_embeddings)

    def build(self, inputs_shape, frame_indices_shape=None):
        dim = inputs_shape[-1]
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.position_embeddings = self.add_weight(
            name="position_embeddings", shape=(self.max_position_embeddings, dim), initializer=init
        )
        self.token_type_embeddings = self.add_weight(
            name="token_type_embeddings", shape=(2, dim), initializer=init
        )

    def call(self, inputs, frame_indices=None):
        num_frames = inputs.shape[-2] - 1 if inputs.shape[-2] is not None else None
        if frame_indices is None:
            length = num_frames if num_frames is not None else ops.shape(inputs)[-2] - 1
            frame_indices = ops.expand_dims(ops.arange(length, dtype="int32"), 0)
        cls_row = self.max_position_embeddings - 2
        ids = ops.mod(ops.cast(frame_indices, "int32"), cls_row)
        ids = ops.concatenate([ops.full_like(ids[:, :1], cls_row), ids], axis=1)
        positions = ops.take(self.position_embeddings, ids, axis=0)
        types = ops.concatenate(
            [
                self.token_type_embeddings[1:2],
                ops.zeros_like(positions[0, 1:]) + self.token_type_embeddings[0:1],
            ],
            axis=0,
        )
        dtype = inputs.dtype
        return inputs + ops.cast(positions, dtype) + ops.cast(types, dtype)

    def compute_output_shape(self, inputs_shape, frame_indices_shape=None):
        return inputs_shape

    def get_config(self):
        return {**super().get_config(), "max_position_embeddings": self.max_position_embeddings}


def _longformer_encoder(args):
    """bomri `VTNLongformerModel` (HF LongformerModel on `inputs_embeds`): CLS, embeddings
    LayerNorm over features + position + token type, post-LN layers (eps 1e-12)."""
    window = args["attention_window"]
    dropout_rate, attention_dropout_rate = args["dropout_rate"], args["attention_dropout_rate"]

    def encoder(features, extra):
        x = ClassToken(initializer="random_normal", name="temporal_cls_token")(features)
        x = FrameIndexEmbedding(args["max_position_embeddings"], name="temporal_embedding")(
            x, extra.get("frame_indices")
        )
        x = layer_norm(1e-12, "temporal_embedding_norm")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name="temporal_dropout")(x)
        return transformer_blocks(
            x,
            num_layers=args["num_temporal_layers"],
            num_heads=args["num_temporal_heads"],
            mlp_dim=args["temporal_mlp_dim"],
            norm_first=False,
            layer_norm_epsilon=1e-12,
            dropout_rate=dropout_rate,
            attention_factory=lambda k: SlidingWindowAttention(
                args["num_temporal_heads"],
                window_size=window // 2,
                num_global_tokens=1,
                attention_dropout_rate=attention_dropout_rate,
                name="attention",
            ),
            prefix="temporal_",
        )

    return encoder


def VTN(
    size: str = "base",
    weights: str | os.PathLike | None = None,
    include_top: bool = True,
    num_classes: int | None = 400,
    classifier_activation: str | None = None,
    pooling: str | None = None,
    num_frames: int | None = 16,
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
    temporal_mlp_dim: int | None = None,
    attention_window: int | None = None,
    max_position_embeddings: int | None = None,
    head_hidden_dim: int | None = None,
    frame_indices: bool = False,
    spatial_backbone: keras.Model | dict | None = None,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
    head_dropout_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    frame_chunk_size: int | None = None,
    name: str = "vtn",
) -> keras.Model:
    """Builds a Video Transformer Network (Neimark et al., ICCVW 2021; PySlowFast release).

    A 2D backbone maps every frame to a vector (timm ViT-B/16 final-LayerNorm CLS by
    default, or any Keras image model), a learned CLS token is prepended, Longformer
    embeddings (frame-index positions + token types, LayerNorm eps 1e-12) are added, post-LN
    Longformer layers attend within ±attention_window/2 frames plus the global CLS (which
    attends to all frames with its own projections), and LayerNorm → Dense → GELU → Dropout
    → Dense classifies the CLS output.

    Args:
        size: `"base"`: ViT-B/16 at 224 px + 3 Longformer layers (12 heads, window 18,
            288 positions), MLP head 768 (`VIT_B_VTN.yaml`).
        weights: `None`, a registry name, a Keras `.weights.h5`, or the original PySlowFast
            checkpoint (`VTN_VIT_B_KINETICS.pyth`). Architecture arguments are read from
            the file; an explicit argument that contradicts it is an error. The head loads
            only when `num_classes` matches.
        num_classes: head size; `None`: the checkpoint's (so its head loads), else 400, as in
            every family. A checkpoint head of another size is not loaded.
        num_frames: clip length, any value (the released model trains on 16 frames and is
            evaluated on 250); `None` accepts any length (without `frame_chunk_size`).
        normalization: input normalisation when `include_preprocessing`: `"slowfast"`
            (mean 0.45, std 0.225, what the released model was fine-tuned with; the
            default), `"vit"`, `"miil"` or a (mean, std) pair for RGB in [0, 1].
        attention_window: the Longformer's total window (one side is half of it); must be
            even, as in Hugging Face.
        frame_indices: `True`: the model takes `{"frames", "frame_indices"}` where
            `frame_indices` (batch, num_frames) int are the sampled frames' positions in the
            source video (the release trained with strided clip-relative indices and was
            evaluated with dense absolute ones); `False`: positions are 0..T−1.
        spatial_backbone: any Keras image model mapping (batch, H, W, 3) to (batch, D), used
            instead of the ViT (e.g. `keras.applications.ResNet50(include_top=False,
            pooling="avg", weights=None)`); D must divide into `num_temporal_heads`. Set
            `include_preprocessing=False` if the model normalises its own inputs. A dict is
            read as the model's `keras.saving.serialize_keras_object` config (so training
            configurations stay JSON).
        pooling: `None`/`"token"` (CLS output) or `"avg"`: the mean of the encoder's output
            tokens, CLS excluded, as in every family.
        dropout_rate, attention_dropout_rate: Longformer dropouts (0.1 in training);
            `head_dropout_rate`: before the last Dense (0.5 in training); `drop_path_rate`:
            the ViT's stochastic depth.
        frame_chunk_size: run the backbone over this many frames at a time at inference, so
            memory stays bounded on long videos (e.g. 250 frames); `None`: all at once.

    Example:
    >>> model = VTN(patch_size=8, hidden_dim=32, num_spatial_layers=1, num_spatial_heads=2,
    ...             spatial_mlp_dim=64, num_temporal_layers=1, num_temporal_heads=2,
    ...             temporal_mlp_dim=48, attention_window=4, max_position_embeddings=20,
    ...             head_hidden_dim=24, num_frames=10, image_size=32, num_classes=5)
    >>> tuple(model.output.shape)
    (None, 5)
    """
    return build_from_call("vtn", locals())


def _no_checkpoint_for_custom_backbone(call: dict, source, checkpoint, explicit) -> None:
    if call["spatial_backbone"] is not None and source is not None and not source.is_keras:
        raise ValueError(
            "The original VTN checkpoint holds a ViT-B backbone; it cannot load into a "
            "custom spatial_backbone. Drop spatial_backbone= or weights=."
        )


def _temporal_heads(call: dict, source, args: dict, preset: dict, explicit: dict,
                    checkpoint: dict) -> dict:
    """Head counts are not in the tensors: 64-wide heads for a width other than the preset's;
    the frame vectors' width (the ViT's or a custom backbone's) must split into them."""
    spatial_backbone = call["spatial_backbone"]
    if isinstance(spatial_backbone, dict):
        spatial_backbone = keras.saving.deserialize_keras_object(spatial_backbone)
    width = args["hidden_dim"]
    if spatial_backbone is not None:
        width = _custom_backbone_width(
            spatial_backbone, explicit, call["size"], call["drop_path_rate"]
        )
    default_heads(args, "num_temporal_heads", width, preset["hidden_dim"], explicit, checkpoint)
    if width % args["num_temporal_heads"]:
        raise ValueError(
            f"The frame vectors are {width}-wide, which num_temporal_heads="
            f"{args['num_temporal_heads']} does not divide; pass a num_temporal_heads that does."
        )
    return {"spatial_backbone": spatial_backbone}


BUILD_HOOKS = frame_temporal_hooks(
    "VTN", SIZES, vtn_convert.config_from_checkpoint,
    check_checkpoint=_no_checkpoint_for_custom_backbone, complete=_temporal_heads,
    normalization=lambda args: "slowfast",  # what the released model was fine-tuned with
)


def vtn_graph(config: dict) -> keras.Model:
    """The VTN graph of a merged config (`VTN`'s arguments, every architecture value set, as
    `keras_vtn.model_config` returns them). No I/O."""
    c = config
    if c["attention_window"] < 0 or c["attention_window"] % 2:
        raise ValueError(
            f"attention_window must be a non-negative even number (the total window; each "
            f"side is half of it), got {c['attention_window']}."
        )
    if c["frame_chunk_size"] is not None and c["num_frames"] is None:
        raise ValueError("frame_chunk_size needs a fixed num_frames.")
    backbone = c["spatial_backbone"]
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)

    def hidden(x):  # PySlowFast's mlp_head: Linear → GELU → Dropout before the classifier
        x = keras.layers.Dense(c["head_hidden_dim"], dtype="float32", name="head_hidden")(x)
        x = keras.layers.Activation(gelu_erf, dtype="float32", name="head_gelu")(x)
        if c["head_dropout_rate"]:
            x = keras.layers.Dropout(c["head_dropout_rate"], name="head_dropout")(x)
        return x

    extra = None
    if c["frame_indices"]:
        extra = {"frame_indices": keras.Input((c["num_frames"],), dtype="int32",
                                              name="frame_indices")}
    return frame_temporal_model(
        c, temporal_encoder=_longformer_encoder(c), head=classifier_head(c, hidden),
        backbone=backbone, extra_inputs=extra,
    )


def _custom_backbone_width(backbone, explicit: dict, size: str, drop_path_rate: float) -> int:
    """The frame-vector width of a `spatial_backbone=` model, once the ViT arguments (which
    would have no effect) are known to be absent."""
    vit_args = [k for k in SIZES[size] if k in explicit and k != "image_size" and k not in TEMPORAL]
    given = [k for k in vit_args if explicit[k] is not None]
    if given or drop_path_rate:
        raise ValueError(
            f"The spatial ViT arguments {given or ['drop_path_rate']} have no effect with "
            "spatial_backbone=; configure that model instead."
        )
    image_size = explicit["image_size"] or image_size_pair(SIZES[size]["image_size"])
    return _check_backbone(backbone, image_size).output_shape[-1]


def _check_backbone(backbone: keras.Model, image_size: tuple[int, int]) -> keras.Model:
    shape = backbone.output_shape
    if not isinstance(shape, tuple) or len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"spatial_backbone must map a frame to a vector (batch, D); its output shape is "
            f"{shape}. For keras.applications models use include_top=False, pooling='avg'."
        )
    expected = backbone.input_shape
    if isinstance(expected, tuple) and len(expected) == 4:
        given = tuple(expected[1:3])
        if all(s is not None for s in given) and given != tuple(image_size):
            raise ValueError(
                f"spatial_backbone takes {given} images but image_size is {tuple(image_size)}; "
                "make them agree."
            )
    return backbone
