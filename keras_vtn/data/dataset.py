"""`video_dataset(...)` and `kinetics400(...)`: videos -> `tf.data.Dataset` of `(clip, label)`.

PyAV decodes inside a parallel `tf.data` map (it releases the GIL) and only the sampled
frames; cropping, flipping and colour augmentation run as graph ops with one set of random
parameters per clip. Broken videos never stop a run: they are skipped, counted by reason in
`dataset_info(ds).report` and summarised at the end of every pass (evaluation lists each file).

>>> import os, tempfile
>>> from keras_vtn.data import dataset_info
>>> from keras_vtn.data.testing import write_video
>>> root = tempfile.mkdtemp()
>>> for name in ["jump/a.mp4", "run/b.webm"]:
...     os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
...     write_video(os.path.join(root, name), num_frames=20)
>>> ds = video_dataset(root, num_frames=4, image_size=32, batch_size=2)
>>> clips, labels = next(iter(ds))
>>> clips.shape, clips.dtype.name, labels.numpy().tolist(), dataset_info(ds).label_names
(TensorShape([2, 4, 32, 32, 3]), 'uint8', [0, 1], ['jump', 'run'])
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_vtn.data import layouts, transforms
from keras_vtn.data.decode import DecodeError, decode_threads_for, read_frames
from keras_vtn.data.info import DatasetInfo, attach_info
from keras_vtn.data.samplers import Sampler

logger = logging.getLogger("keras_vtn.data")


class DecodeReport:
    """Decoded and failed videos of a dataset, by failure reason; safe to update from the
    threads of a parallel map.

    A failing file is tried once; later passes skip it without opening it again. A file whose
    frames stop short of what its header declares (cut, or damaged part-way) is not skipped:
    its clips are drawn again within the frames that decode, and it is named in `truncated`
    with where its frames stop. The decoder reads only the sampled frames, so damage outside
    them goes unseen here; `keras-vtn check-videos` decodes every frame. `skipped` holds the
    paths a folder scan left out (a second path to a listed file, a symlink loop).

    `end_pass` runs once every element of a pass has been decoded, so `history[i]` holds the
    exact counts of pass `i`: `decoded` clips plus `failed` videos (new failures and known
    ones skipped) make `attempted`, the videos of the pass.
    """

    def __init__(self, training: bool, max_logged: int = 20):
        self.training = training
        self.max_logged = max_logged
        self.decoded = 0  # clips decoded, all passes together
        self.failed: dict[str, tuple[str, str]] = {}
        self.truncated: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.passes = 0
        self.history: list[dict[str, int]] = []
        self._pass = {"decoded": 0, "failed": 0}
        self._lock = threading.Lock()

    def ok(self) -> None:
        with self._lock:
            self.decoded += 1
            self._pass["decoded"] += 1

    def known_failure(self, path: str) -> bool:
        """True (and counted as a failure of this pass) if `path` failed before."""
        with self._lock:
            if path in self.failed:
                self._pass["failed"] += 1
                return True
            return False

    def note_truncated(self, path: str, detail: str = "") -> None:
        with self._lock:
            new = path not in self.truncated
            self.truncated[path] = detail
            count = len(self.truncated)
        if new and self.training and count <= self.max_logged:
            logger.warning("truncated %s: sampled within the frames that decode; %s",
                           path, detail[:200])

    def fail(self, path: str, reason: str, detail: str = "") -> None:
        with self._lock:
            self._pass["failed"] += 1
            if path in self.failed:
                return
            self.failed[path] = (reason, detail)
            count = len(self.failed)
        if count <= self.max_logged:
            action = "skipped" if self.training else "failed"
            logger.warning("%s %s (%s) %s", action, path, reason, detail[:200])

    @property
    def counts(self) -> dict[str, int]:
        """Failed files per reason (each file once)."""
        with self._lock:
            return dict(Counter(reason for reason, _ in self.failed.values()))

    @property
    def num_failed(self) -> int:
        return len(self.failed)

    def summary(self) -> str:
        """The last finished pass (or the pass under way before the first one ends)."""
        with self._lock:
            failed, truncated = dict(self.failed), dict(self.truncated)
            counts = self.history[-1] if self.history else dict(self._pass)
            label = f" pass {len(self.history)}" if self.history else ""
        action = "skipped" if self.training else "failed"
        head = f"keras_vtn.data{label}: {counts['decoded']} clips decoded"
        if counts["failed"]:
            by_reason = ", ".join(
                f"{n} {r}" for r, n in sorted(Counter(r for r, _ in failed.values()).items())
            )
            head += f", {counts['failed']} videos {action} ({by_reason})"
        else:
            head += ", no broken videos"
        head += "."
        if truncated:
            head += (f" {len(truncated)} truncated videos were sampled within the frames that "
                     "decode.")
        if self.skipped:
            head += f" {len(self.skipped)} paths left out of the listing (see report.skipped)."
        lines = [head]
        if not self.training:
            lines += [f"  {path}: {reason}" for path, (reason, _) in sorted(failed.items())]
            lines += [f"  {path}: truncated, {why}" for path, why in sorted(truncated.items())]
        return "\n".join(lines)

    def end_pass(self) -> None:
        with self._lock:
            self.passes += 1
            self.history.append({**self._pass, "attempted": sum(self._pass.values())})
            self._pass = {"decoded": 0, "failed": 0}
            noteworthy = self.history[-1]["failed"] or self.truncated
        if noteworthy:
            logger.warning("%s", self.summary())

    def __repr__(self) -> str:
        return f"DecodeReport(decoded={self.decoded}, failed={self.counts})"


def _as_pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


class _Loader:
    """The Python side of the map: sample indices, then decode only those frames."""

    def __init__(self, records, config: ClipConfig, report: DecodeReport):
        self.paths = records.paths
        self.config = config
        self.report = report
        v, t = config.num_clips, config.num_frames
        self._empty = (np.zeros((v, t, 1, 1, 3), np.uint8), np.zeros((v, t), np.int64))

    def __call__(self, index, seed):
        index = int(index)
        if index < 0:  # end-of-pass marker, reached once the whole pass is decoded
            self.report.end_pass()
            return (*self._empty, np.int32(-1))
        path = self.paths[index]
        if self.report.known_failure(path):
            return (*self._empty, np.int32(1))
        rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
        picked = []

        def pick(info):
            if info.num_frames < self.config.min_frames:
                raise DecodeError(
                    "too_short", f"{info.num_frames} frames < {self.config.min_frames}"
                )
            short, idx = self.config.draw(rng, info.num_frames, info.fps)
            picked.append((short, idx))
            return idx

        try:
            frames, info = read_frames(
                path, None, short_side=lambda: picked[0][0], threads=self.config.decode_threads,
                info_callback=pick,
            )
        except DecodeError as error:
            self.report.fail(path, error.reason, error.detail)
            return (*self._empty, np.int32(1))
        except Exception as error:  # never let one file stop a run
            self.report.fail(path, "decode_error", repr(error))
            return (*self._empty, np.int32(1))
        self.report.ok()
        if info.truncated:
            self.report.note_truncated(path, info.stop_detail)
        return frames, picked[-1][1], np.int32(0)  # [-1]: re-sampled if the file was cut


class ClipConfig:
    """Validated sampling / augmentation / output options shared by the video and TFRecord paths.

    See `video_dataset` for the meaning of each argument.
    """

    def __init__(
        self,
        *,
        training: bool = False,
        num_frames: int = 16,
        sampling: str = "dense",
        frame_stride: int = 2,
        target_fps: float | None = None,
        num_clips: int = 1,
        num_crops: int = 1,
        image_size=224,
        short_side=None,
        crop: str | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip: bool | None = None,
        color_jitter: Sequence[float] | None = None,
        rand_augment: dict | bool | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        batch_size: int | None = None,
        drop_remainder: bool | None = None,
        dtype: str = "uint8",
        label_mode: str = "int",
        shuffle: bool | None = None,
        repeat: bool = False,
        seed: int | None = None,
        num_parallel_calls: int | None = None,
        decode_threads: int | None = None,
        min_frames: int = 1,
        views_axis: bool | None = None,
        return_frame_indices: bool = False,
        prefetch: bool = True,
    ):
        self.training = training
        self.image_size = image_size = _as_pair(image_size)
        self.num_clips, self.num_crops, self.num_frames = num_clips, num_crops, num_frames
        views = num_clips * num_crops
        if training and num_crops != 1:
            raise ValueError("num_crops applies to evaluation; training uses one random crop.")
        crop = crop or ("random" if training else "center")
        if crop not in ("random", "random_resized", "center", "none"):
            raise ValueError(
                f'crop must be "random", "random_resized", "center" or "none", not {crop!r}'
            )
        if short_side is None:
            base = max(image_size)
            if training:
                short_side = (round(base * 256 / 224), round(base * 320 / 224))
            elif num_crops == 3:
                short_side = base
            else:
                short_side = round(base * 256 / 224)
        lowest = min(short_side) if isinstance(short_side, (tuple, list)) else short_side
        if crop in ("random", "center") and lowest and lowest < min(image_size):
            raise ValueError(
                f"short_side {short_side} is smaller than image_size {image_size}; crops need "
                "short_side >= image_size."
            )
        if (mixup_alpha or cutmix_alpha) and not batch_size:
            raise ValueError("MixUp/CutMix mix whole batches: pass batch_size.")
        if mixup_alpha or cutmix_alpha:
            label_mode = "one_hot"
        if label_mode not in ("int", "one_hot"):
            raise ValueError('label_mode must be "int" or "one_hot".')
        if dtype not in ("uint8", "float32"):
            raise ValueError('dtype must be "uint8" or "float32".')
        self.crop, self.short_side, self.scale, self.ratio = crop, short_side, scale, ratio
        self.flip = training if flip is None else flip
        self.color_jitter = color_jitter
        self.shuffle = training if shuffle is None else shuffle
        self.repeat, self.seed = repeat, seed
        self.views_axis = views > 1 if views_axis is None else views_axis
        self.parallel = num_parallel_calls or tf.data.AUTOTUNE
        self.deterministic = seed is not None or not training
        self.sampler = Sampler(sampling, num_frames, frame_stride, target_fps, num_clips)
        self.decode_threads = decode_threads or decode_threads_for(num_parallel_calls)
        self.min_frames = min_frames
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.batch_size = batch_size
        self.drop_remainder = training if drop_remainder is None else drop_remainder
        self.dtype = tf.as_dtype(dtype)
        self.label_mode = label_mode
        self.return_frame_indices = return_frame_indices
        self.prefetch = prefetch
        self.ra_layer = None
        if rand_augment and training:
            kwargs = rand_augment if isinstance(rand_augment, dict) else {}
            self.ra_layer = transforms.make_rand_augment(seed=seed, **kwargs)

    def draw(self, rng: np.random.Generator, total_frames: int, fps: float):
        """Short side then frame indices, in this order, from one generator (both paths)."""
        short = self.short_side
        if isinstance(short, (tuple, list)):
            short = int(rng.integers(short[0], short[1] + 1)) if self.training else short[0]
        return short or None, self.sampler(total_frames, fps, self.training, rng)

    def spatial(self, frames, idx, label, clip_seed, num_classes: int):
        """`(V, T, h, w, 3)` uint8 + labels -> the dataset element."""
        if self.training:
            out = []
            for v in range(self.num_clips):
                out.append(transforms.augment_clip(
                    frames[v], clip_seed + tf.constant([0, 7919 * v], tf.int64),
                    crop_size=self.image_size, crop_mode=self.crop, scale=self.scale,
                    ratio=self.ratio, flip=self.flip, jitter=self.color_jitter,
                    rand_augment_layer=self.ra_layer, dtype=self.dtype,
                ))
            clips, frame_idx = tf.stack(out), idx
        elif self.crop == "none":
            clips, frame_idx = tf.cast(frames, self.dtype), idx
        else:
            clips = transforms.eval_views(
                frames, crop_size=self.image_size, num_crops=self.num_crops, dtype=self.dtype
            )
            frame_idx = tf.repeat(idx, self.num_crops, axis=0)
        if not self.views_axis:
            clips, frame_idx = clips[0], frame_idx[0]
        if self.label_mode == "one_hot":
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        if self.return_frame_indices:
            return {"frames": clips, "frame_indices": tf.cast(frame_idx, tf.int32)}, label
        return clips, label

    def finish(self, ds, num_classes: int):
        """Elements `(frames, idx, status, label, clip_seed)` -> batched, mixed, prefetched.

        Only status 0 (a decoded clip) goes on: 1 is a broken video, -1 an end-of-pass marker.
        """

        def keep(frames, idx, status, label, clip_seed):
            return tf.equal(status, 0)

        def spatial(frames, idx, status, label, clip_seed):
            return self.spatial(frames, idx, label, clip_seed, num_classes)

        ds = ds.filter(keep)
        ds = ds.map(spatial, num_parallel_calls=self.parallel, deterministic=self.deterministic)
        if self.batch_size:
            ds = ds.batch(self.batch_size, drop_remainder=self.drop_remainder)
            if self.mixup_alpha or self.cutmix_alpha:
                seed = self.seed
                mix_seeds = tf.data.Dataset.random(
                    seed=None if seed is None else seed + 1, rerandomize_each_iteration=True
                )

                def mix(batch, s):
                    clips, labels = batch
                    return transforms.mix_batch(
                        clips, labels, tf.stack([s, s // 3]),
                        mixup_alpha=self.mixup_alpha, cutmix_alpha=self.cutmix_alpha,
                    )

                ds = tf.data.Dataset.zip((ds, mix_seeds)).map(
                    mix, num_parallel_calls=tf.data.AUTOTUNE
                )
        if self.prefetch:
            ds = ds.prefetch(tf.data.AUTOTUNE)
        return ds


def video_dataset(
    source=None,
    *,
    root: str | None = None,
    label_names: Sequence[str] | None = None,
    input_context: tf.distribute.InputContext | None = None,
    service: str | None = None,
    **kwargs,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `(clip, label)` decoded from video files.

    Args:
        source: a Kinetics CSV (needs `root`), a "path label" list file, a folder of class
            folders, a `layouts.Records`, or `(path, label)` pairs.
        root: folder holding the videos of a CSV / list file.
        label_names: class names in index order (default: sorted names from the source).
            Give a model's classes to evaluate or fine-tune it: videos are labelled by class
            name onto those indices, so a split holding some of the classes keeps the
            model's numbering; a class that is not among them is an error naming it.
        input_context: from `strategy.distribute_datasets_from_function`; each input
            pipeline reads its own share of the videos.
        training: random sampling and augmentation (default False). Broken files are skipped
            either way; evaluation lists each of them in the summary. A file whose frames stop
            short of its header's count (cut, or damaged part-way) is kept in both modes: its
            clips are drawn again within the frames that decode, and `report.truncated` names
            it with where its frames stop (logged when found in training, listed in the
            evaluation summary). A video shorter than a clip loops (see `samplers`).
        num_frames, sampling, frame_stride, target_fps: the temporal sampler (`"dense"`
            (default, stride 2), `"uniform"` or `"time"`; see `keras_vtn.data.samplers`).
        num_clips, num_crops: evaluation views (`num_crops` 1 = centre, 3 = along the long
            side); clips are `(views, T, H, W, 3)` when `views = num_clips * num_crops > 1`
            (or `views_axis=True`).
        image_size: output height/width (int or pair, default 224).
        short_side: short-side resize before cropping; an int (0 keeps the decoded size) or
            `(min, max)` for random scale jitter in training. Default:
            `(256, 320) * image_size / 224` in training, `256 * image_size / 224` for centre
            crops, `image_size` for three crops.
        crop: `"random"` (training default), `"random_resized"` (with `scale`, `ratio`),
            `"center"` (evaluation default) or `"none"`.
        flip, color_jitter, rand_augment: training augmentation; `color_jitter` is
            `(brightness, contrast, saturation, hue)`; `rand_augment` True or kwargs of
            `keras.layers.RandAugment` (`num_ops`, `factor`).
        mixup_alpha, cutmix_alpha: batch mixing (needs `batch_size`; labels become one-hot).
        batch_size, drop_remainder: batching (remainder dropped in training by default).
        dtype: `"uint8"` (default) or `"float32"` (values stay in [0, 255]).
        label_mode: `"int"` (default; -1 for unlabelled videos) or `"one_hot"`.
        shuffle, repeat, seed: `seed` makes order, frame indices and augmentation reproducible.
        num_parallel_calls: parallel decodes (default AUTOTUNE).
        decode_threads: FFmpeg threads per decode; default: the cores per parallel decode
            (at most 4; one each with AUTOTUNE), see `decode.decode_threads_for`.
        min_frames: videos with fewer frames count as `too_short` and are skipped.
        return_frame_indices: yield `({"frames": clip, "frame_indices": idx}, label)` where
            `idx` are the sampled positions in the source video (VTN's `frame_indices`).
        service: `"grpc://HOST:PORT"` of a tf.data service dispatcher: decode on its workers
            (`keras-vtn data-service`; see `keras_vtn.data.service`).
        service_wait: with `service`, seconds a pass may wait for a clip before a warning
            names the dispatcher and how to start a worker (repeated while it waits; default
            30, 0 = never).

    `keras_vtn.data.dataset_info(ds)` returns the `DatasetInfo` of the returned dataset, and
    of every dataset made from it by `map`, `batch`, `prefetch`, ...: `label_names`,
    `label_map`, `records`, `num_videos`, `config`, `sampler` and `report` (a `DecodeReport`
    of decoded / skipped videos by reason, with exact counts per pass in `report.history`).
    """
    if service is not None:
        from keras_vtn.data import service as data_service

        return data_service.video_dataset(source, root=root, label_names=label_names,
                                          input_context=input_context, service=service, **kwargs)
    records = resolve_records(source, root, label_names)
    config = ClipConfig(**kwargs)
    report = DecodeReport(config.training)
    loader = _Loader(records, config, report)
    num_classes = max(len(records.label_names), max(records.labels) + 1, 1)
    labels_table = tf.constant(np.asarray(records.labels, np.int32))
    v, t = config.num_clips, config.num_frames

    def decode(index, element_seed):
        frames, idx, status = tf.numpy_function(
            loader, [index, element_seed], [tf.uint8, tf.int64, tf.int32], name="decode_video"
        )
        frames.set_shape([v, t, None, None, 3])
        idx.set_shape([v, t])
        status.set_shape([])
        label = tf.gather(labels_table, tf.maximum(index, 0))
        return frames, idx, status, label, tf.stack([element_seed, element_seed // 7])

    ds = pass_order(len(records), config, input_context)
    ds = ds.map(decode, num_parallel_calls=config.parallel, deterministic=config.deterministic)
    # The end-of-pass marker (index -1, where the report closes the pass) comes after the
    # parallel map, not through it: concatenate reaches it only once every element of the pass
    # has left the map, so no decode of this pass is still running and none of the next has
    # started, whatever order the map returns elements in.
    marker = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.constant(0, tf.int64)))
    ds = ds.concatenate(marker.map(decode))
    if config.repeat:
        ds = ds.repeat()
    ds = config.finish(ds, num_classes)
    if records.skipped:
        report.skipped.update(records.skipped)
        logger.warning("%d paths left out of the listing: %s", len(records.skipped), "; ".join(
            f"{p} ({why})" for p, why in list(records.skipped.items())[: report.max_logged]))
    return attach_info(ds, DatasetInfo(list(records.label_names), report, config, records))


def pass_order(num_records: int, config: ClipConfig, input_context=None) -> tf.data.Dataset:
    """`(record index, element seed)` of each pass: this pipeline's share of the records,
    reshuffled and with new seeds at every iteration (the same in-process and on tf.data
    service workers, so a seed gives the same clips either way)."""
    indices = tf.data.Dataset.range(num_records)
    if input_context is not None and input_context.num_input_pipelines > 1:
        indices = indices.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if config.shuffle:
        indices = indices.shuffle(num_records, seed=config.seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip((indices, seeds))


def resolve_records(source, root, label_names) -> layouts.Records:
    """`layouts.resolve`, with no videos at all an error rather than an empty dataset."""
    records = layouts.resolve(source, root, label_names)
    if len(records) == 0:
        raise ValueError(
            f"No videos found for {source!r} ({len(records.missing)} listed but missing)."
        )
    return records


_KINETICS_CSV = ("annotations/{split}.csv", "{split}.csv", "kinetics400/annotations/{split}.csv",
                 "annotations/kinetics_{split}.csv", "kinetics400_{split}.csv")
_KINETICS_VIDEOS = ("{split}", "videos/{split}", "{split}_256", "videos_{split}", "")


def kinetics400(root: str, split: str = "train", csv: str | None = None, **kwargs):
    """Kinetics-400 from the official CSVs (or class folders) under `root`.

    The CSV is `csv` or the first of `annotations/{split}.csv`, `{split}.csv`, ...; videos
    are looked up under `root/{split}`, `root/videos/{split}`, `root/{split}_256` or `root`,
    in downloader trees or flat folders. Labels index `KINETICS400_LABELS`. Other keyword
    arguments go to `video_dataset` (`training` defaults to `split == "train"`).
    """
    if split not in ("train", "val", "validate", "test"):
        raise ValueError(f'split must be "train", "val" or "test", not {split!r}')
    names = [split] + (["validate"] if split == "val" else ["val"] if split == "validate" else [])
    if csv is None:
        candidates = [os.path.join(root, p.format(split=n)) for n in names for p in _KINETICS_CSV]
        csv = next((c for c in candidates if os.path.isfile(c)), None)
    video_dir = next(
        (os.path.join(root, p.format(split=n)) for n in names for p in _KINETICS_VIDEOS
         if os.path.isdir(os.path.join(root, p.format(split=n)))),
        root,
    )
    kwargs.setdefault("training", split == "train")
    if csv is None:
        if not os.path.isdir(video_dir):
            raise FileNotFoundError(
                f"No Kinetics CSV or video folder for split {split!r} in {root!r}."
            )
        records = layouts.class_folders(video_dir, layouts.KINETICS400_LABELS)
    else:
        records = layouts.kinetics_csv(csv, video_dir, layouts.KINETICS400_LABELS)
        total = len(records) + len(records.missing)
        if records.missing:
            logger.warning(
                "Kinetics-400 %s: %d of %d listed videos found (%.1f%% missing).",
                split, len(records), total, 100 * (1 - records.present_fraction),
            )
    return video_dataset(records, **kwargs)
