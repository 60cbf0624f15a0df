"""Re-encode videos for fast clip sampling: short side 256, a key frame every few frames.

A clip decoder must start at the key frame before the clip's first frame. Uploads usually
carry a key frame every 250 frames (x264's default), so a 16-frame clip can cost a hundred
frames of decoding; at full HD each of those frames is also ~30x the pixels of a 256p one.
Re-encoding once, as mmaction2's `resize_videos.py` does for Kinetics, makes every later
epoch cheaper. Frame timestamps are kept (frame index i stays frame i for the samplers);
audio is dropped; a display rotation is applied to the pixels.

>>> import os, tempfile
>>> from keras_vtn.data.testing import write_video, read_index
>>> from keras_vtn.data.decode import read_frames
>>> folder = tempfile.mkdtemp()
>>> write_video(os.path.join(folder, "a.mp4"), num_frames=40, height=96, width=128, gop=40)
>>> out = reencode_video(os.path.join(folder, "a.mp4"), os.path.join(folder, "b.mp4"),
...                      short_side=64, keyint=8)
>>> frames, info = read_frames(out, [0, 17, 39])
>>> frames.shape, [read_index(f) for f in frames], info.num_frames
((3, 64, 84, 3), [0, 17, 39], 40)
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np

from keras_vtn.data.decode import DecodeError, _open, _target_size

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


def reencode_video(src: str, dst: str, *, short_side: int | None = 256, keyint: int = 16,
                   crf: int = 23, preset: str = "veryfast", threads: int = 1) -> str:
    """Write `src` as H.264 (mp4) to `dst` with short side `short_side` (None keeps the size;
    never upscales) and a key frame every `keyint` frames. Returns `dst`.

    Raises `DecodeError` for a file that does not open (see `keras_vtn.data.decode.probe`).
    """
    container = _open(src)
    tmp = dst + ".part.mp4"
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    try:
        source = container.streams.video[0]
        source.thread_type = "AUTO"  # decoding is not the bottleneck next to x264
        rate = source.average_rate or source.guessed_rate or 25
        with av.open(tmp, "w", format="mp4") as out:
            stream = None
            for frame in container.decode(source):
                rotation = int(getattr(frame, "rotation", 0) or 0) % 360
                if stream is None:
                    width, height = frame.width, frame.height
                    if rotation % 180:
                        width, height = height, width
                    if short_side and short_side < min(width, height):
                        width, height = _target_size(width, height, short_side)
                    # x264 wants even sizes for 4:2:0
                    width, height = max(2, width // 2 * 2), max(2, height // 2 * 2)
                    stream = out.add_stream("libx264", rate=rate)
                    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                    stream.time_base = source.time_base
                    stream.codec_context.gop_size = keyint
                    stream.codec_context.thread_count = threads
                    # scene cuts may add key frames; min-keyint keeps them from crowding
                    stream.options = {"crf": str(crf), "preset": preset,
                                      "x264-params": f"keyint={keyint}:min-keyint={keyint}"}
                if rotation:
                    image = frame.to_ndarray(format="rgb24")
                    image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
                    new = av.VideoFrame.from_ndarray(image, format="rgb24")
                    new = new.reformat(width=stream.width, height=stream.height,
                                       format="yuv420p", interpolation="BILINEAR")
                else:
                    new = frame.reformat(width=stream.width, height=stream.height,
                                         format="yuv420p", interpolation="BILINEAR")
                new.pts, new.time_base = frame.pts, frame.time_base
                out.mux(stream.encode(new))
            if stream is None:
                raise DecodeError("no_frames", src)
            out.mux(stream.encode(None))
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        container.close()
    return dst


def reencode_folder(src_root: str, dst_root: str, *, workers: int | None = None,
                    progress: bool = False, **kwargs) -> dict:
    """Re-encode every video under `src_root` to the same relative path (as .mp4) under
    `dst_root`; files already there are kept. Returns {"done", "kept", "failed": {path: why}}.
    """
    jobs = []
    for folder, _, files in os.walk(src_root):
        for name in sorted(files):
            if name.lower().endswith(VIDEO_EXTENSIONS):
                src = os.path.join(folder, name)
                rel = os.path.splitext(os.path.relpath(src, src_root))[0] + ".mp4"
                jobs.append((src, os.path.join(dst_root, rel)))
    result = {"done": 0, "kept": 0, "failed": {}}

    def one(job):
        src, dst = job
        if os.path.exists(dst):
            return "kept", src, ""
        try:
            reencode_video(src, dst, **kwargs)
            return "done", src, ""
        except Exception as error:  # one broken file must not stop a folder
            return "failed", src, str(error)

    # x264 and the decoders release the GIL: threads use the cores
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for i, (status, src, why) in enumerate(pool.map(one, jobs)):
            if status == "failed":
                result["failed"][src] = why
            else:
                result[status] += 1
            if progress:
                print(f"\r{i + 1}/{len(jobs)}", end="", file=sys.stderr)
    if progress and jobs:
        print(file=sys.stderr)
    return result
