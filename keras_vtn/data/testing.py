"""Synthetic videos whose frames carry their own index, for tests and benchmarks.

Every frame is a grid of blocks; each block is black or white and together they spell the
frame index in binary (most significant bit first, row-major). Block averages survive lossy
codecs, so a reader can tell exactly which source frames a sampler returned.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "clip.mp4")
>>> write_video(path, num_frames=10)
>>> from keras_vtn.data.decode import read_frames
>>> frames, info = read_frames(path, [3, 7])
>>> [read_index(f) for f in frames]
[3, 7]
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence

import av
import numpy as np

GRID = (3, 4)  # rows, columns of code blocks -> 12 bits, enough for 4095 frames
_LOW, _HIGH = 16, 235


def code_frame(index: int, height: int = 48, width: int = 64, noise: np.ndarray | None = None):
    """An RGB uint8 frame whose block pattern spells `index`."""
    rows, cols = GRID
    bits = [(index >> (rows * cols - 1 - b)) & 1 for b in range(rows * cols)]
    frame = np.empty((height, width, 3), np.uint8)
    ys = np.linspace(0, height, rows + 1).astype(int)
    xs = np.linspace(0, width, cols + 1).astype(int)
    for b, bit in enumerate(bits):
        r, c = divmod(b, cols)
        frame[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = _HIGH if bit else _LOW
    if noise is not None:
        frame = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return frame


def read_index(frame: np.ndarray) -> int:
    """Inverse of `code_frame` for a frame of any size (reads the centre of each block)."""
    frame = np.asarray(frame, np.float32)
    if frame.ndim == 3:
        frame = frame.mean(-1)
    rows, cols = GRID
    height, width = frame.shape
    ys = np.linspace(0, height, rows + 1)
    xs = np.linspace(0, width, cols + 1)
    value = 0
    for r in range(rows):
        for c in range(cols):
            y0, y1 = ys[r], ys[r + 1]
            x0, x1 = xs[c], xs[c + 1]
            qy, qx = (y1 - y0) / 4, (x1 - x0) / 4
            rows_ = slice(int(y0 + qy), int(np.ceil(y1 - qy)))
            patch = frame[rows_, int(x0 + qx) : int(np.ceil(x1 - qx))]
            value = (value << 1) | int(patch.mean() > 128)
    return value


_CONTAINER_CODEC = {
    ".mp4": ("mp4", "libx264", "yuv420p"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".mkv": ("matroska", "libx264", "yuv420p"),
    ".avi": ("avi", "mpeg4", "yuv420p"),
}


def write_video(
    path: str,
    num_frames: int = 50,
    height: int = 48,
    width: int = 64,
    fps: int = 25,
    codec: str | None = None,
    pix_fmt: str | None = None,
    gop: int = 12,
    rotation: int = 0,
    noise: float = 0.0,
    bit_rate: int | None = None,
    seed: int = 0,
    faststart: bool = False,
    frame_times: Sequence[float] | None = None,
) -> None:
    """Encode `num_frames` index-coded frames with PyAV (container from the file extension).

    `noise` adds temporal Gaussian noise of that standard deviation (realistic decode cost);
    `faststart` puts an mp4's index first (so a cut file still opens); `frame_times` (seconds,
    increasing, one per frame) gives a variable frame rate, with `fps` only the nominal rate.
    """
    ext = path[path.rfind(".") :].lower()
    fmt, default_codec, default_pix = _CONTAINER_CODEC[ext]
    codec = codec or default_codec
    pix_fmt = pix_fmt or default_pix
    rng = np.random.default_rng(seed)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(path, "w", format=fmt, options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = gop
        if bit_rate:
            stream.bit_rate = bit_rate
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"} if not bit_rate else {}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        elif codec == "mpeg4":
            stream.options = {"qscale": "2"}
            stream.codec_context.qmax = 4
        if rotation:
            stream.set_display_rotation(rotation)
        if frame_times is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i in range(num_frames):
            extra = None
            if noise:
                extra = rng.normal(0, noise, (height, width, 3)).astype(np.int16)
            image = code_frame(i, height, width, extra)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pix_fmt != "rgb24":
                frame = frame.reformat(format=pix_fmt)
            if frame_times is None:
                frame.pts = i
                frame.time_base = fractions.Fraction(1, fps)
            else:
                frame.pts = int(round(frame_times[i] * 1000))
                frame.time_base = fractions.Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_audio_only(path: str, seconds: float = 1.0) -> None:
    """An mp4 holding only an AAC audio stream."""
    rate = 16000
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = np.zeros((1, int(seconds * rate)), np.float32)
        step = 1024
        for start in range(0, samples.shape[1], step):
            chunk = np.ascontiguousarray(samples[:, start : start + step])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def damage(path: str, start: float, stop: float, seed: int = 0) -> None:
    """Overwrite the bytes between fractions `start` and `stop` of a file with random bytes
    (a disk or transfer error in the middle of a video)."""
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        begin, end = int(size * start), int(size * stop)
        f.seek(begin)
        f.write(np.random.default_rng(seed).bytes(end - begin))
