"""`keras-vtn train`: train a video transformer from a paper's recipe, end with a preset.

Start from a training recipe (`--preset`, see keras_vtn/training/presets.py for their sources)
and override any field:

    keras-vtn train --preset vivit_k400 --data-root /data/kinetics400 --batch-size 32 \\
        --precision mixed_bfloat16 --distribution mirrored --output runs/vivit

    # the built-in motion task with a tiny ViViT (what `make demo` trains)
    keras-vtn train --preset motion_demo --family vivit --layout csv \\
        --model-arg variant=factorised_encoder --model-arg hidden_dim=64 ...

Restarting the same command after a crash resumes from the last finished epoch. The run ends
by writing a classifier preset of its best weights (OUTPUT/preset, or --preset-dir) with the
class names and the run's evaluation protocol: `keras-vtn predict --preset OUTPUT/preset
video.mp4` and `keras_vtn.VideoClassifier.from_preset` load it.
`examples/train_kinetics400.py` takes the same options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from keras_vtn.cli.arguments import add_command


def _pair(text: str):
    parts = [int(p) for p in text.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _floats(text: str):
    return tuple(float(p) for p in text.split(","))


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training options of `keras-vtn train` and `examples/train_kinetics400.py`."""
    from keras_vtn.models.families import FAMILIES
    from keras_vtn.training import DISTRIBUTIONS, PRECISIONS, PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), help="a paper's recipe to start from")
    m = p.add_argument_group("model")
    m.add_argument("--family", choices=sorted(FAMILIES))
    m.add_argument("--variant", help="ViViT variant (e.g. factorised_encoder)")
    m.add_argument("--size", help="size preset (base, large, ...) or LAPS backbone")
    m.add_argument("--init", dest="weights",
                   help="imagenet21k | k400 (fine-tune) | none | a checkpoint path")
    m.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any builder argument (JSON value), repeatable")
    m.add_argument("--dropout-rate", type=float)
    m.add_argument("--drop-path-rate", type=float, help="stochastic depth")
    d = p.add_argument_group("data")
    d.add_argument("--data-root", required=True)
    d.add_argument("--layout", choices=["kinetics400", "csv", "folders", "tfrecord"])
    d.add_argument("--train-split")
    d.add_argument("--val-split", help="'none' to train without validation")
    d.add_argument("--num-frames", type=int)
    d.add_argument("--sampling", choices=["dense", "uniform", "time"])
    d.add_argument("--frame-stride", type=int)
    d.add_argument("--target-fps", type=float)
    d.add_argument("--image-size", type=int)
    d.add_argument("--short-side", type=_pair, help="N or MIN,MAX (scale jitter)")
    d.add_argument("--no-flip", dest="flip", action="store_false", default=None)
    d.add_argument("--color-jitter", type=_floats, help="brightness,contrast,saturation,hue")
    d.add_argument("--rand-augment", type=_floats, help="NUM_OPS,MAGNITUDE")
    d.add_argument("--mixup-alpha", type=float)
    d.add_argument("--cutmix-alpha", type=float)
    d.add_argument("--val-num-clips", type=int)
    d.add_argument("--val-num-crops", type=int, choices=[1, 3])
    d.add_argument("--shuffle-frames", action="store_true", default=None,
                   help="control experiment: destroy the frame order of every clip")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int)
    o.add_argument("--steps-per-epoch", type=int)
    o.add_argument("--batch-size", type=int, help="global batch (all replicas)")
    o.add_argument("--optimizer", choices=["sgd", "nesterov", "adamw", "adam"])
    o.add_argument("--nesterov", action="store_true", default=None)
    o.add_argument("--momentum", type=float)
    o.add_argument("--lr", dest="learning_rate", type=float,
                   help="base LR at --base-batch-size (scaled to the global batch)")
    o.add_argument("--base-batch-size", type=int)
    o.add_argument("--lr-scaling", choices=["linear", "sqrt", "none"])
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--schedule", choices=["cosine", "step", "constant"])
    o.add_argument("--warmup-epochs", type=float)
    o.add_argument("--milestones", type=_floats, help="epochs of x lr-factor steps, e.g. 10,15")
    o.add_argument("--lr-factor", type=float)
    o.add_argument("--label-smoothing", type=float)
    o.add_argument("--clipnorm", type=float, help="global gradient-norm clip")
    o.add_argument("--grad-accum", dest="gradient_accumulation_steps", type=int)
    r = p.add_argument_group("run")
    r.add_argument("--precision", choices=PRECISIONS)
    r.add_argument("--distribution", choices=DISTRIBUTIONS,
                   help="multi-worker: KERAS_BACKEND=jax + KERAS_DISTRIBUTION_* variables "
                   "(see keras_vtn.training.distribution)")
    r.add_argument("--virtual-cpus", type=int,
                   help="split the CPU into N logical devices (to try --distribution on a "
                   "laptop; TensorFlow and JAX)")
    r.add_argument("--output", dest="output_dir", default="runs/train")
    r.add_argument("--seed", type=int)
    r.add_argument("--tensorboard", action="store_true", default=None)
    r.add_argument("--no-backup", dest="backup", action="store_false", default=None)
    r.add_argument("--verbose", type=int, default=2)


def add_parser(subparsers) -> None:
    parser = add_command(
        subparsers, "train", run_train, raw=True, description=__doc__,
        help="train from a paper's recipe; ends with a preset of the best weights",
    )
    add_train_arguments(parser)
    parser.add_argument("--preset-dir",
                        help="where the classifier preset of the best weights goes "
                             "(default: OUTPUT/preset)")


def config_from_args(args):
    """The `TrainConfig` of the parsed training options: the recipe, then each flag given."""
    from keras_vtn.models.families import FAMILIES
    from keras_vtn.protocol import parse_model_args
    from keras_vtn.training import TrainConfig

    fields = {f for f in TrainConfig.__dataclass_fields__}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    # "none" means None, applied after the preset (whose values fill unset fields).
    cleared = [k for k in ("weights", "val_split") if overrides.get(k) == "none"]
    for key in cleared:
        overrides.pop(key)
    if args.preset:
        from keras_vtn.training import get_preset

        model_kwargs = get_preset(args.preset).get("model_kwargs", {})
    else:
        model_kwargs = {}
    if args.family and args.preset and args.family != get_preset(args.preset).get("family"):
        model_kwargs = {}  # another family: the preset's architecture args do not apply
    if args.variant:
        model_kwargs["variant"] = args.variant
    if args.size:
        family = FAMILIES.get(args.family or "")
        model_kwargs[family.size_argument if family else "size"] = args.size
    model_kwargs.update(parse_model_args(args.model_arg))
    overrides["model_kwargs"] = model_kwargs
    if args.preset:
        config = TrainConfig.from_preset(args.preset, **overrides)
    else:
        config = TrainConfig(**overrides)
    for key in cleared:
        setattr(config, key, None)
    return config


def train_from_args(args) -> dict:
    """Trains per the parsed options; returns `keras_vtn.training.train`'s summary (with
    `"config"`, the `TrainConfig` it ran)."""
    if args.virtual_cpus:
        from keras_vtn.training import virtual_cpu_devices

        virtual_cpu_devices(args.virtual_cpus)
    from keras_vtn.training import train

    config = config_from_args(args)
    try:
        result = train(config)
    except BaseException:
        if config.distribution != "multi-worker":
            raise
        # A failed collective (another worker died): exit now. A normal exit would wait in
        # JAX's shutdown barrier for the dead worker until the heartbeat timeout.
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    result["config"] = config
    return result


def print_summary(result: dict) -> None:
    """The run's summary as JSON, without the per-epoch history and the live objects."""
    skipped = ("history", "full_history", "model", "config")
    print(json.dumps({k: v for k, v in result.items() if k not in skipped}, indent=2))


def save_training_preset(result: dict, preset_dir: str | os.PathLike, *,
                         recipe: str | None = None) -> str:
    """Writes the run's best weights (the last ones when no best was recorded) as a
    classifier preset with its class names and the run's evaluation protocol (what
    `keras-vtn evaluate --model OUTPUT/model.keras` reads from its config.json)."""
    from keras_vtn.classifier import VideoClassifier
    from keras_vtn.preprocessing import VideoPreprocessor
    from keras_vtn.protocol import read_run_config, resolve_protocol

    model, config = result["model"], result["config"]
    best_path = os.path.join(config.output_dir, "best.weights.h5")
    if result.get("best_checkpoint"):
        model.load_weights(best_path)
    run_config, config_path = read_run_config(os.path.join(config.output_dir, "model.keras"))
    protocol = resolve_protocol(argparse.Namespace(), model, run_config, config_path)
    protocol.pop("source")
    preprocessor = VideoPreprocessor(**protocol)
    classifier = VideoClassifier(model, preprocessor, result["label_names"])
    best = result.get("best_checkpoint")
    metadata = {
        "source": {"training_run": os.path.abspath(config.output_dir),
                   "recipe": recipe,
                   "weights": "best.weights.h5" if best else "the last epoch's"},
        "training": {"epochs_run": result.get("epochs_run"), "best": best,
                     "validation_protocol": "1 centre clip per video" if best and
                     best["monitor"].startswith("val_") else None},
    }
    return classifier.save_to_preset(preset_dir, metadata=metadata)


def run_train(args) -> int:
    result = train_from_args(args)
    print_summary(result)
    config = result["config"]
    if config.distribution == "multi-worker":
        import jax

        if jax.process_index() != 0:
            return 0  # process 0 writes the preset (the others write under worker_<id>/)
    path = save_training_preset(
        result, args.preset_dir or os.path.join(config.output_dir, "preset"),
        recipe=args.preset)
    print(f"wrote the preset {path}: keras-vtn predict --preset {path} VIDEO")
    return 0
