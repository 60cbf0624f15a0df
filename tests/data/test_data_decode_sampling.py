"""Decoding returns exactly the sampled frames (read back from the pixels) in every container."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import GOOD

from keras_vtn.data import Sampler, dense_indices, probe, read_frames, time_indices, uniform_indices
from keras_vtn.data.testing import read_index


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_decode_any_indices(videos, kind):
    path = videos[kind]
    total = GOOD[kind][1]["num_frames"]
    info = probe(path)
    assert info.num_frames == total
    assert (info.width, info.height) == (64, 48)
    rng = np.random.default_rng(1)
    # random order with repeats, far jumps (re-seek) and the last frame
    wanted = np.concatenate([rng.integers(0, total, 6), [total - 1, 0, total - 1, 3]])
    frames, _ = read_frames(path, wanted)
    assert frames.shape == (len(wanted), 48, 64, 3)
    assert [read_index(f) for f in frames] == wanted.tolist()


def test_short_side_resize_in_decoder(videos):
    frames, _ = read_frames(videos["webm"], [[1, 2], [40, 41]], short_side=24)
    assert frames.shape == (2, 2, 24, 32, 3)
    assert [[read_index(f) for f in clip] for clip in frames] == [[1, 2], [40, 41]]


def test_indices_past_the_end_repeat_last_frame(videos):
    frames, _ = read_frames(videos["avi"], [38, 39, 45])
    assert [read_index(f) for f in frames] == [38, 39, 39]


def test_dense_sampler_eval_and_train():
    assert dense_indices(75, 8, 2).tolist() == [[30, 32, 34, 36, 38, 40, 42, 44]]
    views = dense_indices(75, 4, 3, num_clips=3)
    assert views[:, 0].tolist() == [0, 32, 65] and views[-1, -1] == 74  # both ends included
    starts = {
        int(dense_indices(75, 8, 2, training=True, rng=np.random.default_rng(s))[0, 0])
        for s in range(50)
    }
    assert min(starts) >= 0 and max(starts) <= 75 - 15 and len(starts) > 10
    # a short video loops
    assert dense_indices(5, 8, 1).tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]
    assert dense_indices(1, 4, 2, training=True, rng=np.random.default_rng(0)).tolist() == [[0] * 4]


def test_uniform_sampler_covers_segments():
    idx = uniform_indices(80, 8)[0]
    assert idx.tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    rng = np.random.default_rng(0)
    for _ in range(20):
        train = uniform_indices(80, 8, training=True, rng=rng)[0]
        assert ((train // 10) == np.arange(8)).all()  # one frame from each segment
    two = uniform_indices(80, 4, num_clips=2)
    assert two.tolist() == [[5, 25, 45, 65], [15, 35, 55, 75]]


def test_time_sampler_uses_the_video_fps():
    # 30 fps source sampled at 10 fps -> every third frame; 25 fps at 12.5 -> every second
    assert np.diff(time_indices(90, 30.0, 6, 10.0)[0]).tolist() == [3] * 5
    assert np.diff(time_indices(75, 25.0, 6, 12.5)[0]).tolist() == [2] * 5


def test_sampler_is_deterministic_from_a_seed():
    sampler = Sampler("uniform", num_frames=8, num_clips=2)
    a = sampler(300, 25.0, training=True, rng=np.random.default_rng(7))
    b = sampler(300, 25.0, training=True, rng=np.random.default_rng(7))
    c = sampler(300, 25.0, training=True, rng=np.random.default_rng(8))
    assert (a == b).all() and not (a == c).all()


def test_time_sampler_on_a_30fps_file(videos):
    sampler = Sampler("time", num_frames=5, target_fps=10)
    info = probe(videos["mkv"])
    idx = sampler(info.num_frames, info.fps)
    frames, _ = read_frames(videos["mkv"], idx)
    got = [read_index(f) for f in frames[0]]
    assert got == idx[0].tolist() and np.diff(got).tolist() == [3, 3, 3, 3]


def test_bad_sampler_arguments_are_clear():
    with pytest.raises(ValueError, match="target_fps"):
        Sampler("time", num_frames=4)
    with pytest.raises(ValueError, match="Unknown sampling"):
        Sampler("random", num_frames=4)
