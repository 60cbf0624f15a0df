"""`keras-vtn train` ends with a classifier preset; `keras-vtn predict` / `evaluate --preset`
use it: real motion videos, a real training run, a fresh process for the prediction.
`keras-vtn convert --to-preset` / `--preset` write presets from original checkpoints (a parity
fixture, and a registry entry served on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import numpy as np
import pytest
import test_presets
from test_cli import LIN_VTN, noise_lines, run_cli
from test_presets import FIXTURES, TOLERANCE

from keras_vtn import cli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "training"))
from training_helpers import TINY_VIVIT, model_args  # noqa: E402

# the toy registry entry served on 127.0.0.1 (fixtures shared with the presets' tests)
toy_server = test_presets.toy_server
toy_builtin = test_presets.toy_builtin


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


def test_convert_to_preset_from_a_checkpoint_file_with_labels(tmp_path, capsys):
    import hashlib

    import keras_vtn

    labels = tmp_path / "classes.txt"
    labels.write_text("run\njump\nswim\nclimb\nfall\n", encoding="utf-8")
    out = tmp_path / "lin_vtn_preset"
    args = ["convert", LIN_VTN, "--model-arg", "num_spatial_heads=2", "--model-arg",
            "image_size=32", "--model-arg", "patch_size=8", "--labels", str(labels),
            "--to-preset", str(out)]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert f"wrote the preset {out}: linear_vtn, 5 classes" in capsys.readouterr().out
    classifier = keras_vtn.VideoClassifier.from_preset(out)
    assert classifier.label_names == ["run", "jump", "swim", "climb", "fall"]
    with open(LIN_VTN, "rb") as f:
        assert classifier.preset_metadata["source"]["sha256"] == hashlib.sha256(
            f.read()).hexdigest()
    assert classifier.preset_metadata["source"]["path"] == os.path.abspath(LIN_VTN)
    assert not os.path.exists(LIN_VTN + ".sha256.json")  # nothing written beside the source
    clip = np.load(os.path.join(FIXTURES, "vtn", "lin_vtn_input.npy")).astype("float32")
    expected = np.load(os.path.join(FIXTURES, "vtn", "lin_vtn_logits.npy"))
    assert np.abs(classifier.predict(clip, verbose=0) - expected).max() <= TOLERANCE

    # an existing folder is kept without --overwrite; labels that do not fit are refused
    assert cli.main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    labels.write_text("run\njump\n", encoding="utf-8")
    assert cli.main([*args, "--overwrite"]) == 2
    assert "2 label names for a head of 5 classes" in capsys.readouterr().err
    assert keras_vtn.VideoClassifier.from_preset(out).label_names[0] == "run"


def test_convert_registry_name_and_builtin_preset_to_folders(toy_builtin, tmp_path, capsys):
    import keras_vtn

    entry, server, clip, expected = toy_builtin
    from_name = tmp_path / "from_name"
    assert cli.main(["convert", "toy_k5", "--family", "linear_vtn", "--to-preset",
                     str(from_name)]) == 0, capsys.readouterr().err
    assert "from built-in preset linear_vtn_toy_k5" in capsys.readouterr().out
    copied = tmp_path / "copied"
    assert cli.main(["convert", "--preset", "linear_vtn_toy_k5", "-o", str(copied)]) == 0
    assert server.hits == ["/lin_vtn.pth"]  # downloaded and converted once
    for folder in (from_name, copied):
        classifier = keras_vtn.VideoClassifier.from_preset(folder)
        source = classifier.preset_metadata["source"]
        assert source["urls"] == [entry["files"][0]["url"]]
        assert source["sha256"] == entry["files"][0]["sha256"]
        assert classifier.preprocessor.describe().startswith("protocol: dense 6×2, 32 px")
        assert np.abs(classifier.predict(clip, verbose=0) - expected).max() <= TOLERANCE
    capsys.readouterr()
    assert cli.main(["convert", "--preset", "linear_vtn_toy_k5"]) == 2
    assert capsys.readouterr().err == ("keras-vtn convert: error: --preset NAME needs the "
                                       "folder to write: --to-preset DIR.\n")
