"""Model families by name, so scripts, the CLI and the demo build models the same way."""

from __future__ import annotations

import errno
import importlib
import os

import keras

# family -> (module, builder). Modules are imported when used: a missing family is a clear error.
FAMILIES: dict[str, tuple[str, str]] = {
    "vivit": ("keras_vtn.models.vivit", "ViViT"),
    "linear_vtn": ("keras_vtn.models.linear_vtn", "LinearVTN"),
    "vtn": ("keras_vtn.models.vtn", "VTN"),
    "laps": ("keras_vtn.models.laps", "LAPSTransformer"),
}


def get_builder(family: str):
    """The builder function of `family` (`"vivit"`, `"linear_vtn"`, `"vtn"`, `"laps"`)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, not {family!r}")
    module_name, builder = FAMILIES[family]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ImportError(
            f"The {family!r} family ({module_name}) is not in this installation of keras_vtn."
        ) from error
    return getattr(module, builder)


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
        for name in FAMILIES:  # register family-specific layers that are installed
            try:
                importlib.import_module(FAMILIES[name][0])
            except ImportError:
                pass
        return keras.saving.load_model(path, compile=False)
    if family is None:
        raise ValueError("Give a model file (.keras) or a family name.")
    return build_model(family, **builder_kwargs)


def model_clip_shape(model: keras.Model) -> tuple[int | None, int | None, int | None]:
    """`(frames, height, width)` of a model's clip input (None where not fixed)."""
    shape = model.input_shape
    if isinstance(shape, dict):
        shape = shape.get("frames", next(iter(shape.values())))
    elif isinstance(shape, list):
        shape = shape[0]
    return tuple(shape[1:4])


def takes_frame_indices(model: keras.Model) -> bool:
    """Whether the model takes `{"frames", "frame_indices"}` (VTN with `frame_indices=True`)."""
    return isinstance(model.input_shape, dict) or (
        isinstance(model.input_shape, list) and len(model.input_shape) > 1
    )
