"""The `keras-vtn` command line.

Each sub-command is a module of this package (`add_parser` and its run function: arguments and
printing; the work is done by the library modules they call, imported when the command runs);
this module only dispatches. It also owns what every command shares: a console free of
TensorFlow's start-up chatter, and one-line errors for the usual mistakes (`--debug` shows the
traceback and TensorFlow's logs instead).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command name -> module providing `add_parser(subparsers)`; the parser sets `func(args) -> int`.
COMMANDS: dict[str, str] = {
    "benchmark": "keras_vtn.cli.benchmark",
    "check-videos": "keras_vtn.cli.check_videos",
    "convert": "keras_vtn.cli.convert",
    "data-service": "keras_vtn.cli.data_service",
    "evaluate": "keras_vtn.cli.evaluate",
    "export": "keras_vtn.cli.export",
    "predict": "keras_vtn.cli.predict",
    "prepare": "keras_vtn.cli.prepare",
    "reencode-videos": "keras_vtn.cli.reencode_videos",
    "train": "keras_vtn.cli.train",
}

PROG = "keras-vtn"
# Exit status of a user mistake, as argparse uses for a bad argument.
USER_ERROR = 2

# The start-up filter lives in the package's `__init__`, the one module that runs before
# TensorFlow loads (importing this module from there would upset `python -m keras_vtn.cli`).
import keras_vtn as _package  # noqa: E402

filter_startup_log = _package._filter_startup_log
is_command_line_process = _package._is_command_line_process


# ------------------------------------------------------------------------ one-line errors

# Python-API hints in messages of the data layer, said the command line's way.
_HINTS = {
    "prepare": [
        ("pass label_names=None to index the CSV's own labels",
         "drop --kinetics400 to index the CSV's own labels"),
        ("Pass label_names=None to use the folder names as classes",
         "Drop --kinetics400 to use the folder names as classes"),
    ],
    None: [
        ("pass label_names=None to index the CSV's own labels",
         "use --layout csv to index the CSV's own labels"),
        ("Pass label_names=None to use the folder names as classes",
         "Use --layout folders to use the folder names as classes"),
    ],
}

# keras_vtn/, the folder above this package
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raised_by_keras_vtn(error: BaseException) -> bool:
    """Whether the innermost frame of `error`'s traceback is this package's own code."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
    return filename.startswith(_PACKAGE_DIR + os.sep)


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that always mean a mistake in the input, whoever raised them."""
    from keras_vtn.weights.errors import (
        CheckpointError,
        FamilyNotAvailableError,
        NoReleasedWeightsError,
        UnknownWeightsError,
        WeightsDownloadError,
    )

    types: list[type[BaseException]] = [
        FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
        PermissionError,
        CheckpointError, FamilyNotAvailableError, NoReleasedWeightsError, UnknownWeightsError,
        WeightsDownloadError,
    ]
    for module, name in (("keras_vtn.data.tfrecord", "PrepareArgumentsError"),
                         ("keras_vtn.data.decode", "DecodeError")):
        error_type = getattr(sys.modules.get(module), name, None)
        if error_type is not None:
            types.append(error_type)
    return tuple(types)


def user_error_message(error: BaseException, command: str | None = None) -> str | None:
    """The one-line message for a user mistake, or None for a bug (which keeps its traceback).

    Mistakes are the package's own error types, missing or unreadable files, and `ValueError`s
    raised by keras_vtn's own argument checks. A `ValueError` from inside NumPy, Keras or
    TensorFlow is a bug of ours until shown otherwise, so it is not hidden.
    """
    if isinstance(error, _user_error_types()):
        pass
    elif isinstance(error, ValueError) and _raised_by_keras_vtn(error):
        pass
    else:
        return None
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {error.filename!r}"
        if isinstance(error, FileNotFoundError):
            text += "; check the path (relative paths start in the current folder)"
    else:
        text = str(error) or type(error).__name__
    for python_hint, cli_hint in _HINTS.get(command, _HINTS[None]):
        text = text.replace(python_hint, cli_hint)
    text = " ".join(text.split())  # one line, whatever the message's own layout
    where = f"{PROG} {command}" if command else PROG
    return f"{where}: error: {text}"


# ------------------------------------------------------------------------------- dispatch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Video transformers for Keras 3: convert, prepare, train."
    )
    parser.add_argument(
        "--debug", action="store_true",
        help="on an error, show the Python traceback (and TensorFlow's start-up log)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _check_model_file(args: argparse.Namespace) -> None:
    """A `--model` file that is not there: said before the command spends seconds loading."""
    path = getattr(args, "model", None)
    # Keras reports a missing .keras file as a generic ValueError from deep inside its loader.
    if isinstance(path, str) and path.endswith((".keras", ".h5")) and not os.path.exists(path):
        raise FileNotFoundError(2, "No saved model file", path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return USER_ERROR
    if args.debug:
        _check_model_file(args)
        return int(args.func(args) or 0)
    try:
        _check_model_file(args)
        return int(args.func(args) or 0)
    except Exception as error:  # noqa: BLE001  (sorted below: mistakes vs bugs)
        message = user_error_message(error, args.command)
        if message is None:
            raise
        # A progress bar may have left the cursor mid-line.
        sys.stdout.flush()
        print(message, file=sys.stderr)
        return USER_ERROR
