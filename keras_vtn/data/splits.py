"""The split of a dataset from a data root and a layout name, and the shuffled-frames control."""

from __future__ import annotations

import os

import tensorflow as tf

from keras_vtn.data.dataset import kinetics400, video_dataset
from keras_vtn.data.tfrecord import tfrecord_dataset

LAYOUTS = ("kinetics400", "csv", "folders", "tfrecord")


def make_dataset(root: str, split: str, layout: str = "kinetics400", **kwargs) -> tf.data.Dataset:
    """The `split` of a dataset under `root`.

    Layouts:
        `"kinetics400"`: `keras_vtn.data.kinetics400(root, split)` (labels index the 400
        Kinetics classes). `"csv"`: a Kinetics-style `root/<split>.csv` with its own labels,
        videos under `root/<split>/` (e.g. the built-in motion dataset). `"folders"`:
        `root/<split>/<class>/<video>`. `"tfrecord"`: `prepare`'s shards in `root/<split>/`.
    Other keyword arguments go to `keras_vtn.data.video_dataset`.
    """
    if layout == "kinetics400":
        return kinetics400(root, split, **kwargs)
    if layout == "csv":
        csv = os.path.join(root, f"{split}.csv")
        return video_dataset(csv, root=os.path.join(root, split), **kwargs)
    if layout == "folders":
        return video_dataset(os.path.join(root, split), **kwargs)
    if layout == "tfrecord":
        return tfrecord_dataset(os.path.join(root, split), **kwargs)
    raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")


def shuffle_frames(dataset: tf.data.Dataset, seed: int | None = None) -> tf.data.Dataset:
    """Permutes the frames of every clip independently: a control that destroys temporal order.

    Works on batched `(B, T, H, W, C)` clips; a model that only beats chance through motion
    falls back to chance on this data. `dataset_info` of the result is `dataset`'s.
    """

    def permute(clips, labels):
        frames = clips["frames"] if isinstance(clips, dict) else clips
        noise = tf.random.stateless_uniform(
            tf.shape(frames)[:2], seed=tf.random.uniform([2], 0, 2**31 - 1, tf.int64, seed=seed)
        )
        order = tf.argsort(noise, axis=1)
        frames = tf.gather(frames, order, axis=1, batch_dims=1)
        if isinstance(clips, dict):
            return {**clips, "frames": frames}, labels
        return frames, labels

    return dataset.map(permute, num_parallel_calls=tf.data.AUTOTUNE)
