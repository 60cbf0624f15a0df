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


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model FILE.keras` or `--family` + `--weights` + `--model-arg key=value`."""
    from keras_vtn.models.families import FAMILIES

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
    from keras_vtn.convert import parse_model_args
    from keras_vtn.models.families import load_model

    if args.model:
        return load_model(args.model)
    if not args.family:
        raise SystemExit("give --model FILE.keras or --family (and --weights)")
    sizes = {key: getattr(args, key, None) for key in ("num_frames", "image_size")}
    kwargs = {**defaults, **{k: v for k, v in sizes.items() if v is not None},
              **parse_model_args(args.model_arg)}
    return load_model(family=args.family, weights=args.weights, **kwargs)


def model_and_protocol(args):
    """`(model, protocol)`: the model the flags name and the sampling protocol to feed it
    (`keras_vtn.protocol.resolve_protocol`: flags, else the run's `config.json` or the
    registry entry, else the model's input shape)."""
    from keras_vtn.protocol import read_run_config, resolve_protocol

    model = model_from_args(args)
    run_config, config_path = read_run_config(args.model)
    return model, resolve_protocol(args, model, run_config, config_path)


def model_label_names(args, num_classes: int) -> tuple[list[str] | None, str]:
    """`(names, where from)` of the model's classes; names None when nothing says.

    `--labels` (a file or `kinetics400`), else the run's `labels.txt` next to `--model`, else
    Kinetics-400 for a 400-class model.
    """
    from keras_vtn.data import KINETICS400_LABELS
    from keras_vtn.protocol import run_labels_path

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
