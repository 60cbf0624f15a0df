"""`prepare` killed and resumed: no mixed or duplicated shards; readers see only complete data."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_vtn import cli
from keras_vtn.data import dataset_info, layouts, prepare, tfrecord_dataset
from keras_vtn.data.testing import write_video

REPO = Path(__file__).resolve().parents[2]
CLASSES, PER_CLASS, SHARDS = ("jump", "run", "walk"), 4, 4
VIDEOS = len(CLASSES) * PER_CLASS
READ = dict(num_frames=2, image_size=24)


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    """12 short videos in class folders."""
    root = tmp_path_factory.mktemp("twelve")
    for k, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            write_video(str(root / name / f"{i}.mp4"), num_frames=8, seed=10 * k + i)
    return str(root)


def stored_videos(out) -> list[str]:
    """`video/filename` of every record in every `.tfrecord` file of the folder."""
    names = []
    for path in sorted(glob.glob(os.path.join(out, "*.tfrecord"))):
        for raw in tf.data.TFRecordDataset(path):
            example = tf.train.SequenceExample.FromString(raw.numpy())
            names.append(example.context.feature["video/filename"].bytes_list.value[0].decode())
    return sorted(names)


def stored_short_sides(out) -> set[int]:
    sides = set()
    for path in glob.glob(os.path.join(out, "*.tfrecord")):
        for raw in tf.data.TFRecordDataset(path):
            example = tf.train.SequenceExample.FromString(raw.numpy())
            jpeg = example.feature_lists.feature_list["image/encoded"].feature[0].bytes_list
            sides.add(int(min(tf.io.decode_jpeg(jpeg.value[0]).shape[:2])))
    return sides


def count(ds) -> int:
    return sum(1 for _ in ds)


def test_a_resume_with_other_arguments_is_refused_and_names_the_difference(twelve, tmp_path):
    out = str(tmp_path / "out")
    prepare(twelve, out, num_shards=2, short_side=48, progress=False)
    with pytest.raises(ValueError, match=r"num_shards \(--shards.*2 before, 3 now"):
        prepare(twelve, out, num_shards=3, short_side=48, progress=False)
    with pytest.raises(ValueError, match=r"short_side \(--short-side\): 48 before, 24 now"):
        prepare(twelve, out, num_shards=2, short_side=24, progress=False)
    assert len(glob.glob(os.path.join(out, "*.tfrecord"))) == 2
    assert stored_videos(out) == sorted(f"{c}/{i}.mp4" for c in CLASSES for i in range(4))


def test_the_command_refuses_other_arguments_and_overwrite_starts_over(twelve, tmp_path, capsys):
    out = str(tmp_path / "cli")
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "notes.txt").write_text("not ours")
    assert cli.main(["prepare", twelve, out, "--shards", "2", "--short-side", "48"]) == 0
    capsys.readouterr()
    assert cli.main(["prepare", twelve, out, "--shards", "3", "--short-side", "24"]) == 2
    error = capsys.readouterr().err
    assert "short_side (--short-side): 48 before, 24 now" in error and "--overwrite" in error
    assert cli.main(["prepare", twelve, out, "--shards", "3", "--short-side", "24",
                     "--overwrite"]) == 0
    names = sorted(os.listdir(out))
    shards = [f"videos-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert names == sorted(["manifest.json", "notes.txt", *shards, *(s + ".json" for s in shards)])
    assert len(stored_videos(out)) == VIDEOS
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["complete"] and manifest["short_side"] == 24
    assert stored_short_sides(out) == {24}  # every stored frame is 24 px now, none 48


def test_the_reader_reads_only_the_shards_of_the_manifest(twelve, tmp_path):
    out = str(tmp_path / "mixed")
    manifest = prepare(twelve, out, num_shards=2, short_side=48, progress=False)
    # A stray shard (say, copied from another run) in the same folder.
    shutil.copy(os.path.join(out, manifest["shards"][0]),
                os.path.join(out, "videos-00000-of-00005.tfrecord"))
    assert count(tfrecord_dataset(out, **READ)) == VIDEOS


def _run_prepare(args, timeout=120):
    return subprocess.run([sys.executable, "-m", "keras_vtn.cli", "prepare", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def interrupted(twelve, tmp_path_factory):
    """`keras-vtn prepare` killed with SIGKILL while it writes the third of four shards.

    The first video of the third shard is long, so the kill lands while that shard is written;
    it is made short again afterwards (same path, so the same arguments).
    """
    base = tmp_path_factory.mktemp("interrupted")
    root = str(base / "videos")
    shutil.copytree(twelve, root)
    records = layouts.resolve(root)
    order = np.random.default_rng(0).permutation(len(records))  # prepare's seed-0 spread
    long_video = records.paths[order[2::SHARDS][0]]
    write_video(long_video, num_frames=1500, height=96, width=128)
    out = str(base / "out")
    args = [root, out, "--shards", str(SHARDS), "--short-side", "48", "--workers", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vtn.cli", "prepare", *args], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    marker = os.path.join(out, f"videos-00001-of-0000{SHARDS}.tfrecord.json")
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(marker) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()[-3000:]
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    assert process.returncode == -signal.SIGKILL
    done = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.tfrecord.json")))
    assert done == [f"videos-0000{i}-of-0000{SHARDS}.tfrecord.json" for i in range(2)], done
    write_video(long_video, num_frames=8)
    return root, out, args


@pytest.fixture
def copy(interrupted, tmp_path):
    root, out, args = interrupted
    shutil.copytree(out, tmp_path / "out")
    return root, str(tmp_path / "out"), [root, str(tmp_path / "out"), *args[2:]]


def test_an_interrupted_folder_is_read_only_when_allowed_and_with_a_warning(copy):
    _, out, _ = copy
    with pytest.raises(ValueError, match="incomplete.*allow_incomplete=True"):
        tfrecord_dataset(out, **READ)
    with pytest.warns(UserWarning, match=r"2 of 4 shards \(6 of 12 videos\) are missing"):
        ds = tfrecord_dataset(out, allow_incomplete=True, **READ)
    assert dataset_info(ds).label_names == list(CLASSES)
    assert count(ds) == 6


def test_resuming_a_killed_prepare_writes_each_video_once(copy):
    root, out, args = copy
    result = _run_prepare(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{VIDEOS} videos in {SHARDS} shards" in result.stdout
    assert stored_videos(out) == sorted(f"{c}/{i}.mp4" for c in CLASSES for i in range(4))
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no partial write left
    assert count(tfrecord_dataset(out, **READ)) == VIDEOS


def test_resuming_a_killed_prepare_with_other_arguments_is_refused(copy):
    _, out, args = copy
    before = sorted(os.listdir(out))
    for flag, value, message in [
        ("--short-side", "24", "short_side (--short-side): 48 before, 24 now"),
        ("--shards", "3", "num_shards (--shards, --videos-per-shard): 4 before, 3 now"),
    ]:
        changed = list(args)
        changed[changed.index(flag) + 1] = value
        result = _run_prepare(changed)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == before  # refused before touching anything
