"""`keras-vtn train` ends with a classifier preset; `keras-vtn predict` / `evaluate --preset`
use it: real motion videos, a real training run, a fresh process for the prediction."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import numpy as np
import pytest
from test_cli import noise_lines, run_cli

from keras_vtn import cli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "training"))
from training_helpers import TINY_VIVIT, model_args  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-epoch run of the motion recipe with a tiny ViViT through `keras-vtn train`."""
    from keras_vtn.data import generate_motion_dataset

    root = generate_motion_dataset(tmp_path_factory.mktemp("motion"), {"train": 2, "val": 1},
                                   size=36)
    output = tmp_path_factory.mktemp("run")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        status = cli.main([
            "train", "--preset", "motion_demo", "--family", "vivit", *model_args(TINY_VIVIT),
            "--data-root", str(root), "--layout", "csv", "--val-split", "val", "--epochs", "2",
            "--batch-size", "4", "--seed", "1", "--output", str(output), "--verbose", "0"])
    assert status == 0, console.getvalue()[-3000:]
    return root, output, console.getvalue()


def test_train_ends_with_a_preset_of_the_best_weights_labels_and_protocol(trained):
    import keras_vtn
    from keras_vtn.training.callbacks import read_best

    root, output, console = trained
    preset = os.path.join(output, "preset")
    assert f"wrote the preset {preset}" in console
    classifier = keras_vtn.VideoClassifier.from_preset(preset)
    with open(os.path.join(output, "labels.txt"), encoding="utf-8") as f:
        assert classifier.label_names == f.read().split()
    # the motion recipe's evaluation: 8 frames at stride 2, 32 px after a short side of 32
    # (the low end of its scale jitter), 2 clips x 1 crop
    assert classifier.preprocessor.describe().startswith(
        "protocol: dense 8×2, 32 px (short side 32), 2 clips × 1 crop")
    best = read_best(os.path.join(output, "best.weights.h5"))
    metadata = classifier.preset_metadata
    assert metadata["training"]["best"] == best and best["monitor"] == "val_accuracy"
    assert metadata["source"]["recipe"] == "motion_demo"
    reference = keras_vtn.load_model(os.path.join(output, "model.keras"))
    reference.load_weights(os.path.join(output, "best.weights.h5"))
    for ours, theirs in zip(classifier.backbone.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=ours.path)


def test_predict_with_the_trained_preset_in_a_fresh_process(trained):
    import keras_vtn

    root, output, _ = trained
    preset = os.path.join(output, "preset")
    video = sorted((root / "val").rglob("*.mp4"))[0]
    result = run_cli("predict", "--preset", preset, video, "--json", "--top-k", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not noise_lines(result.stderr), result.stderr
    assert f"2 clips × 1 crop (from preset {preset})" in result.stderr
    predicted = json.loads(result.stdout)["top_k"]
    expected = keras_vtn.VideoClassifier.from_preset(preset).predict_labels([str(video)],
                                                                            top_k=3)[0]
    assert [p["label"] for p in predicted] == [label for label, _ in expected]
    np.testing.assert_allclose([p["probability"] for p in predicted],
                               [p for _, p in expected], atol=1e-5)


def test_evaluate_with_a_preset_and_a_protocol_flag(trained, tmp_path, capsys):
    root, output, _ = trained
    preset = os.path.join(output, "preset")
    status = cli.main(["evaluate", "--preset", preset, "--data-root", str(root), "--layout",
                       "csv", "--num-clips", "1", "--output", str(tmp_path)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert f"1 clip × 1 crop (from preset {preset}; --num-clips)" in printed
    assert f"labels: 6 classes from preset {preset}" in printed
    with open(tmp_path / "evaluation.json", encoding="utf-8") as f:
        report = json.load(f)
    assert (report["protocol"], report["num_videos"]) == ("8×1×1", 6)
    assert f"top-1 {100 * report['top1']:.2f}%" in printed


def test_preset_with_another_way_of_naming_the_model_is_a_one_line_error(trained, capsys):
    preset = os.path.join(trained[1], "preset")
    status = cli.main(["predict", "--preset", preset, "--family", "vivit", "--labels",
                       "kinetics400", "video.mp4"])
    error = capsys.readouterr().err
    assert status == 2
    assert error == ("keras-vtn predict: error: --preset names the model, its class names and "
                     "its protocol; drop --family, --labels (or drop --preset).\n")
