"""Helpers the family converters share: reading structure off checkpoint names, safely.

A checkpoint decides the architecture that is built, so everything read from it is checked
before anything is built: a tensor that an inference reads must exist, have the expected rank
and no zero-size axis (`shape_of`); a quantity read from several tensors must agree across
them (`agree`); numbered blocks must be contiguous and alike (`count_blocks`); and every
quantity must stay within `MARGIN` × the largest known configuration (`check_limit`). A
file that fails is not a genuine checkpoint, and building from it could exhaust memory.

Converters look tensors up in a `CheckpointState`, so a missing one is a `CheckpointError`
naming it (as spelled in the file), not a KeyError.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator

import numpy as np

from keras_vtn.weights.errors import CheckpointError

MARGIN = 2
# The largest value of each architecture quantity among the published configurations of the
# four families (ViT-H/14 and ViViT-H are the largest models). A checkpoint may exceed one by
# MARGIN (room for modest variants) before it is refused.
LARGEST_KNOWN: dict[str, int] = {
    "width": 1280,  # ViT-H/14, ViViT-H
    "mlp_width": 5120,  # ViT-H/14, ViViT-H
    "depth": 32,  # ViT-H/14 blocks (per encoder; ViViT-L FE's temporal encoders have 24)
    "heads": 16,  # ViT-L, ViT-H
    "head_dim": 128,  # elb3k Linformer heads, Visformer-S stage 3
    "attention_width": 1536,  # elb3k Linformer: 12 heads × 128
    "patch": 16,  # /16 patches and 16x16 tubelets (ViT-H uses 14)
    "tubelet_frames": 4,  # ViViT's tubelet-length ablation
    "stem_width": 32,  # Visformer-S
    "frame_positions": 2025,  # Visformer-S at 360 px: a 45 × 45 stage-1 table
    "video_positions": 6401,  # ViViT /16x2 at 320 px, 32 frames: 16·20·20 tokens + CLS
    "temporal_tokens": 17,  # ViViT FE temporal encoder: 32 frames / 2 + CLS
    "linformer_frames": 16,  # elb3k lin-vtn: E covers 16 frames + CLS
    "linformer_k": 8,  # elb3k lin-vtn
    "longformer_positions": 288,  # bomri VTN's Longformer table
    "classes": 21843,  # ImageNet-21k heads of the ViT image checkpoints
}



def _missing(state, key: str) -> CheckpointError:
    if isinstance(state, CheckpointState):
        return state.missing(key)
    return CheckpointError(
        f"Missing tensor {key!r}. The file is truncated or partial, or it is from another "
        "family or layout."
    )


class CheckpointState(dict):
    """A checkpoint's `{name: array}` whose lookups fail as a `CheckpointError` naming the tensor.

    `family` says what kind of checkpoint is expected (for the hint); `display(key)` gives the
    name as spelled in the file when keys were stripped of prefixes or renamed.

    >>> state = CheckpointState({"b": 1}, "VTN", lambda k: "module." + k)
    >>> state.pop("b"), state.pop("c", None)
    (1, None)
    >>> state["a"]
    Traceback (most recent call last):
    keras_vtn.weights.errors.CheckpointError: Missing tensor 'module.a'. The file is \
truncated or partial, or it holds another family or layout than the expected VTN.
    """

    def __init__(self, tensors, family: str, display: Callable[[str], str] | None = None):
        super().__init__(tensors)
        self.family = family
        self.display = display or (lambda key: key)

    def __missing__(self, key):
        raise self.missing(key)

    def missing(self, key: str) -> CheckpointError:
        return CheckpointError(
            f"Missing tensor {self.display(key)!r}. The file is truncated or partial, or it "
            f"holds another family or layout than the expected {self.family}."
        )

    def pop(self, key, *default):
        if key in self or default:
            return super().pop(key, *default)
        raise self.missing(key)

    def under(self, prefix: str) -> CheckpointState:
        """The tensors named `prefix...`, without the prefix (errors still name them in full)."""
        return CheckpointState(
            {k[len(prefix) :]: v for k, v in self.items() if k.startswith(prefix)},
            self.family,
            lambda key: self.display(prefix + key),
        )

    def outside(self, prefix: str) -> CheckpointState:
        """The tensors not named `prefix...`."""
        return CheckpointState(
            {k: v for k, v in self.items() if not k.startswith(prefix)}, self.family, self.display
        )


def as_state(state, family: str) -> CheckpointState:
    """`state` as a `CheckpointState` (kept as is when it already is one)."""
    return state if isinstance(state, CheckpointState) else CheckpointState(state, family)


@contextlib.contextmanager
def naming_file(path) -> Iterator[None]:
    """Prefixes the messages of CheckpointErrors raised inside with the checkpoint's path."""
    try:
        yield
    except CheckpointError as err:
        where = os.fspath(path)
        if where in str(err):
            raise
        raise type(err)(f"{where}: {err}") from None


def tensor_name(state, key: str) -> str:
    """`key` as spelled in the file (prefixes and renames undone when `state` knows them)."""
    display = getattr(state, "display", None)
    return display(key) if display else key


def shape_of(state, key: str, ndim: int) -> tuple[int, ...]:
    """The shape of tensor `key`, which must exist, have `ndim` axes and no zero-size axis."""
    if key not in state:
        raise _missing(state, key)
    shape = tuple(int(s) for s in np.shape(state[key]))
    if len(shape) != ndim:
        raise CheckpointError(
            f"Tensor {tensor_name(state, key)!r} has shape {shape}; expected {ndim} axes."
        )
    if 0 in shape:
        raise CheckpointError(
            f"Tensor {tensor_name(state, key)!r} has a zero-size shape {shape}: a weight with no "
            "values, so the file is not a trained checkpoint."
        )
    return shape


def check_nonempty(state) -> None:
    """Every tensor holds values: a zero-size weight is not a checkpoint."""
    for key, value in state.items():
        shape = np.shape(value)
        if 0 in shape:
            raise CheckpointError(
                f"Tensor {tensor_name(state, key)!r} has a zero-size shape {tuple(shape)}: a "
                "weight with no values, so the file is not a trained checkpoint."
            )


def agree(quantity: str, readings: dict[str, int], state=None) -> int:
    """The value of `quantity` that every tensor in `readings` ({name: value it implies}) gives.

    >>> agree("width", {"a": 8, "b": 8})
    8
    >>> agree("width", {"a": 8, "b": 9})
    Traceback (most recent call last):
    keras_vtn.weights.errors.CheckpointError: The tensors disagree on the width: 'a' gives 8, \
'b' gives 9.
    """
    values = set(readings.values())
    if len(values) != 1:
        found = ", ".join(f"{tensor_name(state, k)!r} gives {v}" for k, v in readings.items())
        raise CheckpointError(f"The tensors disagree on the {quantity}: {found}.")
    return values.pop()


def check_limit(quantity: str, value: int, key: str, state=None) -> int:
    """`value` of `quantity` (read from tensor `key`) is within 1..MARGIN × the largest known.

    >>> check_limit("depth", 12, "blocks.11.norm1.weight")
    12
    """
    limit = MARGIN * LARGEST_KNOWN[quantity]
    if not 1 <= value <= limit:
        raise CheckpointError(
            f"{tensor_name(state, key)!r} implies {quantity.replace('_', ' ')} {value}, "
            f"outside 1..{limit} ({MARGIN} × {LARGEST_KNOWN[quantity]}, the largest known "
            "configuration): not a genuine checkpoint of this family."
        )
    return value


def check_limits(state, **readings: tuple[int, str]) -> None:
    """`check_limit` for each `quantity=(value, tensor name)`."""
    for quantity, (value, key) in readings.items():
        check_limit(quantity, value, key, state)


def count_blocks(state, prefix: str) -> int:
    """How many numbered blocks `{prefix}{i}.` / `{prefix}{i}/` the names hold (0 if none).

    The indices must be contiguous, their number within the depth limit, and every block
    must hold the tensors of block 0, with the same shapes (a partial block is not a layer
    of a real model).

    >>> count_blocks({"blocks.0.w": np.zeros(2), "blocks.1.w": np.zeros(2), "n": 0}, "blocks.")
    2
    """
    pattern = re.compile(re.escape(prefix) + r"(\d{1,9})([/.])")
    blocks: dict[int, dict[str, tuple]] = {}
    separator = "."
    for key, value in state.items():
        if m := pattern.match(key):
            separator = m.group(2)
            blocks.setdefault(int(m.group(1)), {})[key[m.end() :]] = np.shape(value)
    if not blocks:
        return 0
    count = len(blocks)
    check_limit("depth", count, f"{prefix}{max(blocks)}{separator}...", state)
    if sorted(blocks) != list(range(count)):
        raise CheckpointError(
            f"Non-contiguous block indices under {tensor_name(state, prefix)!r}: "
            f"{sorted(blocks)[:20]}."
        )
    # Block 0 is the reference; a tensor only it holds is a stray that the converter reports
    # as unexpected, every other one must be in every block with the same shape.
    first = blocks[0]
    shared = [k for k in sorted(first) if any(k in blocks[i] for i in range(1, count))]
    for i in range(1, count):
        for suffix in shared:
            ours, theirs = blocks[i].get(suffix), first[suffix]
            if ours == theirs:
                continue
            key = f"{prefix}{i}{separator}{suffix}"
            if ours is None:
                raise _missing(state, key)
            block0 = tensor_name(state, f"{prefix}0{separator}{suffix}")
            raise CheckpointError(
                f"Tensor {tensor_name(state, key)!r} has shape {ours} but {block0!r} has "
                f"{theirs}: the blocks of a model are alike, so this one is corrupt or not part "
                "of the model."
            )
    return count


def strip_prefix(state: dict, prefix: str, family: str = "original") -> CheckpointState:
    """Drops `prefix` (e.g. DataParallel's `module.`) when every name carries it.

    >>> dict(strip_prefix({"module.a": 1, "module.b": 2}, "module."))
    {'a': 1, 'b': 2}
    """
    state = as_state(state, family)
    if state and all(k.startswith(prefix) for k in state):
        return state.under(prefix)
    return CheckpointState(state, state.family, state.display)


def torch_names(take: Callable[[str], np.ndarray], names: dict[str, str], dst: str = "",
                src: str = "") -> dict[str, np.ndarray]:
    """`{dst + path: take(src + name)}` for a `{variable path: torch name}` table; a `.../kernel`
    is a torch Linear weight (out, in), transposed to Keras' (in, out).

    >>> state = {"fc.weight": np.zeros((3, 2)), "fc.bias": np.zeros(3)}
    >>> mapped = torch_names(state.pop, {"fc/kernel": "weight", "fc/bias": "bias"}, src="fc.")
    >>> {path: value.shape for path, value in mapped.items()}, state
    ({'fc/kernel': (2, 3), 'fc/bias': (3,)}, {})
    """
    return {
        dst + path: take(src + name).T if path.endswith("kernel") else take(src + name)
        for path, name in names.items()
    }


def check_no_leftovers(names, checkpoint: str, hint: str = "", *, noun: str | None = None) -> None:
    """Raises when tensors of the `checkpoint` kind were not mapped (`hint` says what to expect;
    `noun` replaces "tensors in the <checkpoint> checkpoint" in the message).

    >>> check_no_leftovers([], "VTN", "")
    >>> check_no_leftovers(["extra.w"], "VTN", "Is this a VTN checkpoint?")
    Traceback (most recent call last):
    keras_vtn.weights.errors.CheckpointError: Unexpected tensors in the VTN checkpoint: \
['extra.w']. Is this a VTN checkpoint?
    """
    leftovers = sorted(names)
    if leftovers:
        raise CheckpointError(
            f"Unexpected {noun or f'tensors in the {checkpoint} checkpoint'}: {leftovers[:10]}"
            f"{' ...' if len(leftovers) > 10 else ''}. {hint}".rstrip()
        )
