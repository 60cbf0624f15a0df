"""`keras-vtn convert`: an original checkpoint to a Keras model file or a preset folder.

Read an original checkpoint without torch/jax (nothing in it is executed), build the matching
keras_vtn model from the architecture found in the file (HF folders: with their config.json),
map the weights with the family converter, check that every variable is covered with the
right shape, and save it. A .weights.h5 output gets its architecture written beside it as
NAME.config.json, which keras_vtn.load_model('NAME.weights.h5') reads; a .keras output holds
both. --to-preset DIR writes a classifier preset instead (model, class names, sampling
protocol, the source checkpoint's sha256), which keras-vtn predict --preset DIR and
keras_vtn.VideoClassifier.from_preset(DIR) load; --preset NAME writes a built-in preset
(downloaded and converted from the registry's original checkpoint) to a folder.
"""

from __future__ import annotations

import os

from keras_vtn.cli.arguments import add_command

EXAMPLES = """examples:
  keras-vtn convert lin-vtn.pth -o lin_vtn.weights.h5
  keras-vtn convert path/to/hf_vivit_folder -o vivit.weights.h5
  keras-vtn convert hf_vivit_folder --model-arg num_frames=16 --model-arg image_size=64 -o v.keras
  keras-vtn convert ckpt_e30.pth --family laps --model-arg num_heads=4 -o laps.weights.h5
  keras-vtn convert k400 --family linear_vtn -o lin_vtn_k400.weights.h5
  keras-vtn convert ckpt_e30.pth --family laps --model-arg num_heads=4 --to-preset laps_preset
  keras-vtn convert --preset vivit_b16x2_k400 --to-preset presets/vivit_b16x2_k400
"""


def add_parser(subparsers) -> None:
    from keras_vtn.models import families

    parser = add_command(
        subparsers, "convert", run_convert, raw=True, description=__doc__, epilog=EXAMPLES,
        help="convert an original checkpoint (.pth/.pyth, Flax, HF folder) to Keras or a preset",
    )
    parser.add_argument(
        "src", nargs="?",
        help="checkpoint file or folder, or a registry name such as k400 (needs --family)")
    parser.add_argument(
        "--family", choices=sorted(families.FAMILIES),
        help="model family; detected from the checkpoint's tensor names when omitted")
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="builder argument the checkpoint does not store, e.g. num_heads=6 for a LAPS "
             "checkpoint of a non-standard width (repeatable; values are JSON: 6, true, [2,16,16])")
    output = parser.add_argument_group("output (one of)")
    output.add_argument("-o", "--output",
                        help="NAME.weights.h5 or NAME.keras (with --preset: the preset folder)")
    output.add_argument("--to-preset", metavar="DIR", help="write a classifier preset folder")
    preset = parser.add_argument_group("presets")
    preset.add_argument("--preset", metavar="NAME",
                        help="instead of SRC: a built-in preset name (keras_vtn.presets()), "
                             "hf://owner/repo or kaggle://..., written to the output folder")
    preset.add_argument("--labels", metavar="FILE",
                        help="class names for the preset, one per line (default: the "
                             "registry's dataset, Kinetics-400 for a 400-class head, else "
                             "class_<i>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _destination(args) -> tuple[str, bool]:
    """`(path, is a preset folder)` of the output the flags ask for."""
    if args.output and args.to_preset:
        raise ValueError("give one output: -o FILE (a Keras file) or --to-preset DIR.")
    if bool(args.src) == bool(args.preset):
        raise ValueError("give a checkpoint to convert (SRC) or --preset NAME, not "
                         f"{'both' if args.src else 'neither'}.")
    if args.preset:
        if args.family or args.model_arg:
            raise ValueError("--preset names the whole model; drop --family and --model-arg.")
        if not (args.output or args.to_preset):
            raise ValueError("--preset NAME needs the folder to write: --to-preset DIR.")
        return args.output or args.to_preset, True
    if not (args.output or args.to_preset):
        raise ValueError("give the output: -o NAME.weights.h5 / NAME.keras, or --to-preset DIR.")
    if args.labels and not args.to_preset:
        raise ValueError("--labels names a preset's classes: use it with --to-preset DIR.")
    return args.to_preset or args.output, bool(args.to_preset)


def run_convert(args) -> int:
    from keras_vtn.convert import convert, convert_to_preset, materialize_preset, read_label_file
    from keras_vtn.protocol import parse_model_args
    from keras_vtn.weights.errors import CheckpointError

    model_args = parse_model_args(args.model_arg)
    target, preset_output = _destination(args)
    if os.path.exists(target) and not args.overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it.")
    labels = read_label_file(args.labels) if args.labels else None
    if args.preset:
        path = materialize_preset(args.preset, target, labels)
        print(f"wrote the preset {path} ({args.preset}): "
              f"keras-vtn predict --preset {path} VIDEO")
        return 0
    import keras

    bar = keras.utils.Progbar(100, unit_name="%")
    try:
        if preset_output:
            summary = convert_to_preset(args.src, target, args.family,
                                        progress=lambda v: bar.update(v),
                                        model_args=model_args, label_names=labels)
        else:
            summary = convert(args.src, target, args.family, progress=lambda v: bar.update(v),
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
    if preset_output:
        print(f"wrote the preset {summary['preset_dir']}: {summary['family']}, "
              f"{summary['num_classes']} classes, from {summary['source']}; "
              f"keras-vtn predict --preset {summary['preset_dir']} VIDEO")
        return 0
    print(
        f"wrote {summary['output']}: {summary['family']}, {summary['variables']} variables, "
        f"{summary['parameters']:,} parameters"
    )
    if summary["config_path"]:
        print(f"wrote {summary['config_path']}: the architecture; "
              f"keras_vtn.load_model({summary['output']!r}) rebuilds the model")
    return 0
