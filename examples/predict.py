"""Top-5 labels for video files (thin wrapper over `keras-vtn predict`).

    python examples/predict.py video.mp4 --family vivit --weights k400 \\
        --model-arg variant=factorised_encoder --frames-png frames.png
    python examples/predict.py clip.mp4 --model demo_output/run/model.keras

Labels: Kinetics-400 names for 400-class models, `labels.txt` next to a `.keras` model, or
`--labels FILE`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __name__ == "__main__":
    from keras_vtn.cli import main

    sys.exit(main(["predict", *sys.argv[1:]]))
