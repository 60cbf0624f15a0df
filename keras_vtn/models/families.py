"""The model families by name: the one table that the CLI, training, the demo, evaluation,
the benchmarks and the examples read.

A `Family` holds everything that is specific to one family: its public builder, its size
presets, how its original checkpoints are recognised (`detect`), read
(`config_from_checkpoint`) and mapped (`convert`), its default input normalisation, and the
small configuration the demo trains. `register_family` adds one (e.g. in a test or a plugin):
every consumer looks the table up when it runs, so a registered family is offered by
`keras-vtn convert --family`, `TrainConfig(family=...)`, the demo and `keras-vtn predict`.

Example:
>>> sorted(FAMILIES)
['laps', 'linear_vtn', 'vivit', 'vtn']
>>> FAMILIES["vtn"].size_argument, sorted(FAMILIES["vtn"].sizes)
('size', ['base'])
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import keras


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
    """One model family.

    Attributes:
        name: the family's name (`family=` everywhere, the registry's `family` field).
        graph: `graph(config) -> keras.Model`, the Keras graph of a merged config (no I/O).
        builder: the public builder, `builder(weights=..., num_classes=..., num_frames=...,
            image_size=..., **architecture) -> keras.Model`; default:
            `keras_vtn.models.pipeline.build` of this family (resolve `weights`, merge the
            config, `graph(config)`, convert and assign the weights).
        config_from_checkpoint: `(state) -> dict` of builder arguments that an original
            checkpoint's tensors determine (checked; raises `CheckpointError`).
        convert: `(state, model) -> {variable path: array}`, the name map of an original
            checkpoint onto a model built with that checkpoint's architecture. The
            architecture comes from `keras_vtn.model_config(model)`; the model itself gives
            only the variable shapes to fit (position tables resized to its clip size, a head
            part it may lack).
        detect: `(state) -> bool`, whether a checkpoint's tensor names are this family's.
        sizes: the size presets (`{name: architecture arguments}`).
        size_argument: the builder argument that picks a preset (`"size"`, LAPS `"backbone"`).
        normalization: default (mean, std) of the input normalisation, for RGB in [0, 1].
        demo_model: builder arguments of a small model for 8 frames of 32×32 pixels (the demo).
        demo_epochs: epochs the demo trains that model for.
        demo_training: `TrainConfig` fields the demo sets for this family.

    The build hooks (`keras_vtn.models.pipeline.build_from_call`; `None`: the default) take
    the builder's arguments as a dict (`call`):
        prepare: `(call) -> call`, checks and completes them before `weights` is resolved;
            default: the size preset must be one of `sizes`.
        registry_key: `(call) -> dict`, what registry entries are matched on; default the
            size preset.
        read: `(source, call) -> (state, checkpoint config)` of the resolved `weights`;
            default `pipeline.read_source` with `config_from_checkpoint`.
        merge: `(call, source, checkpoint config) -> dict`, the architecture values the
            family's rules and `pipeline.merge_config` decide; default: preset < checkpoint <
            explicit arguments.
        load: `(model, source, state, call)`, applies the weights; default
            `pipeline.apply_weights` with `convert`.
    """

    name: str
    graph: Callable[[dict], keras.Model] | None = None
    builder: Callable[..., keras.Model] | None = None
    config_from_checkpoint: Callable[..., dict]
    convert: Callable[[dict, Any], dict]
    detect: Callable[[dict], bool]
    sizes: Mapping[str, dict] = dataclasses.field(default_factory=dict)
    size_argument: str = "size"
    normalization: tuple[float, float] = (0.5, 0.5)
    demo_model: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    demo_epochs: int = 12
    demo_training: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prepare: Callable[[dict], dict] | None = None
    registry_key: Callable[[dict], dict] | None = None
    read: Callable[[Any, dict], tuple] | None = None
    merge: Callable[[dict, Any, dict | None], dict] | None = None
    load: Callable[[Any, Any, Any, dict], Any] | None = None


FAMILIES: dict[str, Family] = {}


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Adds `family` to `FAMILIES` (an existing name needs `replace=True`); returns it."""
    if not isinstance(family, Family):
        raise TypeError(f"register_family takes a Family, got {type(family).__name__}.")
    if family.name in FAMILIES and not replace:
        raise ValueError(
            f"a family named {family.name!r} is registered already; pass replace=True to "
            "replace it."
        )
    FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Removes a family added with `register_family`."""
    FAMILIES.pop(name, None)


def get_family(family: str | Family) -> Family:
    """The `Family` called `family` (a `Family` is returned as is)."""
    if isinstance(family, Family):
        return family
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, not {family!r}")
    return FAMILIES[family]


def detect_family(state: dict) -> str:
    """The name of the family whose `detect` recognises a checkpoint's tensor names."""
    for family in FAMILIES.values():
        if family.detect(state):
            return family.name
    names = list(state)
    if any("Transformer/encoderblock_" in n or "blocks.0.attn.qkv.weight" in n for n in names):
        raise ValueError(
            "this looks like an image ViT checkpoint, which only initialises part of a video "
            "model; pass it as weights=PATH to a builder (e.g. keras_vtn.ViViT) instead."
        )
    raise ValueError(
        "cannot tell the model family from the tensor names; pass --family "
        f"({', '.join(sorted(FAMILIES))})."
    )


def get_builder(family: str) -> Callable[..., keras.Model]:
    """The builder function of `family` (`"vivit"`, `"linear_vtn"`, `"vtn"`, `"laps"`, ...)."""
    spec = get_family(family)
    if spec.builder is not None:
        return spec.builder
    from keras_vtn.models.pipeline import build

    return functools.partial(build, spec.name)


def build_model(family: str, **kwargs) -> keras.Model:
    """`get_builder(family)(**kwargs)`."""
    return get_builder(family)(**kwargs)


def load_model(
    model: str | os.PathLike | None = None,
    *,
    family: str | None = None,
    **builder_kwargs,
) -> keras.Model:
    """A saved Keras model (`.keras`, loaded in safe mode) or a family builder's model.

    `builder_kwargs` (e.g. `weights`, `variant`, `num_classes`) go to the builder.
    """
    if model is not None:
        path = os.fspath(model)
        if not path.endswith(".keras"):
            raise ValueError(
                f"{path!r}: give a saved `.keras` model, or --family with --weights for a "
                "checkpoint (.weights.h5 or an original checkpoint)."
            )
        if not os.path.isfile(path):  # Keras would say only "File not found" as a ValueError
            raise FileNotFoundError(errno.ENOENT, "No saved model file", path)
        import keras_vtn.layers  # noqa: F401  (registers the serializable layers)

        return keras.saving.load_model(path, compile=False)
    if family is None:
        raise ValueError("Give a model file (.keras) or a family name.")
    return build_model(family, **builder_kwargs)


def model_clip_shape(model: keras.Model) -> tuple[int | None, int | None, int | None]:
    """`(frames, height, width)` of a model's clip input (None where not fixed, and all None
    for a model that takes no (batch, frames, height, width, channels) clip).

    Read from the input tensors by name: Keras orders `input_shape` of a dict-input model by
    key, which puts VTN's `frame_indices` before its `frames`."""
    inputs = model.input
    if isinstance(inputs, dict):
        inputs = inputs.get("frames", next(iter(inputs.values())))
    elif isinstance(inputs, (list, tuple)):
        inputs = next((x for x in inputs if len(x.shape) == 5), inputs[0])
    if len(inputs.shape) != 5:
        return None, None, None
    return tuple(inputs.shape[1:4])


def takes_frame_indices(model: keras.Model) -> bool:
    """Whether the model takes `{"frames", "frame_indices"}` (VTN with `frame_indices=True`)."""
    return isinstance(model.input_shape, dict) or (
        isinstance(model.input_shape, list) and len(model.input_shape) > 1
    )


# --- the four families ---------------------------------------------------------------------


def _names_contain(state: dict, *fragments: str) -> bool:
    """Whether every fragment occurs in some tensor name."""
    return all(any(fragment in name for name in state) for fragment in fragments)


def _is_vivit(state: dict) -> bool:
    if any(_names_contain(state, f) for f in
           ("SpatialTransformer/", "vivit.embeddings.", "cls_TemporalTransformer")):
        return True
    return _names_contain(state, "Transformer/encoderblock_") and any(
        name.endswith("embedding/kernel") and getattr(state[name], "ndim", 0) == 5
        for name in state
    )


# The small per-frame ViT and temporal encoder of both frame → temporal demo models.
_DEMO_FRAME_TEMPORAL = dict(
    patch_size=4, hidden_dim=64, num_spatial_layers=2, num_spatial_heads=4,
    spatial_mlp_dim=128, num_temporal_layers=2, num_temporal_heads=4, temporal_mlp_dim=128,
)


def _register_builtin_families() -> None:
    from keras_vtn.models import (
        laps,
        laps_convert,
        linear_vtn,
        linear_vtn_convert,
        vivit,
        vivit_convert,
        vtn,
        vtn_convert,
    )

    # Detection order matters: the first family whose names match wins.
    register_family(Family(
        **linear_vtn.BUILD_HOOKS,
        name="linear_vtn", builder=linear_vtn.LinearVTN, graph=linear_vtn.linear_vtn_graph,
        config_from_checkpoint=linear_vtn_convert.config_from_checkpoint,
        convert=linear_vtn_convert.convert_linear_vtn,
        detect=lambda s: _names_contain(s, "temporal_transformer.layers.", ".fn.fn.proj_k"),
        sizes=linear_vtn.SIZES, normalization=(0.5, 0.5),
        demo_model=dict(_DEMO_FRAME_TEMPORAL, temporal_head_dim=16, linformer_k=4),
        # A per-frame ViT then a temporal model on frame vectors needs longer to tell rotation
        # directions apart than ViViT (tubelets see two frames) and LAPS (cross-frame blocks).
        demo_epochs=24,
    ))
    register_family(Family(
        **vtn.BUILD_HOOKS,
        name="vtn", builder=vtn.VTN, graph=vtn.vtn_graph,
        config_from_checkpoint=vtn_convert.config_from_checkpoint,
        convert=vtn_convert.convert_vtn,
        detect=lambda s: _names_contain(s, "temporal_encoder.encoder.layer."),
        sizes=vtn.SIZES, normalization=(0.45, 0.225),
        demo_model=dict(_DEMO_FRAME_TEMPORAL, attention_window=8, head_hidden_dim=64),
        demo_epochs=32,
        # The post-LN Longformer needs a lower rate and a longer warm-up: at 1e-3 with 1
        # warm-up epoch it stayed at 39% after 24 epochs; at 5e-4 with 4 it reached 98%.
        demo_training=dict(learning_rate=5e-4, warmup_epochs=4.0),
    ))
    register_family(Family(
        **vivit.BUILD_HOOKS,
        name="vivit", builder=vivit.ViViT, graph=vivit.vivit_graph,
        config_from_checkpoint=vivit_convert.config_from_checkpoint,
        convert=vivit_convert.convert_vivit, detect=_is_vivit, sizes=vivit.SIZES,
        normalization=(0.5, 0.5),
        demo_model=dict(
            variant="factorised_encoder", tubelet_size=(2, 4, 4), hidden_dim=64, num_heads=4,
            mlp_dim=128, num_spatial_layers=2, num_temporal_layers=2,
        ),
    ))
    register_family(Family(
        **laps.BUILD_HOOKS,
        name="laps", builder=laps.LAPSTransformer, graph=laps.laps_graph,
        config_from_checkpoint=laps_convert.config_from_checkpoint,
        convert=laps_convert.convert_laps,
        detect=lambda s: _names_contain(s, "module.base_model."),
        sizes={name: {} for name in laps.BACKBONES}, size_argument="backbone",
        normalization=(0.5, 0.5),
        demo_model=dict(
            backbone="vit_base", patch_size=4, hidden_dim=64, num_layers=4, num_heads=4,
            mlp_dim=128,
        ),
    ))


_register_builtin_families()
