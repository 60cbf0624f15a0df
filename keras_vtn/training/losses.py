"""Cross-entropy with label smoothing for integer or one-hot (MixUp/CutMix) labels.

>>> import numpy as np
>>> loss = SmoothedCrossEntropy(label_smoothing=0.1)
>>> logits = np.array([[2.0, 0.0, 0.0]], "float32")
>>> a = float(loss(np.array([0]), logits))
>>> b = float(loss(np.array([[1.0, 0.0, 0.0]], "float32"), logits))
>>> round(a, 4) == round(b, 4)
True
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vtn")
class SmoothedCrossEntropy(keras.losses.Loss):
    """Categorical cross-entropy; integer labels are one-hot encoded first.

    Computed in float32 whatever the compute dtype (mixed precision).
    """

    def __init__(self, label_smoothing: float = 0.0, from_logits: bool = True, **kwargs):
        kwargs.setdefault("name", "smoothed_cross_entropy")
        super().__init__(**kwargs)
        self.label_smoothing, self.from_logits = float(label_smoothing), from_logits

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        if len(y_true.shape) < len(y_pred.shape) or y_true.shape[-1] != y_pred.shape[-1]:
            y_true = ops.reshape(y_true, (-1,))
            y_true = ops.one_hot(ops.cast(y_true, "int32"), y_pred.shape[-1], dtype="float32")
        return keras.losses.categorical_crossentropy(
            ops.cast(y_true, "float32"), y_pred, from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing, from_logits=self.from_logits)
        return config


def accuracy_metrics(one_hot: bool, top_k: int = 5) -> list:
    """Top-1 and top-k accuracy metrics for integer or one-hot labels."""
    if one_hot:
        return [keras.metrics.CategoricalAccuracy(name="accuracy"),
                keras.metrics.TopKCategoricalAccuracy(top_k, name=f"top{top_k}")]
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(top_k, name=f"top{top_k}")]
