"""Token embeddings: tubelets, per-frame patches, class tokens and learned positions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_vtn.layers.utils import ConfiguredLayer, to_tuple


def _patchify(x, patch: tuple[int, ...], spatial_rank: int):
    """Cuts the last `spatial_rank` axes before channels into non-overlapping patches.

    `x` is (batch, *lead, *spatial, C) and `patch` has `spatial_rank` sizes. Returns
    (batch, *lead, *grid, prod(patch) * C) with each patch flattened in (*patch, C) order,
    which is the row order of a convolution kernel of shape (*patch, C, D). Remainders are
    dropped, as a VALID convolution with stride = kernel does.
    """
    shape = x.shape
    spatial = shape[-1 - spatial_rank : -1]
    lead = shape[1 : -1 - spatial_rank]
    if any(s is None for s in tuple(spatial) + tuple(lead)):
        raise ValueError(
            f"Patch embedding needs static frame and image sizes, got input shape {shape}. "
            "Build the model with fixed `num_frames` and `image_size`."
        )
    channels = shape[-1]
    grid = tuple(s // p for s, p in zip(spatial, patch, strict=False))
    if any(g == 0 for g in grid):
        raise ValueError(f"Input sizes {tuple(spatial)} are smaller than the patch size {patch}.")
    # Crop what a VALID conv would drop.
    if any(g * p != s for g, p, s in zip(grid, patch, spatial, strict=False)):
        slices = [slice(None)] * (1 + len(lead))
        slices += [slice(0, g * p) for g, p in zip(grid, patch, strict=False)] + [slice(None)]
        x = x[tuple(slices)]
    # One rank-4 transpose per patched axis after the first rather than one transpose of rank
    # 2 + 2 * spatial_rank + len(lead): exporters map small transposes to builtin ops (LiteRT's
    # TRANSPOSE takes at most 6 axes). Before step i, x is (rows, prod(patch[:i]),
    # sizes[i] * ... * sizes[-1] * C), the grid axes before i being folded into `rows`.
    sizes = [g * p for g, p in zip(grid, patch, strict=False)]
    x = ops.reshape(x, (-1, patch[0], math.prod(sizes[1:]) * channels))
    for i in range(1, spatial_rank):
        tail = patch[i] * math.prod(sizes[i + 1 :]) * channels
        x = ops.reshape(x, (-1, math.prod(patch[:i]), grid[i], tail))
        x = ops.transpose(x, (0, 2, 1, 3))
    return ops.reshape(x, (-1, *lead, *grid, math.prod(patch) * channels))


class _PatchProjection(ConfiguredLayer):
    """Shared weights and projection of the patch embeddings (a conv with kernel = stride)."""

    spatial_rank: int
    # Each subclass adds its patch size under its own name.
    config_arguments = ("hidden_dim", "use_bias", "kernel_initializer", "bias_initializer")

    def __init__(
        self,
        hidden_dim: int,
        patch_size,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.patch_size = to_tuple(patch_size, self.spatial_rank, "patch_size")
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.patch_size, channels, self.hidden_dim),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.hidden_dim,), initializer=self.bias_initializer
            )
            if self.use_bias
            else None
        )

    def _project(self, x):
        patches = _patchify(x, self.patch_size, self.spatial_rank)
        kernel = ops.reshape(self.kernel, (-1, self.hidden_dim))
        y = ops.matmul(patches, kernel)
        if self.bias is not None:
            y = y + self.bias
        return y

    def grid_size(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Number of patches along each patched axis for an input of `spatial_shape`."""
        return tuple(int(s) // p for s, p in zip(spatial_shape, self.patch_size, strict=False))


@keras.saving.register_keras_serializable(package="keras_vtn")
class TubeletEmbedding(_PatchProjection):
    """3D patch embedding: a Conv3D with kernel = stride = `tubelet_size` (t, h, w).

    The kernel has the Conv3D/Flax layout (t, h, w, C, hidden_dim). Tokens come out
    t-major, then h, then w (as scenic and Hugging Face flatten them).

    Args:
        hidden_dim: embedding width D.
        tubelet_size: (t, h, w).
        flatten: `True` returns (batch, nt*nh*nw, D); `False` returns (batch, nt, nh*nw, D).

    Example:
    >>> import numpy as np
    >>> layer = TubeletEmbedding(hidden_dim=8, tubelet_size=(2, 4, 4))
    >>> tuple(layer(np.zeros((1, 4, 8, 8, 3), "float32")).shape)
    (1, 8, 8)
    """

    spatial_rank = 3
    config_arguments = ("tubelet_size", "flatten")

    def __init__(self, hidden_dim: int, tubelet_size=(2, 16, 16), flatten: bool = True, **kwargs):
        super().__init__(hidden_dim, kwargs.pop("patch_size", tubelet_size), **kwargs)
        self.flatten = bool(flatten)

    @property
    def tubelet_size(self) -> tuple[int, int, int]:
        return self.patch_size

    def call(self, inputs):
        y = self._project(inputs)  # (B, nt, nh, nw, D)
        nt, nh, nw = y.shape[1:4]
        if self.flatten:
            return ops.reshape(y, (-1, nt * nh * nw, self.hidden_dim))
        return ops.reshape(y, (-1, nt, nh * nw, self.hidden_dim))

    def compute_output_shape(self, input_shape):
        nt, nh, nw = self.grid_size(input_shape[1:4])
        if self.flatten:
            return (input_shape[0], nt * nh * nw, self.hidden_dim)
        return (input_shape[0], nt, nh * nw, self.hidden_dim)

    @staticmethod
    def kernel_from_image(image_kernel, temporal_size: int, method: str = "central_frame"):
        """A tubelet kernel (t, h, w, C, D) made from a 2D patch kernel (h, w, C, D).

        `"central_frame"` puts the image kernel at slot floor(t / 2) and zeros elsewhere
        (scenic's default: the model starts as a per-frame image model). `"inflate"` repeats
        it t times divided by t (I3D inflation: a static video gives the image features).
        """
        image_kernel = np.asarray(image_kernel)
        if image_kernel.ndim != 4:
            raise ValueError(f"Expected an image kernel (h, w, C, D), got {image_kernel.shape}.")
        t = int(temporal_size)
        if method == "central_frame":
            kernel = np.zeros((t, *image_kernel.shape), image_kernel.dtype)
            kernel[t // 2] = image_kernel
            return kernel
        if method == "inflate":
            return np.repeat(image_kernel[None], t, axis=0) / t
        raise ValueError(f"Unknown method {method!r}; use 'central_frame' or 'inflate'.")


@keras.saving.register_keras_serializable(package="keras_vtn")
class PatchEmbedding(_PatchProjection):
    """Per-frame 2D patch embedding: a Conv2D with kernel = stride = `patch_size`.

    The kernel has the Conv2D layout (h, w, C, hidden_dim); tokens are row-major (h then w).
    Images (batch, H, W, C) give (batch, N, D); clips (batch, T, H, W, C) give (batch, T, N, D).

    Example:
    >>> import numpy as np
    >>> clip = np.zeros((2, 3, 8, 8, 3), "float32")
    >>> tuple(PatchEmbedding(hidden_dim=8, patch_size=4)(clip).shape)
    (2, 3, 4, 8)
    """

    spatial_rank = 2
    config_arguments = ("patch_size",)

    def __init__(self, hidden_dim: int, patch_size=16, **kwargs):
        super().__init__(hidden_dim, patch_size, **kwargs)

    def call(self, inputs):
        y = self._project(inputs)  # (B, [T,] nh, nw, D)
        nh, nw = y.shape[-3:-1]
        return ops.reshape(y, (-1, *y.shape[1:-3], nh * nw, self.hidden_dim))

    def compute_output_shape(self, input_shape):
        nh, nw = self.grid_size(input_shape[-3:-1])
        return (*input_shape[:-3], nh * nw, self.hidden_dim)


@keras.saving.register_keras_serializable(package="keras_vtn")
class ClassToken(ConfiguredLayer):
    """Prepends one learned token along the token axis (-2).

    For (batch, T, N, D) inputs every frame gets the same token, as ViViT's factorised
    encoder and per-frame ViTs do.

    Example:
    >>> import numpy as np
    >>> tuple(ClassToken()(np.zeros((2, 5, 8), "float32")).shape)
    (2, 6, 8)
    """

    config_arguments = ("initializer",)

    def __init__(self, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token", shape=(input_shape[-1],), initializer=self.initializer
        )

    def call(self, inputs):
        shape = ops.shape(inputs)
        token = ops.cast(self.token, inputs.dtype)
        token = ops.broadcast_to(token, (*shape[:-2], 1, shape[-1]))
        return ops.concatenate([token, inputs], axis=-2)

    def compute_output_shape(self, input_shape):
        n = input_shape[-2]
        return (*input_shape[:-2], None if n is None else n + 1, input_shape[-1])


def _linear_resize_axis(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation along one axis with half-pixel centres (tf.image/jax 'linear')."""
    n = array.shape[axis]
    if n == size:
        return array
    position = (np.arange(size) + 0.5) * (n / size) - 0.5
    position = np.clip(position, 0, n - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n - 1)
    frac = (position - low).astype(array.dtype)
    shape = [1] * array.ndim
    shape[axis] = size
    frac = frac.reshape(shape)
    return np.take(array, low, axis=axis) * (1 - frac) + np.take(array, high, axis=axis) * frac


@keras.saving.register_keras_serializable(package="keras_vtn")
class PositionEmbedding(ConfiguredLayer):
    """Learned position embedding added to the tokens.

    The table has shape (sequence_length, D), read from the input's token axis (-2). For
    (batch, T, N, D) inputs the same table is added to every frame (per-frame ViTs).
    `resize` adapts a pretrained table to another token grid, so models run at other
    resolutions and clip lengths.

    Example:
    >>> import numpy as np
    >>> tuple(PositionEmbedding()(np.zeros((2, 5, 8), "float32")).shape)
    (2, 5, 8)
    """

    config_arguments = ("initializer",)

    def __init__(self, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.TruncatedNormal(stddev=0.02)
        )

    def build(self, input_shape):
        if input_shape[-2] is None:
            raise ValueError("PositionEmbedding needs a static number of tokens.")
        self.embeddings = self.add_weight(
            name="embeddings", shape=tuple(input_shape[-2:]), initializer=self.initializer
        )

    def call(self, inputs):
        return inputs + ops.cast(self.embeddings, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    @staticmethod
    def resize(
        embeddings,
        source_grid: Sequence[int],
        target_grid: Sequence[int],
        num_prefix_tokens: int = 0,
        temporal_method: str = "interpolate",
    ) -> np.ndarray:
        """Resizes a (prefix + prod(grid), D) table from `source_grid` to `target_grid`.

        Grids are (h, w) or (t, h, w). Spatial axes are resized bilinearly on the grid;
        the time axis is interpolated linearly (`"interpolate"`) or, from a 2D source
        grid, the image table is repeated over time (`"tile"`, ViViT's image init).
        Prefix tokens (CLS) are kept as they are.

        >>> import numpy as np
        >>> PositionEmbedding.resize(np.zeros((1 + 4, 8)), (2, 2), (2, 4, 4), 1, "tile").shape
        (33, 8)
        """
        embeddings = np.asarray(embeddings)
        squeeze = embeddings.ndim == 3
        if squeeze:
            embeddings = embeddings[0]
        source_grid, target_grid = tuple(source_grid), tuple(target_grid)
        prefix, table = embeddings[:num_prefix_tokens], embeddings[num_prefix_tokens:]
        if table.shape[0] != math.prod(source_grid):
            raise ValueError(
                f"Position table has {table.shape[0]} grid tokens but the source grid "
                f"{source_grid} has {math.prod(source_grid)}."
            )
        dim = table.shape[-1]
        if len(source_grid) == 2 and len(target_grid) == 3:
            if temporal_method != "tile":
                raise ValueError("A 2D table reaches a 3D grid only with temporal_method='tile'.")
            source_grid = (1, *source_grid)
        grid = table.reshape(*source_grid, dim)
        start = len(source_grid) - 2
        for axis, size in enumerate(target_grid):
            if axis < start and temporal_method == "tile" and grid.shape[axis] == 1:
                grid = np.repeat(grid, size, axis=axis)
            else:
                grid = _linear_resize_axis(grid, axis, size)
        resized = np.concatenate([prefix, grid.reshape(-1, dim)], axis=0)
        return resized[None] if squeeze else resized
