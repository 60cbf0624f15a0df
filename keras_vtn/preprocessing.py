"""`VideoPreprocessor`: how a classifier turns a video file into the clips it scores.

It holds the sampling and view protocol (sampler, frames per clip, stride or frame rate,
short side, crop size, clips × crops per video, how the views' scores are averaged) and the
input normalisation, and builds its datasets with `keras_vtn.data.video_dataset` (the one
decoder, sampler and crop code of the package), so a prediction, an evaluation and a training
run of the same preset see the same frames.

>>> preprocessor = VideoPreprocessor(num_frames=8, frame_stride=4, image_size=32,
...                                  num_clips=2, num_crops=3)
>>> preprocessor.describe()
'protocol: dense 8×4, 32 px, 2 clips × 3 crops; views averaged as logits; pixels in [0, 255] \
(the model normalises them)'
>>> VideoPreprocessor.from_config(preprocessor.get_config()).get_config() == \
preprocessor.get_config()
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

AGGREGATES = ("logits", "probabilities", "log_probabilities")


def _pair_or_int(value):
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return None if value is None else int(value)


def _channels(value, name: str) -> list[float]:
    values = [float(v) for v in np.broadcast_to(np.asarray(value, np.float64), (3,))]
    if name == "std" and min(values) <= 0:
        raise ValueError(f"normalization std must be > 0, not {values}.")
    return values


@keras.saving.register_keras_serializable(package="keras_vtn")
class VideoPreprocessor:
    """The sampling and view protocol and the normalisation of a video classifier.

    Args:
        num_frames: frames per clip.
        sampling: `"dense"` (every `frame_stride`-th frame), `"uniform"` (one frame per equal
            segment of the video) or `"time"` (`target_fps` frames per second).
        frame_stride: dense sampling's distance between frames.
        target_fps: time sampling's rate.
        image_size: crop height and width (int or pair).
        short_side: the short side the video is resized to before cropping (None: the
            `video_dataset` default for the crops, 0: keep the decoded size).
        num_clips: temporal clips per video in evaluation and prediction.
        num_crops: spatial crops per clip (1 = centre, 3 = along the longer side).
        aggregate: how the views' scores are averaged: `"logits"`, `"probabilities"` or
            `"log_probabilities"`.
        normalization: None when the model normalises its own input (keras_vtn's builders do
            by default: they take RGB pixels in [0, 255]); else `(mean, std)` for RGB scaled
            to [0, 1] (a number or three per channel each), applied here to models built with
            `include_preprocessing=False` (see `normalization_layer`).
    """

    def __init__(
        self,
        num_frames: int = 16,
        *,
        sampling: str = "dense",
        frame_stride: int = 2,
        target_fps: float | None = None,
        image_size: int | Sequence[int] = 224,
        short_side: int | None = None,
        num_clips: int = 1,
        num_crops: int = 1,
        aggregate: str = "logits",
        normalization: tuple | list | None = None,
    ):
        from keras_vtn.data.samplers import Sampler

        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}.")
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 (centre) or 3 (along the long side), not "
                             f"{num_crops!r}.")
        # The sampler checks the temporal fields with its own clear errors.
        Sampler(sampling, num_frames, frame_stride, target_fps, num_clips)
        self.num_frames = int(num_frames)
        self.sampling = sampling
        self.frame_stride = int(frame_stride)
        self.target_fps = None if target_fps is None else float(target_fps)
        self.image_size = _pair_or_int(image_size)
        self.short_side = _pair_or_int(short_side)
        self.num_clips = int(num_clips)
        self.num_crops = int(num_crops)
        self.aggregate = aggregate
        if normalization is not None:
            if len(normalization) != 2:
                raise ValueError("normalization must be None or (mean, std).")
            normalization = [_channels(normalization[0], "mean"),
                             _channels(normalization[1], "std")]
        self.normalization = normalization

    @property
    def views(self) -> int:
        """Views scored per video: clips × crops."""
        return self.num_clips * self.num_crops

    def get_config(self) -> dict[str, Any]:
        return {
            "num_frames": self.num_frames, "sampling": self.sampling,
            "frame_stride": self.frame_stride, "target_fps": self.target_fps,
            "image_size": self.image_size, "short_side": self.short_side,
            "num_clips": self.num_clips, "num_crops": self.num_crops,
            "aggregate": self.aggregate, "normalization": self.normalization,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VideoPreprocessor:
        unknown = sorted(set(config) - set(cls().get_config()))
        if unknown:
            raise ValueError(f"VideoPreprocessor config has unknown fields {unknown}.")
        return cls(**config)

    def __eq__(self, other) -> bool:
        return isinstance(other, VideoPreprocessor) and other.get_config() == self.get_config()

    def __repr__(self) -> str:
        return f"VideoPreprocessor({self.describe()!r})"

    def protocol(self) -> dict[str, Any]:
        """The protocol fields `keras_vtn.protocol.describe_protocol` reads."""
        size = self.image_size
        return {
            "sampling": self.sampling, "num_frames": self.num_frames,
            "frame_stride": self.frame_stride, "target_fps": self.target_fps,
            "image_size": "×".join(map(str, size)) if isinstance(size, list) else size,
            "short_side": self.short_side, "num_clips": self.num_clips,
            "num_crops": self.num_crops,
        }

    def describe(self) -> str:
        """One line: frames, sampling, sizes, views, aggregation and normalisation."""
        from keras_vtn.protocol import describe_protocol

        if self.normalization is None:
            pixels = "pixels in [0, 255] (the model normalises them)"
        else:
            mean, std = (", ".join(f"{v:g}" for v in values) for values in self.normalization)
            pixels = f"RGB in [0, 1] normalised with mean ({mean}), std ({std})"
        return (f"{describe_protocol(self.protocol())}; views averaged as {self.aggregate}; "
                f"{pixels}")

    def normalization_layer(self) -> keras.layers.Layer | None:
        """The layer mapping pixels in [0, 255] to the normalised input (None without
        `normalization`); `VideoClassifier` puts it in front of its backbone, so arrays, tf.data
        pipelines and video files all go in as pixels."""
        if self.normalization is None:
            return None
        mean, std = (np.asarray(values, np.float32) for values in self.normalization)
        return keras.layers.Rescaling(scale=(1 / (255 * std)).tolist(),
                                      offset=(-mean / std).tolist(), name="normalization")

    def dataset(
        self,
        source,
        *,
        training: bool = False,
        label_names: Sequence[str] | None = None,
        root: str | os.PathLike | None = None,
        batch_size: int | None = 4,
        frame_indices: bool = False,
        **video_dataset_kwargs,
    ):
        """A `video_dataset` of `source` (a video path or paths, `(path, label)` pairs, a
        folder, list file or CSV) under this protocol (uint8 pixels).

        Evaluation clips are `(batch, views, T, H, W, 3)` (all views of a video in one
        element); training clips `(batch, T, H, W, 3)`, one random view each (training's
        random crop, scale jitter and flip unless `video_dataset_kwargs` say otherwise).
        With `frame_indices` the inputs are `{"frames", "frame_indices"}` (VTN).
        """
        from keras_vtn.classifier import video_source
        from keras_vtn.data import video_dataset

        kwargs: dict[str, Any] = dict(
            num_frames=self.num_frames, sampling=self.sampling, frame_stride=self.frame_stride,
            target_fps=self.target_fps, image_size=self.image_size, batch_size=batch_size,
            training=training, return_frame_indices=frame_indices,
        )
        if not training:
            kwargs.update(num_clips=self.num_clips, num_crops=self.num_crops, views_axis=True)
            if self.short_side is not None:
                kwargs["short_side"] = self.short_side
        kwargs.update(video_dataset_kwargs)
        return video_dataset(video_source(source), root=None if root is None else os.fspath(root),
                             label_names=label_names, **kwargs)


def preprocessor_from_registry(entry: dict) -> VideoPreprocessor:
    """The protocol a weight-registry entry records for the original evaluation.

    Frames, sampling, short side, crop and views come from the entry
    (`keras_vtn.protocol.entry_protocol`); what it does not record is the model's clip size
    and keras_vtn's defaults."""
    from keras_vtn.protocol import entry_protocol

    fields = entry_protocol(entry)
    aggregation = str((entry.get("eval_views") or {}).get("aggregation", ""))
    aggregate = ("log_probabilities" if "log-softmax" in aggregation else
                 "probabilities" if "softmax" in aggregation else "logits")
    config = entry.get("config", {})
    fields.setdefault("num_frames", config.get("num_frames", 16))
    fields.setdefault("image_size", config.get("image_size", 224))
    return VideoPreprocessor(**fields, aggregate=aggregate)
