"""Train a keras_vtn video transformer on Kinetics-400 (or any Kinetics-style dataset).

Start from a paper's recipe and override any field:

    python examples/train_kinetics400.py --preset vivit_k400 --data-root /data/kinetics400 \\
        --batch-size 32 --precision mixed_bfloat16 --distribution mirrored --output runs/vivit

    # the built-in motion task with a tiny ViViT (what `make demo` trains)
    python examples/train_kinetics400.py --preset motion_demo --family vivit --layout csv \\
        --model-arg variant=factorised_encoder --model-arg hidden_dim=64 ...

Restarting the same command after a crash resumes from the last finished epoch.
Presets: vivit_k400, vivit_epic_kitchens, vivit_ssv2, vtn_k400, linear_vtn_k400, laps_k400,
motion_demo (see keras_vtn/training/presets.py for their sources).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _pair(text: str):
    parts = [int(p) for p in text.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _floats(text: str):
    return tuple(float(p) for p in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    from keras_vtn.models.families import FAMILIES
    from keras_vtn.training import DISTRIBUTIONS, PRECISIONS, PRESETS

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return p


def config_from_args(args):
    from keras_vtn.convert import parse_model_args
    from keras_vtn.models.families import FAMILIES
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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
    result.pop("model")
    print(json.dumps({k: v for k, v in result.items() if k not in ("history", "full_history")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
