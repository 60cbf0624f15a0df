"""Training-step time (forward + backward + SGD update) against the reference's.

A thin front-end of `benchmarks.models --mode train`: Keras `train_on_batch` (TensorFlow with
XLA, JAX jitted, PyTorch eager) versus the original PyTorch model with `torch.optim.SGD` and
cross-entropy, same batch, same machine, same invocation.

    python -m benchmarks.train_step --configs laps_visformer_s_8 --batch 2 \\
        --reference-dir /path/to/checkouts --reference-python /path/to/venv/bin/python
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import models

DEFAULT_OUT = Path("benchmarks/results/train_step.json")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in argv:
        argv += ["--out", str(DEFAULT_OUT)]
    if "--configs" not in argv:
        argv += ["--configs", "laps_visformer_s_8"]
    if "--batch" not in argv:
        argv += ["--batch", "2"]
    return models.main(["--mode", "train", *argv])


if __name__ == "__main__":
    sys.exit(main())
