"""TFRecord round trip, resume, sharding per worker; the check-videos and prepare commands."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from data_helpers import BROKEN, GOOD

from keras_vtn import cli
from keras_vtn.data import dataset_info, prepare, tfrecord_dataset, video_dataset
from keras_vtn.data.testing import read_index


@pytest.fixture(scope="module")
def folder(tmp_path_factory, videos):
    root = tmp_path_factory.mktemp("classes")
    for k, name in enumerate(sorted(GOOD)):
        target = root / f"class_{k % 2}" / os.path.basename(videos[name])
        target.parent.mkdir(exist_ok=True)
        shutil.copy(videos[name], target)
    shutil.copy(videos["truncated"], root / "class_0" / "truncated.mp4")
    return str(root)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, folder):
    out = str(tmp_path_factory.mktemp("shards"))
    manifest = prepare(folder, out, num_shards=3, short_side=48, jpeg_quality=95, progress=False)
    return out, manifest


def test_prepare_writes_manifest_and_lists_failures(shards):
    out, manifest = shards
    assert manifest["num_videos"] == 4 and manifest["num_failed"] == 1
    assert list(manifest["failed"].values()) == ["unreadable"]
    assert len(manifest["shards"]) == 3 and manifest["label_names"] == ["class_0", "class_1"]
    assert all(os.path.exists(os.path.join(out, s)) for s in manifest["shards"])


def test_round_trip_matches_the_video_path(folder, shards):
    out, _ = shards
    kwargs = dict(
        num_frames=5,
        sampling="uniform",
        num_clips=2,
        image_size=(48, 64),
        short_side=48,
        return_frame_indices=True,
    )
    from_video = {}
    for inputs, label in video_dataset(folder, **kwargs):
        from_video[tuple(inputs["frame_indices"].numpy().ravel())] = (inputs["frames"], label)
    assert len(from_video) == 4
    seen = 0
    for inputs, label in tfrecord_dataset(out, **kwargs):
        key = tuple(inputs["frame_indices"].numpy().ravel())
        clips, video_label = from_video[key]  # same source frames were chosen
        assert int(label) == int(video_label)
        a, b = inputs["frames"].numpy().astype(float), clips.numpy().astype(float)
        assert a.shape == b.shape == (2, 5, 48, 64, 3)
        assert np.abs(a - b).mean() < 2.0  # JPEG at quality 95
        assert [read_index(f) for f in a.reshape(-1, 48, 64, 3)] == list(key)
        seen += 1
    assert seen == 4


def test_stored_fps_and_training_reader(tmp_path, videos):
    out = str(tmp_path / "half")
    prepare([(videos["mp4"], 0)], out, short_side=0, fps=12.5, progress=False)
    ds = tfrecord_dataset(
        out,
        training=True,
        num_frames=4,
        frame_stride=1,
        image_size=32,
        seed=0,
        return_frame_indices=True,
        batch_size=1,
    )
    inputs, _ = next(iter(ds))
    idx = inputs["frame_indices"].numpy()[0]
    assert np.diff(idx).tolist() == [2, 2, 2] and (idx % 2 == 0).all()
    assert inputs["frames"].shape == (1, 4, 32, 32, 3)


def test_prepare_resumes_and_keeps_finished_shards(tmp_path, folder):
    out = str(tmp_path / "resume")
    first = prepare(folder, out, num_shards=2, short_side=24, progress=False)
    done = os.path.join(out, first["shards"][0])
    stamp = os.path.getmtime(done)
    os.remove(os.path.join(out, first["shards"][1]) + ".json")  # as if interrupted
    os.rename(os.path.join(out, first["shards"][1]), os.path.join(out, "x.tmp"))
    second = prepare(folder, out, num_shards=2, short_side=24, progress=False)
    assert os.path.getmtime(done) == stamp
    assert second["num_videos"] == first["num_videos"] == 4


def test_input_context_shards_per_worker(shards):
    out, _ = shards
    names = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker)
        ds = tfrecord_dataset(
            out, input_context=context, num_frames=2, image_size=32, return_frame_indices=True
        )
        names.append(sorted(tuple(x["frame_indices"].numpy().ravel()) for x, _ in ds))
    assert len(names[0]) + len(names[1]) == 4 and names[0] and names[1]


def test_check_videos_command(kinetics_root, videos, capsys, tmp_path):
    root = os.path.join(kinetics_root, "train")
    code = cli.main(
        ["check-videos", root, "--csv", os.path.join(kinetics_root, "annotations", "train.csv")]
    )
    text = capsys.readouterr().out
    assert code == 0 and "4 video files, 4 ok" in text
    assert "1 of 5 listed videos missing; 80.0% present" in text
    report = str(tmp_path / "report.json")
    code = cli.main(["check-videos", videos["root"], "--min-frames", "2", "--output", report])
    result = json.load(open(report))
    assert code == 1
    assert result["problems"] == {
        "empty": 1,
        "unreadable": 2,
        "no_video_stream": 1,
        "too_short": 1,
        "truncated": 1,
    }
    assert {os.path.basename(p) for p in result["files"]} == {
        *(os.path.basename(rel) for rel, _ in BROKEN.values()),
        "one_frame.mp4",
        "cut_faststart.mp4",
    }


def test_prepare_command(folder, tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert cli.main(["prepare", folder, out, "--shards", "2", "--short-side", "32"]) == 0
    assert "4 videos in 2 shards" in capsys.readouterr().out


def test_label_names_move_stored_labels_onto_the_callers_classes(shards):
    out, _ = shards

    def labels_by_file(**kwargs):
        ds = tfrecord_dataset(out, num_frames=2, frame_stride=1, image_size=32, batch_size=1,
                              return_frame_indices=False, **kwargs)
        return dataset_info(ds).label_names, sorted(int(y[0]) for _, y in ds.as_numpy_iterator())

    names, stored = labels_by_file()
    assert names == ["class_0", "class_1"]
    # A model whose classes are another list: the stored 0/1 become its indices 2/0.
    model_classes = ["class_1", "other", "class_0"]
    names, moved = labels_by_file(label_names=model_classes)
    assert names == model_classes
    assert moved == sorted({0: 2, 1: 0}[label] for label in stored)
    with pytest.raises(ValueError, match="class_1"):
        labels_by_file(label_names=["class_0", "other"])
