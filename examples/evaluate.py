"""Multi-view evaluation of a video classifier (thin wrapper over `keras-vtn evaluate`).

    python examples/evaluate.py --model runs/vivit/model.keras --data-root /data/kinetics400 \\
        --num-clips 4 --num-crops 3 --aggregate logits --output runs/vivit/eval

    python examples/evaluate.py --family vivit --weights k400 \\
        --model-arg variant=factorised_encoder --data-root /data/kinetics400 \\
        --num-frames 32 --num-clips 4 --num-crops 3

Writes `evaluation.json` (protocol "frames×clips×crops", top-1/top-5, per-class accuracy,
confusion matrix) and `confusion_matrix.png` into --output.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __name__ == "__main__":
    from keras_vtn.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
