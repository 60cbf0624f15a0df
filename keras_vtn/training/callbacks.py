"""The standard callbacks of a run: checkpoints, resumable backups, CSV and TensorBoard logs."""

from __future__ import annotations

import importlib.util
import os

import keras


def training_callbacks(
    output_dir: str | os.PathLike,
    *,
    checkpoint: bool = True,
    backup: bool = True,
    csv: bool = True,
    tensorboard: bool = False,
    monitor: str = "val_accuracy",
) -> list[keras.callbacks.Callback]:
    """Callbacks writing under `output_dir`.

    - `checkpoint`: `best.weights.h5` (best `monitor`; every epoch without validation).
    - `backup`: `BackupAndRestore` in `backup/`, saved every epoch; restarting the same command
      after a crash resumes from the last finished epoch (model, optimizer, schedule step)
      and deletes the backup when training ends.
    - `csv`: `log.csv`, appended across restarts.
    - `tensorboard`: `tensorboard/` event files.
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = []
    if backup:
        # double_checkpoint: a crash while the backup is written (kill -9 at an epoch end)
        # leaves the previous epoch's copy to restore from instead of a truncated HDF5 file.
        callbacks.append(keras.callbacks.BackupAndRestore(
            os.path.join(output_dir, "backup"), double_checkpoint=True
        ))
    if checkpoint:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(output_dir, "best.weights.h5"), monitor=monitor,
                save_best_only=monitor.startswith("val_"), save_weights_only=True,
                mode="max" if "acc" in monitor else "min",
            )
        )
    if csv:
        log = os.path.join(output_dir, "log.csv")
        callbacks.append(keras.callbacks.CSVLogger(log, append=True))
    if tensorboard:
        if importlib.util.find_spec("tensorboard") is None:
            # Without it tf.summary fails inside fit (and hangs MirroredStrategy replicas).
            raise ImportError(
                "tensorboard=True needs the `tensorboard` package: pip install tensorboard "
                "(or keras-vtn[tensorboard])."
            )
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")))
    return callbacks
