"""Which frames to take from a video: dense, uniform (segment) and time-based samplers.

Every sampler returns integer frame indices of shape `(num_clips, num_frames)`; the same
`numpy.random.Generator` state gives the same indices. Training draws one random position per
clip; evaluation places `num_clips` windows evenly over the video (the centre for one clip).
A video shorter than a clip still gives a full clip: the dense and time samplers loop back
to its start, the uniform sampler repeats each frame over consecutive segments (no video is
dropped for being short unless `video_dataset(min_frames=...)` asks for it).

>>> import numpy as np
>>> Sampler("dense", num_frames=4, frame_stride=2)(total_frames=100, fps=25.0)
array([[46, 48, 50, 52]])
>>> Sampler("uniform", num_frames=4)(total_frames=100, fps=25.0)
array([[12, 37, 62, 87]])
>>> Sampler("time", num_frames=4, target_fps=5)(total_frames=300, fps=30.0)
array([[140, 146, 152, 158]])
>>> Sampler("dense", num_frames=3, frame_stride=1, num_clips=2)(total_frames=10, fps=25.0)
array([[0, 1, 2],
       [7, 8, 9]])
>>> short = dict(total_frames=2, fps=25.0)  # shorter than the clip
>>> Sampler("dense", num_frames=4)(**short), Sampler("uniform", num_frames=4)(**short)
(array([[0, 1, 0, 1]]), array([[0, 0, 1, 1]]))
"""

from __future__ import annotations

import numpy as np

KINDS = ("dense", "uniform", "time")


def _starts(total: int, span: float, num_clips: int, training: bool, rng) -> np.ndarray:
    room = max(total - span, 0.0)
    if training:
        return rng.uniform(0.0, 1.0, num_clips) * room if room else np.zeros(num_clips)
    if num_clips == 1:
        return np.array([room / 2.0])
    # Evenly spaced windows including both ends (PySlowFast multi-view testing).
    return np.linspace(0.0, room, num_clips)


def dense_indices(
    total_frames: int,
    num_frames: int,
    frame_stride: int = 1,
    *,
    num_clips: int = 1,
    training: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """`num_frames` frames `frame_stride` apart from a random (train) or centred window."""
    total = max(int(total_frames), 1)
    span = (num_frames - 1) * frame_stride + 1
    if training:
        rng = rng if rng is not None else np.random.default_rng()
        room = max(total - span, 0)
        starts = rng.integers(0, room + 1, num_clips)
    else:
        starts = np.floor(_starts(total, span, num_clips, False, None)).astype(np.int64)
    idx = starts[:, None] + np.arange(num_frames)[None, :] * frame_stride
    return (idx % total).astype(np.int64)


def uniform_indices(
    total_frames: int,
    num_frames: int,
    *,
    num_clips: int = 1,
    training: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One frame from each of `num_frames` equal segments covering the whole video (TSN).

    Training picks a random frame per segment; evaluation picks the segment centre, shifted
    by `(clip + 0.5) / num_clips` of a segment for multi-clip views.
    """
    total = max(int(total_frames), 1)
    seg = total / num_frames
    base = np.arange(num_frames) * seg
    if training:
        rng = rng if rng is not None else np.random.default_rng()
        offsets = rng.uniform(0.0, 1.0, (num_clips, num_frames)) * seg
    else:
        fraction = (np.arange(num_clips) + 0.5) / num_clips
        offsets = np.broadcast_to(fraction[:, None] * seg, (num_clips, num_frames))
    idx = np.floor(base[None, :] + offsets).astype(np.int64)
    return np.minimum(idx, total - 1)


def time_indices(
    total_frames: int,
    fps: float,
    num_frames: int,
    target_fps: float,
    *,
    num_clips: int = 1,
    training: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """`num_frames` frames at `target_fps` (a window of `num_frames / target_fps` seconds).

    The step in source frames is `fps / target_fps`, so videos of any frame rate give the
    same time span; VTN and LinearVTN train this way.
    """
    total = max(int(total_frames), 1)
    step = float(fps) / float(target_fps)
    span = (num_frames - 1) * step + 1
    rng = rng if rng is not None else np.random.default_rng()
    starts = _starts(total, span, num_clips, training, rng)
    idx = np.floor(starts[:, None] + np.arange(num_frames)[None, :] * step + 1e-6).astype(np.int64)
    return idx % total


class Sampler:
    """A configured sampler: `sampler(total_frames, fps, training=False, rng=None)`.

    Args:
        kind: `"dense"`, `"uniform"` (segment-based) or `"time"`.
        num_frames: frames per clip.
        frame_stride: dense only; distance between sampled frames.
        target_fps: time only; sampling rate in frames per second.
        num_clips: clips per video (evaluation views, or several random clips in training).
    """

    def __init__(
        self,
        kind: str = "dense",
        num_frames: int = 16,
        frame_stride: int = 1,
        target_fps: float | None = None,
        num_clips: int = 1,
    ):
        if kind not in KINDS:
            raise ValueError(f"Unknown sampling {kind!r}; use one of {KINDS}.")
        if kind == "time" and not target_fps:
            raise ValueError('sampling="time" needs target_fps (frames per second to sample at).')
        if num_frames < 1 or num_clips < 1 or frame_stride < 1:
            raise ValueError("num_frames, num_clips and frame_stride must be >= 1.")
        self.kind = kind
        self.num_frames = int(num_frames)
        self.frame_stride = int(frame_stride)
        self.target_fps = target_fps
        self.num_clips = int(num_clips)

    def __call__(
        self,
        total_frames: int,
        fps: float,
        training: bool = False,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        if self.kind == "dense":
            return dense_indices(
                total_frames, self.num_frames, self.frame_stride,
                num_clips=self.num_clips, training=training, rng=rng,
            )
        if self.kind == "uniform":
            return uniform_indices(
                total_frames, self.num_frames, num_clips=self.num_clips, training=training, rng=rng
            )
        return time_indices(
            total_frames, fps, self.num_frames, self.target_fps,
            num_clips=self.num_clips, training=training, rng=rng,
        )

    def get_config(self) -> dict:
        return {
            "kind": self.kind,
            "num_frames": self.num_frames,
            "frame_stride": self.frame_stride,
            "target_fps": self.target_fps,
            "num_clips": self.num_clips,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"Sampler({args})"
