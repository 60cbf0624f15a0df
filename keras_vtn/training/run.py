"""`train(config)`: one function behind `examples/train_kinetics400.py` and `make demo`.

Builds the data pipeline, the model (inside the distribution scope), optimizer and schedule,
then runs `model.fit` with validation at every epoch end (`validation.Validation`: every
validation video once, on every distribution), checkpoints, resumable backups and logs under
`output_dir`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field

import keras

from keras_vtn import data as data_lib
from keras_vtn import reporting
from keras_vtn.io_utils import atomic_path, write_json, write_text
from keras_vtn.models import families
from keras_vtn.training import callbacks as callbacks_lib
from keras_vtn.training import distribution as distribution_lib
from keras_vtn.training import losses, optimizers, schedules
from keras_vtn.training import validation as validation_lib
from keras_vtn.training.presets import get_preset

logger = logging.getLogger("keras_vtn.training")


@dataclass
class TrainConfig:
    """Everything a run needs; `TrainConfig.from_preset(name, **overrides)` starts from a recipe."""

    # model
    family: str = "vivit"
    model_kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    # data
    data_root: str = ""
    layout: str = "kinetics400"
    train_split: str = "train"
    val_split: str | None = "val"
    num_frames: int = 16
    sampling: str = "dense"
    frame_stride: int = 2
    target_fps: float | None = None
    image_size: int = 224
    short_side: int | tuple[int, int] | None = None
    flip: bool = True
    color_jitter: tuple[float, float, float, float] | None = None
    rand_augment: tuple[int, float] | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    shuffle_frames: bool = False
    val_num_clips: int = 1
    val_num_crops: int = 1
    num_parallel_calls: int | None = None
    # optimisation
    batch_size: int = 8
    epochs: int = 30
    steps_per_epoch: int | None = None
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    base_batch_size: int | None = None
    lr_scaling: str = "linear"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    no_decay_patterns: tuple[str, ...] = optimizers.NO_DECAY_PATTERNS
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    milestones: tuple[float, ...] = ()
    lr_factor: float = 0.1
    label_smoothing: float = 0.0
    clipnorm: float | None = None
    gradient_accumulation_steps: int = 1
    precision: str = "float32"
    distribution: str = "none"
    # run
    output_dir: str = "runs/train"
    seed: int | None = 0
    backup: bool = True
    tensorboard: bool = False
    save_model: bool = True
    verbose: int | str = 2

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TrainConfig:
        values = get_preset(name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _clip_kwargs(config: TrainConfig) -> dict:
    return dict(
        num_frames=config.num_frames, sampling=config.sampling, frame_stride=config.frame_stride,
        target_fps=config.target_fps, image_size=config.image_size,
        num_parallel_calls=config.num_parallel_calls,
    )


def train_dataset(config: TrainConfig, input_context=None, label_names=None):
    """The training split: random clips, augmentation, global batches.

    `label_names`: label the videos onto these classes by name (a fine-tuned model's).
    """
    kwargs = _clip_kwargs(config)
    if label_names is not None:
        kwargs["label_names"] = list(label_names)
    kwargs.update(
        training=True, batch_size=config.batch_size, seed=config.seed, flip=config.flip,
        color_jitter=config.color_jitter, mixup_alpha=config.mixup_alpha,
        cutmix_alpha=config.cutmix_alpha, return_frame_indices=False,
    )
    if config.short_side is not None:
        kwargs["short_side"] = config.short_side
    if config.rand_augment:
        num_ops, magnitude = config.rand_augment
        # keras RandAugment `factor` is a fraction of the maximum magnitude (30 in timm units).
        kwargs["rand_augment"] = dict(num_ops=int(num_ops), factor=float(magnitude) / 30.0)
    ds = data_lib.make_dataset(config.data_root, config.train_split, config.layout, **kwargs)
    if config.shuffle_frames:
        ds = data_lib.shuffle_frames(ds, config.seed)
    return ds


def eval_dataset(config: TrainConfig, split: str | None = None, num_clips: int | None = None,
                 num_crops: int | None = None, batch_size: int | None = None, **kwargs):
    """A validation split with `num_clips` x `num_crops` views per video.

    Other keyword arguments (e.g. `label_mode`) go to `keras_vtn.data.video_dataset`.
    """
    extra = kwargs
    kwargs = _clip_kwargs(config)
    clips = config.val_num_clips if num_clips is None else num_clips
    crops = config.val_num_crops if num_crops is None else num_crops
    kwargs.update(training=False, num_clips=clips, num_crops=crops,
                  batch_size=batch_size or config.batch_size)
    if config.short_side is not None:
        short = config.short_side
        kwargs["short_side"] = short if isinstance(short, int) else (
            max(short[0], config.image_size) if crops == 3 else short[0]
        )
    kwargs.update(extra)
    ds = data_lib.make_dataset(config.data_root, split or config.val_split, config.layout,
                               **kwargs)
    if config.shuffle_frames:
        ds = data_lib.shuffle_frames(ds, config.seed)
    return ds


def _fine_tuning_dataset(config: TrainConfig):
    """The training split, labelled onto the classes of the run whose model `weights` names
    (its `labels.txt`) when the videos' classes are among them, so its classifier keeps
    meaning what it meant; other classes make a new task with the data's own class list."""
    from keras_vtn.data.layouts import UnknownClassError
    from keras_vtn.protocol import run_labels_path

    labels_path = run_labels_path(config.weights) if isinstance(config.weights, str) and \
        os.path.isfile(config.weights) else None
    if labels_path is None:
        return train_dataset(config)
    with open(labels_path, encoding="utf-8") as handle:
        model_labels = [line.strip() for line in handle if line.strip()]
    try:
        return train_dataset(config, label_names=model_labels)
    except UnknownClassError as err:
        logging.getLogger(__name__).warning(
            "The training videos hold classes that %s does not name (%s): they form a new "
            "task, labelled with the data's own class list.", labels_path, err)
        return train_dataset(config)


def _steps_per_epoch(train_ds, config: TrainConfig) -> int:
    """Full global batches in one pass over the training videos."""
    count = data_lib.dataset_info(train_ds).num_videos
    if count is None:
        raise ValueError(
            f"The number of training videos in {config.data_root!r} is unknown (TFRecords "
            "without `keras-vtn prepare`'s manifest and shard markers): pass steps_per_epoch "
            "(--steps-per-epoch)."
        )
    return max(count // config.batch_size, 1)


def _build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    kwargs = dict(config.model_kwargs)
    kwargs.update(
        weights=config.weights, num_classes=num_classes, num_frames=config.num_frames,
        image_size=config.image_size,
    )
    if config.dropout_rate:
        kwargs["dropout_rate"] = config.dropout_rate
    if config.drop_path_rate:
        kwargs["drop_path_rate"] = config.drop_path_rate
    return families.build_model(config.family, **kwargs)


def train(config: TrainConfig, model: keras.Model | None = None) -> dict:
    """Trains per `config`; returns a summary (history, paths, timings, LR, replicas).

    Restarting the same call after a crash resumes from the last finished epoch (the
    `BackupAndRestore` callback), so the run ends with `config.epochs` epochs.
    """
    # First: multi-process JAX must be initialised before any other JAX computation.
    distribution = distribution_lib.Distribution(config.distribution)
    distribution.check_batch(config.batch_size)
    config = dataclasses.replace(config, output_dir=distribution.output_dir(config.output_dir))
    os.makedirs(config.output_dir, exist_ok=True)
    write_json(os.path.join(config.output_dir, "config.json"), config.to_dict(), indent=2,
               default=str)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    distribution_lib.set_precision(config.precision)

    train_ds = _fine_tuning_dataset(config)
    label_names = data_lib.dataset_info(train_ds).label_names
    one_hot = bool(config.mixup_alpha or config.cutmix_alpha)  # mixed batches: soft labels
    # Validation sees one centre view per video; multi-view is evaluate_views' job. Its videos
    # are labelled onto the training classes: a split holding only some of them would
    # otherwise number its own classes 0, 1, ... and be scored against the wrong ones.
    val_label_mode = "one_hot" if one_hot else "int"

    val_ds = eval_dataset(config, num_clips=1, num_crops=1, label_mode=val_label_mode,
                          label_names=label_names) if config.val_split else None

    def make_val_dataset(input_context, batch_size):
        if input_context is None and batch_size == config.batch_size:
            return val_ds
        extra = {} if input_context is None else {"input_context": input_context}
        return eval_dataset(config, num_clips=1, num_crops=1, batch_size=batch_size,
                            label_mode=val_label_mode, label_names=label_names, **extra)

    num_steps = config.steps_per_epoch or _steps_per_epoch(train_ds, config)
    updates_per_epoch = max(num_steps // max(config.gradient_accumulation_steps, 1), 1)
    lr = optimizers.scale_learning_rate(
        config.learning_rate, config.batch_size * max(config.gradient_accumulation_steps, 1),
        config.base_batch_size, config.lr_scaling,
    )
    schedule = schedules.build_schedule(
        config.schedule, lr, steps_per_epoch=updates_per_epoch, epochs=config.epochs,
        warmup_epochs=config.warmup_epochs, milestones=config.milestones,
        factor=config.lr_factor,
    )
    with distribution.scope():
        if model is None:
            model = _build_model(config, len(label_names))
        optimizer = optimizers.build_optimizer(
            config.optimizer, schedule, weight_decay=config.weight_decay,
            momentum=config.momentum, nesterov=config.nesterov, global_clipnorm=config.clipnorm,
            gradient_accumulation_steps=config.gradient_accumulation_steps, model=model,
            no_decay_patterns=config.no_decay_patterns,
        )
        model.compile(
            optimizer=optimizer,
            loss=losses.SmoothedCrossEntropy(config.label_smoothing),
            metrics=losses.accuracy_metrics(one_hot, top_k=min(5, len(label_names))),
        )
    top_k = min(5, len(label_names))
    callbacks = callbacks_lib.training_callbacks(
        config.output_dir, backup=config.backup, tensorboard=config.tensorboard,
        monitor="val_accuracy" if val_ds is not None else "accuracy",
    )
    if val_ds is not None:
        # Instead of fit's validation_data, which deadlocks multi-worker runs whose processes
        # hold different numbers of validation batches. First, so that the checkpoint, CSV
        # log and history see the val_* values.
        callbacks.insert(0, validation_lib.Validation(
            make_val_dataset, model.loss, config.batch_size, top_k=top_k))
    start = time.perf_counter()
    # A repeated dataset with a fixed steps_per_epoch: on a dataset of unknown length
    # (videos are filtered), Keras 3.15 (TensorFlow) ends every epoch with an empty step that
    # still counts in the metrics and in optimizer.iterations (hence the LR schedule).
    history = model.fit(
        train_ds.repeat(), epochs=config.epochs,
        steps_per_epoch=num_steps, callbacks=callbacks, verbose=config.verbose,
        shuffle=False,  # the pipeline shuffles
    )
    seconds = time.perf_counter() - start
    summary = dict(
        history={k: [float(x) for x in v] for k, v in history.history.items()},
        epochs_run=len(history.epoch), first_epoch=history.epoch[0] if history.epoch else None,
        train_seconds=seconds, learning_rate=lr, replicas=distribution.num_replicas,
        label_names=list(label_names), parameters=int(model.count_params()),
        optimizer_iterations=int(keras.ops.convert_to_numpy(optimizer.iterations)),
    )
    best = callbacks_lib.read_best(os.path.join(config.output_dir, "best.weights.h5"))
    if best is not None:  # over every run of a resumed training
        summary["best_checkpoint"] = best
    full_history = _read_csv_history(os.path.join(config.output_dir, "log.csv"))
    if full_history:
        summary["full_history"] = full_history
        summary["curve_png"] = reporting.plot_history(
            full_history, os.path.join(config.output_dir, "training_curve.png")
        )
    if config.save_model:
        path = os.path.join(config.output_dir, "model.keras")
        with atomic_path(path, suffix=".keras") as tmp:
            model.save(tmp)
        summary["model_path"] = path
        write_text(os.path.join(config.output_dir, "labels.txt"), "\n".join(label_names) + "\n")
    write_json(os.path.join(config.output_dir, "summary.json"), summary, indent=2)
    summary["model"] = model
    return summary


def _read_csv_history(path: str) -> dict[str, list[float]]:
    """The CSV log (all runs of a resumed training) as `{metric: [per epoch]}` (last per epoch)."""
    import csv

    if not os.path.exists(path):
        return {}
    by_epoch: dict[int, dict] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            try:
                by_epoch[int(row["epoch"])] = row
            except (KeyError, ValueError):
                continue
    history: dict[str, list[float]] = {}
    for epoch in sorted(by_epoch):
        for key, value in by_epoch[epoch].items():
            if key != "epoch":
                try:
                    history.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    pass
    return history
