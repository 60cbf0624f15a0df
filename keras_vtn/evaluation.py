"""Multi-view evaluation: `evaluate_views(model, dataset, aggregate=...)`.

Every video gives `views = num_clips * num_crops` clips; the model scores each view and the
scores are averaged per video as logits, probabilities or log-probabilities. The report states
the protocol as `frames×clips×crops` (e.g. "32×4×3"), top-1/top-5, per-class accuracy and the
confusion matrix; with `output_dir` it is written as `evaluation.json` and
`confusion_matrix.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from keras_vtn.io_utils import write_json

AGGREGATES = ("logits", "probabilities", "log_probabilities")


def _softmax(x: np.ndarray) -> np.ndarray:
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
    probabilities = _softmax(view_logits)
    if aggregate == "probabilities":
        return probabilities.mean(axis=1)
    if aggregate == "log_probabilities":
        return np.log(np.maximum(probabilities, 1e-300)).mean(axis=1)
    raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")


def _protocol(dataset, num_frames: int, views: int) -> tuple[str, int, int]:
    config = getattr(dataset, "config", None)
    clips = getattr(config, "num_clips", None)
    crops = getattr(config, "num_crops", None)
    if clips is None or crops is None or clips * crops != views:
        clips, crops = views, 1
    return f"{num_frames}×{clips}×{crops}", clips, crops


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
        label_names: class names (default: `dataset.label_names`, else indices).
        top_k: the second accuracy reported (`top5` for the default 5).
        output_dir: write `evaluation.json` and `confusion_matrix.png` there.

    Returns the report dict (also `report["scores"]`, the `(videos, classes)` NumPy array, not
    written to the JSON).
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    start = time.perf_counter()
    all_scores, all_labels = [], []
    views = num_frames = None
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
    seconds = time.perf_counter() - start
    if not all_scores:
        raise ValueError("The dataset gave no batches (all videos failed to decode?).")
    scores = np.concatenate(all_scores)
    labels = np.concatenate(all_labels).astype(np.int64)
    num_classes = scores.shape[-1]
    names = list(label_names or getattr(dataset, "label_names", None) or
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
    protocol, clips, crops = _protocol(dataset, num_frames, views)
    report_obj = getattr(dataset, "report", None)
    report = {
        "protocol": protocol,
        "protocol_meaning": "frames per clip × temporal clips × spatial crops per video",
        "num_frames": int(num_frames),
        "num_clips": int(clips),
        "num_crops": int(crops),
        "views_per_video": int(views),
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
        "seconds": round(seconds, 3),
        "videos_per_second": round(len(labels) / seconds, 3) if seconds > 0 else None,
        "model": getattr(model, "name", None),
    }
    if output_dir is not None:
        from keras_vtn.training.plots import plot_confusion

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


# ----------------------------------------------------------------------------- command line


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model FILE.keras` or `--family` + `--weights` + `--model-arg key=value`."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="a saved .keras model (e.g. a training run's model.keras)")
    group.add_argument("--family", choices=["vivit", "linear_vtn", "vtn", "laps"],
                       help="build a family model instead (with --weights)")
    group.add_argument("--weights", help="registry name (k400, ...) or checkpoint path")
    group.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="builder argument, e.g. variant=factorised_encoder (JSON values)")
    group.add_argument("--labels", help="class names: a text file (one per line) or "
                                        "'kinetics400'; default: labels.txt next to --model")


def parse_model_args(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--model-arg {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def model_from_args(args, **defaults):
    from keras_vtn.training.families import load_model

    if args.model:
        return load_model(args.model)
    if not args.family:
        raise SystemExit("give --model FILE.keras or --family (and --weights)")
    kwargs = {**defaults, **parse_model_args(args.model_arg)}
    return load_model(family=args.family, weights=args.weights, **kwargs)


def labels_from_args(args, num_classes: int) -> list[str]:
    from keras_vtn.data import KINETICS400_LABELS

    source = args.labels
    if source is None and args.model:
        candidate = os.path.join(os.path.dirname(os.path.abspath(args.model)), "labels.txt")
        source = candidate if os.path.exists(candidate) else None
    if source == "kinetics400" or (source is None and num_classes == 400):
        return list(KINETICS400_LABELS)
    if source is None:
        return [f"class_{i}" for i in range(num_classes)]
    with open(source) as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != num_classes:
        raise SystemExit(f"{source} has {len(names)} labels; the model has {num_classes} classes")
    return names


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="multi-view evaluation: top-1/5, per-class accuracy, JSON + PNG",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--data-root", required=True, help="dataset folder")
    parser.add_argument("--layout", default="kinetics400",
                        choices=["kinetics400", "csv", "folders", "tfrecord"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--num-frames", type=int, help="default: the model's input frames")
    parser.add_argument("--image-size", type=int, help="default: the model's input size")
    parser.add_argument("--sampling", default="dense", choices=["dense", "uniform", "time"])
    parser.add_argument("--frame-stride", type=int, default=2)
    parser.add_argument("--target-fps", type=float)
    parser.add_argument("--num-clips", type=int, default=1)
    parser.add_argument("--num-crops", type=int, default=1, choices=[1, 3])
    parser.add_argument("--short-side", type=int, help="resize before cropping")
    parser.add_argument("--aggregate", default="logits", choices=AGGREGATES)
    parser.add_argument("--batch-size", type=int, default=4, help="videos per batch")
    parser.add_argument("--max-batches", type=int)
    parser.add_argument("--output", default="evaluation", help="folder for the JSON and PNG")
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from keras_vtn.training.data import make_dataset
    from keras_vtn.training.families import model_clip_shape, takes_frame_indices

    model = model_from_args(args)
    frames, height, _ = model_clip_shape(model)
    num_frames = args.num_frames or frames or 16
    image_size = args.image_size or height or 224
    kwargs = dict(
        training=False, num_frames=num_frames, image_size=image_size, sampling=args.sampling,
        frame_stride=args.frame_stride, target_fps=args.target_fps, num_clips=args.num_clips,
        num_crops=args.num_crops, batch_size=args.batch_size, views_axis=True,
        return_frame_indices=takes_frame_indices(model),
    )
    if args.short_side:
        kwargs["short_side"] = args.short_side
    dataset = make_dataset(args.data_root, args.split, args.layout, **kwargs)
    num_classes = model.output_shape[-1]
    names = labels_from_args(args, num_classes) if (args.labels or args.model) else None
    report = evaluate_views(model, dataset, args.aggregate, label_names=names,
                            output_dir=args.output, max_batches=args.max_batches)
    print(f"{report['protocol']} ({report['aggregate']}): top-1 {100 * report['top1']:.2f}%  "
          f"top-5 {100 * report['top5']:.2f}%  on {report['num_videos']} videos")
    print(f"wrote {report['json_path']} and {report['confusion_png']}")
    return 0
