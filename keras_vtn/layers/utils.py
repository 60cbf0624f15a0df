"""Small helpers shared by the layers."""

from __future__ import annotations

from keras import ops


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
