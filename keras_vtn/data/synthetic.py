"""A built-in action dataset whose classes differ only in motion.

Every clip shows the same kind of object (an "L" made of two bars, so rotation is visible) on a
textured background, with a random position, angle, size and colours. The class sets exactly one
velocity — left/right, clockwise/anticlockwise, approaching/receding — so any single frame is drawn
from the same distribution in every class: only the order of the frames tells the classes apart.

Clips are real H.264 mp4 files in the Kinetics layout (`<split>/<label>/<id>_<start>_<end>.mp4`)
with a Kinetics-style CSV per split (`label,youtube_id,time_start,time_end,split`).

>>> import tempfile
>>> root = generate_motion_dataset(tempfile.mkdtemp(), clips_per_class={"train": 1}, size=32)
>>> sorted(p.name for p in root.iterdir())
['train', 'train.csv']
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from keras_vtn.io_utils import atomic_path, write_text

MOTION_CLASSES = (
    "approaching",
    "moving_left",
    "moving_right",
    "receding",
    "rotating_anticlockwise",
    "rotating_clockwise",
)

# class -> (dx, dangle, dlog_scale) in units per clip of `num_frames` frames
_VELOCITIES = {
    "moving_left": (-0.45, 0.0, 0.0),
    "moving_right": (0.45, 0.0, 0.0),
    "rotating_clockwise": (0.0, -np.pi * 0.9, 0.0),
    "rotating_anticlockwise": (0.0, np.pi * 0.9, 0.0),
    "approaching": (0.0, 0.0, 0.7),
    "receding": (0.0, 0.0, -0.7),
}


def _bar_mask(xx, yy, cx, cy, angle, half_length, half_width, offset):
    """Pixels inside a rotated rectangle whose centre is `offset` (in the object frame) from c."""
    cos, sin = np.cos(angle), np.sin(angle)
    ox, oy = offset
    # object frame -> image frame (y axis points down in images)
    bx = cx + ox * cos - oy * sin
    by = cy - (ox * sin + oy * cos)
    dx, dy = xx - bx, -(yy - by)
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    return (np.abs(u) <= half_length) & (np.abs(v) <= half_width)


def render_clip(label: str, num_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Renders one clip (num_frames, size, size, 3) uint8 of `label`."""
    dx, dangle, dscale = _VELOCITIES[label]
    # Draw each static coordinate from the range the moving one sweeps, so frames look alike.
    x0 = rng.uniform(0.3, 0.7) - dx / 2
    y0 = rng.uniform(0.3, 0.7)
    angle0 = rng.uniform(0, 2 * np.pi) - dangle / 2
    log_scale0 = rng.uniform(np.log(0.17), np.log(0.26)) - dscale / 2
    # A bright object on a dark background (random tints): a tiny model can find the object from
    # few examples, so a small video transformer learns the motion in minutes on a CPU.
    background = rng.uniform(0, 80, 3)
    foreground = rng.uniform(170, 255, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype("float32") / size
    texture = rng.normal(0, 12, (size, size, 1))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        f = t / max(num_frames - 1, 1)
        cx, cy = x0 + dx * f, y0
        angle = angle0 + dangle * f
        scale = np.exp(log_scale0 + dscale * f)
        # The "L": a long bar and a short foot at one end, no rotational symmetry.
        mask = _bar_mask(xx, yy, cx, cy, angle, scale, scale * 0.22, (0.0, 0.0))
        mask |= _bar_mask(
            xx, yy, cx, cy, angle, scale * 0.45, scale * 0.22, (scale * 0.78, scale * 0.45)
        )
        image = np.where(mask[..., None], foreground, background) + texture
        image += rng.normal(0, 4, image.shape)
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encodes uint8 RGB frames as H.264 (yuv420p) through PyAV, atomically and reproducibly."""
    import av

    with atomic_path(path, suffix=".mp4") as tmp, av.open(tmp, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # Reproducible bytes: one thread and no macroblock-tree lookahead (with them, x264's
        # output changed from one process to the next in our runs).
        stream.options = {"crf": "18", "g": str(fps), "threads": "1",
                          "x264-params": "mbtree=0:rc-lookahead=0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generate_motion_dataset(
    root: str | os.PathLike,
    clips_per_class: dict[str, int] | None = None,
    classes: tuple[str, ...] = MOTION_CLASSES,
    num_frames: int = 24,
    size: int = 64,
    fps: int = 12,
    seed: int = 0,
) -> Path:
    """Writes the dataset under `root` and returns it; existing complete clips are kept.

    Args:
        clips_per_class: clips per class for each split, default `{"train": 40, "val": 10}`.
        classes: a subset of `MOTION_CLASSES`.
        num_frames, size, fps: clip length, square frame size and frame rate.
    """
    root = Path(root)
    clips_per_class = clips_per_class or {"train": 40, "val": 10}
    unknown = set(classes) - set(_VELOCITIES)
    if unknown:
        raise ValueError(f"Unknown motion classes {sorted(unknown)}; choose from {MOTION_CLASSES}.")
    duration = num_frames // fps or 1
    for split_index, (split, count) in enumerate(sorted(clips_per_class.items())):
        rows = []
        for class_index, label in enumerate(sorted(classes)):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                # 11 characters like a YouTube id, unique per (split, class, clip)
                youtube_id = f"{split[:2]}{class_index:02d}{i:07d}"
                start = i % 50
                path = folder / f"{youtube_id}_{start:06d}_{start + duration:06d}.mp4"
                if not path.exists():
                    rng = np.random.default_rng([seed, split_index, class_index, i])
                    write_mp4(path, render_clip(label, num_frames, size, rng), fps)
                rows.append((label, youtube_id, start, start + duration, split))
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerows(rows)
        write_text(root / f"{split}.csv", table.getvalue())
    return root
