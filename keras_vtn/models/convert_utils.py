"""Helpers the family converters share: reading structure off checkpoint names."""

from __future__ import annotations

import re


def count_blocks(state, prefix: str) -> int:
    """How many numbered blocks `{prefix}{i}.` / `{prefix}{i}/` the names hold (0 if none).

    >>> count_blocks({"blocks.0.w": 0, "blocks.1.w": 0, "norm.w": 0}, "blocks.")
    2
    """
    pattern = re.compile(re.escape(prefix) + r"(\d+)[/.]")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if found != set(range(len(found))):
        raise ValueError(f"Non-contiguous block indices under {prefix!r}: {sorted(found)}.")
    return len(found)


def strip_prefix(state: dict, prefix: str) -> dict:
    """Drops `prefix` (e.g. DataParallel's `module.`) when every name carries it.

    >>> strip_prefix({"module.a": 1, "module.b": 2}, "module.")
    {'a': 1, 'b': 2}
    """
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def check_no_leftovers(names, checkpoint: str, hint: str) -> None:
    """Raises when tensors of the `checkpoint` kind were not mapped (`hint` says what to expect).

    >>> check_no_leftovers([], "VTN", "")
    >>> check_no_leftovers(["extra.w"], "VTN", "Is this a VTN checkpoint?")
    Traceback (most recent call last):
    ValueError: Unexpected tensors in the VTN checkpoint: ['extra.w']. Is this a VTN checkpoint?
    """
    leftovers = sorted(names)
    if leftovers:
        raise ValueError(
            f"Unexpected tensors in the {checkpoint} checkpoint: {leftovers[:10]}"
            f"{' ...' if len(leftovers) > 10 else ''}. {hint}"
        )
