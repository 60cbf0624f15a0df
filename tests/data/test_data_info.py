"""`dataset_info` finds a dataset's `DatasetInfo` through the tf.data transformations a user
or the training code applies, for video files and for TFRecords."""

from __future__ import annotations

import os

import pytest

tf = pytest.importorskip("tensorflow")

from keras_vtn.data import (  # noqa: E402
    DatasetInfo,
    dataset_info,
    prepare,
    shuffle_frames,
    tfrecord_dataset,
    video_dataset,
)
from keras_vtn.data.testing import write_video  # noqa: E402

CLASSES = ["jump", "run", "swim"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("info_videos")
    for i, name in enumerate(CLASSES):
        os.makedirs(root / name)
        write_video(str(root / name / f"v{i}.mp4"), num_frames=12, height=32, width=32)
    (root / "run" / "broken.mp4").write_bytes(b"not a video")
    return str(root)


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("info_shards"))
    prepare(folder, out, num_shards=2, short_side=32, progress=False)
    return out


def _transformations(ds):
    opts = tf.data.Options()
    opts.deterministic = False
    return {
        "map": ds.map(lambda x, y: (x, y)),
        "batch": ds.batch(2),
        "prefetch": ds.prefetch(1),
        "shuffle": ds.shuffle(4, seed=0),
        "repeat": ds.repeat(2),
        "take": ds.take(2),
        "apply": ds.apply(lambda d: d.filter(lambda x, y: y >= 0)),
        "with_options": ds.with_options(opts),
        "chain": ds.map(lambda x, y: (x, y)).batch(2).prefetch(1).shuffle(2).repeat().take(3),
        "shuffle_frames": shuffle_frames(ds.batch(2), seed=0),
    }


def _check_survives(ds, num_videos):
    info = dataset_info(ds)
    assert isinstance(info, DatasetInfo)
    assert info.label_names == CLASSES and info.label_map == {"jump": 0, "run": 1, "swim": 2}
    assert info.num_videos == num_videos and info.config.num_frames == 4
    for name, derived in _transformations(ds).items():
        assert dataset_info(derived) is info, name


def test_video_dataset_info_survives_transformations(folder):
    ds = video_dataset(folder, num_frames=4, image_size=16, short_side=16)
    _check_survives(ds, num_videos=4)
    assert len(dataset_info(ds).records) == 4 and dataset_info(ds).sampler.kind == "dense"
    # the report reached through a transformed dataset is the one its reading updates
    derived = ds.map(lambda x, y: (x, y)).batch(2).prefetch(1)
    assert sum(int(tf.shape(y)[0]) for _, y in derived) == 3
    report = dataset_info(derived).report
    assert report.decoded == 3 and list(report.failed) == [os.path.join(folder, "run",
                                                                       "broken.mp4")]


def test_tfrecord_dataset_info_survives_transformations(shards):
    ds = tfrecord_dataset(shards, num_frames=4, image_size=16)
    _check_survives(ds, num_videos=3)  # the broken file never reached the shards
    assert dataset_info(ds).records is None
    assert list(dataset_info(ds).report.failed)[0].endswith("broken.mp4")


def test_zip_and_concatenate_find_the_first_info(folder, shards):
    videos = video_dataset(folder, num_frames=4, image_size=16, short_side=16)
    records = tfrecord_dataset(shards, num_frames=4, image_size=16)
    assert dataset_info(videos.concatenate(records)) is dataset_info(videos)
    assert dataset_info(tf.data.Dataset.zip((records, videos))) is dataset_info(records)
    plain = tf.data.Dataset.range(3)
    assert dataset_info(plain.concatenate(plain).map(lambda x: x), None) is None


def test_a_dataset_from_elsewhere_has_no_info():
    plain = tf.data.Dataset.range(3).batch(2)
    assert dataset_info(plain, None) is None
    with pytest.raises(ValueError, match="not made by keras_vtn.data"):
        dataset_info(plain)
