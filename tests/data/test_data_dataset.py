"""`video_dataset` / `kinetics400`: shapes, labels, views, seeds and broken files."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from data_helpers import AWKWARD, BROKEN, GOOD

from keras_vtn.data import KINETICS400_LABELS, dataset_info, kinetics400, read_frames, video_dataset
from keras_vtn.data.testing import read_index

FULL = dict(image_size=(48, 64), short_side=48)  # crops keep the whole 64x48 frame


def _indices(clip):
    return [read_index(f) for f in np.asarray(clip)]


def test_kinetics400_training_batches(kinetics_root, caplog):
    with caplog.at_level(logging.WARNING, logger="keras_vtn.data"):
        ds = kinetics400(
            kinetics_root,
            "train",
            num_frames=4,
            frame_stride=3,
            batch_size=2,
            seed=3,
            flip=False,
            **FULL,
        )
    assert "4 of 5 listed videos found (20.0% missing)" in caplog.text
    info = dataset_info(ds)
    assert info.label_names == list(KINETICS400_LABELS) and info.label_map["zumba"] == 399
    batches = list(ds)
    assert len(batches) == 2  # 4 videos, remainder dropped in training
    labels = sorted(int(x) for _, y in batches for x in y.numpy())
    assert labels == [0, 1, 1, 399]
    for clips, _ in batches:
        assert clips.shape == (2, 4, 48, 64, 3) and clips.dtype.name == "uint8"
        for clip in clips:
            got = _indices(clip)
            assert np.diff(got).tolist() == [3, 3, 3]  # dense, stride 3, random start
    assert dataset_info(ds).report.decoded == 4 and dataset_info(ds).report.num_failed == 0


def test_kinetics400_unlabelled_test_split(kinetics_root):
    ds = kinetics400(kinetics_root, "test", num_frames=2, image_size=32)
    labels = [int(y) for _, y in ds]
    assert labels == [-1, -1]


def test_same_seed_same_clips_other_seed_other_clips(kinetics_root):
    root = os.path.join(kinetics_root, "train")
    kwargs = dict(
        training=True,
        num_frames=3,
        sampling="uniform",
        image_size=32,
        color_jitter=(0.4, 0.4, 0.4, 0.1),
        batch_size=4,
    )
    a = [x.numpy() for x, _ in video_dataset(root, seed=5, **kwargs)]
    b = [x.numpy() for x, _ in video_dataset(root, seed=5, **kwargs)]
    c = [x.numpy() for x, _ in video_dataset(root, seed=6, **kwargs)]
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert not all((x == y).all() for x, y in zip(a, c, strict=True))


def test_eval_views_shape_and_content(videos):
    pairs = [(videos["mp4"], 0), (videos["webm"], 1)]
    ds = video_dataset(
        pairs,
        num_frames=4,
        frame_stride=2,
        num_clips=2,
        num_crops=3,
        image_size=48,
        short_side=48,
        batch_size=2,
        dtype="float32",
        label_mode="one_hot",
        return_frame_indices=True,
    )
    inputs, labels = next(iter(ds))
    clips, idx = inputs["frames"].numpy(), inputs["frame_indices"].numpy()
    assert clips.shape == (2, 6, 4, 48, 48, 3) and clips.dtype == np.float32
    assert labels.numpy().tolist() == [[1, 0], [0, 1]]
    # views are clip-major: 3 crops of the first window, then 3 of the last
    assert idx[0].tolist() == [[0, 2, 4, 6]] * 3 + [[68, 70, 72, 74]] * 3
    source, _ = read_frames(videos["mp4"], idx[0, 3])
    for k, left in enumerate([0, 8, 16]):  # left / centre / right along the long side
        np.testing.assert_array_equal(clips[0, 3 + k], source[:, :, left : left + 48])


def test_float_output_and_one_hot_labels(kinetics_root):
    ds = video_dataset(
        os.path.join(kinetics_root, "train"),
        num_frames=2,
        image_size=32,
        dtype="float32",
        label_mode="one_hot",
    )
    clip, label = next(iter(ds))
    assert clip.dtype.name == "float32" and float(clip.numpy().max()) > 1.0
    assert label.shape == (3,) and float(label.numpy().sum()) == 1.0


def test_mixup_cutmix_in_the_pipeline(kinetics_root):
    ds = video_dataset(
        os.path.join(kinetics_root, "train"),
        training=True,
        num_frames=2,
        image_size=32,
        batch_size=4,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        seed=0,
    )
    clips, labels = next(iter(ds))
    assert clips.shape == (4, 2, 32, 32, 3) and labels.shape == (4, 3)
    np.testing.assert_allclose(labels.numpy().sum(-1), 1.0, atol=1e-6)


@pytest.fixture()
def mixed_folder(tmp_path, videos):
    """Class folders with good, awkward and broken files side by side."""
    for group, names in [("good", GOOD), ("awkward", AWKWARD), ("broken", BROKEN)]:
        (tmp_path / group).mkdir()
        for name in names:
            shutil.copy(videos[name], tmp_path / group / os.path.basename(videos[name]))
    return str(tmp_path)


def test_broken_files_are_skipped_and_counted_in_training(mixed_folder, caplog):
    ds = video_dataset(
        mixed_folder, training=True, num_frames=4, frame_stride=1, image_size=32, seed=1
    )
    with caplog.at_level(logging.WARNING, logger="keras_vtn.data"):
        clips = [x.numpy() for x, _ in ds]
        again = len(list(ds))  # a second epoch skips them without opening them again
    survivors = len(GOOD) + len(AWKWARD)
    assert len(clips) == again == survivors == 11
    assert all(c.shape == (4, 32, 32, 3) for c in clips)

    assert dataset_info(ds).report.counts == {"empty": 1, "unreadable": 2, "no_video_stream": 1}
    assert "4 videos skipped (1 empty, 1 no_video_stream, 2 unreadable)" in caplog.text
    cut = os.path.join(mixed_folder, "awkward", "cut_faststart.mp4")
    report = dataset_info(ds).report
    assert list(report.truncated) == [cut] and "of the 75 declared" in report.truncated[cut]


def test_broken_files_are_listed_in_evaluation(mixed_folder, caplog):
    ds = video_dataset(mixed_folder, num_frames=4, crop="none", short_side=0, min_frames=2)
    with caplog.at_level(logging.WARNING, logger="keras_vtn.data"):
        records = dataset_info(ds).records
        out = {records.paths[i]: None for i in range(len(records))}
        results = list(ds)
    assert len(results) == 10  # 4 good + 6 awkward; the one-frame file is too short here
    report = dataset_info(ds).report
    summary = report.summary()
    assert report.counts == {"empty": 1, "unreadable": 2, "no_video_stream": 1, "too_short": 1}
    for name in [*BROKEN, "one_frame"]:
        assert os.path.basename(videos_path(out, name)) in summary
    assert "5 videos failed" in caplog.text


def videos_path(paths, name):
    rel = {**BROKEN, **AWKWARD}[name][0]
    return next(p for p in paths if p.endswith(os.path.basename(rel)))


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_awkward_files_decode_correctly(videos, name):
    ds = video_dataset([(videos[name], 0)], num_frames=4, frame_stride=1, crop="none", short_side=0)
    ((clip, _),) = list(ds)
    clip = clip.numpy()
    if name == "cut_faststart":  # frames past the cut repeat the last one that decodes
        got = _indices(clip)
        assert clip.shape == (4, 48, 64, 3) and got == sorted(got) and got[-1] < 75
        assert len(set(got)) == 4  # re-sampled within the real frames, not the last one 4x
        return
    if name == "rotated":
        assert clip.shape == (4, 64, 48, 3)  # shown upright: the display matrix is applied
        clip = np.rot90(clip, -1, axes=(1, 2))
    elif name == "odd_sized":
        assert clip.shape == (4, 49, 65, 3)
    else:
        assert clip.shape == (4, 48, 64, 3)
    if name == "grayscale":
        assert (clip[..., 0] == clip[..., 1]).all() and (clip[..., 1] == clip[..., 2]).all()
    # centre window; a one-frame file loops; the WebM-named-mp4 is the 50-frame webm
    expected = {"one_frame": [0] * 4, "wrong_extension": [23, 24, 25, 26]}.get(name, [8, 9, 10, 11])
    assert _indices(clip) == expected


def test_input_context_splits_videos_between_workers(kinetics_root):
    root = os.path.join(kinetics_root, "train")
    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker)
        ds = video_dataset(root, input_context=context, num_frames=2, image_size=32)
        seen.append(sorted(int(y) for _, y in ds))
    assert seen == [[0, 1], [1, 2]]  # videos 0, 2 and 1, 3 in class-folder order
