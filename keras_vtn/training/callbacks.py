"""The standard callbacks of a run: checkpoints, resumable backups, CSV and TensorBoard logs."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import warnings

import keras

from keras_vtn.io_utils import atomic_path, write_json

# Root attributes of a best checkpoint: the value it was saved for travels inside the file, so
# the two can never disagree (a sidecar written next to it could lag behind after a kill).
_BEST_ATTRS = ("keras_vtn_monitor", "keras_vtn_best", "keras_vtn_epoch")


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup stays usable whenever the process is killed.

    Keras writes `training_metadata.json` in place, so a kill during that write leaves a file
    that fails every later resume. Here every file is written atomically, the metadata names
    the weights file it belongs to (two weights files alternate, the one in use is never
    overwritten), and `training_metadata.json.bkp` keeps the previous state. On restart an
    unreadable metadata or weights file is reported with a warning naming it and the previous
    state is used; if neither can be used, training starts over (with a warning) instead of
    failing.

    `restored_epoch` is the number of finished epochs that `on_train_begin` restored (0 on a
    fresh start).
    """

    _WEIGHTS = ("state-a.weights.h5", "state-b.weights.h5")

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True,
                         delete_checkpoint=delete_checkpoint)
        self.restored_epoch = 0
        self._state: dict | None = None  # the last state known to be complete on disk

    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError(
                "ResumableBackup needs a built model before fit(); call the model on a batch "
                f"first. Model {self.model.name} is unbuilt."
            )
        self.restored_epoch = 0
        self._state = None
        if not os.path.isdir(self.backup_dir):
            return
        self._remove_partial_writes()
        candidates = [
            (self._training_metadata_path, "latest.weights.h5"),
            (self._prev_training_metadata_path, "latest.weights.h5.bkp"),
        ]
        candidates = [c for c in candidates if os.path.exists(c[0])]
        if not candidates:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        # A failed load may have assigned part of the variables: start over from these.
        variables = list(self.model.weights)
        if self.model.optimizer is not None:
            variables += list(self.model.optimizer.variables)
        initial = [keras.ops.convert_to_numpy(v) for v in variables]
        problems = []
        for metadata_path, keras_weights in candidates:
            try:
                state = self._read_state(metadata_path, keras_weights)
                self._restore(state)
            except Exception as error:  # any unusable state: try the previous one
                problems.append(metadata_path)
                warnings.warn(
                    f"Backup state {metadata_path} is unusable ({type(error).__name__}: "
                    f"{error}).", stacklevel=2,
                )
                continue
            self._state = state
            self.restored_epoch = int(state["epoch"])
            if problems:
                warnings.warn(
                    f"Resumed from the previous backup state {metadata_path} (epoch "
                    f"{self.restored_epoch}) because {problems[0]} could not be used.",
                    stacklevel=2,
                )
            return
        for variable, value in zip(variables, initial, strict=True):
            variable.assign(value)
        self.model._initial_epoch = 0
        warnings.warn(
            f"No usable backup state in {self.backup_dir} ({', '.join(problems)} "
            "unreadable): training starts from epoch 0.", stacklevel=2,
        )

    def _read_state(self, metadata_path: str, keras_weights: str) -> dict:
        with open(metadata_path, encoding="utf-8") as f:
            state = json.load(f)
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise ValueError("no integer 'epoch'")
        # A backup written by Keras' own callback names no weights file.
        state.setdefault("weights", keras_weights)
        weights = os.path.join(self.backup_dir, state["weights"])
        if not os.path.exists(weights):
            raise FileNotFoundError(f"its weights file {weights} is missing")
        return state

    def _restore(self, state: dict) -> None:
        import h5py

        path = os.path.join(self.backup_dir, state["weights"])
        # Opening first rejects a truncated file before any variable is assigned.
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as error:
            raise OSError(f"its weights file {path} is unreadable: {error}") from None
        if path.endswith(".weights.h5"):
            self.model.load_weights(path)
        else:  # Keras' `.bkp` copy: load_weights picks the format from the extension
            tmp = os.path.join(self.backup_dir, f".legacy.tmp-{os.getpid()}.weights.h5")
            try:
                shutil.copyfile(path, tmp)
                self.model.load_weights(tmp)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        self.model._initial_epoch = int(state["epoch"])

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        in_use = self._state["weights"] if self._state else None
        if self._state is not None:
            # The previous state first: from here both metadata files name the weights in
            # use, so the other weights file is free to overwrite.
            write_json(self._prev_training_metadata_path, self._state)
        name = self._WEIGHTS[1] if in_use == self._WEIGHTS[0] else self._WEIGHTS[0]
        with atomic_path(os.path.join(self.backup_dir, name), suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        state = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name}
        write_json(self._training_metadata_path, state)
        self._state = state

    def _remove_partial_writes(self) -> None:
        # atomic_path's hidden temporary files, left behind when a write was killed.
        for name in os.listdir(self.backup_dir):
            if name.startswith(".") and ".tmp-" in name:
                try:
                    os.remove(os.path.join(self.backup_dir, name))
                except OSError:
                    pass


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` for `.weights.h5` files that survives restarts.

    The file is replaced atomically (a kill during the write keeps the previous best) and
    carries the monitored value and epoch it was saved for. When `backup` resumed a run,
    `on_train_begin` reads that value back, so a resumed run only replaces the file with a
    better epoch (Keras' callback starts again from -inf/+inf and saves the first epoch after
    a restart, however bad).
    """

    def __init__(self, filepath, *, backup: ResumableBackup | None = None, **kwargs):
        kwargs.setdefault("save_weights_only", True)
        super().__init__(filepath, **kwargs)
        if not self.save_weights_only:
            raise ValueError("BestCheckpoint writes weights only (`.weights.h5`).")
        self._backup = backup
        self._initial_best = self.best

    def on_train_begin(self, logs=None):
        self.best = self._initial_best
        if self._backup is None or self._backup.restored_epoch <= 0:
            return
        saved = read_best(self.filepath)
        if saved is None or saved["monitor"] != self.monitor:
            return
        self.best = saved["value"]

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        import h5py

        current = (logs or {}).get(self.monitor)
        with atomic_path(filepath, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
            with h5py.File(tmp, "a") as f:
                f.attrs[_BEST_ATTRS[0]] = self.monitor
                f.attrs[_BEST_ATTRS[1]] = float("nan") if current is None else float(current)
                f.attrs[_BEST_ATTRS[2]] = int(epoch)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saved {filepath}")


def read_best(path: str | os.PathLike) -> dict | None:
    """`{"monitor", "value", "epoch"}` stored in a `BestCheckpoint` file, or None.

    None when the file is missing, unreadable or was not written by `BestCheckpoint`.
    """
    import h5py

    try:
        with h5py.File(os.fspath(path), "r") as f:
            if not all(key in f.attrs for key in _BEST_ATTRS):
                return None
            monitor, value, epoch = (f.attrs[key] for key in _BEST_ATTRS)
    except (OSError, ValueError):
        return None
    value = float(value)
    if math.isnan(value):
        return None
    if isinstance(monitor, bytes):
        monitor = monitor.decode()
    return {"monitor": str(monitor), "value": value, "epoch": int(epoch)}


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

    - `backup`: `ResumableBackup` in `backup/`, saved every epoch; restarting the same command
      after a crash (even a kill during a write) resumes from the last finished epoch (model,
      optimizer, schedule step) and deletes the backup when training ends.
    - `checkpoint`: `best.weights.h5` (best `monitor`; every epoch without validation), written
      atomically; after a resume it is replaced only by an epoch better than the best so far.
    - `csv`: `log.csv`, appended across restarts.
    - `tensorboard`: `tensorboard/` event files.
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = []
    backup_callback = None
    if backup:
        # Before the checkpoint: at an epoch end the backup is written first, so the best
        # checkpoint on disk always belongs to an epoch the backup already covers.
        backup_callback = ResumableBackup(os.path.join(output_dir, "backup"))
        callbacks.append(backup_callback)
    if checkpoint:
        callbacks.append(
            BestCheckpoint(
                os.path.join(output_dir, "best.weights.h5"), backup=backup_callback,
                monitor=monitor, save_best_only=monitor.startswith("val_"),
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
