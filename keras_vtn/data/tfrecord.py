"""Sharded TFRecords of JPEG frames: `prepare` writes them, `tfrecord_dataset` reads them.

Each video becomes one `tf.train.SequenceExample` (DMVR / Scenic layout): JPEG frames in the
feature list `image/encoded`, label in the context `clip/label/index` (+ `clip/label/text`),
plus `video/fps` (of the stored frames), `video/num_frames`, `video/filename` and
`video/frame_index` (each stored frame's index in the source video). The reader chooses frame
indices first and decodes only those JPEGs, in the graph.

CLI: `keras-vtn prepare SOURCE OUT_DIR [--root R] [--short-side 256] [--fps F] [--shards N]`.

>>> import os, tempfile
>>> from keras_vtn.data.testing import write_video
>>> root, out = tempfile.mkdtemp(), tempfile.mkdtemp()
>>> for name in ["jump/a.mp4", "run/b.webm"]:
...     os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
...     write_video(os.path.join(root, name), num_frames=20)
>>> summary = prepare(root, out, num_shards=2, short_side=48, progress=False)
>>> summary["num_videos"], summary["num_failed"]
(2, 0)
>>> ds = tfrecord_dataset(out, num_frames=4, image_size=32, batch_size=2)
>>> clips, labels = next(iter(ds))
>>> clips.shape, sorted(labels.numpy().tolist()), ds.label_names
(TensorShape([2, 4, 32, 32, 3]), [0, 1], ['jump', 'run'])
"""

from __future__ import annotations

import concurrent.futures
import glob
import json
import math
import os
import sys
import threading
import time

import numpy as np
import tensorflow as tf

from keras_vtn.data import layouts
from keras_vtn.data.dataset import ClipConfig, DecodeReport, _annotate
from keras_vtn.data.decode import DecodeError, _Reader
from keras_vtn.io_utils import atomic_path, write_json

MANIFEST = "manifest.json"


def _shard_name(prefix: str, index: int, count: int) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}.tfrecord"


def _video_example(path, label, label_name, short_side, fps, quality, rel):
    reader = _Reader(path, short_side, 1, "BILINEAR")
    try:
        info = reader.info
        step = None if not fps else info.fps / fps  # keep one source frame per `step`
        frames, indices = [], []
        next_time = 0.0
        for index, frame in reader.decode_from(None):
            if step is not None:
                if index + 0.5 < next_time:
                    continue
                next_time += step
            image = reader.to_rgb(frame)
            frames.append(tf.io.encode_jpeg(image, quality=quality).numpy())
            indices.append(index)
    finally:
        reader.close()
    if not frames:
        raise DecodeError("no_frames", path)
    stored_fps = float(fps) if fps else info.fps
    context = tf.train.Features(feature={
        "clip/label/index": _int64([label]),
        "clip/label/text": _bytes([label_name.encode()]),
        "video/filename": _bytes([rel.encode()]),
        "video/fps": tf.train.Feature(float_list=tf.train.FloatList(value=[stored_fps])),
        "video/num_frames": _int64([len(frames)]),
        "video/frame_index": _int64(indices),
    })
    lists = tf.train.FeatureLists(feature_list={
        "image/encoded": tf.train.FeatureList(feature=[_bytes([f]) for f in frames])
    })
    return tf.train.SequenceExample(context=context, feature_lists=lists).SerializeToString()


def _int64(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = time.time()
        self.lock = threading.Lock()
        self.last = 0.0

    def step(self, n: int = 1):
        with self.lock:
            self.done += n
            now = time.time()
            if not self.enabled or (now - self.last < 0.5 and self.done < self.total):
                return
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if self.done >= self.total else ""
            sys.stderr.write(
                f"\rprepare [{bar}] {self.done}/{self.total} videos {rate:.1f}/s "
                f"ETA {eta:.0f}s{end}"
            )
            sys.stderr.flush()


def prepare(
    source,
    output_dir: str,
    *,
    root: str | None = None,
    label_names=None,
    num_shards: int | None = None,
    videos_per_shard: int = 256,
    short_side: int | None = 256,
    fps: float | None = None,
    jpeg_quality: int = 90,
    workers: int | None = None,
    prefix: str = "videos",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Convert videos to sharded TFRecords of JPEG frames; finished shards are kept.

    Args:
        source, root, label_names: as in `video_dataset` (CSV, list file, class folders, pairs).
        output_dir: where `<prefix>-00000-of-0000N.tfrecord` and `manifest.json` go.
        num_shards: default `ceil(videos / videos_per_shard)`.
        short_side: resize the shorter side to this (None keeps the size).
        fps: store frames at this rate (None keeps every frame).
        jpeg_quality: 1-100.
        workers: parallel shard writers (threads; PyAV and JPEG encoding release the GIL).
        seed: videos are spread over shards in a seeded random order, so each shard mixes
            classes.

    Re-running with the same arguments skips shards that are already complete (a shard is
    written to a temporary name and renamed when done). Returns the manifest dictionary.
    """
    records = layouts.resolve(source, root, label_names)
    os.makedirs(output_dir, exist_ok=True)
    n = len(records)
    if n == 0:
        raise ValueError(f"No videos found for {source!r}.")
    num_shards = num_shards or max(1, math.ceil(n / videos_per_shard))
    order = np.random.default_rng(seed).permutation(n)
    shards = [order[i::num_shards] for i in range(num_shards)]
    base = root if root is not None else (source if isinstance(source, str) else None)
    if base is not None and not os.path.isdir(base):
        base = os.path.dirname(base)
    todo = []
    for i, members in enumerate(shards):
        name = _shard_name(prefix, i, num_shards)
        if not os.path.exists(os.path.join(output_dir, name + ".json")):
            todo.append((i, name, members))
    bar = _Progress(sum(len(m) for _, _, m in todo), progress)

    def write(shard):
        i, name, members = shard
        target = os.path.join(output_dir, name)
        written, failed = 0, {}
        with atomic_path(target) as tmp, tf.io.TFRecordWriter(tmp) as writer:
            for k in members:
                path, label = records.paths[k], records.labels[k]
                named = 0 <= label < len(records.label_names)
                label_name = records.label_names[label] if named else ""
                rel = os.path.relpath(path, base) if base else os.path.basename(path)
                try:
                    writer.write(_video_example(path, label, label_name, short_side, fps,
                                                jpeg_quality, rel))
                    written += 1
                except DecodeError as error:
                    failed[path] = error.reason
                except Exception as error:  # a broken file must not stop the conversion
                    failed[path] = f"decode_error: {error!r}"[:300]
                bar.step()
        # Written last: marks the shard complete.
        write_json(target + ".json", {"videos": written, "failed": failed})

    workers = workers or min(len(todo), os.cpu_count() or 1) or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(write, s) for s in todo]:
            future.result()
    num_videos, failed = 0, {}
    for i in range(num_shards):
        with open(os.path.join(output_dir, _shard_name(prefix, i, num_shards) + ".json")) as f:
            meta = json.load(f)
        num_videos += meta["videos"]
        failed.update(meta["failed"])
    manifest = {
        "label_names": list(records.label_names),
        "num_videos": num_videos,
        "num_failed": len(failed),
        "failed": failed,
        "missing": list(records.missing),
        "shards": [_shard_name(prefix, i, num_shards) for i in range(num_shards)],
        "short_side": short_side,
        "fps": fps,
        "jpeg_quality": jpeg_quality,
    }
    write_json(os.path.join(output_dir, MANIFEST), manifest, indent=1)
    if failed and progress:
        sys.stderr.write(f"prepare: {len(failed)} videos failed and were left out "
                         f"(listed in {os.path.join(output_dir, MANIFEST)})\n")
    return manifest


_CONTEXT = {
    "clip/label/index": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "video/fps": tf.io.FixedLenFeature([], tf.float32, default_value=25.0),
    "video/frame_index": tf.io.VarLenFeature(tf.int64),
}
_SEQUENCE = {"image/encoded": tf.io.FixedLenSequenceFeature([], tf.string)}


def tfrecord_dataset(
    path,
    *,
    label_names=None,
    input_context: tf.distribute.InputContext | None = None,
    cycle_length: int | None = None,
    shuffle_buffer: int = 256,
    **kwargs,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `(clip, label)` from `prepare`'s shards.

    Args:
        path: the output folder of `prepare`, a glob pattern or a list of files.
        label_names: default from the folder's `manifest.json`.
        input_context: from `strategy.distribute_datasets_from_function`; each input pipeline
            reads its own subset of shards.
        cycle_length: shards read at once (interleave; default min(#shards, 16)).
        shuffle_buffer: examples shuffled in memory in training.
        **kwargs: the sampling / augmentation / batching options of `video_dataset`. Frame
            indices refer to the stored frames (`fps` given to `prepare`), and `short_side`
            resizes in the graph only when it differs from the stored size.
    """
    manifest = {}
    if isinstance(path, (list, tuple)):
        files = sorted(str(p) for p in path)
    elif os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.tfrecord")))
        if os.path.exists(os.path.join(path, MANIFEST)):
            with open(os.path.join(path, MANIFEST)) as f:
                manifest = json.load(f)
    else:
        files = sorted(glob.glob(path))
    if not files:
        raise FileNotFoundError(f"No .tfrecord shards at {path!r}; run `keras-vtn prepare` first.")
    names = list(label_names) if label_names is not None else manifest.get("label_names", [])
    config = ClipConfig(**kwargs)
    num_classes = max(len(names), 1)
    v, t = config.num_clips, config.num_frames

    def pick(num_frames, fps, seed):
        rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
        short, idx = config.draw(rng, int(num_frames), float(fps))
        return np.int32(short or 0), idx.astype(np.int64)

    def parse(serialized, element_seed):
        context, sequence = tf.io.parse_single_sequence_example(
            serialized, context_features=_CONTEXT, sequence_features=_SEQUENCE
        )
        jpegs = sequence["image/encoded"]
        short, idx = tf.numpy_function(
            pick, [tf.shape(jpegs)[0], context["video/fps"], element_seed], [tf.int32, tf.int64],
            stateful=False,
        )
        idx.set_shape([v, t])
        chosen = tf.gather(jpegs, tf.reshape(idx, [-1]))
        frames = tf.map_fn(
            lambda b: tf.io.decode_jpeg(b, channels=3), chosen,
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
        )
        shape = tf.shape(frames)
        frames = tf.reshape(frames, tf.concat([[v, t], shape[1:]], 0))
        current = tf.minimum(shape[1], shape[2])
        if config.short_side is not None:
            frames = tf.cond(
                tf.logical_or(tf.equal(short, current), tf.equal(short, 0)),
                lambda: frames,
                lambda: _resize(frames, short),
            )
        source_index = tf.sparse.to_dense(context["video/frame_index"])
        source_idx = tf.cond(
            tf.size(source_index) > 0, lambda: tf.gather(source_index, idx), lambda: idx
        )
        label = tf.cast(context["clip/label/index"], tf.int32)
        status = tf.constant(0, tf.int32)
        return frames, source_idx, status, label, tf.stack([element_seed, element_seed // 7])

    files_ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        files_ds = files_ds.shard(input_context.num_input_pipelines,
                                  input_context.input_pipeline_id)
    if config.shuffle:
        files_ds = files_ds.shuffle(len(files), seed=config.seed, reshuffle_each_iteration=True)
    cycle = cycle_length or min(len(files), 16)
    ds = files_ds.interleave(
        tf.data.TFRecordDataset, cycle_length=cycle, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=config.deterministic,
    )
    if config.shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
    if config.repeat:
        ds = ds.repeat()
    seeds = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, seeds))
    ds = ds.map(parse, num_parallel_calls=config.parallel, deterministic=config.deterministic)
    ds = config.finish(ds, num_classes)
    report = DecodeReport(config.training)
    for failed_path, reason in manifest.get("failed", {}).items():
        report.failed[failed_path] = (reason.split(":")[0], "failed in prepare")
    return _annotate(ds, names, report, config)


def _resize(frames, short):
    from keras_vtn.data.transforms import resize_short_side

    return resize_short_side(frames, short)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="convert videos to sharded TFRecords of JPEG frames",
        description="Decode each video once and write sharded TFRecords of SequenceExamples "
        "(JPEG frames, DMVR layout). Re-running resumes: complete shards are kept.",
    )
    parser.add_argument("source", help="Kinetics CSV, 'path label' list file or class-folder root")
    parser.add_argument("output_dir")
    parser.add_argument("--root", help="video folder for a CSV / list file")
    parser.add_argument("--kinetics400", action="store_true",
                        help="index labels by the 400 official Kinetics-400 class names")
    parser.add_argument("--shards", type=int, default=None, help="number of shards")
    parser.add_argument("--videos-per-shard", type=int, default=256)
    parser.add_argument("--short-side", type=int, default=256, help="0 keeps the size")
    parser.add_argument("--fps", type=float, default=None, help="stored frame rate (default: all)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--prefix", default="videos")
    parser.set_defaults(func=_main)


def _main(args) -> int:
    names = layouts.KINETICS400_LABELS if args.kinetics400 else None
    manifest = prepare(
        args.source, args.output_dir, root=args.root, label_names=names,
        num_shards=args.shards, videos_per_shard=args.videos_per_shard,
        short_side=args.short_side or None, fps=args.fps, jpeg_quality=args.quality,
        workers=args.workers, prefix=args.prefix,
    )
    print(f"{manifest['num_videos']} videos in {len(manifest['shards'])} shards at "
          f"{args.output_dir}; {manifest['num_failed']} failed, "
          f"{len(manifest['missing'])} listed but missing.")
    return 0
