"""`DatasetInfo`: what a `keras_vtn.data` dataset knows about itself, found by `dataset_info`.

`video_dataset`, `kinetics400` and `tfrecord_dataset` attach one `DatasetInfo` (class names,
the video listing, the decode report, the sampling options, the number of videos) to the
dataset they return. `dataset_info(ds)` finds it again through the chain of datasets that
`tf.data` transformations build on their input (`map`, `batch`, `prefetch`, `shuffle`,
`repeat`, `take`, `apply`, `with_options`, `concatenate`, `zip`, ...), so the metadata travels
with the data without being copied from one dataset to the next.

>>> import os, tempfile
>>> from keras_vtn.data import video_dataset
>>> from keras_vtn.data.testing import write_video
>>> path = os.path.join(tempfile.mkdtemp(), "clip.mp4")
>>> write_video(path, num_frames=12)
>>> pairs = [(path, 0), (path, 1)]
>>> ds = video_dataset(pairs, label_names=["jump", "run"], num_frames=4, image_size=32)
>>> info = dataset_info(ds.map(lambda clip, label: (clip, label)).batch(2).prefetch(1))
>>> info.label_names, info.num_videos, info.config.num_frames
(['jump', 'run'], 2, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from keras_vtn.data.dataset import ClipConfig, DecodeReport
    from keras_vtn.data.layouts import Records
    from keras_vtn.data.samplers import Sampler

# Where the info is stored on the dataset that owns it.
_ATTRIBUTE = "_keras_vtn_dataset_info"
_REQUIRED = object()


@dataclass
class DatasetInfo:
    """Metadata of a `keras_vtn.data` dataset.

    Attributes:
        label_names: class names in label-index order.
        report: the `DecodeReport` of decoded, failed, truncated and skipped videos, updated
            as the dataset is read (exact counts per pass in `report.history`).
        config: the `ClipConfig` (frames, sampler, image size, views, batch size, ...).
        records: the video listing (`layouts.Records`); None for TFRecords.
        stored_videos: videos in the TFRecord shards this input pipeline reads, from
            `prepare`'s completion markers (None when they do not say, and for video files).
        service: the tf.data service address decoding the videos, or None.
    """

    label_names: list[str]
    report: DecodeReport
    config: ClipConfig
    records: Records | None = None
    stored_videos: int | None = None
    service: str | None = None

    @property
    def label_map(self) -> dict[str, int]:
        """Class name -> label index."""
        return {name: i for i, name in enumerate(self.label_names)}

    @property
    def sampler(self) -> Sampler:
        """The temporal `Sampler` choosing each clip's frames."""
        return self.config.sampler

    @property
    def num_videos(self) -> int | None:
        """Videos one pass reads, broken ones included: the listing's length for video files
        (all input pipelines together), the shards' count for TFRecords (this pipeline's
        shards); None when unknown."""
        return len(self.records) if self.records is not None else self.stored_videos


def attach_info(dataset: tf.data.Dataset, info: DatasetInfo) -> tf.data.Dataset:
    """Returns `dataset` carrying `info` for `dataset_info` (also after transformations)."""
    setattr(dataset, _ATTRIBUTE, info)
    return dataset


def dataset_info(dataset: tf.data.Dataset, default=_REQUIRED) -> DatasetInfo:
    """The `DatasetInfo` of a `keras_vtn.data` dataset or of any dataset made from one by
    `tf.data` transformations.

    With several annotated inputs (`zip`, `concatenate`), the first input's info is returned.
    Datasets built inside a function (`interleave`, `flat_map`) are not searched. A dataset
    without info returns `default` when one is given and is an error otherwise.
    """
    stack, seen = [dataset], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        info = vars(current).get(_ATTRIBUTE) if hasattr(current, "__dict__") else None
        if info is not None:
            return info
        inputs = getattr(current, "_inputs", None)
        if callable(inputs):
            stack.extend(reversed(list(inputs())))
    if default is _REQUIRED:
        raise ValueError(
            f"{type(dataset).__name__} carries no keras_vtn DatasetInfo: it was not made by "
            "keras_vtn.data (video_dataset, kinetics400, tfrecord_dataset) or by tf.data "
            "transformations of such a dataset."
        )
    return default
