"""The "2D backbone on every frame → temporal encoder → head" shape shared by LinearVTN and VTN.

`FrameEncoder` applies any image model (frame → vector) to every frame of a clip, optionally
over chunks of frames so that memory stays bounded on long videos (VTN evaluates 250-frame
videos in one view). `vit_backbone` builds the timm-style ViT image model both families use.
`frame_temporal_model` assembles input, preprocessing, backbone, a family's temporal encoder
and the classifier head into a functional model.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

import keras_vtn.weights as kvw
from keras_vtn.layers import TokenPooling
from keras_vtn.models.convert_utils import naming_file
from keras_vtn.models.vit import vit_frame_tokens

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


def vit_backbone(
    image_size: tuple[int, int],
    *,
    patch_size: int,
    hidden_dim: int,
    num_layers: int,
    num_heads: int,
    mlp_dim: int,
    qkv_bias: bool = True,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    name: str = "backbone",
) -> keras.Model:
    """timm ViT image model: (batch, H, W, 3) → the final-LayerNorm CLS token (batch, D).

    This is timm ≤0.5 `forward_features` (what elb3k and bomri use): LayerNorm eps 1e-6,
    exact GELU, CLS after the final norm, no pre-logits. Variable paths follow
    `keras_vtn.models.vit` (`patch_embedding/...`, `block_{i}/...`, `norm/...`).
    """
    frames = keras.Input((*image_size, 3), name="frame")
    tokens = vit_frame_tokens(
        frames,
        patch_size=patch_size,
        hidden_dim=hidden_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
        qkv_bias=qkv_bias,
        layer_norm_epsilon=1e-6,
        activation="gelu",
        dropout_rate=dropout_rate,
        attention_dropout_rate=attention_dropout_rate,
        drop_path_rate=drop_path_rate,
        last_block_tokens=1,  # only the CLS leaves the backbone: the last MLP skips patches
    )
    cls = TokenPooling("token", name="frame_cls")(tokens)
    return keras.Model(frames, cls, name=name)


def spatial_vit(
    args: dict, explicit: dict, preset: dict, drop_path_rate: float, checkpoint: dict | None = None
) -> keras.Model:
    """`vit_backbone` from a family's resolved `args` (`patch_size`, `hidden_dim`,
    `num_spatial_layers`, `num_spatial_heads`, `spatial_mlp_dim`, `spatial_qkv_bias`).

    The head count is not in the tensors: a width other than the preset's without an explicit
    `num_spatial_heads` gets timm's 64-wide heads (written back into `args`). A head count
    given by the checkpoint config (a registry entry's `config`) is never replaced.
    """
    given = explicit["num_spatial_heads"] is not None or "num_spatial_heads" in (checkpoint or {})
    if not given and args["hidden_dim"] != preset["hidden_dim"]:
        args["num_spatial_heads"] = max(1, args["hidden_dim"] // 64)
    return vit_backbone(
        args["image_size"],
        patch_size=args["patch_size"],
        hidden_dim=args["hidden_dim"],
        num_layers=args["num_spatial_layers"],
        num_heads=args["num_spatial_heads"],
        mlp_dim=args["spatial_mlp_dim"],
        qkv_bias=args["spatial_qkv_bias"],
        drop_path_rate=drop_path_rate,
    )


def image_size_pair(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        return (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}.")
    return size


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


def frame_temporal_model(
    *,
    backbone: keras.Model,
    temporal_encoder: Callable,
    head: Callable,
    num_frames: int | None,
    image_size: tuple[int, int],
    include_preprocessing: bool,
    normalization,
    include_top: bool,
    pooling: str | None,
    frame_chunk_size: int | None,
    extra_inputs: dict | None = None,
    name: str,
) -> keras.Model:
    """Clip → preprocessing → `FrameEncoder(backbone)` → `temporal_encoder` → pooling → `head`.

    `temporal_encoder(features, extra_inputs) -> tokens` (batch, 1 + T, D) with the CLS at 0.
    `head(pooled) -> logits`. With `extra_inputs` (e.g. frame indices) the model takes a dict
    `{"frames": ..., **extra_inputs}`.
    """
    frames = keras.Input((num_frames, *image_size, 3), name="frames")
    x = preprocessing_layer(normalization)(frames) if include_preprocessing else frames
    features = FrameEncoder(backbone, chunk_size=frame_chunk_size, name="frame_encoder")(x)
    tokens = temporal_encoder(features, extra_inputs or {})
    if pooling not in (None, "token", "avg"):
        raise ValueError(f"Unknown pooling {pooling!r}; use None, 'token' or 'avg'.")
    pooled = TokenPooling(pooling or "token", name="pooling")(tokens)
    outputs = head(pooled) if include_top else pooled
    inputs = {"frames": frames, **extra_inputs} if extra_inputs else frames
    return keras.Model(inputs, outputs, name=name)


def resolve_arguments(family: str, preset: dict, explicit: dict, checkpoint: dict | None) -> dict:
    """Architecture arguments: explicit > checkpoint > preset; explicit vs checkpoint must agree."""
    resolved = dict(preset)
    for key, value in (checkpoint or {}).items():
        given = explicit.get(key)
        if given is not None and given != value:
            raise ValueError(
                f"{family}: {key}={given!r} conflicts with the checkpoint, which has "
                f"{key}={value!r}. Drop the argument (it is read from the checkpoint) or use "
                "matching weights."
            )
        resolved[key] = value
    resolved.update({k: v for k, v in explicit.items() if v is not None})
    return resolved


# --- Weights -----------------------------------------------------------------------------------


def resolve_weights(weights, family: str, size: str, config_from_checkpoint: Callable):
    """`weights=` → (source, state, checkpoint config) before the model is built.

    `source` is `None` (random init), a Keras file, a registry download or an original
    checkpoint. For an original file, `state` is its tensors and the config is read from
    them; for a registry entry the config is the entry's. `num_classes` is left out: the head
    loads only when it matches the model's.
    """
    source = kvw.resolve(weights, family, size=size)
    if source is None or source.is_keras:
        return source, None, None
    if source.entry is not None:
        state, found = None, dict(source.entry["config"])
    else:
        state = kvw.read_checkpoint(source.path)
        with naming_file(source.path):
            found = config_from_checkpoint(state)
    for key in ("size", "num_classes"):
        found.pop(key, None)
    if "image_size" in found:
        found["image_size"] = image_size_pair(found["image_size"])
    return source, state, found


def entry_normalization(source) -> tuple[float, float] | None:
    """(mean, std) recorded for a registry entry, if any."""
    pre = (source.entry or {}).get("preprocessing") if source is not None else None
    if not pre or "mean" not in pre:
        return None
    return float(pre["mean"][0]), float(pre["std"][0])


def load_weights(model, weights, source, state, family: str, converter: Callable, size: str):
    """Fills the built `model` through `keras_vtn.weights` (shape-checked, head rule)."""
    if source is None:
        return
    with naming_file(source.path):
        if state is not None:
            # An original file already read: convert and assign (a head of another size stays
            # fresh, with a warning; a model without top ignores it).
            kvw.assign_weights(model, converter(state, model))
        else:
            kvw.load_weights(model, weights, family, converter=converter, size=size)
