"""Training: optimizers, schedules, losses, distribution, callbacks, presets and `train()`."""

from keras_vtn.models.families import FAMILIES, build_model, get_builder, load_model
from keras_vtn.training.callbacks import (
    BestCheckpoint,
    ResumableBackup,
    read_best,
    training_callbacks,
)
from keras_vtn.training.distribution import (
    DISTRIBUTIONS,
    PRECISIONS,
    Distribution,
    set_precision,
    virtual_cpu_devices,
)
from keras_vtn.training.losses import SmoothedCrossEntropy, accuracy_metrics
from keras_vtn.training.optimizers import (
    NO_DECAY_PATTERNS,
    build_optimizer,
    no_weight_decay_variables,
    scale_learning_rate,
)
from keras_vtn.training.presets import PRESETS, get_preset
from keras_vtn.training.run import TrainConfig, eval_dataset, train, train_dataset
from keras_vtn.training.schedules import StepDecay, WarmupCosine, build_schedule
from keras_vtn.training.validation import Validation

__all__ = [
    "BestCheckpoint",
    "DISTRIBUTIONS",
    "FAMILIES",
    "NO_DECAY_PATTERNS",
    "PRECISIONS",
    "PRESETS",
    "Distribution",
    "ResumableBackup",
    "SmoothedCrossEntropy",
    "StepDecay",
    "TrainConfig",
    "Validation",
    "WarmupCosine",
    "accuracy_metrics",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "eval_dataset",
    "get_builder",
    "get_preset",
    "load_model",
    "no_weight_decay_variables",
    "read_best",
    "scale_learning_rate",
    "set_precision",
    "train",
    "train_dataset",
    "training_callbacks",
    "virtual_cpu_devices",
]
