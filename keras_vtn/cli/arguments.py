"""What several commands share: the sub-command preamble, the model and protocol flags, and
the model and class names those flags name."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_command(subparsers, name: str, run: Callable | None, *, help: str, description: str,
                epilog: str | None = None, raw: bool = False) -> argparse.ArgumentParser:
    """A sub-command's parser that calls `run(args)`; `raw` keeps the description's layout."""
    formatter = argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter
    parser = subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                   formatter_class=formatter)
    if run is not None:
        parser.set_defaults(func=run)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser, *, preset: bool = False) -> None:
    """`--model FILE.keras` or `--family` + `--weights` + `--model-arg key=value`, and with
    `preset` a third way: `--preset NAME_OR_PATH` (model, class names and protocol in one)."""
    from keras_vtn.models.families import FAMILIES

    group = parser.add_argument_group("model")
    if preset:
        group.add_argument(
            "--preset", metavar="NAME_OR_PATH",
            help="a classifier preset: a built-in name (keras_vtn.presets()), a preset folder "
                 "(save_to_preset, keras-vtn train), hf://owner/repo or kaggle://...; the "
                 "model, class names and sampling protocol come from it (instead of --model "
                 "or --family)")
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
    from keras_vtn.protocol import parse_model_args

    if args.model:
        return load_model(args.model)
    if not args.family:
        raise SystemExit("give --model FILE.keras or --family (and --weights)")
    sizes = {key: getattr(args, key, None) for key in ("num_frames", "image_size")}
    kwargs = {**defaults, **{k: v for k, v in sizes.items() if v is not None},
              **parse_model_args(args.model_arg)}
    return load_model(family=args.family, weights=args.weights, **kwargs)


# flags that name the model another way than a preset does
_NOT_WITH_PRESET = ("model", "family", "weights", "model_arg", "labels")


def preset_and_protocol(args):
    """`(classifier, protocol)` of `--preset`: the preset's `VideoClassifier` and its
    preprocessor's protocol, each protocol flag given overriding one field (`"aggregate"`
    too: the preset's way of averaging views)."""
    from keras_vtn.classifier import VideoClassifier
    from keras_vtn.protocol import PROTOCOL_FIELDS

    clashing = [name for name in _NOT_WITH_PRESET if getattr(args, name, None)]
    if clashing:
        flags = ", ".join("--" + name.replace("_", "-") for name in clashing)
        raise ValueError(f"--preset names the model, its class names and its protocol; "
                         f"drop {flags} (or drop --preset).")
    classifier = VideoClassifier.from_preset(args.preset)
    config = classifier.preprocessor.get_config()
    protocol = {key: config[key] for key in PROTOCOL_FIELDS}
    if isinstance(protocol["image_size"], list):
        height, width = protocol["image_size"]
        if height != width:
            raise ValueError(f"preset {args.preset!r} crops {height}×{width} pixels; the "
                             "command line samples square crops only (use VideoClassifier).")
        protocol["image_size"] = height
    given = {k: getattr(args, k) for k in PROTOCOL_FIELDS if getattr(args, k, None) is not None}
    protocol.update(given, aggregate=config["aggregate"])
    protocol["source"] = "; ".join(
        [f"from preset {args.preset}"] +
        ([", ".join("--" + k.replace("_", "-") for k in given)] if given else []))
    return classifier, protocol


def model_and_protocol(args):
    """`(model, protocol)`: the model the flags name and the sampling protocol to feed it
    (`--preset`: the preset's; else `keras_vtn.protocol.resolve_protocol`: flags, else the
    run's `config.json` or the registry entry, else the model's input shape)."""
    from keras_vtn.protocol import read_run_config, resolve_protocol

    if getattr(args, "preset", None):
        return preset_and_protocol(args)
    model = model_from_args(args)
    run_config, config_path = read_run_config(args.model)
    return model, resolve_protocol(args, model, run_config, config_path)


def model_label_names(args, model) -> tuple[list[str] | None, str]:
    """`(names, where from)` of the model's classes; names None when nothing says.

    A preset's class names; else `--labels` (a file or `kinetics400`), else the run's
    `labels.txt` next to `--model`, else Kinetics-400 for a 400-class model.
    """
    from keras_vtn.classifier import VideoClassifier
    from keras_vtn.data import KINETICS400_LABELS
    from keras_vtn.protocol import run_labels_path

    if isinstance(model, VideoClassifier):
        return list(model.label_names), f"preset {args.preset}"
    num_classes = model.output_shape[-1]
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


def labels_from_args(args, model) -> list[str]:
    """The model's class names, or `class_<i>` when nothing names them."""
    names, _ = model_label_names(args, model)
    return names if names is not None else [
        f"class_{i}" for i in range(model.output_shape[-1])]
