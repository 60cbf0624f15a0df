"""Multi-view evaluation: `evaluate_views(model, dataset, aggregate=...)`.

Every video gives `views = num_clips * num_crops` clips; the model scores each view and the
scores are averaged per video as logits, probabilities or log-probabilities. The report states
the protocol as `frames×clips×crops` (e.g. "32×4×3"), top-1/top-5, per-class accuracy, the
confusion matrix and the failed and truncated videos by path; with `output_dir` it is written
as `evaluation.json` and `confusion_matrix.png`.

`keras-vtn evaluate --model runs/x/model.keras` evaluates the way the run was trained: the
sampler, clip length, stride or fps, image size, short side and views come from the run's
`config.json` (for `--family` with registry weights, from the registry's record of the original
evaluation) and the class names from its `labels.txt` (flags override each); the data are
labelled onto the model's class names, so a split with only some of the classes is scored
against the right ones.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from keras_vtn.convert import parse_model_args
from keras_vtn.io_utils import write_json
from keras_vtn.models.families import FAMILIES, get_builder

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


# ----------------------------------------------------------------------------- command line


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model FILE.keras` or `--family` + `--weights` + `--model-arg key=value`."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="a saved .keras model (e.g. a training run's model.keras)")
    group.add_argument("--family", choices=sorted(FAMILIES),
                       help="build a family model instead (with --weights)")
    group.add_argument("--weights", help="registry name (k400, ...) or checkpoint path")
    group.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="builder argument, e.g. variant=factorised_encoder (JSON values)")
    group.add_argument("--labels", help="class names: a text file (one per line) or "
                                        "'kinetics400'; default: labels.txt next to --model")


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampling protocol flags; each left out comes from the run's `config.json`."""
    group = parser.add_argument_group(
        "sampling protocol",
        "Default: as the run next to --model was trained (its config.json), or as the weight "
        "registry records the original evaluation for --family with --weights NAME; a flag "
        "overrides one field. Otherwise: dense sampling at stride 2, one centre view, the "
        "model's input frames and size.")
    group.add_argument("--num-frames", type=int, help="frames per clip")
    group.add_argument("--image-size", type=int, help="crop size in pixels")
    group.add_argument("--sampling", choices=["dense", "uniform", "time"])
    group.add_argument("--frame-stride", type=int, help="dense sampling: frames between samples")
    group.add_argument("--target-fps", type=float, help="time sampling: frames per second")
    group.add_argument("--num-clips", type=int, help="temporal clips per video")
    group.add_argument("--num-crops", type=int, choices=[1, 3], help="spatial crops per clip")
    group.add_argument("--short-side", type=int, help="resize the short side before cropping")


def model_from_args(args, **defaults):
    """The model of `--model`, or of `--family`: `--num-frames` / `--image-size`, when given,
    are builder arguments there (the clip shape the model is built for)."""
    from keras_vtn.models.families import load_model

    if args.model:
        return load_model(args.model)
    if not args.family:
        raise SystemExit("give --model FILE.keras or --family (and --weights)")
    sizes = {key: getattr(args, key, None) for key in ("num_frames", "image_size")}
    kwargs = {**defaults, **{k: v for k, v in sizes.items() if v is not None},
              **parse_model_args(args.model_arg)}
    return load_model(family=args.family, weights=args.weights, **kwargs)


def read_run_config(model_path: str | os.PathLike | None) -> tuple[dict, str | None]:
    """`(config, path)` of the training run's `config.json` next to the model (`({}, None)`)."""
    if not model_path:
        return {}, None
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    if not os.path.isfile(path):
        return {}, None
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise SystemExit(f"{path} is not a training run's config (a JSON object).")
    return config, path


PROTOCOL_FIELDS = ("sampling", "num_frames", "frame_stride", "target_fps", "image_size",
                   "short_side", "num_clips", "num_crops")


def resolve_protocol(args, model, run_config: dict | None = None,
                     config_path: str | None = None) -> dict:
    """The sampling protocol: flags, else the run's `config.json` (or the registry entry of
    `--weights`), else the model's input shape and defaults.

    Returns the `video_dataset` keyword arguments of `PROTOCOL_FIELDS` (`short_side` None
    means the dataset's default) plus `"source"`, a phrase saying where they came from.
    """
    from keras_vtn.models.families import model_clip_shape

    run_config = run_config or {}
    recorded = {key: run_config.get(key) for key in PROTOCOL_FIELDS[:6]}
    recorded["num_clips"] = run_config.get("val_num_clips")
    recorded["num_crops"] = run_config.get("val_num_crops")
    recorded = {k: v for k, v in recorded.items() if v is not None}
    recorded_from = config_path if recorded else None
    if not recorded:
        recorded, recorded_from = registry_protocol(args)
    frames, height, _ = model_clip_shape(model)
    # a model built for a fixed clip takes only that clip, whatever else was recorded
    for key, fixed in (("num_frames", frames), ("image_size", height)):
        if fixed is not None and recorded.get(key, fixed) != fixed:
            recorded.pop(key)
    protocol = {"sampling": "dense", "num_frames": frames or 16, "frame_stride": 2,
                "target_fps": None, "image_size": height or 224, "short_side": None,
                "num_clips": 1, "num_crops": 1}
    protocol.update(recorded)
    given = {k: getattr(args, k) for k in PROTOCOL_FIELDS if getattr(args, k, None) is not None}
    protocol.update(given)
    short = protocol["short_side"]
    if isinstance(short, (list, tuple)) and "short_side" not in given:
        # a training scale-jitter range: evaluate at its low end, as the run's validation
        # did (three crops cover the long side, so never below the crop)
        low = int(short[0])
        protocol["short_side"] = max(low, protocol["image_size"]) if protocol["num_crops"] == 3 \
            else low
    if protocol["sampling"] == "time" and not protocol["target_fps"]:
        raise SystemExit("time sampling needs --target-fps")
    parts = []
    if recorded and recorded_from:
        parts.append(f"from {recorded_from}")
    if given:
        parts.append(", ".join("--" + k.replace("_", "-") for k in given))
    if not parts:
        parts.append("defaults and the model's input shape: no config.json next to the model, "
                     "no registry protocol")
    protocol["source"] = "; ".join(parts)
    return protocol


def registry_protocol(args) -> tuple[dict, str | None]:
    """`(fields, source)` of the protocol the weight registry records for `--family F
    --weights NAME` (the original evaluation's frames, stride or fps, sizes and views), or
    `({}, None)` when there is no such entry or its candidates disagree."""
    import inspect

    from keras_vtn.weights import registry

    family, name = getattr(args, "family", None), getattr(args, "weights", None)
    if not family or not name or getattr(args, "model", None):
        return {}, None
    entries = registry.list_weights(family=family, name=name)
    if not entries:
        return {}, None
    given = parse_model_args(getattr(args, "model_arg", []) or [])
    try:
        parameters = inspect.signature(get_builder(family)).parameters
    except ValueError:  # an unknown family says so when the model is built
        parameters = {}

    def wanted(key):
        if key in given:
            return given[key]
        default = parameters[key].default if key in parameters else None
        return None if default is inspect.Parameter.empty else default

    fitting = [e for e in entries
               if all(wanted(k) in (None, v) for k, v in e.get("match", {}).items())]
    found = {json.dumps(_entry_protocol(e), sort_keys=True) for e in fitting}
    if len(found) != 1:
        return {}, None
    fields = json.loads(found.pop())
    return fields, (f"the registry entry of {family} weights {name!r}" if fields else None)


def _entry_protocol(entry: dict) -> dict:
    """The protocol fields a registry entry states plainly (nothing is guessed)."""
    pre, views = entry.get("preprocessing") or {}, entry.get("eval_views") or {}
    out = {}
    frames = pre.get("num_frames")
    frames = frames.get("eval") if isinstance(frames, dict) else frames
    if isinstance(frames, int) and isinstance(pre.get("frame_stride"), int):
        out.update(sampling="dense", num_frames=frames, frame_stride=pre["frame_stride"])
    elif isinstance(frames, int) and isinstance(pre.get("clip_seconds"), (int, float)):
        out.update(sampling="time", num_frames=frames, target_fps=frames / pre["clip_seconds"])
    if isinstance(pre.get("resize_short_side"), int):
        out["short_side"] = pre["resize_short_side"]
    if isinstance(pre.get("crop_size"), int):
        out["image_size"] = pre["crop_size"]
    if isinstance(views.get("clips"), int):
        out["num_clips"] = views["clips"]
    if views.get("crops") in (1, 3):
        out["num_crops"] = views["crops"]
    return out


def describe_protocol(protocol: dict) -> str:
    """One line, e.g. `protocol: dense 16×4, 224 px, 4 clips × 3 crops (from runs/x/config.json)`.

    >>> describe_protocol(dict(sampling="dense", num_frames=16, frame_stride=4, target_fps=None,
    ...                        image_size=224, short_side=None, num_clips=4, num_crops=3,
    ...                        source="from runs/x/config.json"))
    'protocol: dense 16×4, 224 px, 4 clips × 3 crops (from runs/x/config.json)'
    """
    sampling, frames = protocol["sampling"], protocol["num_frames"]
    if sampling == "dense":
        clip = f"dense {frames}×{protocol['frame_stride']}"
    elif sampling == "time":
        clip = f"time {frames} frames at {protocol['target_fps']:g} fps"
    else:
        clip = f"uniform {frames} frames"
    size = f"{protocol['image_size']} px"
    if protocol.get("short_side"):
        size += f" (short side {protocol['short_side']})"
    clips, crops = protocol["num_clips"], protocol["num_crops"]
    views = f"{clips} clip{'s' if clips != 1 else ''} × {crops} crop{'s' if crops != 1 else ''}"
    source = f" ({protocol['source']})" if protocol.get("source") else ""
    return f"protocol: {clip}, {size}, {views}{source}"


def protocol_kwargs(protocol: dict) -> dict:
    """The `video_dataset` keyword arguments of a resolved protocol."""
    kwargs = {k: protocol[k] for k in PROTOCOL_FIELDS if k != "short_side"}
    if protocol.get("short_side"):
        kwargs["short_side"] = protocol["short_side"]
    return kwargs


def run_labels_path(model_path: str | os.PathLike) -> str | None:
    """The training run's `labels.txt` next to a saved model, if there is one.

    Data for evaluating or fine-tuning that model are labelled onto these names
    (`video_dataset(..., label_names=...)`), not onto the data's own sorted class names.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "labels.txt")
    return path if os.path.isfile(path) else None


def model_label_names(args, num_classes: int) -> tuple[list[str] | None, str]:
    """`(names, where from)` of the model's classes; names None when nothing says.

    `--labels` (a file or `kinetics400`), else the run's `labels.txt` next to `--model`, else
    Kinetics-400 for a 400-class model.
    """
    from keras_vtn.data import KINETICS400_LABELS

    source = args.labels
    if source is None and args.model:
        source = run_labels_path(args.model)
    if source == "kinetics400" or (source is None and num_classes == 400):
        names, source = list(KINETICS400_LABELS), "Kinetics-400"
    elif source is None:
        return None, "unknown"
    else:
        with open(source, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    if len(names) != num_classes:
        raise SystemExit(f"{source} has {len(names)} labels; the model has {num_classes} classes")
    return names, source


def labels_from_args(args, num_classes: int) -> list[str]:
    """The model's class names, or `class_<i>` when nothing names them."""
    names, _ = model_label_names(args, num_classes)
    return names if names is not None else [f"class_{i}" for i in range(num_classes)]


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
    add_protocol_arguments(parser)
    parser.add_argument("--aggregate", default="logits", choices=AGGREGATES)
    parser.add_argument("--batch-size", type=int, default=4, help="videos per batch")
    parser.add_argument("--max-batches", type=int)
    parser.add_argument("--output", default="evaluation", help="folder for the JSON and PNG")
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from keras_vtn.data import dataset_info, make_dataset
    from keras_vtn.data.layouts import UnknownClassError
    from keras_vtn.models.families import takes_frame_indices

    model = model_from_args(args)
    run_config, config_path = read_run_config(args.model)
    protocol = resolve_protocol(args, model, run_config, config_path)
    print(describe_protocol(protocol), flush=True)
    num_classes = model.output_shape[-1]
    names, label_source = model_label_names(args, num_classes)
    kwargs = dict(training=False, batch_size=args.batch_size, views_axis=True,
                  return_frame_indices=takes_frame_indices(model), **protocol_kwargs(protocol))
    if names is not None:
        kwargs["label_names"] = names  # the data are labelled onto the model's classes
    try:
        dataset = make_dataset(args.data_root, args.split, args.layout, **kwargs)
    except UnknownClassError as error:
        if names is None:  # the layout's own class list (Kinetics-400) refused the data
            raise
        # the data layer's advice (index the data's own classes) cannot score this model
        raise UnknownClassError(
            f"the data in {args.data_root!r} hold classes the model does not know: "
            f"{', '.join(repr(n) for n in error.unknown[:8])}. The model's {num_classes} "
            f"classes come from {label_source}; evaluate data of those classes (any subset), "
            "or name the model's classes with --labels.", error.unknown, names,
        ) from None
    if names is None:
        own = dataset_info(dataset).label_names
        if len(own) > num_classes:
            raise SystemExit(
                f"evaluate: the data have {len(own)} classes, the model {num_classes}; give "
                "the model's class names with --labels.")
        print(f"labels: the model's class names are unknown (no labels.txt next to the model, "
              f"no --labels): videos keep the data's own numbering of its {len(own)} classes, "
              "which is right only if the data hold every class the model knows", flush=True)
    else:
        print(f"labels: {num_classes} classes from {label_source}", flush=True)
    report = evaluate_views(model, dataset, args.aggregate, label_names=names,
                            output_dir=args.output, max_batches=args.max_batches)
    print(f"{report['protocol']} ({report['aggregate']}): top-1 {100 * report['top1']:.2f}%  "
          f"top-5 {100 * report['top5']:.2f}%  on {report['num_videos']} videos")
    if report["failed"] or report["truncated"]:
        print(f"{len(report['failed'])} videos failed, {len(report['truncated'])} truncated "
              "(listed in the JSON)")
    print(f"wrote {report['json_path']} and {report['confusion_png']}")
    return 0
