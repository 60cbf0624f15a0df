"""VideoPreprocessor: its config, protocol line, views, normalisation layer, datasets of real
encoded videos and the errors for arguments it cannot use."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_vtn import VideoPreprocessor
from keras_vtn.data.testing import write_video


@pytest.fixture(scope="module")
def video_files(tmp_path_factory):
    """Three short H.264 videos of different sizes and lengths."""
    root = tmp_path_factory.mktemp("videos")
    paths = []
    for i, (frames, height, width) in enumerate([(24, 40, 48), (30, 48, 40), (40, 36, 36)]):
        path = str(root / f"video_{i}.mp4")
        write_video(path, num_frames=frames, height=height, width=width, seed=i, noise=8)
        paths.append(path)
    return paths


def test_config_round_trips_through_json():
    preprocessor = VideoPreprocessor(
        6, sampling="time", target_fps=12.5, image_size=(32, 48), short_side=40, num_clips=2,
        num_crops=3, aggregate="log_probabilities", normalization=(0.45, [0.2, 0.25, 0.3]))
    config = json.loads(json.dumps(preprocessor.get_config()))
    restored = VideoPreprocessor.from_config(config)
    assert restored == preprocessor and restored.get_config() == preprocessor.get_config()
    assert config["image_size"] == [32, 48]
    assert config["normalization"] == [[0.45, 0.45, 0.45], [0.2, 0.25, 0.3]]
    assert VideoPreprocessor(6) != preprocessor


def test_describe_names_the_whole_protocol():
    assert VideoPreprocessor(8, frame_stride=4, image_size=32, num_clips=4, num_crops=3
                             ).describe() == (
        "protocol: dense 8×4, 32 px, 4 clips × 3 crops; views averaged as logits; pixels in "
        "[0, 255] (the model normalises them)")
    assert VideoPreprocessor(250, sampling="uniform", short_side=256).describe() == (
        "protocol: uniform 250 frames, 224 px (short side 256), 1 clip × 1 crop; views "
        "averaged as logits; pixels in [0, 255] (the model normalises them)")
    assert VideoPreprocessor(16, sampling="time", target_fps=3.125, image_size=(32, 48),
                             aggregate="probabilities", normalization=(0.5, 0.25)
                             ).describe() == (
        "protocol: time 16 frames at 3.125 fps, 32×48 px, 1 clip × 1 crop; views averaged as "
        "probabilities; RGB in [0, 1] normalised with mean (0.5, 0.5, 0.5), std (0.25, 0.25, "
        "0.25)")


def test_views_are_clips_times_crops():
    assert VideoPreprocessor(4).views == 1
    assert VideoPreprocessor(4, num_clips=4, num_crops=3).views == 12
    assert VideoPreprocessor(4, num_clips=2).views == 2


def test_normalization_layer_maps_pixels_to_the_normalised_input():
    assert VideoPreprocessor(4).normalization_layer() is None
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    layer = VideoPreprocessor(4, normalization=(mean, std)).normalization_layer()
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 8, 8, 3)).astype("float32")
    expected = (pixels / 255.0 - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(pixels)), expected, atol=1e-5)


def test_evaluation_dataset_has_every_view_of_every_video(video_files):
    preprocessor = VideoPreprocessor(4, frame_stride=2, image_size=32, num_clips=2, num_crops=3)
    batches = list(preprocessor.dataset(video_files, batch_size=2))
    assert [tuple(clips.shape) for clips, _ in batches] == [(2, 6, 4, 32, 32, 3),
                                                            (1, 6, 4, 32, 32, 3)]
    assert all(clips.dtype == "uint8" for clips, _ in batches)
    labels = np.concatenate([np.asarray(labels) for _, labels in batches])
    np.testing.assert_array_equal(labels, [-1, -1, -1])  # unlabelled paths

    # VTN's inputs: the sampled frames' positions in the video come with the clips
    (inputs, _), = preprocessor.dataset(video_files[:1], frame_indices=True).take(1)
    assert inputs["frames"].shape == (1, 6, 4, 32, 32, 3)
    indices = np.asarray(inputs["frame_indices"])
    assert indices.shape == (1, 6, 4) and (np.diff(indices, axis=-1) == 2).all()


def test_training_dataset_gives_one_random_view_per_video(video_files):
    preprocessor = VideoPreprocessor(4, image_size=32, num_clips=4, num_crops=3)
    pairs = [(path, name) for path, name in zip(video_files, ("a", "b", "a"), strict=True)]
    clips, labels = zip(*preprocessor.dataset(pairs, training=True, label_names=["a", "b"],
                                              batch_size=3, seed=0), strict=True)
    assert [tuple(c.shape) for c in clips] == [(3, 4, 32, 32, 3)]
    assert sorted(np.asarray(labels[0]).tolist()) == [0, 0, 1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(aggregate="mean"), "aggregate must be one of"),
    (dict(num_crops=5), r"num_crops must be 1 \(centre\) or 3"),
    (dict(sampling="random"), "Unknown sampling 'random'"),
    (dict(sampling="time"), 'sampling="time" needs target_fps'),
    (dict(num_clips=0), "must be >= 1"),
    (dict(normalization=(0.5,)), r"normalization must be None or \(mean, std\)"),
    (dict(normalization=(0.5, 0.0)), "normalization std must be > 0"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VideoPreprocessor(4, **kwargs)


def test_unknown_config_fields_are_an_error():
    config = {**VideoPreprocessor(4).get_config(), "num_views": 12}
    with pytest.raises(ValueError, match=r"unknown fields \['num_views'\]"):
        VideoPreprocessor.from_config(config)
