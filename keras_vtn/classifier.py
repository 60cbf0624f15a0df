"""`VideoClassifier`: a backbone of any family, its sampling protocol and its class names.

```python
import keras_vtn
classifier = keras_vtn.VideoClassifier.from_preset("vivit_b16x2_k400")
print(classifier.predict_labels(["video.mp4"], top_k=3))
```

The backbone keeps its own head, so a converted checkpoint gives exactly its original logits.
`predict`, `evaluate` and `fit` take video files (a path, a list of paths, `(path, label)`
pairs, a class-folder tree, a list file or a Kinetics CSV with `root=`), a `tf.data` pipeline
or arrays of clips (pixels in [0, 255]). Video files are decoded by the classifier's
`VideoPreprocessor`; evaluation and prediction score all of its views (clips × crops) of a
video and average them. Clips with a views axis, `(videos, views, T, H, W, 3)`, are averaged
the same way; plain `(N, T, H, W, 3)` clips are scored one by one as `keras.Model` does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_vtn.preprocessing import VideoPreprocessor

VIEWS_RANK = 6  # (videos, views, frames, height, width, channels)


def backbone_spec(backbone: keras.Model) -> dict[str, Any]:
    """What rebuilds `backbone`'s architecture: `{"family", "config"}` for a keras_vtn family
    model (its merged builder config), else `{"keras": serialised model}`."""
    from keras_vtn.models.pipeline import model_config

    try:
        config = model_config(backbone)
        json.dumps(config)
    except (ValueError, TypeError):  # not a family model, or a config holding a Keras model
        return {"keras": keras.saving.serialize_keras_object(backbone)}
    family = config.pop("family")
    return {"family": family, "config": config}


def backbone_from_spec(spec: dict[str, Any]) -> keras.Model:
    """The backbone `backbone_spec` describes, with fresh weights (no I/O)."""
    from keras_vtn.models.families import FAMILIES, get_family
    from keras_vtn.models.pipeline import attach_config

    if "keras" in spec:
        import keras_vtn.layers  # noqa: F401  (registers the layers the model is made of)

        return keras.saving.deserialize_keras_object(spec["keras"], safe_mode=True)
    if spec.get("family") not in FAMILIES:
        raise ValueError(
            f"the backbone is of family {spec.get('family')!r}, which is not registered here "
            f"(known: {', '.join(sorted(FAMILIES))}); register it with "
            "keras_vtn.models.families.register_family before loading."
        )
    family, config = get_family(spec["family"]), dict(spec["config"])
    if family.graph is None:
        return family.builder(weights=None, **config)
    return attach_config(family.graph(config), family.name, config)


def default_label_names(num_classes: int) -> list[str]:
    """Kinetics-400's names for a 400-class head, else `class_<i>`."""
    from keras_vtn.data import KINETICS400_LABELS

    if num_classes == len(KINETICS400_LABELS):
        return list(KINETICS400_LABELS)
    return [f"class_{i}" for i in range(num_classes)]


def _input_like(backbone: keras.Model):
    """Fresh `keras.Input`s of the backbone's input structure."""
    inputs = backbone.input
    if isinstance(inputs, dict):
        return {k: keras.Input(batch_shape=v.shape, dtype=v.dtype, name=k)
                for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return [keras.Input(batch_shape=v.shape, dtype=v.dtype) for v in inputs]
    return keras.Input(batch_shape=inputs.shape, dtype=inputs.dtype, name="frames")


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def is_video_source(x) -> bool:
    """Whether `x` names video files (a path, paths, `(path, label)` pairs or `Records`)."""
    from keras_vtn.data.layouts import Records

    if _is_path(x) or isinstance(x, Records):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(_is_path(i) or (isinstance(i, (list, tuple)) and len(i) == 2 and
                                   _is_path(i[0])) for i in x)
    return False


def _has_views_axis(x) -> bool:
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        spec = spec["frames"] if isinstance(spec, dict) else spec
        return len(spec.shape) == VIEWS_RANK
    if isinstance(x, dict):
        x = x.get("frames")
    return getattr(x, "ndim", None) == VIEWS_RANK


def video_source(x, y=None):
    """`x` (and labels `y`) as a `video_dataset` source: a single video file becomes a
    one-video listing, paths with labels become `(path, label)` pairs."""
    from keras_vtn.data.layouts import VIDEO_EXTENSIONS

    if _is_path(x):
        path = os.fspath(x)
        if os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS):
            x = [path]
        elif y is not None:
            raise ValueError("labels (y) go with a list of video paths; a folder, list file or "
                             "CSV names its own labels.")
        else:
            return path
    if isinstance(x, (list, tuple)) and x and all(_is_path(i) for i in x):
        if y is None:
            return [(os.fspath(p), None) for p in x]
        y = list(np.asarray(y).tolist()) if not isinstance(y, (list, tuple)) else list(y)
        if len(y) != len(x):
            raise ValueError(f"{len(x)} videos but {len(y)} labels.")
        return [(os.fspath(p), label) for p, label in zip(x, y, strict=True)]
    if y is not None:
        raise ValueError("labels (y) go with a list of video paths; pairs and listings carry "
                         "their own labels.")
    return x


@keras.saving.register_keras_serializable(package="keras_vtn")
class VideoClassifier(keras.Model):
    """A video classifier task: backbone, `VideoPreprocessor` and class names.

    Args:
        backbone: a keras_vtn family model with its head (`ViViT(...)`, `VTN(...)`, ...) or
            any Keras model mapping clips to class scores.
        preprocessor: the sampling, view and normalisation protocol (default: one centre
            view of the backbone's clip size, dense sampling at stride 2).
        label_names: one name per class (default: Kinetics-400's for 400 classes, else
            `class_<i>`).

    Example:
    >>> import keras_vtn
    >>> backbone = keras_vtn.LAPSTransformer(num_frames=4, image_size=32, patch_size=16,
    ...     hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64, num_classes=3)
    >>> classifier = VideoClassifier(backbone, label_names=["run", "jump", "swim"])
    >>> clips = np.zeros((2, 4, 32, 32, 3), "float32")
    >>> classifier.predict(clips, verbose=0).shape
    (2, 3)
    """

    def __init__(
        self,
        backbone: keras.Model | dict,
        preprocessor: VideoPreprocessor | dict | None = None,
        label_names: Sequence[str] | None = None,
        **kwargs,
    ):
        if isinstance(backbone, dict):  # from get_config
            backbone = backbone_from_spec(backbone)
        if isinstance(preprocessor, dict):
            preprocessor = VideoPreprocessor.from_config(preprocessor)
        if preprocessor is None:
            from keras_vtn.models.families import model_clip_shape

            frames, height, width = model_clip_shape(backbone)
            size = 224 if height is None else height if height == width else [height, width]
            preprocessor = VideoPreprocessor(frames or 16, image_size=size)
        num_classes = int(backbone.output_shape[-1])
        if label_names is None:
            label_names = default_label_names(num_classes)
        label_names = [str(n) for n in label_names]
        if len(label_names) != num_classes:
            raise ValueError(
                f"{len(label_names)} label names for a head of {num_classes} classes: give one "
                "name per class of the backbone's head (or build the backbone with "
                f"num_classes={len(label_names)} to fine-tune on these classes)."
            )
        if len(set(label_names)) != len(label_names):
            raise ValueError("label names must be distinct.")
        inputs = _input_like(backbone)
        normalization = preprocessor.normalization_layer()
        if normalization is not None:
            if isinstance(inputs, dict):
                model_inputs = {**inputs, "frames": normalization(inputs["frames"])}
            else:
                model_inputs = normalization(inputs)
        else:
            model_inputs = inputs
        super().__init__(inputs=inputs, outputs=backbone(model_inputs), **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.label_names = label_names

    # ----------------------------------------------------------------------- serialisation

    def get_config(self) -> dict[str, Any]:
        return {
            "backbone": backbone_spec(self.backbone),
            "preprocessor": self.preprocessor.get_config(),
            "label_names": list(self.label_names),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VideoClassifier:
        return cls(**config)

    @classmethod
    def from_preset(cls, preset: str | os.PathLike, **kwargs) -> VideoClassifier:
        """A classifier from a preset: a built-in name (`keras_vtn.presets()`), a preset
        folder, `hf://owner/repo` or `kaggle://owner/model/keras/variant`. `kwargs` replace
        the preset's preprocessor fields (e.g. `num_clips=1` for a faster prediction)."""
        from keras_vtn.preset_utils import load_classifier

        return load_classifier(preset, **kwargs)

    def save_to_preset(self, preset_dir: str | os.PathLike, *,
                       metadata: dict[str, Any] | None = None) -> str:
        """Writes this classifier as a preset folder (atomically); returns its path.

        `metadata` adds to `metadata.json` (e.g. `source`, `parity`, `reported`, `license`).
        """
        from keras_vtn.preset_utils import save_preset

        return save_preset(self, preset_dir, metadata=metadata)

    # ----------------------------------------------------------------------- training

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs) -> None:
        """`keras.Model.compile` with task defaults: AdamW at 1e-4, sparse categorical
        cross-entropy on the head's logits, accuracy."""
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(1e-4)
        if loss == "auto":
            activation = self.get_config()["backbone"].get("config", {}).get(
                "classifier_activation")
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=activation in (None, "linear"))
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy("accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_data=None, *, root=None, seed=None, augmentation=None, **kwargs):
        """`keras.Model.fit`; video files are decoded with training's random view (and
        `augmentation`, `video_dataset` keyword arguments such as `color_jitter`), labelled
        by class name onto `label_names`. `validation_data` may be video files too (one
        centre view each)."""
        if is_video_source(x):
            x = self.preprocessor.dataset(
                video_source(x, y), training=True, label_names=self.label_names, root=root,
                batch_size=batch_size or 4, frame_indices=self._frame_indices, seed=seed,
                **(augmentation or {}))
            y = batch_size = None
        if is_video_source(validation_data) or (
                isinstance(validation_data, tuple) and is_video_source(validation_data[0])):
            data, labels = (validation_data if isinstance(validation_data, tuple)
                            else (validation_data, None))
            validation_data = self.preprocessor.dataset(
                video_source(data, labels), label_names=self.label_names, root=root,
                batch_size=4, frame_indices=self._frame_indices, num_clips=1, num_crops=1,
                views_axis=False)
        if not self.compiled:
            self.compile()
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):  # a dataset is shuffled by its own pipeline
            kwargs.setdefault("shuffle", False)
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                           callbacks=callbacks, validation_data=validation_data, **kwargs)

    # ----------------------------------------------------------------------- inference

    @property
    def _frame_indices(self) -> bool:
        from keras_vtn.models.families import takes_frame_indices

        return takes_frame_indices(self.backbone)

    def _views_dataset(self, x, y, batch_size, root, labelled: bool):
        import tensorflow as tf

        batch_size = batch_size or 4
        if isinstance(x, tf.data.Dataset):
            return x
        if is_video_source(x):
            return self.preprocessor.dataset(
                video_source(x, y), label_names=self.label_names if labelled else None,
                root=root, batch_size=batch_size, frame_indices=self._frame_indices)
        count = len(x["frames"] if isinstance(x, dict) else x)
        labels = np.full((count,), -1, np.int64) if y is None else np.asarray(y)
        return tf.data.Dataset.from_tensor_slices((x, labels)).batch(batch_size)

    def _score_views(self, x, y, batch_size, verbose, root, labelled: bool) -> dict:
        from keras_vtn.evaluation import evaluate_views

        dataset = self._views_dataset(x, y, batch_size, root, labelled)
        return evaluate_views(self, dataset, self.preprocessor.aggregate,
                              label_names=self.label_names,
                              verbose=1 if verbose == "auto" else int(verbose))

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, *,
                root=None):
        """Scores `(videos, classes)`: per video the views' scores averaged as the
        preprocessor's `aggregate` says (logits by default); `keras.Model.predict` for plain
        `(N, T, H, W, 3)` clips. A video that cannot be decoded is an error naming it."""
        if not (is_video_source(x) or _has_views_axis(x)):
            return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps,
                                   callbacks=callbacks)
        report = self._score_views(x, None, batch_size, verbose, root, labelled=False)
        if report["failed"]:
            details = "; ".join(f"{path} ({why['reason']})"
                                for path, why in list(report["failed"].items())[:8])
            raise ValueError(f"{len(report['failed'])} videos could not be decoded: {details}. "
                             "Predict the others without them.")
        return report["scores"]

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", *, root=None,
                 **kwargs):
        """For video files and clips with a views axis: the multi-view evaluation report of
        `keras_vtn.evaluate_views` (`top1`, `top5`, per-class accuracy, confusion matrix, the
        videos that failed), after printing the protocol with the accuracy. Otherwise
        `keras.Model.evaluate` (compiled with the task defaults if needed)."""
        if not (is_video_source(x) or _has_views_axis(x)):
            if not self.compiled:
                self.compile()
            return super().evaluate(x, y, batch_size=batch_size, verbose=verbose, **kwargs)
        import tensorflow as tf

        if y is None and not (is_video_source(x) or isinstance(x, tf.data.Dataset)):
            raise ValueError("evaluate needs labels: pass y with the clips.")
        report = self._score_views(x, y, batch_size, verbose, root, labelled=True)
        if report["top1"] is None:
            raise ValueError("evaluate needs labelled videos: none of them has a label.")
        top5 = report.get("top5")
        top5 = "" if top5 is None else f", top-5 {100 * top5:.2f}%"
        failed = f" ({len(report['failed'])} failed to decode)" if report["failed"] else ""
        if verbose != 0:
            print(f"{self.preprocessor.describe()}\n{report['protocol']} "
                  f"({report['aggregate']}): top-1 {100 * report['top1']:.2f}%{top5} on "
                  f"{report['num_labelled']} videos{failed}")
        return report

    def predict_labels(self, videos, top_k: int = 5, *, batch_size=None, verbose=0,
                       root=None) -> list[list[tuple[str, float]]]:
        """Per video, the `top_k` `(label, probability)` pairs, most probable first."""
        from keras_vtn.evaluation import softmax

        scores = np.asarray(self.predict(videos, batch_size=batch_size, verbose=verbose,
                                         root=root), np.float64)
        aggregate = self.preprocessor.aggregate
        if scores.ndim == 2 and not (is_video_source(videos) or _has_views_axis(videos)):
            aggregate = "logits"  # plain clips: one view each, the head's scores
        probabilities = {"logits": softmax, "probabilities": lambda s: s,
                         "log_probabilities": np.exp}[aggregate](scores)
        k = min(top_k, probabilities.shape[-1])
        order = np.argsort(-probabilities, axis=-1)[:, :k]
        return [[(self.label_names[i], float(row[i])) for i in ranked]
                for row, ranked in zip(probabilities, order, strict=True)]
