"""Shared pieces of the training tests (a uniquely named module, imported by the tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The smallest ViViT factorised encoder that still learns the motion task (8 frames, 32 px).
TINY_VIVIT = dict(
    variant="factorised_encoder", tubelet_size=[2, 8, 8], hidden_dim=32, num_heads=2,
    mlp_dim=64, num_spatial_layers=1, num_temporal_layers=1,
)


def model_args(kwargs: dict) -> list[str]:
    out = []
    for key, value in kwargs.items():
        out += ["--model-arg", f"{key}={json.dumps(value)}"]
    return out


def train_command(data_root, output, *, epochs=2, batch_size=4, extra=(), model=None):
    """`examples/train_kinetics400.py` on the motion data with a tiny ViViT, no validation."""
    return [
        sys.executable, str(REPO / "examples" / "train_kinetics400.py"),
        "--preset", "motion_demo", "--family", "vivit", *model_args(model or TINY_VIVIT),
        "--data-root", str(data_root), "--layout", "csv", "--val-split", "none",
        "--epochs", str(epochs), "--batch-size", str(batch_size), "--output", str(output),
        "--verbose", "0", *extra,
    ]


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.update(extra)
    return env


def run(command, timeout=300, **env):
    result = subprocess.run(command, env=subprocess_env(**env), capture_output=True, text=True,
                            timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def read_summary(output) -> dict:
    with open(Path(output) / "summary.json") as f:
        return json.load(f)


def csv_epochs(path) -> list[int]:
    import csv

    if not Path(path).exists():
        return []
    with open(path) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def to_numpy(x):
    """A backend tensor or variable as a NumPy array (not `conftest`'s: several exist in tests/)."""
    import keras
    import numpy as np

    return np.asarray(keras.ops.convert_to_numpy(x))


def reference_val_metrics(model_path, data_root, batch_size=16) -> dict:
    """val_loss / val_accuracy / val_top5 of a saved motion-demo model over every `val` clip,
    computed here clip by clip (independently of the training's validation code)."""
    import keras
    import numpy as np

    from keras_vtn.training import SmoothedCrossEntropy, TrainConfig
    from keras_vtn.training.run import eval_dataset

    config = TrainConfig.from_preset("motion_demo", data_root=str(data_root), layout="csv",
                                     batch_size=batch_size)
    model = keras.saving.load_model(str(model_path))
    loss = SmoothedCrossEntropy(config.label_smoothing)
    logits, labels = [], []
    for clips, y in eval_dataset(config, num_clips=1, num_crops=1).as_numpy_iterator():
        logits.append(np.asarray(keras.ops.convert_to_numpy(model(clips, training=False))))
        labels.append(y)
    logits, labels = np.concatenate(logits).astype("float64"), np.concatenate(labels)
    per_clip = np.asarray(keras.ops.convert_to_numpy(loss.call(labels, logits)))
    order = np.argsort(-logits, axis=-1)
    return {
        "count": len(labels),
        "val_loss": float(per_clip.mean()),
        "val_accuracy": float(np.mean(order[:, 0] == labels)),
        "val_top5": float(np.mean([y in row[:5] for y, row in zip(labels, order, strict=True)])),
    }


def last_logged(path) -> dict:
    """The last row of a CSV log as floats."""
    import csv

    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items()}
