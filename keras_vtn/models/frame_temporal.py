"""The "2D backbone on every frame → temporal encoder → head" shape shared by LinearVTN and VTN.

`FrameEncoder` applies any image model (frame → vector) to every frame of a clip, optionally
over chunks of frames so that memory stays bounded on long videos (VTN evaluates 250-frame
videos in one view). `frame_vit` builds the timm-style ViT image model both families use.
`frame_temporal_model` assembles input, preprocessing, backbone, a family's temporal encoder
and the classifier head into a functional model.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from keras_vtn.layers import TokenPooling
from keras_vtn.layers.transformer import layer_norm
from keras_vtn.layers.utils import to_tuple
from keras_vtn.models.pipeline import merge_config, num_classes_default, read_source
from keras_vtn.models.vit import vit_frame_tokens

# The timm ViT-B/16 at 224 px that both families run on every frame (their "base" size).
VIT_BASE_FRAMES: dict = dict(
    patch_size=16,
    hidden_dim=768,
    num_spatial_layers=12,
    num_spatial_heads=12,
    spatial_mlp_dim=3072,
    spatial_qkv_bias=True,
    image_size=224,
)
# Input normalisations (mean, std) applied to RGB in [0, 1].
NORMALIZATIONS: dict[str, tuple[float, float]] = {
    "vit": (0.5, 0.5),  # timm vit_base_patch16_224: pixels to [-1, 1]
    "miil": (0.0, 1.0),  # timm vit_base_patch16_224_miil_in21k: plain [0, 1]
    "slowfast": (0.45, 0.225),  # PySlowFast default (VTN)
}


@keras.saving.register_keras_serializable(package="keras_vtn")
class FrameEncoder(keras.layers.Layer):
    """Applies an image model (batch, H, W, C) → (batch, D) to every frame of a clip.

    Input (batch, T, H, W, C), output (batch, T, D). Frames are folded into the batch axis
    (batch-major: the frames of one clip stay contiguous). The image model sees each frame
    on its own, so the result does not depend on how frames are grouped.

    With `chunk_size`, inference runs the image model over chunks of `chunk_size` frames
    one after another (`keras.ops.map`: a sequential loop on every backend), so activation
    memory is bounded by one chunk whatever the clip length; the last chunk is zero-padded
    and the padding discarded. Training (`training=True`) always runs all frames at once, so
    gradients, dropout and stochastic depth behave as without chunking.

    Args:
        backbone: a Keras image model mapping (batch, H, W, C) to (batch, D).
        chunk_size: frames per backbone call at inference, or `None` for all at once.

    Example:
    >>> import keras, numpy as np
    >>> image_model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
    ...                                 keras.layers.Dense(4)])
    >>> tuple(FrameEncoder(image_model, chunk_size=2)(np.zeros((1, 5, 8, 8, 3))).shape)
    (1, 5, 4)
    """

    def __init__(self, backbone: keras.Model | dict, chunk_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive number of frames, got {chunk_size}.")
        self.backbone = backbone
        self.chunk_size = None if chunk_size is None else int(chunk_size)

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build((None, *input_shape[2:]))

    def _encode(self, frames, training):
        """(batch, t, H, W, C) → (batch, t, D) with one backbone call."""
        image_shape = tuple(frames.shape[2:])
        length = frames.shape[1] if frames.shape[1] is not None else ops.shape(frames)[1]
        features = self.backbone(ops.reshape(frames, (-1, *image_shape)), training=training)
        return ops.reshape(features, (-1, length, features.shape[-1]))

    def call(self, inputs, training=None):
        length = inputs.shape[1]
        chunk = self.chunk_size
        if training or chunk is None or (length is not None and length <= chunk):
            return self._encode(inputs, training)
        if length is None:
            length = ops.shape(inputs)[1]
        num_chunks = (length + chunk - 1) // chunk
        pad = num_chunks * chunk - length
        rank = len(inputs.shape)
        x = ops.pad(inputs, [[0, 0], [0, pad]] + [[0, 0]] * (rank - 2))
        image_shape = tuple(inputs.shape[2:])
        # (batch, n, chunk, ...) → (n, batch, chunk, ...): map over the chunk axis.
        x = ops.reshape(x, (-1, num_chunks, chunk, *image_shape))
        x = ops.moveaxis(x, 1, 0)
        features = ops.map(lambda frames: self._encode(frames, False), x)
        features = ops.moveaxis(features, 0, 1)
        features = ops.reshape(features, (-1, num_chunks * chunk, features.shape[-1]))
        return features[:, :length]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.backbone.output_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            chunk_size=self.chunk_size,
        )
        return config


def default_heads(args: dict, key: str, width: int, preset_width: int, explicit: dict,
                  checkpoint: dict) -> None:
    """Head counts are not in the tensors: a width other than the preset's without a given
    (explicit or checkpoint-recorded) `args[key]` gets 64-wide heads (timm, HF Longformer)."""
    given = explicit.get(key) is not None or key in checkpoint
    if not given and width != preset_width:
        args[key] = max(1, width // 64)


def frame_vit(config: dict) -> keras.Model:
    """timm ViT image model of a merged config (`image_size` as a pair, `patch_size`,
    `hidden_dim`, `num_spatial_layers`, `num_spatial_heads`, `spatial_mlp_dim`,
    `spatial_qkv_bias`, `drop_path_rate`): (batch, H, W, 3) → the final-LayerNorm CLS token
    (batch, D).

    This is timm ≤0.5 `forward_features` (what elb3k and bomri use): LayerNorm eps 1e-6,
    exact GELU, CLS after the final norm, no pre-logits. Variable paths follow
    `keras_vtn.models.vit` (`patch_embedding/...`, `block_{i}/...`, `norm/...`).
    """
    frames = keras.Input((*config["image_size"], 3), name="frame")
    tokens = vit_frame_tokens(
        frames,
        patch_size=config["patch_size"],
        hidden_dim=config["hidden_dim"],
        num_layers=config["num_spatial_layers"],
        num_heads=config["num_spatial_heads"],
        mlp_dim=config["spatial_mlp_dim"],
        qkv_bias=config["spatial_qkv_bias"],
        layer_norm_epsilon=1e-6,
        activation="gelu",
        drop_path_rate=config["drop_path_rate"],
        last_block_tokens=1,  # only the CLS leaves the backbone: the last MLP skips patches
    )
    cls = TokenPooling("token", name="frame_cls")(tokens)
    return keras.Model(frames, cls, name="backbone")


def image_size_pair(image_size) -> tuple[int, int]:
    """An int or a (height, width) pair as (height, width)."""
    return to_tuple(image_size, 2, "image_size")


def explicit_arguments(label: str, call: dict, sizes: dict) -> dict:
    """The architecture arguments of a builder call (`None`: not given; the image size as a
    (height, width) pair), once its `size` is known to be one of `sizes`."""
    if call["size"] not in sizes:
        raise ValueError(f"Unknown {label} size {call['size']!r}; available: {sorted(sizes)}.")
    explicit = {key: call[key] for key in sizes[call["size"]]}
    if explicit.get("image_size") is not None:
        explicit["image_size"] = image_size_pair(explicit["image_size"])
    return explicit


def preprocessing_layer(normalization) -> keras.layers.Layer:
    """[0, 255] RGB → ((x / 255) − mean) / std as one Rescaling layer named `preprocessing`."""
    if isinstance(normalization, str):
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"Unknown normalization {normalization!r}; use one of {sorted(NORMALIZATIONS)} "
                "or a (mean, std) pair for RGB in [0, 1]."
            )
        normalization = NORMALIZATIONS[normalization]
    mean, std = (float(v) for v in normalization)
    return keras.layers.Rescaling(1.0 / (255.0 * std), offset=-mean / std, name="preprocessing")


def classifier_head(config: dict, hidden: Callable | None = None) -> Callable:
    """LayerNorm (eps 1e-5) → `hidden(x)` if any → Dense(`num_classes`), in float32 (both
    families' `mlp_head`); the head's activation is `classifier_activation`."""

    def head(x):
        x = layer_norm(1e-5, "head_norm", "float32")(x)
        if hidden is not None:
            x = hidden(x)
        return keras.layers.Dense(
            config["num_classes"], activation=config["classifier_activation"], dtype="float32",
            name="head",
        )(x)

    return head


def frame_temporal_model(
    config: dict,
    *,
    temporal_encoder: Callable,
    head: Callable,
    backbone: keras.Model | None = None,
    extra_inputs: dict | None = None,
) -> keras.Model:
    """Clip → preprocessing → `FrameEncoder(backbone)` → `temporal_encoder` → pooling → `head`.

    `config` gives `num_frames`, `image_size`, `include_preprocessing`, `normalization`,
    `include_top`, `pooling`, `frame_chunk_size` and `name`, and the ViT's arguments (see
    `frame_vit`) when `backbone` is `None` (the default: that timm ViT).
    `temporal_encoder(features, extra_inputs) -> tokens` (batch, 1 + T, D) with the CLS at 0.
    `head(pooled) -> logits`. With `extra_inputs` (e.g. frame indices) the model takes a dict
    `{"frames": ..., **extra_inputs}`.
    """
    c = dict(config, image_size=image_size_pair(config["image_size"]))
    backbone = frame_vit(c) if backbone is None else backbone
    frames = keras.Input((c["num_frames"], *c["image_size"], 3), name="frames")
    x = preprocessing_layer(c["normalization"])(frames) if c["include_preprocessing"] else frames
    features = FrameEncoder(backbone, chunk_size=c["frame_chunk_size"], name="frame_encoder")(x)
    tokens = temporal_encoder(features, extra_inputs or {})
    pooling = c["pooling"]
    if pooling not in (None, "token", "avg"):
        raise ValueError(f"Unknown pooling {pooling!r}; use None, 'token' or 'avg'.")
    # "avg" leaves the CLS out, as in every family.
    pooled = TokenPooling(pooling or "token", num_prefix_tokens=1, name="pooling")(tokens)
    outputs = head(pooled) if c["include_top"] else pooled
    inputs = {"frames": frames, **extra_inputs} if extra_inputs else frames
    return keras.Model(inputs, outputs, name=c["name"])


# --- The build hooks of both families --------------------------------------------------------


def frame_temporal_hooks(
    label: str,
    sizes: dict,
    config_from_checkpoint: Callable,
    *,
    check_checkpoint: Callable[[dict, object, dict | None, dict], None],
    complete: Callable[..., dict],
    normalization: Callable[[dict], str],
) -> dict:
    """`Family` build hooks (`prepare`, `read`, `merge`) of a frame → temporal family.

    The merge: the checkpoint's head size decides a `None` `num_classes` and its image size
    becomes the preset's (an explicit one wins: the ViT position table is resized);
    everything else it fixes is a constraint of `merge_config`. Around it the family's
    rules: `check_checkpoint(call, source, checkpoint, explicit)` before (it may adjust
    both), `complete(call, source, args, preset, explicit, checkpoint) -> extra values`
    after. The ViT's head count defaults to 64-wide heads for a width other than the
    preset's, and `normalization=None` to the registry entry's, else `normalization(args)`.
    """

    def prepare(call: dict) -> dict:
        explicit_arguments(label, call, sizes)  # an unknown size fails before any download
        return call

    def read(source, call: dict):
        state, found = read_source(source, config_from_checkpoint)
        if found is not None:
            found.pop("size", None)
            if "image_size" in found:
                found["image_size"] = image_size_pair(found["image_size"])
        return state, found

    def merge(call: dict, source, found: dict | None) -> dict:
        explicit = explicit_arguments(label, call, sizes)
        check_checkpoint(call, source, found, explicit)
        num_classes = num_classes_default(call["num_classes"], found)
        checkpoint = {k: v for k, v in (found or {}).items() if k != "num_classes"}
        preset = sizes[call["size"]]
        image_size = checkpoint.pop("image_size", image_size_pair(preset["image_size"]))
        preset = dict(preset, image_size=image_size)
        args = merge_config(label, preset, checkpoint, explicit)
        width, preset_width = args["hidden_dim"], preset["hidden_dim"]
        default_heads(args, "num_spatial_heads", width, preset_width, explicit, checkpoint)
        extra = complete(call, source, args, preset, explicit, checkpoint)
        chosen = call["normalization"]
        if chosen is None:
            chosen = entry_normalization(source) or normalization(args)
        return {**args, **extra, "normalization": chosen, "num_classes": num_classes}

    return dict(prepare=prepare, read=read, merge=merge)


def entry_normalization(source) -> tuple[float, float] | None:
    """(mean, std) recorded for a registry entry, if any."""
    pre = (source.entry or {}).get("preprocessing") if source is not None else None
    if not pre or "mean" not in pre:
        return None
    return float(pre["mean"][0]), float(pre["std"][0])
