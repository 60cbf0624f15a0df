"""evaluate_views / predict_video / the CLI on generated videos: the documented JSON and PNGs."""

import json

import keras
import numpy as np
import pytest
from training_helpers import TINY_VIVIT

import keras_vtn
from keras_vtn.cli import main as cli_main
from keras_vtn.data import video_dataset
from keras_vtn.datasets import MOTION_CLASSES, generate_motion_dataset
from keras_vtn.evaluation import aggregate_views
from keras_vtn.prediction import predict_video
from keras_vtn.training import build_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def motion_root(tmp_path_factory):
    return generate_motion_dataset(tmp_path_factory.mktemp("motion"), {"val": 2}, size=40)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return build_model("vivit", **TINY_VIVIT, num_classes=6, num_frames=8, image_size=32)


def _views_dataset(root, clips=2, crops=3):
    return video_dataset(root / "val.csv", root=root / "val", num_frames=8, frame_stride=2,
                         image_size=32, num_clips=clips, num_crops=crops, batch_size=5)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


@pytest.mark.parametrize("aggregate", ["logits", "probabilities", "log_probabilities"])
def test_evaluate_views_report(motion_root, model, tmp_path, aggregate):
    dataset = _views_dataset(motion_root)
    report = keras_vtn.evaluate_views(model, dataset, aggregate, output_dir=tmp_path)
    with open(tmp_path / "evaluation.json", encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["protocol"] == "8×2×3" and saved["views_per_video"] == 6
    assert saved["aggregate"] == aggregate and saved["num_videos"] == 12
    assert saved["label_names"] == list(MOTION_CLASSES)
    matrix = np.array(saved["confusion_matrix"])
    assert matrix.shape == (6, 6) and matrix.sum() == 12
    assert saved["top1"] == pytest.approx(np.trace(matrix) / 12)
    for i, name in enumerate(MOTION_CLASSES):
        assert saved["per_class_accuracy"][name] == pytest.approx(matrix[i, i] / matrix[i].sum())
    assert saved["top1"] <= saved["top5"] <= 1.0
    assert _is_png(tmp_path / "confusion_matrix.png")
    # The scores are the chosen average of the model's per-view logits.
    logits, labels = [], []
    for clips, y in dataset:
        flat = np.reshape(clips, (-1, 8, 32, 32, 3))
        logits.append(np.asarray(model.predict_on_batch(flat)).reshape(len(y), 6, 6))
        labels.append(np.asarray(y))
    expected = aggregate_views(np.concatenate(logits), aggregate)
    np.testing.assert_allclose(report["scores"], expected, rtol=1e-4, atol=1e-5)
    top1 = np.mean(expected.argmax(-1) == np.concatenate(labels))
    assert saved["top1"] == pytest.approx(top1)


def test_aggregates_differ():
    logits = np.array([[[4.0, 0.0, 0.0], [0.0, 1.0, 1.2]]])
    assert aggregate_views(logits, "logits").argmax() == 0
    probabilities = aggregate_views(logits, "probabilities")
    np.testing.assert_allclose(probabilities.sum(), 1.0)
    with pytest.raises(ValueError, match="aggregate"):
        aggregate_views(logits, "max")


def test_predict_video_top5_and_png(motion_root, model, tmp_path):
    video = sorted((motion_root / "val" / "moving_left").glob("*.mp4"))[0]
    result = predict_video(model, video, label_names=list(MOTION_CLASSES),
                           frames_png=tmp_path / "frames.png")
    top = result["top_k"]
    assert len(top) == 5 and len({t["label"] for t in top}) == 5
    assert all(t["label"] in MOTION_CLASSES for t in top)
    probabilities = [t["probability"] for t in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1.0 + 1e-6
    assert _is_png(result["frames_png"]) and result["protocol"] == "8×1×1"
    assert len(result["frame_indices"]) == 8
    # Same clip through the pipeline -> same top-1 as calling the model directly.
    ds = video_dataset([(str(video), 0)], num_frames=8, sampling="uniform", image_size=32,
                       batch_size=1)
    clip = next(iter(ds))[0]
    direct = np.asarray(model.predict_on_batch(np.asarray(clip)))[0]
    assert MOTION_CLASSES[int(direct.argmax())] == top[0]["label"]


def test_cli_help_for_each_command(capsys):
    for command in ("predict", "evaluate", "benchmark"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main([command, "--help"])
        assert exit_info.value.code == 0
        assert command in capsys.readouterr().out


def test_cli_evaluate_predict_benchmark_on_a_saved_model(motion_root, model, tmp_path, capsys):
    path = tmp_path / "model.keras"
    model.save(path)
    (tmp_path / "labels.txt").write_text("\n".join(MOTION_CLASSES) + "\n")
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--model", str(path), "--data-root", str(motion_root),
                     "--layout", "csv", "--split", "val", "--num-clips", "2",
                     "--aggregate", "probabilities", "--output", str(out)]) == 0
    report = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert report["protocol"] == "8×2×1" and report["aggregate"] == "probabilities"
    assert _is_png(out / "confusion_matrix.png")
    video = sorted((motion_root / "val" / "receding").glob("*.mp4"))[0]
    capsys.readouterr()
    assert cli_main(["predict", str(video), "--model", str(path), "--json",
                     "--frames-png", str(tmp_path / "p.png")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [t["label"] in MOTION_CLASSES for t in printed["top_k"]] == [True] * 5
    assert _is_png(tmp_path / "p.png")
    assert cli_main(["benchmark", "--model", str(path), "--iterations", "1",
                     "--warmup", "1"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["input"] == [1, 8, 32, 32, 3] and bench["clips_per_second"] > 0
