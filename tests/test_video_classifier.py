"""VideoClassifier: fine-tuned on generated videos, saved as a preset, reloaded in fresh
processes on TensorFlow, JAX and PyTorch with the same logits and labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_vtn
from keras_vtn.data.synthetic import generate_motion_dataset
from keras_vtn.data.testing import write_video

CLASSES = ("approaching", "rotating_clockwise")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Loads a preset in a new process and prints its scores and top labels for the videos.
LOAD_AND_PREDICT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras, keras_vtn
    preset, videos = sys.argv[1], sys.argv[2:]
    classifier = keras_vtn.VideoClassifier.from_preset(preset)
    scores = classifier.predict(videos, verbose=0)
    labels = [classifier.label_names[i] for i in np.argmax(scores, axis=-1)]
    print(json.dumps({"backend": keras.backend.backend(), "scores": np.asarray(scores).tolist(),
                      "labels": labels}))
""")
# Every backend reloads the preset in a fresh process: nothing of the saving process may help.
BACKENDS = ("tensorflow", "jax", "torch")


def tiny_classifier() -> keras_vtn.VideoClassifier:
    backbone = keras_vtn.ViViT(
        variant="factorised_encoder", weights=None, num_frames=4, image_size=32,
        tubelet_size=(2, 16, 16), hidden_dim=16, num_heads=2, mlp_dim=32, num_spatial_layers=1,
        num_temporal_layers=1, num_classes=len(CLASSES))
    preprocessor = keras_vtn.VideoPreprocessor(4, frame_stride=2, image_size=32, num_clips=2,
                                               num_crops=3)
    return keras_vtn.VideoClassifier(backbone, preprocessor, CLASSES)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Training clips (H.264 mp4) of two motions, and mp4 + webm files to predict."""
    root = tmp_path_factory.mktemp("videos")
    generate_motion_dataset(root, {"train": 3}, classes=CLASSES, num_frames=12, size=40)
    train = sorted(str(p) for p in (root / "train").rglob("*.mp4"))
    labels = [os.path.basename(os.path.dirname(p)) for p in train]
    webm = [str(root / f"extra_{i}.webm") for i in range(2)]
    for i, path in enumerate(webm):
        write_video(path, num_frames=20, height=40, width=48, seed=i, noise=8)
    return train, labels, train[:2] + webm


@pytest.fixture(scope="module")
def fine_tuned(videos, tmp_path_factory):
    """A tiny classifier fine-tuned on the training videos and saved as a preset, with that
    preset already loading in a fresh process on each backend (they run while the tests that
    need only the classifier do)."""
    train, labels, predict = videos
    classifier = tiny_classifier()
    initial = [np.array(w) for w in classifier.get_weights()]
    history = classifier.fit(train, labels, batch_size=2, epochs=2, seed=0, verbose=0)
    preset = classifier.save_to_preset(tmp_path_factory.mktemp("presets") / "fine_tuned")
    reloads = {}
    for backend in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO)
        if backend == "jax":
            env["XLA_FLAGS"] = ("--xla_backend_optimization_level=0 "
                                "--xla_llvm_disable_expensive_passes=true")
        reloads[backend] = subprocess.Popen(
            [sys.executable, "-c", LOAD_AND_PREDICT, preset, *predict], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield classifier, preset, history, initial, reloads
    for process in reloads.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_inputs_users_have(videos, fine_tuned, tmp_path):
    """Paths, (path, label) pairs, a list file, a views-axis array and a tf.data pipeline
    all give the multi-view scores; evaluate prints the protocol with the accuracy."""
    train, labels, _ = videos
    classifier = fine_tuned[0]
    scores = classifier.predict(train, verbose=0)
    pairs = list(zip(train, labels, strict=True))
    np.testing.assert_allclose(classifier.predict(pairs, verbose=0), scores)
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{p} {label}\n" for p, label in pairs))
    np.testing.assert_allclose(classifier.predict(str(listing), verbose=0), scores)
    dataset = classifier.preprocessor.dataset(train, batch_size=3)
    np.testing.assert_allclose(classifier.predict(dataset, verbose=0), scores, atol=1e-6)
    clips = np.concatenate([np.asarray(batch) for batch, _ in dataset])
    assert clips.shape == (len(train), 6, 4, 32, 32, 3)
    np.testing.assert_allclose(classifier.predict(clips, verbose=0), scores, atol=1e-6)
    # plain clips are scored one by one
    assert classifier.predict(clips[:, 0], verbose=0).shape == (len(train), len(CLASSES))

    report = classifier.evaluate(train, labels, verbose=0)
    assert report["num_labelled"] == len(train) and report["protocol"] == "4×2×3"
    predicted = np.asarray(scores).argmax(-1)
    truth = np.asarray([CLASSES.index(label) for label in labels])
    assert report["top1"] == pytest.approx(float((predicted == truth).mean()))

    top = classifier.predict_labels(train[:1], top_k=5)
    assert len(top) == 1 and len(top[0]) == len(CLASSES)
    assert sum(p for _, p in top[0]) == pytest.approx(1.0)


def test_evaluate_prints_the_protocol(videos, fine_tuned, capsys):
    train, labels, _ = videos
    fine_tuned[0].evaluate(train, labels, verbose=1)
    out = capsys.readouterr().out
    assert "protocol: dense 4×2, 32 px, 2 clips × 3 crops; views averaged as logits" in out
    assert "top-1" in out


def test_keras_archive_round_trip(videos, fine_tuned, tmp_path):
    _, _, predict = videos
    classifier = fine_tuned[0]
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    restored = keras_vtn.load_model(path)
    assert isinstance(restored, keras_vtn.VideoClassifier)
    assert restored.label_names == list(CLASSES)
    assert restored.preprocessor == classifier.preprocessor
    def as_json(model):  # tuples come back as lists
        return json.loads(json.dumps(keras_vtn.model_config(model)))

    assert as_json(restored.backbone) == as_json(classifier.backbone)
    np.testing.assert_array_equal(restored.predict(predict, verbose=0),
                                  classifier.predict(predict, verbose=0))


def test_undecodable_video_and_label_mismatch_are_errors(videos, tmp_path):
    train, _, _ = videos
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    classifier = tiny_classifier()
    with pytest.raises(ValueError, match=r"1 videos could not be decoded: .*broken\.mp4"):
        classifier.predict([train[0], str(broken)], verbose=0)
    with pytest.raises(ValueError, match="3 label names for a head of 2 classes"):
        keras_vtn.VideoClassifier(classifier.backbone, label_names=["a", "b", "c"])


def test_normalisation_applies_in_the_graph():
    backbone = keras_vtn.LAPSTransformer(num_frames=4, image_size=32, patch_size=16,
                                         hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64,
                                         num_classes=3, include_preprocessing=False)
    preprocessor = keras_vtn.VideoPreprocessor(4, image_size=32, normalization=(0.5, 0.5))
    classifier = keras_vtn.VideoClassifier(backbone, preprocessor)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(backbone(pixels / 127.5 - 1.0))
    np.testing.assert_allclose(classifier.predict(pixels, verbose=0), expected, atol=1e-5)


def test_fine_tuned_preset_gives_the_same_logits_on_every_backend(videos, fine_tuned):
    """Last in the module: the fresh-process reloads ran meanwhile."""
    _, _, predict = videos
    classifier, preset, history, initial, reloads = fine_tuned
    assert len(history.history["loss"]) == 2
    changed = max(np.abs(np.asarray(w) - w0).max()
                  for w, w0 in zip(classifier.get_weights(), initial, strict=True))
    assert changed > 1e-4  # the fine-tuning changed the weights
    scores = classifier.predict(predict, verbose=0)
    assert scores.shape == (4, len(CLASSES))
    expected_labels = [top[0][0] for top in classifier.predict_labels(predict, top_k=1)]

    loaded = keras_vtn.VideoClassifier.from_preset(preset)
    np.testing.assert_allclose(loaded.predict(predict, verbose=0), scores, atol=1e-5)
    assert [top[0][0] for top in loaded.predict_labels(predict, top_k=1)] == expected_labels
    for backend, process in reloads.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{backend}:\n{err[-3000:]}"
        result = json.loads(out.strip().splitlines()[-1])
        assert result["backend"] == backend
        diff = np.abs(np.asarray(result["scores"]) - scores).max()
        assert diff <= 1e-5, f"{backend}: max |Δlogit| {diff:.2e}"
        assert result["labels"] == expected_labels, backend
