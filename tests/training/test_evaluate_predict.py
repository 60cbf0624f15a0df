"""evaluate_views / predict_video / the CLI on generated videos: the documented JSON and PNGs."""

import argparse
import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from training_helpers import REPO, TINY_VIVIT, model_args, run, subprocess_env

import keras_vtn
from keras_vtn.cli import main as cli_main
from keras_vtn.data import MOTION_CLASSES, generate_motion_dataset, video_dataset
from keras_vtn.data.testing import write_video
from keras_vtn.evaluation import aggregate_views
from keras_vtn.io_utils import write_json
from keras_vtn.prediction import predict_video
from keras_vtn.protocol import describe_protocol, resolve_protocol
from keras_vtn.training import TrainConfig, build_model

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
    ds = video_dataset([(str(video), 0)], num_frames=8, image_size=32, batch_size=1)
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


# ----------------------------------------------------------------------------- a run folder
# What a training run leaves: model.keras, labels.txt and config.json. The config records a
# protocol unlike the commands' old defaults: 2 validation clips, a (36, 44) short-side jitter.
RUN_PROTOCOL = dict(num_frames=8, image_size=32, sampling="dense", frame_stride=2,
                    short_side=(36, 44), val_num_clips=2, val_num_crops=1)


def _cli(*args):
    return [sys.executable, "-m", "keras_vtn.cli", *args]


@pytest.fixture(scope="module")
def run_dir(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    model.save(folder / "model.keras")
    (folder / "labels.txt").write_text("\n".join(MOTION_CLASSES) + "\n")
    config = TrainConfig(family="vivit", model_kwargs=dict(TINY_VIVIT), layout="folders",
                         **RUN_PROTOCOL)
    write_json(str(folder / "config.json"), config.to_dict(), indent=2, default=str)
    return folder


@pytest.fixture(scope="module")
def subset_eval(motion_root, run_dir, tmp_path_factory):
    """`evaluate --layout folders` over a split holding 2 of the model's 6 classes, plus an
    empty file and a cut one."""
    root = tmp_path_factory.mktemp("subset")
    for name in ("approaching", "receding"):
        shutil.copytree(motion_root / "val" / name, root / "val" / name)
    empty = root / "val" / "approaching" / "empty.mp4"
    empty.write_bytes(b"")
    cut = root / "val" / "receding" / "cut.mp4"
    write_video(str(cut), num_frames=75, faststart=True, noise=20)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = root / "eval"
    result = run(_cli("evaluate", "--model", str(run_dir / "model.keras"), "--data-root",
                      str(root), "--layout", "folders", "--output", str(out)))
    report = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    return dict(result=result, report=report, empty=str(empty), cut=str(cut))


def test_evaluate_scores_a_class_subset_against_the_model_classes(subset_eval):
    report = subset_eval["report"]
    # the data's own numbering made "receding" class 1, the model's "moving_left"
    assert report["label_names"] == list(MOTION_CLASSES)
    rows = np.array(report["confusion_matrix"]).sum(axis=1)
    index = MOTION_CLASSES.index
    assert rows[index("approaching")] == 2 and rows[index("receding")] == 3
    assert rows.sum() == 5 and report["num_videos"] == 5
    assert report["per_class_accuracy"]["moving_left"] is None


def test_evaluate_follows_the_run_config(subset_eval, run_dir):
    stdout = subset_eval["result"].stdout
    config = run_dir / "config.json"
    assert (f"protocol: dense 8×2, 32 px (short side 36), 2 clips × 1 crop (from {config})"
            in stdout)
    report = subset_eval["report"]
    assert report["protocol"] == "8×2×1" and report["num_clips"] == 2
    assert report["sampling"] == {"sampler": "dense", "frame_stride": 2, "image_size": [32, 32],
                                  "short_side": 36}
    assert f"labels: 6 classes from {run_dir / 'labels.txt'}" in stdout


def test_evaluate_shows_progress(subset_eval):
    stdout = subset_eval["result"].stdout
    assert "5/5" in stdout and "videos/s" in stdout


def test_evaluation_json_lists_failed_and_truncated_videos(subset_eval):
    report = subset_eval["report"]
    assert report["failed"] == {subset_eval["empty"]: {"reason": "empty",
                                                        "detail": report["failed"][
                                                            subset_eval["empty"]]["detail"]}}
    assert list(report["truncated"]) == [subset_eval["cut"]]
    assert "frames" in report["truncated"][subset_eval["cut"]]
    assert "1 videos failed, 1 truncated" in subset_eval["result"].stdout


def test_evaluate_refuses_a_class_the_model_does_not_know(motion_root, run_dir, tmp_path):
    shutil.copytree(motion_root / "val" / "approaching", tmp_path / "val" / "approaching")
    shutil.copytree(motion_root / "val" / "receding", tmp_path / "val" / "jumping")
    result = subprocess.run(
        _cli("evaluate", "--model", str(run_dir / "model.keras"), "--data-root", str(tmp_path),
             "--layout", "folders", "--output", str(tmp_path / "eval")),
        env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode != 0
    assert "'jumping'" in result.stderr and "the model does not know" in result.stderr
    assert not (tmp_path / "eval" / "evaluation.json").exists()


def test_predict_follows_the_run_config(motion_root, run_dir):
    video = sorted((motion_root / "val" / "receding").glob("*.mp4"))[0]
    result = run(_cli("predict", str(video), "--model", str(run_dir / "model.keras"), "--json"))
    printed = json.loads(result.stdout)
    # dense at the recorded stride 2 (the old default, uniform, spaced 24 frames by 3)
    assert np.diff(printed["frame_indices"]).tolist() == [2] * 7
    assert printed["protocol"] == "8×2×1"
    assert "protocol: dense 8×2, 32 px (short side 36), 2 clips × 1 crop" in result.stderr
    assert printed["top_k"][0]["label"] in MOTION_CLASSES


def test_flags_override_the_run_config(model, run_dir):
    fields = ("sampling", "num_frames", "frame_stride", "target_fps", "image_size",
              "short_side", "num_clips", "num_crops")
    args = argparse.Namespace(**{**dict.fromkeys(fields), "sampling": "uniform", "num_crops": 3})
    config = json.loads((run_dir / "config.json").read_text())
    protocol = resolve_protocol(args, model, config, "runs/x/config.json")
    assert protocol["sampling"] == "uniform" and protocol["num_crops"] == 3
    assert protocol["num_clips"] == 2
    assert protocol["short_side"] == 36  # the jitter's low end, never below the crop
    assert describe_protocol(protocol) == ("protocol: uniform 8 frames, 32 px (short side 36), "
                                           "2 clips × 3 crops (from runs/x/config.json; "
                                           "--sampling, --num-crops)")
    plain = resolve_protocol(argparse.Namespace(**dict.fromkeys(fields)), model)
    assert describe_protocol(plain).startswith("protocol: dense 8×2, 32 px, 1 clip × 1 crop (")


def test_predict_family_clip_size_reaches_the_builder(motion_root):
    video = sorted((motion_root / "val" / "approaching").glob("*.mp4"))[0]
    result = run(_cli("predict", str(video), "--family", "vivit", "--num-frames", "4",
                      "--image-size", "32", *model_args({**TINY_VIVIT, "num_classes": 6}),
                      "--labels", str(_labels_file(motion_root)), "--json"))
    printed = json.loads(result.stdout)
    assert len(printed["frame_indices"]) == 4 and printed["protocol"] == "4×1×1"
    assert "protocol: dense 4×2, 32 px, 1 clip × 1 crop (--num-frames, --image-size)" \
        in result.stderr


def _labels_file(root):
    path = root / "labels.txt"
    path.write_text("\n".join(MOTION_CLASSES) + "\n")
    return path


def test_registry_weights_bring_their_evaluation_protocol():
    # `--family vivit --weights k400` evaluates as Scenic did: 32×2, 256 → 224, 4 × 3 views
    fields = ("sampling", "num_frames", "frame_stride", "target_fps", "image_size",
              "short_side", "num_clips", "num_crops")
    clip = keras.Input((32, 224, 224, 3))
    vivit = keras.Model(clip, keras.layers.GlobalAveragePooling3D()(clip))
    args = argparse.Namespace(family="vivit", weights="k400", model=None, model_arg=[],
                              **dict.fromkeys(fields))
    assert describe_protocol(resolve_protocol(args, vivit)) == (
        "protocol: dense 32×2, 224 px (short side 256), 4 clips × 3 crops "
        "(from the registry entry of vivit weights 'k400')")
    # LinearVTN: 16 frames over 5.12 s, three crops; a flag still wins
    args = argparse.Namespace(family="linear_vtn", weights="k400", model=None, model_arg=[],
                              **{**dict.fromkeys(fields), "num_clips": 2})
    protocol = resolve_protocol(args, vivit)
    assert (protocol["sampling"], protocol["target_fps"], protocol["num_crops"],
            protocol["num_clips"]) == ("time", 3.125, 3, 2)
    assert protocol["num_frames"] == 32  # the model's fixed clip, not the entry's 16
    # VTN evaluated the whole video in 250 frames, one centre view; its clip length is free
    free = keras.Input((None, 224, 224, 3))
    vtn = keras.Model(free, keras.layers.GlobalAveragePooling3D()(free))
    args = argparse.Namespace(family="vtn", weights="k400", model=None, model_arg=[],
                              **dict.fromkeys(fields))
    assert describe_protocol(resolve_protocol(args, vtn)) == (
        "protocol: uniform 250 frames, 224 px (short side 256), 1 clip × 1 crop "
        "(from the registry entry of vtn weights 'k400')")


def test_evaluate_moves_tfrecord_labels_onto_the_model_classes(motion_root, run_dir, tmp_path):
    # shards store indices of the manifest's own classes (here approaching 0, receding 1)
    from keras_vtn.data.tfrecord import prepare

    for name in ("approaching", "receding"):
        shutil.copytree(motion_root / "val" / name, tmp_path / "videos" / name)
    prepare(str(tmp_path / "videos"), str(tmp_path / "shards" / "val"), short_side=40,
            workers=1, progress=False)
    out = tmp_path / "eval"
    run(_cli("evaluate", "--model", str(run_dir / "model.keras"), "--data-root",
             str(tmp_path / "shards"), "--layout", "tfrecord", "--output", str(out)))
    report = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    rows = np.array(report["confusion_matrix"]).sum(axis=1)
    assert report["label_names"] == list(MOTION_CLASSES)
    assert rows[MOTION_CLASSES.index("receding")] == 2 and rows.sum() == 4


def test_a_missing_model_file_is_a_file_not_found_error(tmp_path):
    from keras_vtn.models.families import load_model

    with pytest.raises(FileNotFoundError, match="No saved model file"):
        load_model(tmp_path / "missing.keras")
