"""The peers of `benchmarks/data_pipeline.py` return the frames keras_vtn returns.

decord and torchcodec are optional (`pip install -e .[bench]`); each check skips with a message
when its peer is not importable.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks import data_pipeline as bench  # noqa: E402
from keras_vtn.data.testing import write_video  # noqa: E402


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("peers") / "v.mp4")
    write_video(path, num_frames=60, height=96, width=128, gop=20)
    return path


@pytest.mark.parametrize("peer", ["decord", "torchcodec", "naive"])
def test_peer_frames_match_keras_vtn(video, peer):
    found, missing = bench.peers()
    if peer in missing:
        pytest.skip(f"{peer} not importable ({missing[peer]}); pip install -e .[bench]")
    methods = bench.Methods({video: (128, 96)}, found)
    idx = np.array([[3, 17, 40, 59, 21, 5, 50, 33]])
    ours, decoded = methods.keras_vtn(video, idx, "uniform8_1view")
    theirs, _ = getattr(methods, peer)(video, idx, "uniform8_1view")
    assert ours.shape == theirs.shape == (1, 8, 224, 224, 3)
    assert decoded >= 8
    # resizers differ by a few grey levels; a wrong frame differs by far more
    diff = np.abs(ours.astype(float) - theirs.astype(float)).mean(axis=(2, 3, 4))[0]
    shifted = np.abs(ours[0, 1:].astype(float) - theirs[0, :-1].astype(float)).mean()
    assert diff.max() < 8 < shifted, (diff, shifted)


def test_minimum_decoded_counts_from_key_frames():
    assert bench.minimum_decoded(np.array([5, 6, 30]), [0, 25]) == 6 + 1 + 6
