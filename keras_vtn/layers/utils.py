"""Small helpers shared by the layers."""

from __future__ import annotations

import keras
from keras import ops


class ConfiguredLayer(keras.layers.Layer):
    """A layer whose `get_config` holds its constructor arguments, read back from the
    attributes of the same names (initializers and nested layers serialised).

    Each class lists in `config_arguments` the arguments it adds to its base classes'.

    >>> class Scale(ConfiguredLayer):
    ...     config_arguments = ("factor",)
    ...     def __init__(self, factor: float = 2.0, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.factor = factor
    >>> Scale(3.0).get_config()["factor"]
    3.0
    """

    config_arguments: tuple[str, ...] = ()

    def get_config(self):
        config = super().get_config()
        for cls in reversed(type(self).__mro__):  # base classes' arguments first
            for name in vars(cls).get("config_arguments", ()):
                value = getattr(self, name)
                if isinstance(value, (keras.initializers.Initializer, keras.layers.Layer)):
                    value = keras.saving.serialize_keras_object(value)
                config[name] = value
        return config


def check_choice(argument: str, value, choices) -> None:
    """Raises a ValueError naming the valid choices when `value` is not one of them.

    >>> check_choice("mode", "tsm", ("tsm", "token"))
    """
    if value not in choices:
        raise ValueError(f"Unknown {argument} {value!r}; use one of {tuple(choices)}.")


def to_tuple(value, length: int, name: str) -> tuple[int, ...]:
    """An int or a sequence of `length` ints as a tuple of ints."""
    if isinstance(value, int):
        return (value,) * length
    value = tuple(int(v) for v in value)
    if len(value) != length:
        raise ValueError(f"`{name}` needs {length} values, got {value}.")
    return value


def split_last(x, dims: tuple[int, ...]):
    """Reshapes the last axis of `x` into `dims`, keeping every leading axis."""
    return ops.reshape(x, (*ops.shape(x)[:-1], *dims))


def merge_last(x, count: int):
    """Merges the last `count` axes of `x` into one."""
    shape = ops.shape(x)
    width = 1
    for s in shape[-count:]:
        width *= s
    return ops.reshape(x, (*shape[:-count], width))


def check_tiling(argument: str, sizes, tiles, what: str, unit: str = "pixels") -> None:
    """Raises a ValueError when `sizes` are not whole multiples of `tiles`.

    A patch or tubelet embedding (a conv with kernel = stride) would silently drop the
    frames or pixels past the last whole tile; a model built that way ignores part of its
    input, so the builders refuse it. `argument` names the builder argument, `what` the
    tile (e.g. "tubelet_size=(2, 16, 16)"), `unit` what is dropped.

    >>> check_tiling("num_frames", (8,), (2,), "tubelet_size=(2, 16, 16)", "frames")
    """
    sizes, tiles = tuple(int(s) for s in sizes), tuple(int(t) for t in tiles)
    bad = [(i, s, t) for i, (s, t) in enumerate(zip(sizes, tiles, strict=True)) if s % t]
    if not bad:
        return
    i, s, t = bad[0]
    options = " or ".join(str(o) for o in sorted({max(t, s // t * t), (s // t + 1) * t}))
    if len(sizes) == 1:
        given, use = f"{argument}={s}", f"{argument}={options}"
    else:
        axis = ("height", "width")[i] if len(sizes) == 2 else f"axis {i}"
        given, use = f"{argument}={sizes} ({axis} {s})", f"a {axis} of {options}"
    raise ValueError(
        f"{given} is not a multiple of {t} {unit} ({what}): the last {s % t} {unit} would be "
        f"silently dropped. Use {use}."
    )
