"""Clips per second: keras_vtn video path and TFRecord path vs a naive PyAV loop.

The videos are realistic for decoding cost: 320x240, 25 fps, 10 s (250 frames), H.264 at
about 2.7 Mbit/s with GOP 50, every frame covered in temporal Gaussian noise (as in
shared/specs/dependencies.md section 2). All three methods produce the same training clips:
dense sampling of 16 frames at stride 4 (a random 2.5 s window), short side 256, random
224x224 crop, uint8 output.

- naive: for each clip, decode the whole video with PyAV to RGB, take the sampled frames,
  resize and crop (one Python loop, as commonly written).
- video path: `keras_vtn.data.video_dataset` (seek + decode only the window, parallel map).
- TFRecord path: `keras_vtn.data.prepare` once (JPEG frames at short side 256, not timed),
  then `keras_vtn.data.tfrecord_dataset`.

Run: `python benchmarks/data_pipeline.py [--videos 8 --clips 48 --repeats 3]`; writes
`benchmarks/results/data_pipeline.json` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import av
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keras_vtn.data import Sampler, prepare, tfrecord_dataset, video_dataset  # noqa: E402
from keras_vtn.data.testing import write_video  # noqa: E402
from keras_vtn.data.tfrecord import PrepareArgumentsError  # noqa: E402

NUM_FRAMES, STRIDE, SHORT, CROP = 16, 4, 256, 224


def make_videos(folder: str, count: int) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"noisy_{i:02d}.mp4")
        if not os.path.exists(path):
            write_video(path, num_frames=250, height=240, width=320, fps=25, gop=50,
                        noise=15.0, bit_rate=2_700_000, seed=i)
        paths.append(path)
    return paths


def naive(paths: list[str], num_clips: int, seed: int) -> int:
    """Decode the whole video, then sample, resize and crop: one clip at a time."""
    rng = np.random.default_rng(seed)
    sampler = Sampler("dense", NUM_FRAMES, STRIDE)
    resize = tf.function(lambda x, size: tf.image.resize(x, size))
    for k in range(num_clips):
        with av.open(paths[k % len(paths)]) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        idx = sampler(len(frames), 25.0, training=True, rng=rng)[0]
        clip = np.stack([frames[i] for i in idx])
        h, w = clip.shape[1:3]
        scale = SHORT / min(h, w)
        clip = resize(clip, (round(h * scale), round(w * scale))).numpy()
        top = rng.integers(0, clip.shape[1] - CROP + 1)
        left = rng.integers(0, clip.shape[2] - CROP + 1)
        clip = clip[:, top:top + CROP, left:left + CROP].round().clip(0, 255).astype(np.uint8)
        assert clip.shape == (NUM_FRAMES, CROP, CROP, 3)
    return num_clips


def consume(ds, num_clips: int) -> int:
    seen = 0
    for clips, _ in ds:
        seen += int(clips.shape[0])
        if seen >= num_clips:
            break
    return seen


KWARGS = dict(training=True, num_frames=NUM_FRAMES, frame_stride=STRIDE, image_size=CROP,
              short_side=SHORT, batch_size=8, repeat=True)


def timed(fn, *args):
    load = os.getloadavg()[0]
    cpu0 = os.times()
    start = time.perf_counter()
    clips = fn(*args)
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"clips": clips, "seconds": seconds, "clips_per_s": clips / seconds,
            "process_cpu_s": cpu, "load_before": load}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--clips", type=int, default=24, help="clips per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/keras_vtn_bench")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "data_pipeline.json"))
    args = parser.parse_args(argv)

    paths = make_videos(os.path.join(args.workdir, "videos"), args.videos)
    pairs = [(p, 0) for p in paths]
    shards = os.path.join(args.workdir, "tfrecords")
    existed = os.path.exists(os.path.join(shards, "manifest.json"))
    t0 = time.perf_counter()
    try:
        manifest = prepare(pairs, shards, num_shards=4, short_side=SHORT, progress=False)
    except PrepareArgumentsError:  # shards of another --videos count or package version
        existed = False
        manifest = prepare(pairs, shards, num_shards=4, short_side=SHORT, progress=False,
                           overwrite=True)
    prepare_s = None if existed else time.perf_counter() - t0  # None: shards were reused
    size_mb = sum(os.path.getsize(os.path.join(shards, s)) for s in manifest["shards"]) / 2**20
    video_mb = sum(os.path.getsize(p) for p in paths) / 2**20

    video_ds = video_dataset(pairs, seed=0, **KWARGS)
    record_ds = tfrecord_dataset(shards, seed=0, **KWARGS)
    consume(video_ds, 8)  # warm up: graph construction, thread pools
    consume(record_ds, 8)
    naive(paths, 1, 0)

    runs = {"naive": [], "video": [], "tfrecord": []}
    for r in range(args.repeats):  # interleave methods so machine noise hits all of them
        runs["naive"].append(timed(naive, paths, args.clips, r))
        runs["video"].append(timed(consume, video_ds, args.clips))
        runs["tfrecord"].append(timed(consume, record_ds, args.clips))
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]['clips_per_s']:.2f}" for k, v in
                                           runs.items()), file=sys.stderr)

    median = {k: statistics.median(x["clips_per_s"] for x in v) for k, v in runs.items()}
    # ratios within one repeat: the methods ran back to back, under similar machine load
    paired = {k: [runs[k][r]["clips_per_s"] / runs["naive"][r]["clips_per_s"]
                  for r in range(args.repeats)] for k in ("video", "tfrecord")}
    cpu = {k: statistics.median(x["process_cpu_s"] / x["clips"] for x in v)
           for k, v in runs.items()}
    result = {
        "setup": {
            "videos": args.videos, "clips_per_run": args.clips, "repeats": args.repeats,
            "video": "320x240, 25 fps, 10 s, H.264 2.7 Mbit/s, GOP 50, noise-textured",
            "clip": f"dense {NUM_FRAMES} frames stride {STRIDE}, short side {SHORT}, "
                    f"random crop {CROP}, uint8",
            "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "av": av.__version__,
        },
        "prepare_seconds": prepare_s,
        "tfrecord_mb": size_mb,
        "video_mb": video_mb,
        "runs": runs,
        "median_clips_per_s": median,
        "speedup_vs_naive": {k: median[k] / median["naive"] for k in ("video", "tfrecord")},
        "paired_speedup_per_repeat": paired,
        "paired_speedup_median": {k: statistics.median(v) for k, v in paired.items()},
        "cpu_seconds_per_clip": cpu,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    # keep earlier invocations' medians: on a shared machine one run is not the whole story
    history = []
    if os.path.exists(args.output):
        with open(args.output) as f:
            old = json.load(f)
        history = old.get("history", [])
    history.append({"finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "load_average": os.getloadavg(),
                    "median_clips_per_s": median,
                    "speedup_vs_naive": result["speedup_vs_naive"],
                    "paired_speedup_median": result["paired_speedup_median"],
                    "cpu_seconds_per_clip": cpu})
    result["history"] = history
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(table(result))
    return 0


def table(result) -> str:
    med, runs = result["median_clips_per_s"], result["runs"]
    rows = [("naive loop (decode whole video, then sample)", "naive"),
            ("`video_dataset` (seek + decode window, parallel map)", "video"),
            ("`tfrecord_dataset` (JPEG frames, decode sampled only)", "tfrecord")]
    lines = ["| pipeline | clips/s (median) | runs | vs naive | CPU s per clip |",
             "|---|---|---|---|---|"]
    for label, key in rows:
        each = " / ".join(f"{x['clips_per_s']:.1f}" for x in runs[key])
        cpu = statistics.median(x["process_cpu_s"] / x["clips"] for x in runs[key])
        lines.append(f"| {label} | {med[key]:.1f} | {each} | {med[key] / med['naive']:.1f}x "
                     f"| {cpu:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
