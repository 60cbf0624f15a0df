"""`keras-vtn convert SRC [--family F] -o OUT.weights.h5`: original checkpoint -> Keras weights."""

from __future__ import annotations

import argparse
import os
import sys

from keras_vtn.weights import registry
from keras_vtn.weights.errors import (
    CheckpointError,
    FamilyNotAvailableError,
    NoReleasedWeightsError,
    UnknownWeightsError,
    WeightsDownloadError,
)

_USER_ERRORS = (
    CheckpointError,
    FamilyNotAvailableError,
    NoReleasedWeightsError,
    UnknownWeightsError,
    WeightsDownloadError,
    FileNotFoundError,
    ValueError,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert an original checkpoint (.pth/.pyth, Flax, HF folder) to .weights.h5",
        description=(
            "Read an original checkpoint without torch/jax (nothing in it is executed), build "
            "the matching keras_vtn model from the architecture found in the file, map the "
            "weights with the family converter, check that every variable is covered with the "
            "right shape, and save Keras weights."
        ),
    )
    parser.add_argument(
        "src", help="checkpoint file or folder, or a registry name such as k400 (needs --family)"
    )
    parser.add_argument(
        "--family",
        choices=sorted(registry.FAMILIES),
        help="model family; detected from the checkpoint's tensor names when omitted",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="output file, must end with .weights.h5"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(func=run)
    return parser


def detect_family(state: dict) -> str:
    """Guess the model family from characteristic tensor names."""
    names = list(state)

    def has(fragment: str) -> bool:
        return any(fragment in name for name in names)

    if has("temporal_transformer.layers.") and has(".fn.fn.proj_k"):
        return "linear_vtn"
    if has("temporal_encoder.encoder.layer."):
        return "vtn"
    if has("SpatialTransformer/") or has("vivit.embeddings.") or has("cls_TemporalTransformer"):
        return "vivit"
    if has("Transformer/encoderblock_") and any(
        n.endswith("embedding/kernel") and state[n].ndim == 5 for n in names
    ):
        return "vivit"
    if has("module.base_model."):
        return "laps"
    if has("Transformer/encoderblock_") or has("blocks.0.attn.qkv.weight"):
        raise ValueError(
            "this looks like an image ViT checkpoint, which only initialises part of a video "
            "model; pass it as weights=PATH to a builder (e.g. keras_vtn.ViViT) instead."
        )
    raise ValueError(
        "cannot tell the model family from the tensor names; pass --family "
        f"({', '.join(sorted(registry.FAMILIES))})."
    )


def convert(src: str, output: str, family: str | None = None, progress=None) -> dict:
    """Convert `src` into `output` (.weights.h5); returns a short summary dict."""
    from keras_vtn.weights import download, loading, readers

    def tick(value: float) -> None:
        if progress is not None:
            progress(value)

    if not output.endswith(".weights.h5"):
        raise ValueError(f"output {output!r} must end with .weights.h5 (Keras' weights format).")
    path = os.path.expanduser(src)
    if not os.path.exists(path):
        if family is None:
            raise ValueError(f"{src!r} is not a file; to fetch a registry name pass --family.")
        entry = registry.find_entry(src, family)
        path = download.fetch_entry(entry)
    fmt = readers.sniff_format(path)
    if fmt in loading.KERAS_FORMATS:
        raise ValueError(f"{src!r} is already a Keras file ({fmt}); nothing to convert.")
    tick(5)
    state = readers.read_checkpoint(path)
    tick(40)
    family = family or detect_family(state)
    config = registry.family_function(family, "config_from_checkpoint")(state)
    builder = registry.family_function(family, "builder")
    converter = registry.family_function(family, "converter")
    model = builder(weights=None, **config)
    tick(50)
    mapping = converter(state, model)
    tick(60)
    total = max(len(mapping), 1)
    report = loading.assign_weights(model, mapping, progress=lambda i: tick(60 + 35 * i / total))
    loading.save_weights_atomically(model, output)
    tick(100)
    return {
        "family": family,
        "config": config,
        "variables": len(report.assigned),
        "parameters": int(model.count_params()),
        "output": output,
    }


def run(args: argparse.Namespace) -> int:
    if os.path.exists(args.output) and not args.overwrite:
        print(f"keras-vtn convert: {args.output} exists; pass --overwrite.", file=sys.stderr)
        return 2
    import keras

    bar = keras.utils.Progbar(100, unit_name="%")
    try:
        summary = convert(args.src, args.output, args.family, progress=lambda v: bar.update(v))
    except _USER_ERRORS as err:
        print(f"\nkeras-vtn convert: error: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary['output']}: {summary['family']}, {summary['variables']} variables, "
        f"{summary['parameters']:,} parameters"
    )
    return 0
