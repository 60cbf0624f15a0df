"""Top-k human-readable predictions for one video file, optionally with a PNG of its frames.

The clip goes through the same decoder, sampler and crops as evaluation
(`keras_vtn.data.video_dataset`), so a prediction sees exactly what the evaluation sees.
`keras-vtn predict` (`keras_vtn.cli.predict`) reads the sampling protocol and class names of
the run next to `--model` (its `config.json` and `labels.txt`), and flags override them.
"""

from __future__ import annotations

import os

import numpy as np


def predict_video(
    model,
    path: str | os.PathLike,
    *,
    label_names: list[str] | None = None,
    num_frames: int | None = None,
    image_size: int | None = None,
    sampling: str = "dense",
    frame_stride: int = 2,
    target_fps: float | None = None,
    num_clips: int = 1,
    num_crops: int = 1,
    short_side: int | None = None,
    aggregate: str = "logits",
    top_k: int = 5,
    frames_png: str | os.PathLike | None = None,
) -> dict:
    """Classifies the video at `path`.

    Args:
        model: a Keras video classifier (logits out).
        label_names: class names (default: Kinetics-400 for 400 classes, else indices).
        num_frames, image_size: default the model's input size.
        sampling, frame_stride, target_fps, num_clips, num_crops, short_side: the views
            (see `keras_vtn.data.video_dataset`, whose defaults `evaluate_views` data share);
            their scores are averaged per `aggregate`. Use the protocol the model was trained
            and evaluated with (`keras-vtn predict` reads it from the run's `config.json`).
        frames_png: write the sampled frames of the first view with the top prediction.

    Returns `{"video", "protocol", "top_k": [{"label", "index", "probability", "score"}, ...],
    "frame_indices", "frames_png"}` (probabilities are a softmax of the averaged scores for
    `"logits"`, the averaged probabilities otherwise).
    """
    from keras_vtn.data import KINETICS400_LABELS, dataset_info, video_dataset
    from keras_vtn.evaluation import aggregate_views, softmax
    from keras_vtn.models.families import model_clip_shape, takes_frame_indices

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No video at {path!r}.")
    frames_dim, height, _ = model_clip_shape(model)
    num_frames = num_frames or frames_dim or 16
    image_size = image_size or height or 224
    extra = {"short_side": short_side} if short_side else {}
    dataset = video_dataset(
        [(path, -1)], training=False, num_frames=num_frames, image_size=image_size,
        sampling=sampling, frame_stride=frame_stride, target_fps=target_fps,
        num_clips=num_clips, num_crops=num_crops, views_axis=True, return_frame_indices=True,
        batch_size=1, **extra,
    )
    batch = next(iter(dataset), None)
    if batch is None:
        reason = dataset_info(dataset).report.summary()
        raise ValueError(f"Could not decode {path!r}: {reason}")
    inputs, _ = batch
    frames = np.asarray(inputs["frames"])[0]  # (V, T, H, W, 3)
    indices = np.asarray(inputs["frame_indices"])[0]
    if takes_frame_indices(model):
        logits = model.predict_on_batch({"frames": frames, "frame_indices": indices})
    else:
        logits = model.predict_on_batch(frames)
    logits = np.asarray(logits, np.float32)
    scores = aggregate_views(logits[None], aggregate)[0]
    probabilities = softmax(scores) if aggregate == "logits" else (
        np.exp(scores) if aggregate == "log_probabilities" else scores
    )
    num_classes = scores.shape[-1]
    if label_names is None:
        label_names = list(KINETICS400_LABELS) if num_classes == 400 else [
            str(i) for i in range(num_classes)]
    order = np.argsort(-scores)[: min(top_k, num_classes)]
    top = [
        {"label": label_names[i], "index": int(i), "probability": float(probabilities[i]),
         "score": float(scores[i])}
        for i in order
    ]
    result = {
        "video": path,
        "protocol": f"{num_frames}×{num_clips}×{num_crops}",
        "aggregate": aggregate,
        "top_k": top,
        "frame_indices": indices[0].tolist(),
        "frames_png": None,
    }
    if frames_png is not None:
        from keras_vtn.reporting import plot_frames

        title = f"{os.path.basename(path)}: " + ", ".join(
            f"{t['label']} {100 * t['probability']:.0f}%" for t in top[:3])
        result["frames_png"] = plot_frames(frames[0], frames_png, title, indices[0])
    return result


def format_prediction(result: dict) -> str:
    lines = [f"{result['video']} ({result['protocol']})"]
    for rank, item in enumerate(result["top_k"], 1):
        lines.append(f"  {rank}. {item['label']:<30s} {100 * item['probability']:6.2f}%")
    return "\n".join(lines)
