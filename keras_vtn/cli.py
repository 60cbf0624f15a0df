"""The `keras-vtn` command line.

Each sub-command lives next to the code it wraps; this module only dispatches, so
`keras-vtn --help` stays fast and an area's heavy imports happen only when its command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# TensorFlow's start-up chatter (oneDNN, CUDA probing) is noise in a command line tool.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# command name -> module providing `add_parser(subparsers)`; the parser sets `func(args) -> int`.
COMMANDS: dict[str, str] = {
    "check-videos": "keras_vtn.data.check",
    "convert": "keras_vtn.weights.cli",
    "prepare": "keras_vtn.data.tfrecord",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-vtn", description="Video transformers for Keras 3: convert, prepare, train."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
