"""Multi-view evaluation: `evaluate_views(model, dataset, aggregate=...)`.

Every video gives `views = num_clips * num_crops` clips; the model scores each view and the
scores are averaged per video as logits, probabilities or log-probabilities. The report states
the protocol as `frames×clips×crops` (e.g. "32×4×3"), top-1/top-5, per-class accuracy, the
confusion matrix and the failed and truncated videos by path; with `output_dir` it is written
as `evaluation.json` and `confusion_matrix.png`.

The protocol a model is evaluated with (from its run's `config.json` or the weight registry)
is resolved in `keras_vtn.protocol`; `keras-vtn evaluate` is `keras_vtn.cli.evaluate`.
"""

from __future__ import annotations

import os
import time

import numpy as np

from keras_vtn.io_utils import write_json

AGGREGATES = ("logits", "probabilities", "log_probabilities")


def softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis, computed stably.

    >>> softmax(np.array([0.0, np.log(3.0)])).round(2).tolist()
    [0.25, 0.75]
    """
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def aggregate_views(view_logits: np.ndarray, aggregate: str = "logits") -> np.ndarray:
    """`(videos, views, classes)` logits -> `(videos, classes)` scores.

    >>> logits = np.array([[[2.0, 0.0], [0.0, 1.0]]])
    >>> aggregate_views(logits, "logits").tolist()
    [[1.0, 0.5]]
    """
    view_logits = np.asarray(view_logits, np.float64)
    if aggregate == "logits":
        return view_logits.mean(axis=1)
    probabilities = softmax(view_logits)
    if aggregate == "probabilities":
        return probabilities.mean(axis=1)
    if aggregate == "log_probabilities":
        return np.log(np.maximum(probabilities, 1e-300)).mean(axis=1)
    raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")


def _protocol(info, num_frames: int, views: int) -> tuple[str, int, int]:
    config = getattr(info, "config", None)
    clips = getattr(config, "num_clips", None)
    crops = getattr(config, "num_crops", None)
    if clips is None or crops is None or clips * crops != views:
        clips, crops = views, 1
    return f"{num_frames}×{clips}×{crops}", clips, crops


def _progress_bar(info, max_batches):
    """A Keras progress bar over the videos of a dataset (its length when its `DatasetInfo`
    knows it)."""
    import sys

    import keras

    target = getattr(info, "num_videos", None)
    batch_size = getattr(getattr(info, "config", None), "batch_size", None)
    if target is not None and max_batches is not None and batch_size:
        target = min(target, max_batches * batch_size)
    # a log file gets a line every 10 s rather than one per batch
    interval = 0.5 if sys.stdout.isatty() else 10.0
    return keras.utils.Progbar(target, interval=interval, stateful_metrics=["videos/s"],
                               unit_name="video")


def _sampling(info) -> dict | None:
    """How the frames were picked and sized, when the dataset's info says (for the JSON)."""
    config = getattr(info, "config", None)
    sampler = getattr(config, "sampler", None)
    if sampler is None:
        return None
    out = {"sampler": sampler.kind, "frame_stride": sampler.frame_stride,
           "target_fps": sampler.target_fps}
    if sampler.kind != "dense":
        out.pop("frame_stride")
    if sampler.kind != "time":
        out.pop("target_fps")
    out["image_size"] = list(config.image_size)
    out["short_side"] = config.short_side
    return out


def _failed_files(report) -> dict:
    if report is None:
        return {}
    return {path: {"reason": reason, "detail": detail}
            for path, (reason, detail) in sorted(report.failed.items())}


def _split_inputs(batch):
    """(frames `(B, V, T, H, W, 3)`, extra inputs dict or None); V=1 for 5-D clips."""
    if isinstance(batch, dict):
        frames = np.asarray(batch["frames"])
        extras = {k: np.asarray(v) for k, v in batch.items() if k != "frames"}
    else:
        frames, extras = np.asarray(batch), None
    if frames.ndim == 5:
        frames = frames[:, None]
        extras = {k: v[:, None] for k, v in extras.items()} if extras else extras
    return frames, extras


def evaluate_views(
    model,
    dataset,
    aggregate: str = "logits",
    *,
    label_names: list[str] | None = None,
    top_k: int = 5,
    output_dir: str | os.PathLike | None = None,
    max_batches: int | None = None,
    verbose: int = 1,
) -> dict:
    """Evaluates `model` on `(clips, labels)` batches of `dataset` with multi-view averaging.

    Args:
        model: a Keras model mapping `(N, T, H, W, 3)` clips to `(N, classes)` logits (or
            `{"frames", "frame_indices"}` inputs).
        dataset: batches of `(B, views, T, H, W, 3)` (or `(B, T, H, W, 3)`) clips with integer
            labels, e.g. `keras_vtn.data.video_dataset(..., num_clips=4, num_crops=3,
            batch_size=...)`. Labels of -1 (unlabelled) are skipped in the accuracies.
        aggregate: average the views' `"logits"` (ViViT's protocol), `"probabilities"` or
            `"log_probabilities"`.
        label_names: class names (default: those of `keras_vtn.data.dataset_info(dataset)`,
            else indices).
        top_k: the second accuracy reported (`top5` for the default 5).
        output_dir: write `evaluation.json` and `confusion_matrix.png` there.
        max_batches: stop after this many batches.
        verbose: 1 shows a progress bar (videos done, videos/s, ETA), 0 nothing.

    Returns the report dict (also `report["scores"]`, the `(videos, classes)` NumPy array, not
    written to the JSON).
    """
    from keras_vtn.data import dataset_info

    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    info = dataset_info(dataset, None)
    start = time.perf_counter()
    all_scores, all_labels = [], []
    views = num_frames = None
    progress = _progress_bar(info, max_batches) if verbose else None
    done = 0
    for index, (batch, labels) in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        frames, extras = _split_inputs(batch)
        b, v, t = frames.shape[:3]
        views, num_frames = v, t
        flat = frames.reshape((b * v, *frames.shape[2:]))
        if extras:
            inputs = {"frames": flat, **{k: x.reshape((b * v, *x.shape[2:]))
                                         for k, x in extras.items()}}
        else:
            inputs = flat
        logits = np.asarray(model.predict_on_batch(inputs), np.float32)
        all_scores.append(aggregate_views(logits.reshape(b, v, -1), aggregate))
        all_labels.append(np.asarray(labels).reshape(-1))
        done += b
        if progress is not None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            progress.update(min(done, progress.target or done), [("videos/s", rate)])
    seconds = time.perf_counter() - start
    if progress is not None and done and done != progress.target:
        # broken videos are skipped, so the count can stop short of the listed target
        progress.target = done
        progress.update(done, [("videos/s", done / max(seconds, 1e-9))], finalize=True)
    if not all_scores:
        raise ValueError("The dataset gave no batches (all videos failed to decode?).")
    scores = np.concatenate(all_scores)
    labels = np.concatenate(all_labels).astype(np.int64)
    num_classes = scores.shape[-1]
    names = list(label_names or getattr(info, "label_names", None) or
                 [str(i) for i in range(num_classes)])
    if len(names) < num_classes:
        names += [str(i) for i in range(len(names), num_classes)]
    labelled = labels >= 0
    k = min(top_k, num_classes)
    ranked = np.argsort(-scores, axis=-1)
    predicted = ranked[:, 0]
    top1 = predicted[labelled] == labels[labelled]
    topk = (ranked[labelled, :k] == labels[labelled, None]).any(axis=-1)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels[labelled], predicted[labelled]), 1)
    per_class = {}
    for c in range(num_classes):
        total = matrix[c].sum()
        per_class[names[c]] = float(matrix[c, c] / total) if total else None
    present = [a for a in per_class.values() if a is not None]
    protocol, clips, crops = _protocol(info, num_frames, views)
    report_obj = getattr(info, "report", None)
    report = {
        "protocol": protocol,
        "protocol_meaning": "frames per clip × temporal clips × spatial crops per video",
        "num_frames": int(num_frames),
        "num_clips": int(clips),
        "num_crops": int(crops),
        "views_per_video": int(views),
        "sampling": _sampling(info),
        "aggregate": aggregate,
        "num_videos": int(len(labels)),
        "num_labelled": int(labelled.sum()),
        "top1": float(top1.mean()) if top1.size else None,
        f"top{top_k}": float(topk.mean()) if topk.size else None,
        "mean_class_accuracy": float(np.mean(present)) if present else None,
        "per_class_accuracy": per_class,
        "label_names": names[:num_classes],
        "confusion_matrix": matrix.tolist(),
        "failed_videos": dict(report_obj.counts) if report_obj is not None else {},
        "failed": _failed_files(report_obj),
        "truncated": dict(sorted(getattr(report_obj, "truncated", {}).items())),
        "seconds": round(seconds, 3),
        "videos_per_second": round(len(labels) / seconds, 3) if seconds > 0 else None,
        "model": getattr(model, "name", None),
    }
    if output_dir is not None:
        from keras_vtn.reporting import plot_confusion

        os.makedirs(output_dir, exist_ok=True)
        report["json_path"] = os.path.join(os.fspath(output_dir), "evaluation.json")
        report["confusion_png"] = plot_confusion(
            matrix, names[:num_classes], os.path.join(output_dir, "confusion_matrix.png"),
            title=f"{report['model']} {protocol} ({aggregate}) top-1 "
                  f"{100 * (report['top1'] or 0):.1f}%",
        )
        write_json(report["json_path"], report, indent=2, ensure_ascii=False)
    report["scores"] = scores
    return report
