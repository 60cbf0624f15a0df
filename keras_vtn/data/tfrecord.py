"""Sharded TFRecords of JPEG frames: `prepare` writes them, `tfrecord_dataset` reads them.

Each video becomes one `tf.train.SequenceExample` (DMVR / Scenic layout): JPEG frames in the
feature list `image/encoded`, label in the context `clip/label/index` (+ `clip/label/text`),
plus `video/fps` (of the stored frames), `video/num_frames`, `video/filename` and
`video/frame_index` (each stored frame's index in the source video). The reader chooses frame
indices first and decodes only those JPEGs, in the graph.

CLI: `keras-vtn prepare SOURCE OUT_DIR [--root R] [--short-side 256] [--fps F] [--shards N]
[--overwrite]`.

>>> import os, tempfile
>>> from keras_vtn.data import dataset_info
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
>>> clips.shape, sorted(labels.numpy().tolist()), dataset_info(ds).label_names
(TensorShape([2, 4, 32, 32, 3]), [0, 1], ['jump', 'run'])
"""

from __future__ import annotations

import concurrent.futures
import glob
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
import warnings

import numpy as np
import tensorflow as tf

from keras_vtn.data import layouts
from keras_vtn.data.dataset import ClipConfig, DecodeReport
from keras_vtn.data.decode import DecodeError, _Reader
from keras_vtn.data.info import DatasetInfo, attach_info
from keras_vtn.io_utils import atomic_path, write_json

MANIFEST = "manifest.json"

# Completion markers of shards and the temporary names of killed writes: with the manifest and
# the shards it lists, what `overwrite=True` removes. Other files in the folder are left alone.
_MARKER = re.compile(r"^.+-\d{5}-of-\d{5}\.tfrecord\.json$")
_PARTIAL = re.compile(r"^\.(.+-\d{5}-of-\d{5}\.tfrecord(\.json)?|manifest\.json)\.tmp-")

# argument -> how the command line spells it, for the message refusing a resume.
_ARGUMENT_NAMES = {
    "videos": "the source videos (SOURCE, --root)",
    "label_names": "label_names (--kinetics400)",
    "num_shards": "num_shards (--shards, --videos-per-shard)",
    "short_side": "short_side (--short-side)",
    "fps": "fps (--fps)",
    "jpeg_quality": "jpeg_quality (--quality)",
    "prefix": "prefix (--prefix)",
    "seed": "seed",
}


class PrepareArgumentsError(ValueError):
    """`prepare` was asked to resume a folder started with other arguments."""


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
    overwrite: bool = False,
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
        overwrite: start over: remove what an earlier `prepare` wrote in `output_dir`
            (manifest, shards, their markers) first.

    Re-running with the same arguments skips shards that are already complete (a shard is
    written to a temporary name and renamed when done). Re-running with other arguments
    (videos, labels, shards, frame size, fps, quality, prefix, seed) raises
    `PrepareArgumentsError` naming each difference, unless `overwrite=True`. `manifest.json`
    exists from the start and says which shards are complete (`"complete": false` until all
    are). Returns the manifest dictionary.
    """
    records = layouts.resolve(source, root, label_names)
    n = len(records)
    if n == 0:
        raise ValueError(f"No videos found for {source!r}.")
    num_shards = num_shards or max(1, math.ceil(n / videos_per_shard))
    arguments = {
        "videos": {
            "count": n,
            "sha256": hashlib.sha256(json.dumps(
                [[os.path.abspath(p), int(label)]
                 for p, label in zip(records.paths, records.labels, strict=True)]
            ).encode()).hexdigest(),
        },
        "label_names": list(records.label_names),
        "num_shards": num_shards,
        "short_side": short_side,
        "fps": fps,
        "jpeg_quality": jpeg_quality,
        "prefix": prefix,
        "seed": seed,
    }
    fingerprint = hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest()
    os.makedirs(output_dir, exist_ok=True)
    if overwrite:
        _remove_outputs(output_dir)
    else:
        _check_resume(output_dir, arguments)
        # Temporary files of writes a kill interrupted; their shards are written again.
        for name in os.listdir(output_dir):
            if _PARTIAL.match(name):
                os.remove(os.path.join(output_dir, name))
    order = np.random.default_rng(seed).permutation(n)
    shards = [order[i::num_shards] for i in range(num_shards)]
    names = [_shard_name(prefix, i, num_shards) for i in range(num_shards)]
    base = root if root is not None else (source if isinstance(source, str) else None)
    if base is not None and not os.path.isdir(base):
        base = os.path.dirname(base)
    done = {}
    for name in names:
        meta = _shard_meta(output_dir, name, fingerprint)
        if meta is not None:
            done[name] = meta
    todo = [(i, names[i], members) for i, members in enumerate(shards) if names[i] not in done]
    lock = threading.Lock()

    def write_manifest() -> dict:
        failed = {}
        for name in names:
            failed.update(done.get(name, {}).get("failed", {}))
        manifest = {
            "complete": len(done) == num_shards,
            "label_names": list(records.label_names),
            "num_videos": sum(meta["videos"] for meta in done.values()),
            "num_failed": len(failed),
            "failed": failed,
            "missing": list(records.missing),
            "shards": names,
            "complete_shards": [name for name in names if name in done],
            "shard_videos": [len(members) for members in shards],
            "short_side": short_side,
            "fps": fps,
            "jpeg_quality": jpeg_quality,
            "arguments": arguments,
            "fingerprint": fingerprint,
        }
        write_json(os.path.join(output_dir, MANIFEST), manifest, indent=1)
        return manifest

    # Written before any shard, so an interrupted folder still records what it is meant to be.
    write_manifest()
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
        meta = {"videos": written, "failed": failed, "fingerprint": fingerprint}
        # Written last: marks the shard complete (for these arguments only).
        write_json(target + ".json", meta)
        with lock:
            done[name] = meta
            write_manifest()

    workers = workers or min(len(todo), os.cpu_count() or 1) or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(write, s) for s in todo]:
            future.result()
    manifest = write_manifest()
    if manifest["failed"] and progress:
        sys.stderr.write(f"prepare: {manifest['num_failed']} videos failed and were left out "
                         f"(listed in {os.path.join(output_dir, MANIFEST)})\n")
    return manifest


def _shard_meta(folder: str, name: str, fingerprint: str | None) -> dict | None:
    """The completion marker of shard `name` if the shard is complete (for `fingerprint`)."""
    if not os.path.exists(os.path.join(folder, name)):
        return None
    try:
        with open(os.path.join(folder, name + ".json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        return None
    return meta


def _read_manifest(folder: str) -> dict | None:
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _check_resume(folder: str, arguments: dict) -> None:
    try:
        manifest = _read_manifest(folder)
    except (OSError, ValueError):
        manifest = {}
    if manifest is None and not any(_MARKER.match(n) for n in os.listdir(folder)):
        return  # a new folder
    old = (manifest or {}).get("arguments")
    if old is None:
        raise PrepareArgumentsError(
            f"{folder} holds shards of an earlier `prepare` that recorded no arguments, so it "
            "cannot be resumed safely; start over with overwrite=True (--overwrite)."
        )
    differences = [
        f"{_ARGUMENT_NAMES.get(key, key)}: {_describe(key, old.get(key))} before, "
        f"{_describe(key, value)} now"
        for key, value in arguments.items() if old.get(key) != value
    ]
    if differences:
        raise PrepareArgumentsError(
            f"{folder} was started by `prepare` with other arguments, and resuming would mix "
            "shards: " + "; ".join(differences) + ". Rerun with the earlier arguments to "
            "resume, or pass overwrite=True (--overwrite) to start over."
        )


def _describe(key: str, value) -> str:
    if key == "videos" and isinstance(value, dict):
        return f"{value.get('count')} videos (list sha256 {str(value.get('sha256'))[:12]})"
    if key == "label_names" and isinstance(value, list) and len(value) > 6:
        return f"{len(value)} names ({value[0]!r} ... {value[-1]!r})"
    return repr(value)


def _remove_outputs(folder: str) -> None:
    try:
        listed = (_read_manifest(folder) or {}).get("shards", [])
    except (OSError, ValueError):
        listed = []
    present = os.listdir(folder)
    shards = set(listed) | {n[: -len(".json")] for n in present if _MARKER.match(n)}
    doomed = [n for n in present if _PARTIAL.match(n)]
    doomed += [n for s in sorted(shards) for n in (s + ".json", s)]
    # The manifest first: a kill half-way leaves shards without one, which no resume trusts.
    for name in [MANIFEST, *doomed]:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)


_CONTEXT = {
    "clip/label/index": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "video/fps": tf.io.FixedLenFeature([], tf.float32, default_value=25.0),
    "video/frame_index": tf.io.VarLenFeature(tf.int64),
}
_SEQUENCE = {"image/encoded": tf.io.FixedLenSequenceFeature([], tf.string)}


def shard_files(path, allow_incomplete: bool = False) -> tuple[list[str], dict]:
    """`(shard files, manifest)` of a `prepare` folder (its complete shards), a glob pattern or
    a list of files (no manifest)."""
    manifest = {}
    if isinstance(path, (list, tuple)):
        files = sorted(str(p) for p in path)
    elif os.path.isdir(path):
        files, manifest = _folder_shards(path, allow_incomplete)
    else:
        files = sorted(glob.glob(path))
    if not files:
        raise FileNotFoundError(f"No .tfrecord shards at {path!r}; run `keras-vtn prepare` first.")
    return files, manifest


def stored_label_table(stored: list[str], label_names: list[str]) -> tf.Tensor | None:
    """Stored label index -> index in `label_names`; None when the two lists are the same.

    Shards store indices of the manifest's classes. A caller (a model) with another class
    list, a superset or another order, needs its own indices, or every video would be scored
    against the wrong class without a word; a stored class it lacks is an error naming it.
    """
    if not stored or list(stored) == list(label_names):
        return None
    every_class = layouts.Records([""] * len(stored), list(range(len(stored))), list(stored))
    return tf.constant(np.asarray(layouts.reindex(every_class, label_names).labels, np.int32))


def move_label(label: tf.Tensor, table: tf.Tensor | None) -> tf.Tensor:
    """`label` through `stored_label_table`'s table (negative labels, unlabelled, stay)."""
    if table is None:
        return label
    return tf.where(label >= 0, tf.gather(table, tf.maximum(label, 0)), label)


def tfrecord_dataset(
    path,
    *,
    label_names=None,
    input_context: tf.distribute.InputContext | None = None,
    cycle_length: int | None = None,
    shuffle_buffer: int = 256,
    allow_incomplete: bool = False,
    service: str | None = None,
    **kwargs,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `(clip, label)` from `prepare`'s shards.

    Args:
        path: the output folder of `prepare`, a glob pattern or a list of files. A folder is
            read through its `manifest.json`: only the shards it lists (other `.tfrecord`
            files there are ignored), and only once `prepare` finished them all.
        allow_incomplete: read a folder whose `prepare` was interrupted: its complete shards
            only, with a warning saying how many shards and videos are missing (by default
            such a folder is an error).
        label_names: default from the folder's `manifest.json`.
        input_context: from `strategy.distribute_datasets_from_function`; each input pipeline
            reads its own subset of shards.
        cycle_length: shards read at once (interleave; default min(#shards, 16)).
        shuffle_buffer: examples shuffled in memory in training.
        service: `"grpc://HOST:PORT"` of a tf.data service dispatcher: parse and decode on its
            workers (`keras-vtn data-service`; see `keras_vtn.data.service`).
        service_wait: with `service`, as in `video_dataset`.
        **kwargs: the sampling / augmentation / batching options of `video_dataset`. Frame
            indices refer to the stored frames (`fps` given to `prepare`), and `short_side`
            resizes in the graph only when it differs from the stored size.

    `keras_vtn.data.dataset_info(ds)` (also on datasets made from it by `map`, `batch`, ...)
    holds its `DatasetInfo`; `num_videos` there counts the videos in the shards it reads (this
    input pipeline's shards only with `input_context`) from `prepare`'s completion markers,
    None for shards `prepare` did not write (a glob or a file list without markers).
    """
    if service is not None:
        from keras_vtn.data import service as data_service

        return data_service.tfrecord_dataset(
            path, label_names=label_names, input_context=input_context,
            cycle_length=cycle_length, shuffle_buffer=shuffle_buffer,
            allow_incomplete=allow_incomplete, service=service, **kwargs)
    files, manifest = shard_files(path, allow_incomplete)
    stored = manifest.get("label_names", [])
    names = list(label_names) if label_names is not None else stored
    label_table = stored_label_table(stored, names)
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
        frames, source_idx, label = decode_clip(context, jpegs, idx, short,
                                                config.short_side is not None, label_table)
        status = tf.constant(0, tf.int32)
        return frames, source_idx, status, label, tf.stack([element_seed, element_seed // 7])

    if input_context is not None and input_context.num_input_pipelines > 1:
        # Sliced in Python (as `shard` would) so that `num_videos` counts this pipeline's
        # files; a pipeline left without a file yields nothing.
        files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
    files_ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string, [len(files)]))
    if config.shuffle:
        files_ds = files_ds.shuffle(len(files), seed=config.seed, reshuffle_each_iteration=True)
    cycle = cycle_length or max(min(len(files), 16), 1)
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
    stored = _count_videos(files, manifest.get("fingerprint"))
    return attach_info(ds, DatasetInfo(list(names), report, config, stored_videos=stored))


def _count_videos(files: list[str], fingerprint: str | None) -> int | None:
    """Videos in `files` from their completion markers; None if any file has none."""
    total = 0
    for file in files:
        meta = _shard_meta(os.path.dirname(file), os.path.basename(file), fingerprint)
        if meta is None or not isinstance(meta.get("videos"), int):
            return None
        total += meta["videos"]
    return total


def _folder_shards(folder: str, allow_incomplete: bool) -> tuple[list[str], dict]:
    """The shard files to read in a `prepare` folder, and its manifest."""
    try:
        manifest = _read_manifest(folder)
    except ValueError as error:
        raise ValueError(f"{os.path.join(folder, MANIFEST)} is unreadable ({error}); rerun "
                         "`keras-vtn prepare` with --overwrite.") from None
    if manifest is None:
        markers = sorted(n for n in os.listdir(folder) if _MARKER.match(n))
        if not markers:  # TFRecords from elsewhere: every file is meant to be read
            return sorted(glob.glob(os.path.join(folder, "*.tfrecord"))), {}
        # An earlier `prepare` killed before it wrote its manifest: the total is unknown.
        complete = [n[: -len(".json")] for n in markers
                    if _shard_meta(folder, n[: -len(".json")], None) is not None]
        missing = "an unknown number of shards and videos are missing (no manifest.json)"
        manifest = {}
    else:
        shards = manifest["shards"]
        if manifest.get("complete", True):
            absent = [s for s in shards if not os.path.exists(os.path.join(folder, s))]
            if absent:
                raise FileNotFoundError(
                    f"{folder}: {len(absent)} of the {len(shards)} shards listed in {MANIFEST} "
                    f"are missing (e.g. {absent[0]}); rerun `keras-vtn prepare`."
                )
            return [os.path.join(folder, s) for s in shards], manifest
        fingerprint = manifest.get("fingerprint")
        complete = [s for s in shards if _shard_meta(folder, s, fingerprint) is not None]
        sizes = dict(zip(shards, manifest.get("shard_videos", []), strict=False))
        planned = sum(sizes.values())
        absent_videos = sum(sizes.get(s, 0) for s in shards if s not in complete)
        missing = (f"{len(shards) - len(complete)} of {len(shards)} shards "
                   f"({absent_videos} of {planned} videos) are missing")
    if not allow_incomplete:
        raise ValueError(
            f"{folder} is incomplete: `prepare` was interrupted and {missing}. Rerun the same "
            "`keras-vtn prepare` command to finish it, or pass allow_incomplete=True to read "
            "the complete shards only."
        )
    if not complete:
        raise FileNotFoundError(f"{folder} has no complete shard yet ({missing}).")
    warnings.warn(f"Reading the incomplete TFRecord folder {folder}: {missing}.", stacklevel=3)
    return [os.path.join(folder, s) for s in complete], manifest


def decode_clip(context, jpegs, idx, short, resize: bool, label_table):
    """`(frames, source_idx, label)` of one record's sampled frames `idx` (static shape
    `(V, T)`): the JPEGs `jpegs[idx]` as `(V, T, h, w, 3)`, resized to short side `short`
    when `resize` and it differs from the stored size (0: keep), their positions in the
    source video and the record's label moved onto `label_table`.

    One decode op per frame rather than a `map_fn` loop: the ops are independent, so the
    graph runs them on idle inter-op threads, with no loop bookkeeping per frame.
    """
    v, t = idx.shape
    chosen = tf.gather(jpegs, tf.reshape(idx, [-1]))
    frames = tf.stack([tf.io.decode_jpeg(chosen[i], channels=3) for i in range(v * t)])
    shape = tf.shape(frames)
    frames = tf.reshape(frames, tf.concat([[v, t], shape[1:]], 0))
    current = tf.minimum(shape[1], shape[2])
    if resize:
        frames = tf.cond(tf.logical_or(tf.equal(short, current), tf.equal(short, 0)),
                         lambda: frames, lambda: _resize(frames, short))
    source_index = tf.sparse.to_dense(context["video/frame_index"])
    source_idx = tf.cond(tf.size(source_index) > 0,
                         lambda: tf.gather(source_index, idx), lambda: idx)
    label = move_label(tf.cast(context["clip/label/index"], tf.int32), label_table)
    return frames, source_idx, label


def _resize(frames, short):
    from keras_vtn.data.transforms import resize_short_side

    return resize_short_side(frames, short)
