"""Clips per second of the keras_vtn video path against the decoders a user would pick instead.

Videos come from `benchmarks/video_corpus.py` (camera-like content, 10 s; H.264 with a key
frame every 250 or 12 frames, VP9; 340x256 and 1280x720). For every video kind and
sampling mode, every method turns the same list of (video, frame indices) into the same
uint8 clips, resized to short side 256 (one view, centre crop 224) or 224 (three crops of
224 along the long side), on a pool of 1 or 2 worker threads:

- `keras_vtn`: `keras_vtn.data.decode.read_frames` (the decode step of `video_dataset`:
  seek, decode forward, convert only the sampled frames, resize in swscale), then the crop.
- `naive`: PyAV decodes every frame to full-size RGB, then the sampled frames are resized.
- `decord`: `decord.VideoReader(width=, height=)` (resize in the decoder) + `get_batch`.
- `torchcodec`: `VideoDecoder(...).get_frames_at`, then `torch.nn.functional.interpolate`.
- `video_dataset` / `tfrecord_dataset`: the whole tf.data pipelines (their own samplers draw
  the indices, from the same distribution) with `num_parallel_calls` = workers; TFRecords
  come from `keras_vtn.data.prepare` (JPEG frames, not timed). Each pipeline keeps one
  iterator for the whole run (as `fit` does for an epoch), without a prefetch buffer; before
  each timed run it gives up the clips it made meanwhile, so the rate is its steady state.

Methods run interleaved (each repeat runs every method once, in a rotating order), so load
from other processes on a shared machine hits all of them alike; each timed run starts once
this process is idle (the other pipelines have refilled their buffers); the 1-minute load
average is stored with every run. Peers that are not installed (`pip install -e .[bench]`) are
skipped with a message. decord and torchcodec keep their default FFmpeg threading (decord:
automatic, torchcodec: one thread); keras_vtn gets what `video_dataset` chooses
(`decode_threads_for`: the cores per parallel decode, so 2 threads for one clip at a time on
2 cores, 1 each for two); `CPU s/clip` counts all threads.

`decoded/sampled`: frames the decoder produced per distinct frame requested, measured for
`keras_vtn` (`VideoInfo.decoded_frames`) and `naive`; `min` is the least any decoder that
starts at key frames must decode (from the key frame positions), what an ideal peer pays.

Run: `python -m benchmarks.data_pipeline [--kinds ...] [--modes ...] [--repeats 3]`; writes
`benchmarks/results/data_pipeline.json` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.video_corpus import KINDS, keyframes, make_corpus  # noqa: E402
from keras_vtn.data import Sampler, prepare, tfrecord_dataset, video_dataset  # noqa: E402
from keras_vtn.data.decode import decode_threads_for, probe, read_frames  # noqa: E402
from keras_vtn.data.tfrecord import PrepareArgumentsError  # noqa: E402

CROP = 224
# mode: (sampling, frames, stride, clips, crops, short side)
MODES = {
    "dense16x4_1view": ("dense", 16, 4, 1, 1, 256),
    "dense16x4_4x3": ("dense", 16, 4, 4, 3, 224),
    "uniform8_1view": ("uniform", 8, 1, 1, 1, 256),
}


def peers() -> dict:
    """The installed peer decoders, and why the others are missing."""
    found, missing = {}, {}
    try:
        import decord

        found["decord"] = decord
    except Exception as error:  # ImportError, or a wheel that does not load here
        missing["decord"] = f"{type(error).__name__}: {error}"
    try:
        import torch
        from torchcodec.decoders import VideoDecoder

        found["torchcodec"] = (torch, VideoDecoder)
    except Exception as error:
        missing["torchcodec"] = f"{type(error).__name__}: {error}"
    return found, missing


def _short_size(width: int, height: int, short: int) -> tuple[int, int]:
    scale = short / min(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def crops(clip: np.ndarray, num_crops: int) -> np.ndarray:
    """(V, T, h, w, 3) -> (V * crops, T, 224, 224, 3): centre, or three along the long side."""
    h, w = clip.shape[2:4]
    if num_crops == 1:
        top, left = (h - CROP) // 2, (w - CROP) // 2
        return clip[:, :, top:top + CROP, left:left + CROP]
    out = []
    for v in range(clip.shape[0]):
        for k in range(num_crops):
            if w >= h:
                top, left = (h - CROP) // 2, (w - CROP) * k // (num_crops - 1)
            else:
                top, left = (h - CROP) * k // (num_crops - 1), (w - CROP) // 2
            out.append(clip[v, :, top:top + CROP, left:left + CROP])
    return np.stack(out)


class Methods:
    """One function per method: (path, indices (V, T), mode) -> (clip, frames decoded)."""

    def __init__(self, sizes: dict, found: dict):
        self.sizes = sizes  # path -> (width, height), probed once, untimed, for every method
        self.found = found
        self.workers = 1  # the pool size of the run under way
        self.resize = tf.function(lambda x, size: tf.image.resize(x, size), reduce_retracing=True)

    def keras_vtn(self, path, idx, mode):
        short, num_crops = MODES[mode][5], MODES[mode][4]
        # the FFmpeg threads `video_dataset` gives a decode at this many parallel decodes
        threads = decode_threads_for(self.workers)
        frames, info = read_frames(path, idx, short_side=short, threads=threads)
        return crops(frames, num_crops), info.decoded_frames

    def naive(self, path, idx, mode):
        short, num_crops = MODES[mode][5], MODES[mode][4]
        with av.open(path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        flat = np.minimum(idx.reshape(-1), len(frames) - 1)
        clip = np.stack([frames[i] for i in flat])
        w, h = _short_size(clip.shape[2], clip.shape[1], short)
        clip = self.resize(clip, (h, w)).numpy().round().clip(0, 255).astype(np.uint8)
        return crops(clip.reshape(idx.shape + clip.shape[1:]), num_crops), len(frames)

    def decord(self, path, idx, mode):
        decord = self.found["decord"]
        short, num_crops = MODES[mode][5], MODES[mode][4]
        w, h = _short_size(*self.sizes[path], short)
        reader = decord.VideoReader(path, ctx=decord.cpu(0), width=w, height=h)
        flat = np.minimum(idx.reshape(-1), len(reader) - 1)
        clip = reader.get_batch(list(flat)).asnumpy()
        return crops(clip.reshape(idx.shape + clip.shape[1:]), num_crops), None

    def torchcodec(self, path, idx, mode):
        torch, decoder_class = self.found["torchcodec"]
        short, num_crops = MODES[mode][5], MODES[mode][4]
        w, h = _short_size(*self.sizes[path], short)
        decoder = decoder_class(path, device="cpu")
        flat = np.minimum(idx.reshape(-1), decoder.metadata.num_frames - 1)
        batch = decoder.get_frames_at(indices=[int(i) for i in flat]).data  # (N, 3, H, W)
        batch = torch.nn.functional.interpolate(batch.float(), size=(h, w), mode="bilinear",
                                                antialias=False)
        clip = batch.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return crops(clip.reshape(idx.shape + clip.shape[1:]), num_crops), None


def minimum_decoded(wanted: np.ndarray, keys: list[int]) -> int:
    """Least frames a key-frame-seeking decoder decodes for sorted unique `wanted`."""
    keys = np.asarray(keys)
    total, current = 0, None
    for frame in wanted:
        from_key = frame - keys[np.searchsorted(keys, frame, side="right") - 1] + 1
        total += from_key if current is None else min(frame - current, from_key)
        current = frame
    return int(total)


def settle(timeout: float = 20.0, window: float = 0.25, idle: float = 0.1) -> None:
    """Waits until this process is idle: the pipelines' iterators refill their buffers in
    background threads after each of their runs, and that work would otherwise be timed (and
    counted as CPU) in whichever run comes next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpu0, start = os.times(), time.perf_counter()
        time.sleep(window)
        cpu1 = os.times()
        busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        if busy < idle * (time.perf_counter() - start):
            return


def run_pool(fn, tasks, mode, workers) -> dict:
    settle()
    load = os.getloadavg()[0]
    cpu0, start = os.times(), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda t: fn(t[0], t[1], mode), tasks))
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    for clip, _ in results:
        views = MODES[mode][3] * MODES[mode][4]
        assert clip.shape == (views, MODES[mode][1], CROP, CROP, 3), clip.shape
    decoded = [d for _, d in results]
    sampled = sum(len(np.unique(t[1])) for t in tasks)
    return {"clips": len(tasks), "seconds": seconds, "clips_per_s": len(tasks) / seconds,
            "cpu_s_per_clip": cpu / len(tasks), "load_before": load,
            "decoded_per_sampled": None if None in decoded else sum(decoded) / sampled}


def run_dataset(iterator, num_clips: int, drain: int) -> dict:
    """Clips/s of a running pipeline, as a training loop sees it: one iterator for the whole
    benchmark (a fresh one per run would time the start of the thread pools and throw away
    the clips in flight), first left to fill its buffers and then emptied of the `drain`
    clips it holds, so only clips made while the clock runs are counted."""
    settle()
    for _ in range(drain):
        next(iterator)
    load = os.getloadavg()[0]
    cpu0, start = os.times(), time.perf_counter()
    for _ in range(num_clips):
        next(iterator)
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"clips": num_clips, "seconds": seconds, "clips_per_s": num_clips / seconds,
            "cpu_s_per_clip": cpu / num_clips, "load_before": load, "decoded_per_sampled": None}


def dataset_kwargs(mode: str, workers: int) -> dict:
    sampling, frames, stride, clips, num_crops, short = MODES[mode]
    # No prefetch buffer (AUTOTUNE grows it while the pipeline idles between its runs): the
    # parallel map holds at most `workers` clips, fewer than `run_dataset` drains, so a
    # timed run counts only clips made while the clock runs.
    kwargs = dict(num_frames=frames, sampling=sampling, frame_stride=stride, image_size=CROP,
                  short_side=short, repeat=True, num_parallel_calls=workers, seed=0,
                  prefetch=False)
    if clips == 1 and sampling == "dense":
        kwargs.update(training=True, crop="random", flip=False)
    else:
        kwargs.update(training=False, num_clips=clips, num_crops=num_crops)
    return kwargs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--per-kind", type=int, default=2, help="videos per kind")
    parser.add_argument("--clips", type=int, default=8, help="clips per timed run (340x256)")
    parser.add_argument("--clips-720p", type=int, default=4, help="clips per timed run (720p)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pipelines", action="store_true",
                        help="skip the video_dataset / tfrecord_dataset rows")
    parser.add_argument("--reencode-effect", action="store_true",
                        help="only measure keras_vtn on the key-frame-250 videos before and "
                        "after keras_vtn.data.reencode (short side 256, key frame every 16); "
                        "adds `reencode_effect` to the output file")
    parser.add_argument("--table", metavar="JSON", help="only print the summary table of a "
                        "results file")
    parser.add_argument("--workdir", default="/tmp/keras_vtn_bench")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "data_pipeline.json"))
    args = parser.parse_args(argv)

    if args.table:
        with open(args.table) as f:
            print(compact_table(json.load(f)))
        return 0
    if args.reencode_effect:
        return reencode_effect(args)
    found, missing = peers()
    for name, why in missing.items():
        print(f"skipping {name}: not importable ({why}); pip install -e .[bench]",
              file=sys.stderr)
    t0 = time.perf_counter()
    corpus = make_corpus(os.path.join(args.workdir, "corpus"), args.per_kind, args.kinds)
    corpus_s = time.perf_counter() - t0
    sizes, keys = {}, {}
    for paths in corpus.values():
        for p in paths:
            info = probe(p)
            sizes[p], keys[p] = (info.width, info.height), keyframes(p)
    methods = Methods(sizes, found)
    names = ["keras_vtn", "naive", *found]
    rng = np.random.default_rng(0)
    results = []
    start_time = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for kind in args.kinds:
        paths = corpus[kind]
        count = args.clips_720p if "720p" in kind else args.clips
        for mode in args.modes:
            sampling, frames, stride, clips, num_crops, short = MODES[mode]
            sampler = Sampler(sampling, frames, stride, num_clips=clips)
            training = clips == 1 and sampling == "dense"
            tasks = []
            for k in range(count):
                p = paths[k % len(paths)]
                info = probe(p)
                tasks.append((p, sampler(info.num_frames, info.fps, training, rng)))
            minimum = sum(minimum_decoded(np.unique(i), keys[p]) for p, i in tasks)
            sampled = sum(len(np.unique(i)) for _, i in tasks)
            pipelines = {}
            if not args.no_pipelines:
                pairs = [(p, 0) for p in paths]
                shards = os.path.join(args.workdir, "tfrecords", f"{kind}_s{short}")
                try:
                    prepare(pairs, shards, num_shards=1, short_side=short, progress=False)
                except PrepareArgumentsError:
                    prepare(pairs, shards, num_shards=1, short_side=short, progress=False,
                            overwrite=True)
                for w in args.workers:
                    kw = dataset_kwargs(mode, w)
                    # each video listed 8 times: a pass ends in a barrier (the decode report
                    # closes it), which a 2-video pass would hit every other clip
                    pipelines[f"video_dataset@{w}"] = video_dataset(pairs * 8, **kw)
                    pipelines[f"tfrecord_dataset@{w}"] = tfrecord_dataset(shards, **kw)
                # started once (as in training); 2 clips: graph construction, thread pools
                pipelines = {key: iter(ds) for key, ds in pipelines.items()}
                for iterator in pipelines.values():
                    for _ in range(2):
                        next(iterator)
            for name in names:  # warm-up: imports, tf.function tracing, first open
                getattr(methods, name)(*tasks[0], mode)
            runs = {}
            for r in range(args.repeats):
                order = names[r % len(names):] + names[: r % len(names)]
                for w in args.workers:
                    methods.workers = w
                    for name in order:
                        runs.setdefault(f"{name}@{w}", []).append(
                            run_pool(getattr(methods, name), tasks, mode, w))
                    for key, iterator in pipelines.items():
                        if key.endswith(f"@{w}"):
                            # drain: more than the parallel maps and prefetch can hold
                            runs.setdefault(key, []).append(run_dataset(
                                iterator, count * (2 if "tfrecord" in key else 1), 2 * w + 4))
                print(f"{kind} {mode} repeat {r}: " + ", ".join(
                    f"{k} {v[-1]['clips_per_s']:.2f}" for k, v in runs.items()), file=sys.stderr)
            summary = {}
            for key, rs in runs.items():
                ratio = None
                w = key.rsplit("@", 1)[1]
                fastest_peer = [p for p in ("decord", "torchcodec") if f"{p}@{w}" in runs]
                if fastest_peer:
                    # per repeat: against the faster peer of the same repeat (same load)
                    ratio = statistics.median(
                        rs[r]["clips_per_s"] / max(runs[f"{p}@{w}"][r]["clips_per_s"]
                                                   for p in fastest_peer)
                        for r in range(args.repeats))
                dps = [x["decoded_per_sampled"] for x in rs]
                summary[key] = {
                    "clips_per_s": statistics.median(x["clips_per_s"] for x in rs),
                    "cpu_s_per_clip": statistics.median(x["cpu_s_per_clip"] for x in rs),
                    "decoded_per_sampled": None if None in dps else statistics.median(dps),
                    "vs_fastest_peer": ratio,
                    "load": [round(x["load_before"], 2) for x in rs],
                }
            results.append({"kind": kind, "mode": mode, "clips_per_run": count,
                            "min_decoded_per_sampled": minimum / sampled,
                            "summary": summary, "runs": runs})
            print(table([results[-1]]), file=sys.stderr)

    result = {
        "setup": {
            "kinds": {k: dict(zip(("codec", "width", "height", "fps", "keyint"), KINDS[k],
                                  strict=True))
                      for k in args.kinds},
            "modes": {m: dict(zip(("sampling", "frames", "stride", "clips", "crops",
                                   "short_side"), MODES[m], strict=True)) for m in args.modes},
            "videos_per_kind": args.per_kind, "repeats": args.repeats,
            "workers": args.workers, "corpus_seconds": corpus_s,
            "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "av": av.__version__, "ffmpeg_pyav": av.library_versions.get("libavcodec"),
            "peers": {**{k: _version(k) for k in found}, **{k: "missing: " + v
                                                         for k, v in missing.items()}},
            "started": start_time,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "load_average_end": os.getloadavg(),
        },
        "results": results,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(table(results))
    return 0


def reencode_effect(args) -> int:
    """keras_vtn clips/s on the key-frame-250 kinds, as uploaded and after re-encoding."""
    from keras_vtn.data.reencode import reencode_video

    kinds = [k for k in args.kinds if KINDS[k][4] == 250]
    corpus = make_corpus(os.path.join(args.workdir, "corpus"), args.per_kind, kinds)
    methods = Methods({}, {})
    rng = np.random.default_rng(1)
    out = {}
    for kind in kinds:
        t0 = time.perf_counter()
        again = [reencode_video(p, os.path.join(args.workdir, "reencoded", os.path.basename(p)
                                                + ".mp4"), short_side=256, keyint=16)
                 for p in corpus[kind]]
        reencode_s = (time.perf_counter() - t0) / len(again)
        count = args.clips_720p if "720p" in kind else args.clips
        for mode in ("dense16x4_1view", "uniform8_1view"):
            sampling, frames, stride, clips, _, _ = MODES[mode]
            sampler = Sampler(sampling, frames, stride, num_clips=clips)
            picks = []
            for k in range(count):
                info = probe(corpus[kind][k % len(again)])
                picks.append((k % len(again),
                              sampler(info.num_frames, info.fps, sampling == "dense", rng)))
            runs = {"original": [], "reencoded": []}
            for _ in range(args.repeats):  # interleaved
                for name, paths in (("original", corpus[kind]), ("reencoded", again)):
                    runs[name].append(run_pool(methods.keras_vtn,
                                               [(paths[i], idx) for i, idx in picks], mode, 1))
            med = {k: statistics.median(x["clips_per_s"] for x in v) for k, v in runs.items()}
            out[f"{kind}/{mode}"] = {
                "clips_per_s": med, "speedup": med["reencoded"] / med["original"],
                "cpu_s_per_clip": {k: statistics.median(x["cpu_s_per_clip"] for x in v)
                                   for k, v in runs.items()},
                "decoded_per_sampled": {k: statistics.median(x["decoded_per_sampled"] for x in v)
                                        for k, v in runs.items()},
                "reencode_seconds_per_video": reencode_s,
                "mib": {"original": sum(os.path.getsize(p) for p in corpus[kind]) / 2**20,
                        "reencoded": sum(os.path.getsize(p) for p in again) / 2**20},
                "load": [round(x["load_before"], 2) for v in runs.values() for x in v],
            }
            print(kind, mode, json.dumps(out[f"{kind}/{mode}"]), file=sys.stderr)
    result = {}
    if os.path.exists(args.output):
        with open(args.output) as f:
            result = json.load(f)
    result["reencode_effect"] = {
        "what": "keras_vtn read_frames + crop, 1 worker, before/after reencode_video "
                "(short side 256, keyint 16, crf 23)",
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_end": os.getloadavg(), "results": out}
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    return 0


def compact_table(result) -> str:
    """One row per video kind, mode and worker count (the README tables)."""
    cols = ["keras_vtn", "decord", "torchcodec", "naive", "video_dataset", "tfrecord_dataset"]
    lines = ["| video | mode | workers | keras_vtn | decord | torchcodec | naive | video_dataset "
             "| tfrecord_dataset | keras_vtn / fastest peer | tfrecord / fastest peer "
             "| CPU s/clip keras_vtn · decord · torchcodec | decoded/sampled keras_vtn (min) "
             "| load |", "|---" * 14 + "|"]
    for res in result["results"]:
        for w in result["setup"]["workers"]:
            s = {c: res["summary"].get(f"{c}@{w}") for c in cols}

            def rate(c, s=s):
                return f"{s[c]['clips_per_s']:.2f}" if s[c] else "–"

            def ratio(c, s=s):
                return f"{s[c]['vs_fastest_peer']:.2f}×" if s[c] and s[c]["vs_fastest_peer"] \
                    else "–"

            cpu = " · ".join(f"{s[c]['cpu_s_per_clip']:.3f}" if s[c] else "–"
                             for c in cols[:3])
            dps = s["keras_vtn"]["decoded_per_sampled"]
            loads = [x for c in cols if s[c] for x in s[c]["load"]]
            lines.append(
                f"| {res['kind']} | {res['mode']} | {w} | "
                + " | ".join(rate(c) for c in cols)
                + f" | {ratio('keras_vtn')} | {ratio('tfrecord_dataset')} | {cpu} "
                f"| {dps:.1f} ({res['min_decoded_per_sampled']:.1f}) "
                f"| {min(loads):.1f}–{max(loads):.1f} |")
    return "\n".join(lines)


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version("eva-decord" if name == "decord" else name)
    except Exception:
        try:
            from importlib.metadata import version

            return version(name)
        except Exception:
            return "?"


def table(results) -> str:
    lines = ["| video | mode | method @ workers | clips/s | vs fastest peer | CPU s/clip "
             "| decoded/sampled (min) | load |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        for key, s in res["summary"].items():
            ratio = f"{s['vs_fastest_peer']:.2f}" if s["vs_fastest_peer"] else "–"
            dps = f"{s['decoded_per_sampled']:.1f}" if s["decoded_per_sampled"] else "–"
            lines.append(
                f"| {res['kind']} | {res['mode']} | {key} | {s['clips_per_s']:.2f} | {ratio} "
                f"| {s['cpu_s_per_clip']:.2f} | {dps} ({res['min_decoded_per_sampled']:.1f}) "
                f"| {'/'.join(str(x) for x in s['load'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
