"""Train a keras_vtn video transformer on Kinetics-400 (or any Kinetics-style dataset).

Start from a paper's recipe and override any field:

    python examples/train_kinetics400.py --preset vivit_k400 --data-root /data/kinetics400 \\
        --batch-size 32 --precision mixed_bfloat16 --distribution mirrored --output runs/vivit

    # the built-in motion task with a tiny ViViT (what `make demo` trains)
    python examples/train_kinetics400.py --preset motion_demo --family vivit --layout csv \\
        --model-arg variant=factorised_encoder --model-arg hidden_dim=64 ...

Restarting the same command after a crash resumes from the last finished epoch.
Presets: vivit_k400, vivit_epic_kitchens, vivit_ssv2, vtn_k400, linear_vtn_k400, laps_k400,
motion_demo (see keras_vtn/training/presets.py for their sources). `keras-vtn train` takes
the same options and ends by writing a classifier preset of the best weights.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    """The options of `keras-vtn train` (one parser: keras_vtn.cli.train)."""
    from keras_vtn.cli.train import add_train_arguments

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    return parser


def main(argv=None) -> int:
    from keras_vtn.cli.train import print_summary, train_from_args

    print_summary(train_from_args(build_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
