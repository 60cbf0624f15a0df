"""Damaged files are found and named; the decode report's counts are exact under a parallel map."""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import pytest

from keras_vtn.data import dataset_info, video_dataset
from keras_vtn.data.check import check_file, check_videos
from keras_vtn.data.testing import damage, read_index, write_video


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A 100-frame video with its middle 30% overwritten, beside a good one."""
    root = tmp_path_factory.mktemp("damaged")
    (root / "a").mkdir()
    good, bad = str(root / "a" / "good.mp4"), str(root / "a" / "middle.mp4")
    write_video(good, num_frames=40, width=32, height=32)
    # noise makes the frames big enough that 30% of the bytes is ~30 frames, not a header
    write_video(bad, num_frames=100, width=32, height=32, noise=20)
    damage(bad, 0.35, 0.65)
    return str(root), good, bad


def test_check_videos_finds_damage_in_the_middle(damaged):
    root, _, bad = damaged
    reason, detail = check_file(bad)
    assert reason == "decode_error" and "of 100 frames decode" in detail
    result = check_videos(root)
    assert result["num_files"] == 2 and result["num_ok"] == 1
    assert result["files"] == {bad: {"reason": "decode_error", "detail": detail}}


def test_dataset_names_a_video_whose_frames_stop_short(damaged, caplog):
    """The centre window lies in the damage: the clip is drawn again from the frames before
    it, and the report names the file and where its frames stop."""
    root, good, bad = damaged
    ds = video_dataset(root, num_frames=4, frame_stride=4, image_size=32, short_side=32,
                       return_frame_indices=True)
    with caplog.at_level(logging.WARNING, logger="keras_vtn.data"):
        out = [inputs for inputs, _ in ds]  # good.mp4, then middle.mp4
    assert len(out) == 2
    assert list(dataset_info(ds).report.truncated) == [bad] and not dataset_info(ds).report.failed
    stop = int(re.search(r"frames stop after (\d+) of the 100 declared",
                         dataset_info(ds).report.truncated[bad]).group(1))
    assert 20 < stop < 60
    indices = out[1]["frame_indices"].numpy().tolist()
    got = [read_index(f) for f in out[1]["frames"].numpy()]
    assert got == indices and max(got) < stop and np.diff(got).tolist() == [4, 4, 4]
    assert f"{bad}: truncated, frames stop after {stop}" in dataset_info(ds).report.summary()
    assert bad in caplog.text  # the end-of-pass summary of an evaluation lists it


def test_training_logs_the_truncated_file_by_name(damaged, caplog):
    root, _, bad = damaged
    ds = video_dataset(root, training=True, num_frames=4, frame_stride=4, image_size=32,
                       short_side=32, seed=0)
    with caplog.at_level(logging.WARNING, logger="keras_vtn.data"):
        for _ in range(3):  # a random window may miss the damage; three passes hit it
            assert len(list(ds)) == 2
    assert bad in dataset_info(ds).report.truncated
    assert f"truncated {bad}: sampled within the frames that decode" in caplog.text


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    for i in range(24):
        folder = root / f"c{i % 3}"
        folder.mkdir(exist_ok=True)
        write_video(str(folder / f"v{i:02d}.mp4"), num_frames=8, width=16, height=16, gop=4)
    (root / "c0" / "junk.mp4").write_bytes(b"junk" * 10)
    (root / "c1" / "empty.mp4").write_bytes(b"")
    return str(root)


@pytest.mark.parametrize("seed", [None, 0])
def test_pass_counts_are_exact_under_a_parallel_map(many, caplog, seed):
    """Without a seed the map returns clips in any order; the end-of-pass summary still
    counts every clip of its pass and none of the next."""
    ds = video_dataset(many, training=True, num_frames=2, image_size=16, short_side=16,
                       num_parallel_calls=8, seed=seed)
    with caplog.at_level(logging.WARNING, logger="keras_vtn.data"):
        yielded = [sum(1 for _ in ds) for _ in range(4)]
    assert yielded == [24] * 4
    expected = {"decoded": 24, "failed": 2, "attempted": 26}
    report = dataset_info(ds).report
    assert report.history == [expected] * 4 and report.decoded == 96
    summaries = re.findall(r"pass (\d+): (\d+) clips decoded, (\d+) videos skipped", caplog.text)
    assert summaries == [(str(p), "24", "2") for p in range(1, 5)]


def test_pass_counts_are_exact_with_repeat(many):
    ds = video_dataset(many, training=True, num_frames=2, image_size=16, short_side=16,
                       num_parallel_calls=8, repeat=True, batch_size=4)
    for step, _ in enumerate(ds):
        if step == 2 * 24 // 4:  # the first batch of the third pass
            break
    expected = {"decoded": 24, "failed": 2, "attempted": 26}
    assert dataset_info(ds).report.history[:2] == [expected] * 2
    assert os.path.join(many, "c0", "junk.mp4") in dataset_info(ds).report.failed
