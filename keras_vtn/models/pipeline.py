"""How a model is built: weights → config → graph → weights applied.

1. `weights=` is resolved once (`keras_vtn.weights.resolve`: `None`, a registry download, a
   Keras file or an original checkpoint).
2. The architecture config starts from the size preset, takes what the registry entry or the
   checkpoint's tensors fix (`Family.config_from_checkpoint`) and then the explicit builder
   arguments: `merge_config`, where an explicit value that contradicts the checkpoint is an
   error (it would build a model the weights cannot fill).
3. `Family.graph(config)` builds the Keras graph (no I/O); the merged config is recorded on
   the model (`model_config`).
4. The weights are applied: a Keras file directly, an original checkpoint through
   `Family.convert(state, model)` and `keras_vtn.weights.assign_weights` (shape-checked, the
   head kept fresh when `num_classes` differs), registry downloads through the
   converted-weights cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import keras

import keras_vtn.weights as kvw
from keras_vtn.models.convert_utils import naming_file

CONFIG_ATTRIBUTE = "_keras_vtn_config"
DEFAULT_NUM_CLASSES = 400  # Kinetics-400, when neither the caller nor a video checkpoint says


def _differs(given, found) -> bool:
    if isinstance(given, (list, tuple)) or isinstance(found, (list, tuple)):
        return tuple(given) != tuple(found)
    return given != found


def merge_config(
    label: str,
    preset: Mapping[str, Any],
    checkpoint: Mapping[str, Any] | None,
    explicit: Mapping[str, Any],
    *,
    conflict: str = "conflicts with",
    source: str = "",
) -> dict:
    """preset < checkpoint < explicit arguments (`None` = not given); a conflict is an error.

    `label` and `source` (e.g. the checkpoint's path) name the model and file in the error;
    `conflict` is its verb.

    >>> merge_config("Toy", {"depth": 2, "width": 8}, {"width": 16}, {"depth": 3, "width": None})
    {'depth': 3, 'width': 16}
    >>> merge_config("Toy", {}, {"width": 16}, {"width": 8})
    Traceback (most recent call last):
    ValueError: Toy: width=8 conflicts with the checkpoint, which has width=16. Drop the \
argument (it is read from the checkpoint) or use matching weights.
    """
    merged = dict(preset)
    for key, value in (checkpoint or {}).items():
        given = explicit.get(key)
        if given is not None and _differs(given, value):
            where = f" {source}" if source else ""
            raise ValueError(
                f"{label}: {key}={given!r} {conflict} the checkpoint{where}, which has "
                f"{key}={value!r}. Drop the argument (it is read from the checkpoint) or use "
                "matching weights."
            )
        merged[key] = value
    merged.update({k: v for k, v in explicit.items() if v is not None})
    return merged


def num_classes_default(num_classes: int | None, checkpoint: Mapping[str, Any] | None) -> int:
    """`num_classes`, else a video checkpoint's head size, else 400 (the rule of every family)."""
    if num_classes is not None:
        return int(num_classes)
    return int((checkpoint or {}).get("num_classes", DEFAULT_NUM_CLASSES))


def read_source(source, config_from_checkpoint, **read_kwargs) -> tuple[dict | None, dict | None]:
    """`(state, checkpoint config)` of a resolved source: a registry entry gives its recorded
    config (its tensors are read later, or never when the converted cache has them), an
    original file its tensors and the config they fix; a Keras file or `None` gives neither."""
    if source is None or source.is_keras:
        return None, None
    if source.entry is not None:
        return None, dict(source.entry["config"])
    state = kvw.read_checkpoint(source.path)
    with naming_file(source.path):
        return state, dict(config_from_checkpoint(state, **read_kwargs))


def apply_weights(model, source, state, family: str, converter) -> kvw.AssignReport | None:
    """Step 4: fills the built `model` from the resolved `source` (see the module docstring)."""
    if source is None:
        return None
    with naming_file(source.path):
        return kvw.load_source(model, source, family, converter, state)


def attach_config(model: keras.Model, family: str, config: Mapping[str, Any]) -> keras.Model:
    """Records `(family, merged config)` on `model`, read back by `model_config`."""
    setattr(model, CONFIG_ATTRIBUTE, {"family": family, "config": dict(config)})
    return model


def model_config(model: keras.Model) -> dict:
    """The merged config a family's `graph(config)` built `model` from, with its `family`.

    >>> import keras_vtn
    >>> model = keras_vtn.LAPSTransformer(num_frames=4, image_size=32, patch_size=16,
    ...     hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64, num_classes=5)
    >>> config = model_config(model)
    >>> config["family"], config["num_classes"], config["hidden_dim"]
    ('laps', 5, 32)
    """
    recorded = getattr(model, CONFIG_ATTRIBUTE, None)
    if recorded is None:
        raise ValueError(
            f"model {model.name!r} was not built by a keras_vtn family builder (or was loaded "
            "from a .keras file, which keeps the graph, not the builder config)."
        )
    return {"family": recorded["family"], **recorded["config"]}


def build(
    family,
    weights: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    **arguments,
) -> keras.Model:
    """Builds a model of a registered family that has a `graph`: the four steps above.

    `arguments` are the family's architecture arguments and its size preset (named by
    `Family.size_argument`; default the first preset). Registry entries are matched on them.
    """
    from keras_vtn.models.families import get_family

    spec = get_family(family)
    if spec.graph is None:
        raise ValueError(f"family {spec.name!r} has no graph(config); use its builder.")
    size = arguments.pop(spec.size_argument, None)
    call = {spec.size_argument: size, "weights": weights, "num_classes": num_classes, **arguments}
    return build_from_call(spec, call)


def build_from_call(family, call: Mapping[str, Any]) -> keras.Model:
    """The one build of every family, from a builder's arguments (`call`: its `locals()` on
    entry, or `build`'s): the family's hooks (`Family.prepare`, `registry_key`, `read`,
    `merge`, `load`; defaults below) fill in the four steps above.

    The recorded config is the call with the merged values in place (`weights` left out: the
    config says what the graph is, not where weights came from).
    """
    from keras_vtn.models.families import get_family

    spec = get_family(family)
    call = (spec.prepare or _check_size(spec))(dict(call))
    registry_key = spec.registry_key or (lambda c: {spec.size_argument: c[spec.size_argument]})
    source = kvw.resolve(call["weights"], spec.name, **registry_key(call))
    if spec.read is None:
        state, found = read_source(source, spec.config_from_checkpoint)
    else:
        state, found = spec.read(source, call)
    merged = (spec.merge or _merge_arguments(spec))(call, source, found)
    if spec.builder is None:
        config = {spec.size_argument: call[spec.size_argument], **merged}
    else:  # exactly the builder's parameters
        config = {name: merged.get(name, call[name]) for name in call if name != "weights"}
    model = attach_config(spec.graph(config), spec.name, config)
    if source is not None:
        if spec.load is None:
            apply_weights(model, source, state, spec.name, spec.convert)
        else:
            spec.load(model, source, state, call)
    return model


def _check_size(spec):
    """Default `prepare`: the size preset named (default the first) must be one of `sizes`."""

    def prepare(call: dict) -> dict:
        size = call[spec.size_argument] or next(iter(spec.sizes), None)
        if spec.sizes and size not in spec.sizes:
            raise ValueError(f"Unknown {spec.name} {spec.size_argument} {size!r}; available: "
                             f"{sorted(spec.sizes)}.")
        return {**call, spec.size_argument: size}

    return prepare


def _merge_arguments(spec):
    """Default `merge`: the size preset < the checkpoint's architecture < the explicit
    arguments, and the `num_classes` default rule."""

    def merge(call: dict, source, found: Mapping[str, Any] | None) -> dict:
        fixed = ("weights", "num_classes", spec.size_argument)
        explicit = {k: v for k, v in call.items() if k not in fixed}
        preset = spec.sizes.get(call[spec.size_argument], {})
        config = merge_config(spec.name, preset, _architecture(found), explicit)
        config["num_classes"] = num_classes_default(call["num_classes"], found)
        return config

    return merge


def _architecture(found: Mapping[str, Any] | None) -> dict:
    """A checkpoint's config without what does not fix the architecture (its head size and
    preset name: a head of another size is simply not loaded)."""
    return {k: v for k, v in (found or {}).items() if k not in ("num_classes", "size")}
