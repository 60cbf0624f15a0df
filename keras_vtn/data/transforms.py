"""Whole-clip spatial augmentation in the tf.data graph.

A clip is `(frames, height, width, 3)`. Every random choice (crop box, flip, colour factors,
RandAugment ops) is drawn once per clip from a stateless seed and applied to all its frames,
so motion stays intact. Batch-level MixUp / CutMix mix whole clips and their one-hot labels.
This module is part of the input pipeline, so it uses `tf.*` ops (models never do).

>>> import numpy as np, tensorflow as tf
>>> clip = tf.constant(np.random.default_rng(0).integers(0, 255, (4, 40, 50, 3)), tf.uint8)
>>> out = augment_clip(clip, tf.constant([1, 2], tf.int64), crop_size=(32, 32), flip=True)
>>> out.shape
TensorShape([4, 32, 32, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def _seed(seed, salt: int):
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed[0], seed[1] * 1000003 + salt])


def _uniform(seed, salt: int, low=0.0, high=1.0, shape=()):
    return tf.random.stateless_uniform(shape, _seed(seed, salt), low, high)


def resize_short_side(frames, short_side):
    """Resize `(..., T, h, w, 3)` so its shorter side is `short_side` (bilinear)."""
    shape = tf.shape(frames)
    h, w = tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)
    scale = tf.cast(short_side, tf.float32) / tf.minimum(h, w)
    new_h = tf.cast(tf.round(h * scale), tf.int32)
    new_w = tf.cast(tf.round(w * scale), tf.int32)
    flat = tf.reshape(frames, tf.concat([[-1], shape[-3:]], 0))
    resized = tf.image.resize(flat, tf.stack([new_h, new_w]), method="bilinear")
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), frames.dtype)
    return tf.reshape(resized, tf.concat([shape[:-3], [new_h, new_w, 3]], 0))


def cover(frames, size: Sequence[int]):
    """Upscale `(T, h, w, 3)` just enough to hold a `size` crop (odd aspect ratios)."""
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]

    def grow():
        scale = tf.maximum(size[0] / tf.cast(h, tf.float32), size[1] / tf.cast(w, tf.float32))
        new = tf.stack([
            tf.maximum(tf.cast(tf.math.ceil(tf.cast(h, tf.float32) * scale), tf.int32), size[0]),
            tf.maximum(tf.cast(tf.math.ceil(tf.cast(w, tf.float32) * scale), tf.int32), size[1]),
        ])
        out = tf.image.resize(frames, new, method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), frames.dtype)

    small = tf.logical_or(h < size[0], w < size[1])
    return tf.cond(small, grow, lambda: frames)


def crop(frames, top, left, size: Sequence[int]):
    """Crop the same box from every frame of `(T, h, w, 3)`."""
    out = frames[:, top : top + size[0], left : left + size[1], :]
    return tf.ensure_shape(out, [frames.shape[0], size[0], size[1], 3])


def center_crop(frames, size: Sequence[int]):
    frames = cover(frames, size)
    shape = tf.shape(frames)
    return crop(frames, (shape[1] - size[0]) // 2, (shape[2] - size[1]) // 2, size)


def three_crops(frames, size: Sequence[int]):
    """Left/centre/right (or top/centre/bottom) crops along the long side: `(3, T, H, W, 3)`."""
    frames = cover(frames, size)
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    wide = w >= h
    centre_y, centre_x = (h - size[0]) // 2, (w - size[1]) // 2
    crops = []
    for k in range(3):
        along_x = [0, centre_x, w - size[1]][k]
        along_y = [0, centre_y, h - size[0]][k]
        top = tf.where(wide, centre_y, along_y)
        left = tf.where(wide, along_x, centre_x)
        crops.append(crop(frames, top, left, size))
    return tf.stack(crops)


def random_crop(frames, size: Sequence[int], seed):
    frames = cover(frames, size)
    shape = tf.shape(frames)
    room_y = tf.cast(shape[1] - size[0] + 1, tf.float32)
    room_x = tf.cast(shape[2] - size[1] + 1, tf.float32)
    top = tf.cast(tf.floor(_uniform(seed, 1) * room_y), tf.int32)
    left = tf.cast(tf.floor(_uniform(seed, 2) * room_x), tf.int32)
    return crop(frames, top, left, size)


def random_resized_crop(
    frames, size: Sequence[int], seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
):
    """One random box (area share in `scale`, aspect in `ratio`) for the whole clip, resized."""
    shape = tf.shape(frames)
    begin, box, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_size=shape[1:4],
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=_seed(seed, 3),
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    cut = tf.slice(frames, tf.concat([[0], begin[:2], [0]], 0), tf.concat([[-1], box[:2], [-1]], 0))
    out = tf.image.resize(cut, size, method="bilinear")
    out = tf.cast(tf.clip_by_value(tf.round(out), 0, 255), frames.dtype)
    return tf.ensure_shape(out, [frames.shape[0], size[0], size[1], 3])


def random_flip(frames, seed):
    return tf.cond(_uniform(seed, 4) < 0.5, lambda: tf.reverse(frames, [2]), lambda: frames)


def color_jitter(frames, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1):
    """torchvision-style factors drawn once per clip; input/output float32 in [0, 255]."""
    x = frames / 255.0
    if brightness:
        x = x * _uniform(seed, 5, 1 - brightness, 1 + brightness)
    if contrast:
        x = tf.image.adjust_contrast(x, _uniform(seed, 6, 1 - contrast, 1 + contrast))
    if saturation:
        x = tf.image.adjust_saturation(x, _uniform(seed, 7, 1 - saturation, 1 + saturation))
    if hue:
        x = tf.image.adjust_hue(x, _uniform(seed, 8, -hue, hue))
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def make_rand_augment(num_ops: int = 2, factor: float = 0.5, seed: int | None = None):
    """A Keras core `RandAugment` layer on the [0, 255] range (apply with `rand_augment`)."""
    import keras

    return keras.layers.RandAugment(
        value_range=(0, 255), num_ops=num_ops, factor=factor, seed=seed
    )


def rand_augment(frames, layer):
    """Apply a Keras `RandAugment` with one drawn transformation to every frame of a clip."""
    frames = tf.cast(frames, tf.float32)
    transformation = layer.get_random_transformation(frames[:1], training=True)

    def one(frame):
        return layer.transform_images(frame[None], transformation, training=True)[0]

    out = tf.map_fn(one, frames, fn_output_signature=tf.TensorSpec(frames.shape[1:], tf.float32))
    return tf.clip_by_value(out, 0.0, 255.0)


def augment_clip(
    frames,
    seed,
    *,
    crop_size: Sequence[int],
    crop_mode: str = "random",
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    flip: bool = True,
    jitter: Sequence[float] | None = None,
    rand_augment_layer=None,
    dtype=tf.uint8,
):
    """Training augmentation of one clip `(T, h, w, 3)` uint8 with one set of parameters."""
    seed = tf.cast(seed, tf.int64)
    if crop_mode == "random":
        frames = random_crop(frames, crop_size, seed)
    elif crop_mode == "random_resized":
        frames = random_resized_crop(frames, crop_size, seed, scale, ratio)
    elif crop_mode == "center":
        frames = center_crop(frames, crop_size)
    elif crop_mode != "none":
        raise ValueError(f"Unknown training crop {crop_mode!r}.")
    if flip:
        frames = random_flip(frames, seed)
    if jitter is not None or rand_augment_layer is not None:
        frames = tf.cast(frames, tf.float32)
        if jitter is not None:
            frames = color_jitter(frames, seed, *jitter)
        if rand_augment_layer is not None:
            frames = rand_augment(frames, rand_augment_layer)
    return _to_dtype(frames, dtype)


def eval_views(frames, *, crop_size: Sequence[int], num_crops: int = 1, dtype=tf.uint8):
    """`(V, T, h, w, 3)` clips -> `(V * num_crops, T, H, W, 3)` views (clip-major)."""
    views = []
    for v in range(frames.shape[0]):
        clip = frames[v]
        if num_crops == 1:
            views.append(center_crop(clip, crop_size)[None])
        elif num_crops == 3:
            views.append(three_crops(clip, crop_size))
        else:
            raise ValueError("num_crops must be 1 (centre) or 3 (along the long side).")
    return _to_dtype(tf.concat(views, 0), dtype)


def _to_dtype(frames, dtype):
    dtype = tf.as_dtype(dtype)
    if frames.dtype == dtype:
        return frames
    if dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(frames), 0, 255), tf.uint8)
    return tf.cast(frames, dtype)


def _sample_beta(seed, salt: int, alpha: float):
    a = tf.random.stateless_gamma([], _seed(seed, salt), alpha)
    b = tf.random.stateless_gamma([], _seed(seed, salt + 1), alpha)
    return a / (a + b)


def mix_batch(
    clips,
    labels,
    seed,
    *,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    switch_prob: float = 0.5,
):
    """MixUp or CutMix a batch with its reverse (timm's batch mode); labels are one-hot.

    One mixing weight per batch; a CutMix box is the same for every frame of a clip, and the
    label weight is the area actually kept.
    """
    if not mixup_alpha and not cutmix_alpha:
        return clips, labels
    seed = tf.cast(seed, tf.int64)
    dtype = clips.dtype
    x = tf.cast(clips, tf.float32)
    y = tf.cast(labels, tf.float32)
    x2, y2 = tf.reverse(x, [0]), tf.reverse(y, [0])

    def mixup():
        lam = _sample_beta(seed, 10, mixup_alpha)
        return x * lam + x2 * (1 - lam), lam

    def cutmix():
        lam = _sample_beta(seed, 20, cutmix_alpha)
        shape = tf.shape(x)
        h, w = shape[-3], shape[-2]
        cut = tf.sqrt(1.0 - lam)
        ch = tf.cast(tf.cast(h, tf.float32) * cut, tf.int32)
        cw = tf.cast(tf.cast(w, tf.float32) * cut, tf.int32)
        cy = tf.cast(_uniform(seed, 30) * tf.cast(h, tf.float32), tf.int32)
        cx = tf.cast(_uniform(seed, 31) * tf.cast(w, tf.float32), tf.int32)
        y0, y1 = tf.clip_by_value(cy - ch // 2, 0, h), tf.clip_by_value(cy + ch // 2, 0, h)
        x0, x1 = tf.clip_by_value(cx - cw // 2, 0, w), tf.clip_by_value(cx + cw // 2, 0, w)
        rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
        cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
        box = tf.cast(tf.logical_and(rows[:, None], cols[None, :]), tf.float32)[..., None]
        kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(h * w, tf.float32)
        return x * (1 - box) + x2 * box, kept

    if mixup_alpha and cutmix_alpha:
        mixed, lam = tf.cond(_uniform(seed, 40) < switch_prob, cutmix, mixup)
    elif cutmix_alpha:
        mixed, lam = cutmix()
    else:
        mixed, lam = mixup()
    return _to_dtype(mixed, dtype), y * lam + y2 * (1 - lam)
