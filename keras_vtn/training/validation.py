"""Validation at every epoch end, over every validation video exactly once, on any distribution.

Keras' own validation inside `fit` runs as many steps as each process has batches. Under
JAX `multi-worker` the processes hold different numbers of batches whenever the validation
set does not split evenly (18 videos, global batch 16, 2 processes: one process has 2
batches, the other 1), and the process with more waits forever in a collective the others
never join. It also cannot know the length of a dataset that skips broken videos, so the first
epoch ends in Keras' "Your input ran out of data" warning.

`Validation` reads the videos itself: under a JAX distribution every process reads its own
share of the videos, padded with weight-0 clips to the same number of equal batches on every
process; the loss and accuracies are weighted sums over the real clips only. Elsewhere
(TensorFlow, including MirroredStrategy, on one device; PyTorch) it predicts the global
batches as they come.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np


class Validation(keras.callbacks.Callback):
    """Adds `val_loss`, `val_accuracy` and `val_top{k}` to the logs at every epoch end.

    Put it first in the callback list so that checkpoints, CSV logs and the history see the
    values.

    Args:
        make_dataset: `make_dataset(input_context, batch_size)` returns batches `(clips,
            labels)` (integer or one-hot labels) of the validation split; `input_context`
            (None, or a `tf.distribute.InputContext`) selects this process's share of videos.
        loss: the training loss; its unreduced `call(labels, logits)` gives per-clip values.
        global_batch_size: clips per step over all processes.
        top_k: the k of the top-k accuracy (named `val_top{k}`).
    """

    def __init__(self, make_dataset: Callable, loss: keras.losses.Loss, global_batch_size: int,
                 top_k: int = 5):
        super().__init__()
        self._make_dataset = make_dataset
        self._loss = loss
        self._global_batch = int(global_batch_size)
        self._top_k = int(top_k)
        self._dataset = None
        self._step = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        distribution = keras.distribution.distribution()
        if keras.backend.backend() == "jax":
            sums = self._jax_sums(distribution)
        else:
            sums = self._plain_sums()
        loss, top1, topk, count = (float(v) for v in sums)
        if count <= 0:
            raise ValueError("The validation split yielded no clip: every video failed to decode.")
        logs["val_loss"] = loss / count
        logs["val_accuracy"] = top1 / count
        logs[f"val_top{self._top_k}"] = topk / count

    # -- TensorFlow / PyTorch: the global batches as they come -------------------------------

    def _plain_sums(self):
        if self._dataset is None:
            self._dataset = self._make_dataset(None, self._global_batch)
        predict = self.model.predict_on_batch
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # Not predict_on_batch: under MirroredStrategy it returns every replica's
            # outputs for the whole batch (2 replicas: twice as many rows as clips).
            if self._step is None:
                model = self.model
                self._step = tf.function(lambda x: model(x, training=False),
                                             reduce_retracing=True)
            predict = self._step
        sums = np.zeros(4)
        for clips, labels in self._dataset.as_numpy_iterator():
            logits = predict(clips)
            weights = np.ones(len(labels), "float32")
            sums += [float(keras.ops.convert_to_numpy(s))
                     for s in self._stats(labels, logits, weights)]
        return sums

    # -- JAX: every process runs the same number of equal, padded steps -----------------------

    def _jax_sums(self, distribution):
        import jax

        processes = jax.process_count()
        local_batch = self._global_batch // processes
        if self._dataset is None:
            self._dataset = self._padded_local_dataset(processes, jax.process_index(),
                                                       local_batch)
        step = self._jax_function(distribution)
        trainable = [v.value for v in self.model.trainable_variables]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        sums = np.zeros(4)
        for clips, labels, weights in self._dataset.as_numpy_iterator():
            batch = [self._global_array(distribution, a, local_batch * processes)
                     for a in (clips, labels, weights)]
            sums += np.asarray(step(trainable, non_trainable, *batch), dtype="float64")
        return sums

    def _padded_local_dataset(self, processes: int, index: int, local_batch: int):
        import tensorflow as tf

        from keras_vtn.data import dataset_info

        context = None
        if processes > 1:
            context = tf.distribute.InputContext(num_input_pipelines=processes,
                                                 input_pipeline_id=index,
                                                 num_replicas_in_sync=processes)
        ds = self._make_dataset(context, local_batch)
        info = dataset_info(ds, None)
        if info is not None and info.records is not None:  # video files: shared out by index
            count = len(range(index, len(info.records), processes))
        else:  # TFRecords: shared out by shard file, counted per file
            count = getattr(info, "num_videos", None)
        if count is None:
            count = sum(int(tf.shape(labels)[0]) for _, labels in ds)
        steps = math.ceil(self._max_over_processes(count) / local_batch)
        spec = ds.element_spec
        if not all(s.shape[1:].is_fully_defined() for s in tf.nest.flatten(spec)):
            raise ValueError(f"Validation needs clips of a fixed shape, not {spec}.")
        real = ds.unbatch().map(lambda clips, labels: (clips, labels, tf.constant(1.0)))
        pad = tf.data.Dataset.from_tensors(tf.nest.map_structure(
            lambda s: tf.zeros(s.shape[1:], s.dtype), spec) + (tf.constant(0.0),)).repeat()
        # Exactly `steps` full batches on every process: the real clips, then weight-0 padding.
        return real.concatenate(pad).take(steps * local_batch).batch(local_batch,
                                                                    drop_remainder=True)

    @staticmethod
    def _max_over_processes(count: int) -> int:
        import jax

        if jax.process_count() == 1:
            return count
        from jax.experimental import multihost_utils

        return int(np.max(multihost_utils.process_allgather(np.asarray(count, np.int64))))

    @staticmethod
    def _global_array(distribution, local, global_batch):
        import jax

        if distribution is None:
            return jax.device_put(local)
        layout = distribution.get_data_layout((global_batch,) + local.shape[1:]).backend_layout
        return jax.make_array_from_process_local_data(layout, local)

    def _jax_function(self, distribution):
        if self._step is not None:
            return self._step
        import jax

        model = self.model

        def step(trainable, non_trainable, clips, labels, weights):
            logits, _ = model.stateless_call(trainable, non_trainable, clips, training=False)
            return keras.ops.stack(self._stats(labels, logits, weights))

        out = None
        if distribution is not None:
            # Replicated sums: every process reads the same four numbers.
            layout = distribution.get_data_layout((self._global_batch,)).backend_layout
            out = jax.sharding.NamedSharding(layout.mesh, jax.sharding.PartitionSpec())
        self._step = jax.jit(step, out_shardings=out)
        return self._step

    def _stats(self, labels, logits, weights):
        """Weighted sums of the loss, top-1 and top-k hits, and the weight."""
        ops = keras.ops
        logits = ops.cast(logits, "float32")
        weights = ops.cast(weights, "float32")
        labels = ops.convert_to_tensor(labels)
        per_clip = ops.reshape(ops.cast(self._loss.call(labels, logits), "float32"), (-1,))
        if len(labels.shape) == len(logits.shape):  # one-hot (MixUp / CutMix runs)
            index = ops.argmax(labels, axis=-1)
        else:
            index = ops.reshape(labels, (-1,))
        index = ops.cast(index, "int32")
        true_logit = ops.take_along_axis(logits, ops.expand_dims(index, -1), axis=-1)
        rank = ops.sum(ops.cast(logits > true_logit, "int32"), axis=-1)
        top1 = ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), index),
                        "float32")
        topk = ops.cast(rank < self._top_k, "float32")
        return (ops.sum(per_clip * weights), ops.sum(top1 * weights),
                ops.sum(topk * weights), ops.sum(weights))
