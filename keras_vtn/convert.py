"""`keras-vtn convert SRC [--family F] [--model-arg K=V] -o OUT`: original checkpoint -> Keras.

`OUT.weights.h5` holds the weights only; the architecture they need (family and builder
arguments) is written beside it as `OUT.config.json`, from which `keras_vtn.load_model(OUT)`
rebuilds the model. `OUT.keras` holds both in one file.
"""

from __future__ import annotations

import argparse
import json
import os

from keras_vtn.io_utils import atomic_path, write_json
from keras_vtn.models import families
from keras_vtn.weights import registry
from keras_vtn.weights.errors import CheckpointError

OUTPUT_SUFFIXES = (".weights.h5", ".keras")
_CONFIG_SUFFIX = ".config.json"
_CONFIG_FORMAT = "keras_vtn.model_config"

EXAMPLES = """examples:
  keras-vtn convert lin-vtn.pth -o lin_vtn.weights.h5
  keras-vtn convert path/to/hf_vivit_folder -o vivit.weights.h5
  keras-vtn convert hf_vivit_folder --model-arg num_frames=16 --model-arg image_size=64 -o v.keras
  keras-vtn convert ckpt_e30.pth --family laps --model-arg num_heads=4 -o laps.weights.h5
  keras-vtn convert k400 --family linear_vtn -o lin_vtn_k400.weights.h5
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert an original checkpoint (.pth/.pyth, Flax, HF folder) to Keras",
        description=(
            "Read an original checkpoint without torch/jax (nothing in it is executed), build "
            "the matching keras_vtn model from the architecture found in the file (HF folders: "
            "with their config.json), map the weights with the family converter, check that "
            "every variable is covered with the right shape, and save it. A .weights.h5 output "
            "gets its architecture written beside it as NAME.config.json, which "
            "keras_vtn.load_model('NAME.weights.h5') reads; a .keras output holds both."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "src", help="checkpoint file or folder, or a registry name such as k400 (needs --family)"
    )
    parser.add_argument(
        "--family",
        choices=sorted(families.FAMILIES),
        help="model family; detected from the checkpoint's tensor names when omitted",
    )
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="builder argument the checkpoint does not store, e.g. num_heads=6 for a LAPS "
             "checkpoint of a non-standard width (repeatable; values are JSON: 6, true, [2,16,16])",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="output file: NAME.weights.h5 or NAME.keras"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(func=run)
    return parser


def parse_model_args(items: list[str]) -> dict:
    """`["num_heads=6", "variant=spatio_temporal"]` -> `{"num_heads": 6, "variant": "..."}`.

    Values are read as JSON where they parse (numbers, booleans, lists), else kept as text.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-arg {item!r}: expected KEY=VALUE, e.g. num_heads=6.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def model_config_path(weights_path: str | os.PathLike) -> str:
    """Where the architecture of `NAME.weights.h5` is recorded: `NAME.config.json`."""
    path = os.fspath(weights_path)
    stem = path[: -len(".weights.h5")] if path.endswith(".weights.h5") else path
    return stem + _CONFIG_SUFFIX


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # NumPy scalars
        return value.item()
    return value


def write_model_config(weights_path: str | os.PathLike, family: str, config: dict) -> str:
    """Records `family` and the builder arguments beside `weights_path` (atomically)."""
    target = model_config_path(weights_path)
    payload = {"format": _CONFIG_FORMAT, "family": family, "config": _jsonable(config),
               "weights": os.path.basename(os.fspath(weights_path))}
    write_json(target, payload, indent=2, sort_keys=True)
    return target


def read_model_config(weights_path: str | os.PathLike) -> tuple[str, dict]:
    """`(family, builder arguments)` recorded beside a converted `.weights.h5`."""
    target = model_config_path(weights_path)
    if not os.path.exists(os.fspath(weights_path)):
        raise FileNotFoundError(2, "No weights file", os.fspath(weights_path))
    if not os.path.exists(target):
        raise FileNotFoundError(
            f"{target!r} is missing: it records which architecture {os.fspath(weights_path)!r} "
            "fits (`keras-vtn convert` writes it). Without it, build the model yourself with "
            "the same arguments and pass weights=PATH, e.g. keras_vtn.ViViT(weights=PATH, ...)."
        )
    try:
        with open(target, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{target!r} is not valid JSON ({error}).") from None
    if (not isinstance(payload, dict) or payload.get("format") != _CONFIG_FORMAT
            or not isinstance(payload.get("config"), dict)
            or payload.get("family") not in families.FAMILIES):
        raise CheckpointError(
            f"{target!r} is not a keras_vtn model config (written by `keras-vtn convert`)."
        )
    return payload["family"], payload["config"]


def convert(src: str, output: str, family: str | None = None, progress=None,
            model_args: dict | None = None) -> dict:
    """Convert `src` into `output` (`.weights.h5` + `.config.json`, or `.keras`).

    `model_args` are builder arguments the checkpoint does not store (LAPS head counts, clip
    size); they override what is read from it. Returns a short summary dict.
    """
    from keras_vtn.weights import download, loading, readers

    def tick(value: float) -> None:
        if progress is not None:
            progress(value)

    if not output.endswith(OUTPUT_SUFFIXES):
        raise ValueError(
            f"output {output!r} must end with .weights.h5 (weights, architecture in "
            ".config.json beside) or .keras (whole model)."
        )
    path = os.path.expanduser(src)
    if not os.path.exists(path):
        if family is None:
            raise ValueError(
                f"{src!r} is not a file or folder; check the path, or pass --family to fetch "
                "a registry name such as k400."
            )
        entry = registry.find_entry(src, family)
        path = download.fetch_entry(entry)
    fmt = readers.sniff_format(path)
    if fmt in loading.KERAS_FORMATS:
        raise ValueError(f"{src!r} is already a Keras file ({fmt}); nothing to convert.")
    tick(5)
    state = readers.read_checkpoint(path)
    tick(40)
    family = family or families.detect_family(state)
    spec = families.get_family(family)
    if fmt == "hf_folder":
        # Head counts and activations are in config.json, not in the tensors.
        config = spec.config_from_checkpoint(state, readers.read_hf_config(path))
    else:
        config = spec.config_from_checkpoint(state)
    config = {**config, **(model_args or {})}
    builder, converter = families.get_builder(family), spec.convert
    model = builder(weights=None, **config)
    # Position tables are saved at this clip size, so a rebuild must use the same one.
    config.update(_clip_size(model))
    tick(50)
    mapping = converter(state, model)
    tick(60)
    total = max(len(mapping), 1)
    report = loading.assign_weights(model, mapping, progress=lambda i: tick(60 + 35 * i / total))
    config_path = None
    if output.endswith(".keras"):
        with atomic_path(output, suffix=".keras") as tmp:
            model.save(tmp)
    else:
        loading.save_weights_atomically(model, output)
        config_path = write_model_config(output, family, config)
    tick(100)
    return {
        "family": family,
        "config": config,
        "variables": len(report.assigned),
        "parameters": int(model.count_params()),
        "output": output,
        "config_path": config_path,
    }


def _clip_size(model) -> dict:
    """`num_frames` and `image_size` of a video model's input (what the builders take)."""
    shape = model.input_shape
    if isinstance(shape, dict):
        shape = shape.get("frames", next(iter(shape.values())))
    elif isinstance(shape, list):
        shape = shape[0]
    if len(shape) != 5 or None in shape[1:4]:
        return {}
    frames, height, width = shape[1:4]
    return {"num_frames": frames, "image_size": height if height == width else [height, width]}


def run(args: argparse.Namespace) -> int:
    model_args = parse_model_args(args.model_arg)
    if os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it.")
    import keras

    bar = keras.utils.Progbar(100, unit_name="%")
    try:
        summary = convert(args.src, args.output, args.family, progress=lambda v: bar.update(v),
                          model_args=model_args)
    except BaseException as error:
        print()  # end the progress bar's line before the error is reported
        if (not isinstance(error, ValueError) or isinstance(error, CheckpointError)
                or "num_heads" not in str(error)):
            raise
        # Checkpoints store widths but not how they are split into heads.
        raise ValueError(
            f"{error} The checkpoint does not store head counts: pass them with "
            "--model-arg, e.g. --model-arg num_heads=2."
        ) from error
    print()
    print(
        f"wrote {summary['output']}: {summary['family']}, {summary['variables']} variables, "
        f"{summary['parameters']:,} parameters"
    )
    if summary["config_path"]:
        print(f"wrote {summary['config_path']}: the architecture; "
              f"keras_vtn.load_model({summary['output']!r}) rebuilds the model")
    return 0
