"""Analytic FLOP counter for Keras models, per layer.

The counter traces the model symbolically once (no arithmetic is done: placeholders on
TensorFlow, `jax.eval_shape` on JAX, meta tensors on PyTorch) while the contraction ops that
Keras layers call are wrapped, so every matmul (Dense), einsum (EinsumDense, the attention
products q·kᵀ and p·v with their real token counts, Linformer projections), convolution (patch
and tubelet projections, Visformer convs) and fused `dot_product_attention` is counted from the
shapes it actually received. Each count is charged to the layer path active at that moment
(Keras name scopes, e.g. `block_3/attention`).

Conventions: one multiply-accumulate (MAC) = 2 FLOPs. Papers and fvcore report "FLOPs" that are
MACs (ViT-B/16 at 224: 17.6 G per frame); `Count.macs` matches those, `Count.flops` is used
against the measured 2·n³ matmul peak. Element-wise work (softmax, normalisation, GELU,
biases, additions) is not counted, as in fvcore.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

import keras

# Ops wrapped while counting, in both namespaces layers import them from.
_OPS = ("matmul", "einsum", "conv", "depthwise_conv", "dot_product_attention")


@dataclass
class Count:
    """MACs per layer path and per op kind."""

    by_path: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_op: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def macs(self) -> int:
        return int(sum(self.by_op.values()))

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def reset(self) -> None:
        self.by_path.clear()
        self.by_op.clear()

    def add(self, op: str, macs: int) -> None:
        from keras.src.backend.common.name_scope import current_path

        self.by_path[current_path() or "<model>"] += int(macs)
        self.by_op[op] += int(macs)

    def by_prefix(self, depth: int = 1) -> dict[str, int]:
        """MACs summed over the first `depth` components of the layer path."""
        out: dict[str, int] = defaultdict(int)
        for path, macs in self.by_path.items():
            out["/".join(path.split("/")[:depth])] += macs
        return dict(out)

    def summary(self) -> dict:
        return {
            "macs": self.macs,
            "flops": self.flops,
            "gmacs": self.macs / 1e9,
            "by_op_gmacs": {k: v / 1e9 for k, v in sorted(self.by_op.items())},
        }


def _shape(x) -> tuple[int, ...]:
    shape = tuple(x.shape)
    if any(d is None for d in shape):
        raise ValueError(f"FLOP counting needs static shapes, got {shape}.")
    return tuple(int(d) for d in shape)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + a
    b = (1,) * (n - len(b)) + b
    return tuple(max(x, y) for x, y in zip(a, b, strict=True))


def matmul_macs(a_shape, b_shape) -> int:
    """MACs of `a @ b` with NumPy semantics (1-D operands, broadcast batch axes)."""
    a, b = tuple(a_shape), tuple(b_shape)
    if len(a) == 1:
        a = (1, *a)
    if len(b) == 1:
        b = (*b, 1)
    batch = _broadcast(a[:-2], b[:-2])
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def einsum_macs(subscripts: str, *shapes) -> int:
    """MACs of a two-operand einsum: the product of every index size (ellipsis included).

    One-operand einsums (transposes, reductions) and more than two operands count 0 / are
    rejected: the package uses only pairwise contractions.
    """
    inputs = subscripts.replace(" ", "").split("->")[0].split(",")
    if len(inputs) == 1:
        return 0
    if len(inputs) != 2:
        raise ValueError(f"Only pairwise einsums are counted, got {subscripts!r}.")
    sizes: dict[str, int] = {}
    ellipsis: tuple[int, ...] = ()
    for spec, shape in zip(inputs, shapes, strict=True):
        letters = spec.replace("...", "")
        if "..." in spec:
            head, tail = spec.split("...")
            n_ell = len(shape) - len(head) - len(tail)
            ell = tuple(shape[len(head) : len(head) + n_ell])
            ellipsis = _broadcast(ellipsis, ell)
            dims = tuple(shape[: len(head)]) + tuple(shape[len(shape) - len(tail) :])
        else:
            dims = tuple(shape)
        if len(letters) != len(dims):
            raise ValueError(f"einsum {subscripts!r} does not match shapes {shapes}.")
        for letter, dim in zip(letters, dims, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), int(dim))
    return math.prod(ellipsis) * math.prod(sizes.values())


def conv_macs(out_shape, kernel_shape) -> int:
    """MACs of a convolution: every output element costs prod(kernel spatial) · in/groups."""
    return math.prod(out_shape) * math.prod(kernel_shape[:-1])


def attention_macs(query_shape, key_shape) -> int:
    """MACs of fused attention with Keras layout (batch, N, heads, d): q·kᵀ plus p·v."""
    *batch, nq, heads, dim = query_shape
    nk = key_shape[-3]
    return 2 * math.prod(batch) * heads * nq * nk * dim


def _wrap(name: str, fn, count: Count):
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        if name == "matmul":
            count.add("matmul", matmul_macs(_shape(args[0]), _shape(args[1])))
        elif name == "einsum":
            shapes = [_shape(a) for a in args[1:]]
            count.add("einsum", einsum_macs(args[0], *shapes))
        elif name == "conv":
            kernel = kwargs.get("kernel", args[1] if len(args) > 1 else None)
            count.add("conv", conv_macs(_shape(out), _shape(kernel)))
        elif name == "depthwise_conv":
            kernel = kwargs.get("kernel", args[1] if len(args) > 1 else None)
            count.add("conv", math.prod(_shape(out)) * math.prod(_shape(kernel)[:-2]))
        elif name == "dot_product_attention":
            query = kwargs.get("query", args[0] if args else None)
            key = kwargs.get("key", args[1] if len(args) > 1 else None)
            count.add("attention", attention_macs(_shape(query), _shape(key)))
        return out

    wrapped.__wrapped__ = fn
    return wrapped


@contextlib.contextmanager
def counting():
    """Wraps the contraction ops in `keras.ops` and `keras.src.ops`; yields a `Count`."""
    import keras.src.ops as src_ops

    count = Count()
    saved = []
    for module in {id(keras.ops): keras.ops, id(src_ops): src_ops}.values():
        for name in _OPS:
            fn = getattr(module, name, None)
            if fn is not None:
                saved.append((module, name, fn))
                setattr(module, name, _wrap(name, fn, count))
    try:
        yield count
    finally:
        for module, name, fn in reversed(saved):
            setattr(module, name, fn)


def count_model(model: keras.Model, input_shape, dtype: str = "float32") -> Count:
    """Counts one forward pass of `model` on an input of `input_shape` (inference mode)."""
    from keras.src.backend import compute_output_spec

    spec = keras.KerasTensor(tuple(input_shape), dtype=dtype)
    def forward(x):
        # A backend may trace more than once (PyTorch retries off the meta device when an op
        # has no meta kernel): keep the count of the last, complete pass only.
        count.reset()
        return model(x, training=False)

    with counting() as count:
        compute_output_spec(forward, spec)
    return count


def layer_table(count: Count, depth: int = 1, pattern: str | None = None) -> list[tuple]:
    """(path prefix, GMACs, share) rows, largest first; `pattern` filters paths (regex)."""
    rows = count.by_prefix(depth)
    if pattern:
        rows = {k: v for k, v in rows.items() if re.search(pattern, k)}
    total = max(count.macs, 1)
    return sorted(((k, v / 1e9, v / total) for k, v in rows.items()), key=lambda r: -r[1])
