"""The built-in motion dataset: deterministic, Kinetics layout, classes that differ in motion."""

import csv
import sys

import numpy as np
import pytest
from training_helpers import run

from keras_vtn.data import MOTION_CLASSES, generate_motion_dataset, read_frames
from keras_vtn.data.synthetic import render_clip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_motion_dataset(tmp_path_factory.mktemp("motion"), {"train": 2, "val": 1},
                                   size=48, num_frames=12)


def test_kinetics_layout(root):
    with open(root / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["label", "youtube_id", "time_start", "time_end", "split"]
    assert sorted({r["label"] for r in rows}) == list(MOTION_CLASSES) and len(rows) == 12
    for r in rows:
        name = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}.mp4"
        assert (root / "train" / r["label"] / name).is_file()
        assert len(r["youtube_id"]) == 11


def test_deterministic_across_processes(root, tmp_path):
    # Another process: x264 had produced process-dependent bytes before its options were pinned.
    code = ("import sys; from keras_vtn.data import generate_motion_dataset; "
            "generate_motion_dataset(sys.argv[1], {'train': 2, 'val': 1}, size=48, num_frames=12)")
    run([sys.executable, "-c", code, str(tmp_path)], timeout=120)
    assert (tmp_path / "train.csv").read_text() == (root / "train.csv").read_text()
    paths = sorted(root.rglob("*.mp4"))
    assert len(paths) == 18
    for path in paths:
        assert path.read_bytes() == (tmp_path / path.relative_to(root)).read_bytes(), path
    frames, _ = read_frames(str(paths[0]), range(12))
    assert frames.shape == (12, 48, 48, 3)


def _object_stats(clip):
    """Centroid x and area of the bright object in each frame."""
    mask = clip.mean(axis=-1) > 130
    xs = np.arange(clip.shape[2])[None, None, :]
    area = mask.sum(axis=(1, 2))
    return (mask * xs).sum(axis=(1, 2)) / np.maximum(area, 1), area


@pytest.mark.parametrize("seed", range(3))
def test_each_class_is_its_motion(seed):
    rng = lambda: np.random.default_rng(seed)  # noqa: E731 - same pose and colours per class
    x_left, _ = _object_stats(render_clip("moving_left", 12, 64, rng()))
    x_right, _ = _object_stats(render_clip("moving_right", 12, 64, rng()))
    assert x_left[-1] < x_left[0] - 10 and x_right[-1] > x_right[0] + 10
    _, area_in = _object_stats(render_clip("approaching", 12, 64, rng()))
    _, area_out = _object_stats(render_clip("receding", 12, 64, rng()))
    assert area_in[-1] > 2 * area_in[0] and area_out[-1] < area_out[0] / 2
    # Orientation of the object's principal axis (y pointing up): summed frame-to-frame turns.
    turn_cw = _total_turn(render_clip("rotating_clockwise", 12, 64, rng()))
    turn_acw = _total_turn(render_clip("rotating_anticlockwise", 12, 64, rng()))
    assert turn_cw < -90 and turn_acw > 90


def _total_turn(clip) -> float:
    mask = clip.mean(axis=-1) > 130
    angles = []
    for m in mask:
        rows, cols = np.nonzero(m)
        x, y = cols - cols.mean(), -(rows - rows.mean())
        angles.append(0.5 * np.degrees(np.arctan2(2 * (x * y).mean(), (x * x - y * y).mean())))
    steps = (np.diff(angles) + 90) % 180 - 90  # axis angles are modulo 180 degrees
    return float(steps.sum())
