"""`keras-vtn export MODEL.keras --format savedmodel|onnx|litert -o OUT`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from keras_vtn.cli.arguments import add_command
from keras_vtn.export import FORMATS


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "export", run,
        help="export a saved .keras model to SavedModel, ONNX or LiteRT",
        description=(
            "Load a .keras model and write it as a TensorFlow SavedModel folder, an ONNX file "
            "(onnxruntime) or a LiteRT .tflite file with builtin ops only. Formats the current "
            "KERAS_BACKEND cannot write are made under the TensorFlow backend."
        ),
    )
    parser.add_argument("model", help="a model saved with model.save('NAME.keras')")
    parser.add_argument("--format", required=True, choices=FORMATS, help="artifact format")
    parser.add_argument(
        "-o", "--output", required=True, help="output folder (savedmodel) or file (.onnx, .tflite)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the artifact in its runtime on a random clip and print max |Δlogit|",
    )
    return parser


def _fail(message: str, code: int = 2) -> int:
    print(f"keras-vtn export: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.model):
        return _fail(f"{args.model}: no such file.")
    if not args.model.endswith(".keras"):
        return _fail(f"{args.model}: expected a .keras model file (model.save('NAME.keras')).")
    if args.format == "litert" and not args.output.endswith(".tflite"):
        return _fail(f"a LiteRT output must end with .tflite, got {args.output!r}.")
    if os.path.exists(args.output) and not args.overwrite:
        return _fail(f"{args.output} exists; pass --overwrite.")

    import keras

    from keras_vtn.export import ROUTES, ExportError, check_artifact, export_model

    if keras.backend.backend() not in ROUTES[args.format]:
        return _rerun_with_backend(args, ROUTES[args.format][0])

    import keras_vtn  # noqa: F401  (registers the package's layers for deserialisation)

    try:
        model = keras.saving.load_model(args.model)
    except Exception as err:
        return _fail(f"cannot load {args.model}: {_one_line(err)}")
    if args.overwrite and os.path.isdir(args.output):
        import shutil

        shutil.rmtree(args.output)
    try:
        export_model(model, args.output, args.format)
    except (ExportError, ValueError) as err:
        return _fail(_one_line(err), 1)
    print(f"wrote {args.output} ({args.format}, {keras.backend.backend()} backend)")
    if args.check:
        delta = check_artifact(model, args.output, args.format)
        print(f"max |Δlogit| against Keras: {delta:.3g}")
    return 0


def _rerun_with_backend(args: argparse.Namespace, backend: str) -> int:
    """The same command in a fresh interpreter (the backend is fixed once keras loads)."""
    command = [sys.executable, "-m", "keras_vtn.cli", "export", args.model,
               "--format", args.format, "-o", args.output]
    command += ["--overwrite"] * args.overwrite + ["--check"] * args.check
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.run(command, env=env, check=False).returncode


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
