"""A small, realistic video corpus for the data-pipeline benchmark, generated on demand.

Decoding cost depends on resolution, codec, keyframe interval and how much the picture
changes, so flat synthetic colours understate it. Each video here is camera-like: a
textured scene (smoothed noise at several scales) panned and zoomed slowly, a moving
object, and per-frame sensor noise, 10 s long. Kinds cover typical uploads (H.264 with a
keyframe every 250 frames, as x264's default keyint), re-encoded datasets (keyframe every
12 frames) and VP9, at 340x256 (a Kinetics-style re-encode) and 1280x720.

The files are not stored: `python -m benchmarks.video_corpus [folder]` (or `make_corpus`)
writes them; existing files of the same name are kept.
"""

from __future__ import annotations

import argparse
import fractions
import os
import sys
import time

import av
import numpy as np

# name: (codec, width, height, fps, keyframe interval)
KINDS = {
    "h264_256p_k250": ("libx264", 340, 256, 25, 250),
    "h264_256p_k12": ("libx264", 340, 256, 25, 12),
    "h264_720p_k250": ("libx264", 1280, 720, 30, 250),
    "h264_720p_k12": ("libx264", 1280, 720, 30, 12),
    "vp9_256p_k250": ("libvpx-vp9", 340, 256, 25, 250),
    "vp9_720p_k250": ("libvpx-vp9", 1280, 720, 30, 250),
}
SECONDS = 10


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured RGB canvas, larger than the frame so the view can pan across it."""
    canvas = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((64, 90.0), (16, 40.0), (4, 20.0)):
        small = rng.normal(0, 1, (height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        # nearest-neighbour upsampling then a box blur of one cell: smooth blobs at that scale
        big = np.repeat(np.repeat(small, cell, 0), cell, 1)[:height, :width]
        kernel = max(1, cell // 2)
        big = np.cumsum(np.cumsum(big, 0), 1)
        big = (big[kernel:, kernel:] - big[:-kernel, kernel:] - big[kernel:, :-kernel]
               + big[:-kernel, :-kernel]) / kernel**2
        canvas[: big.shape[0], : big.shape[1]] += weight * big / (np.std(big) + 1e-6)
    return np.clip(128 + canvas, 0, 255).astype(np.uint8)


def write_camera_video(path: str, codec: str, width: int, height: int, fps: int, keyint: int,
                       seconds: int = SECONDS, seed: int = 0) -> None:
    """Encode `seconds * fps` camera-like frames (pan, moving object, sensor noise)."""
    rng = np.random.default_rng(seed)
    num = seconds * fps
    scene = _scene(rng, height + height // 2, width + width // 2)
    # a bank of sensor-noise frames, drawn at a random offset each frame (cheaper than a
    # fresh normal draw per pixel and frame, and still different in every frame)
    bank = rng.normal(0, 4.0, (4, height + 16, width + 16, 3)).astype(np.int16)
    box = _scene(rng, height // 4, width // 6)
    fmt = "webm" if codec == "libvpx-vp9" else "mp4"
    with av.open(path, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = keyint
        if codec == "libx264":
            # x264's default rate control at a web-upload quality; scene cuts stay on, as in
            # a phone or editor export (panning content triggers none)
            stream.options = {"crf": "23", "preset": "veryfast",
                              "x264-params": f"keyint={keyint}:min-keyint={min(keyint, 25)}"}
        else:
            stream.options = {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8",
                              "g": str(keyint), "row-mt": "1"}
        for i in range(num):
            t = i / num
            y = int((height // 2) * (0.5 - 0.5 * np.cos(np.pi * t)))
            x = int((width // 2) * t)
            frame = scene[y:y + height, x:x + width].astype(np.int16)
            by = int((height - box.shape[0]) * (0.5 + 0.4 * np.sin(2 * np.pi * t)))
            bx = int((width - box.shape[1]) * (0.5 + 0.4 * np.cos(3 * np.pi * t)))
            frame[by:by + box.shape[0], bx:bx + box.shape[1]] = box
            oy, ox = rng.integers(0, 16, 2)
            frame += bank[i % len(bank), oy:oy + height, ox:ox + width]
            video = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), "rgb24")
            video = video.reformat(format="yuv420p")
            video.pts, video.time_base = i, fractions.Fraction(1, fps)
            container.mux(stream.encode(video))
        container.mux(stream.encode(None))


def make_corpus(folder: str, per_kind: int = 2, kinds=None) -> dict[str, list[str]]:
    """Write (or reuse) `per_kind` videos of each kind; returns {kind: [paths]}."""
    os.makedirs(folder, exist_ok=True)
    out = {}
    for name in kinds or KINDS:
        codec, width, height, fps, keyint = KINDS[name]
        ext = "webm" if codec == "libvpx-vp9" else "mp4"
        out[name] = []
        for i in range(per_kind):
            path = os.path.join(folder, f"{name}_{i}.{ext}")
            if not os.path.exists(path):
                tmp = path + ".part." + ext
                write_camera_video(tmp, codec, width, height, fps, keyint, seed=i)
                os.replace(tmp, path)
            out[name].append(path)
    return out


def keyframes(path: str) -> list[int]:
    """Frame indices of the key frames (in presentation order) of a constant-rate video."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate)
        start = stream.start_time or 0
        base = float(stream.time_base)
        return sorted(int(round((p.pts - start) * base * rate)) for p in
                      container.demux(stream) if p.is_keyframe and p.pts is not None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default="/tmp/keras_vtn_bench/corpus")
    parser.add_argument("--per-kind", type=int, default=2)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    corpus = make_corpus(args.folder, args.per_kind)
    for name, paths in corpus.items():
        size = sum(os.path.getsize(p) for p in paths) / len(paths) / 2**20
        print(f"{name}: {len(paths)} videos, {size:.1f} MiB each, key frames "
              f"{keyframes(paths[0])[:6]}")
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
