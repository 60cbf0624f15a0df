"""Decoding scaled out with tf.data service: `keras-vtn data-service dispatcher|worker`.

TensorFlow's own servers do the work: a `DispatchServer` hands out the elements of each pass
and `WorkerServer`s (other processes or machines) run the per-element graph.
`video_dataset(..., service="grpc://HOST:P")` and `tfrecord_dataset(..., service=...)` ship
decoding (PyAV, or the JPEG frames of `prepare`'s shards) to the workers; cropping,
augmentation, batching and MixUp stay on the client, as do the `DecodeReport` and the order of
each pass.

Why the workers can run Python decoding at all: a graph refers to a Python function
(`tf.numpy_function`) by a token looked up in the running process, and the tokens TensorFlow
makes up are counters valid only in the process that made them. The functions here are
registered under fixed names instead, in the client and -- because `keras-vtn data-service
worker` imports this module -- in every worker, so the shipped graph finds them there. They
take everything they need (path, seed, sampling options as JSON) as inputs, never a closure
over the client's objects. A worker started without keras_vtn fails such an element with
"Could not find callback with key=keras_vtn.data.service/...".

How a pass is shared out: the client decides the whole pass -- which video, with which seed
(the same order and seeds as without the service, so the same `seed` gives the same clips) --
and registers it as one dataset of `(position, path, label, seed)` rows with the dispatcher;
`processing_mode="distributed_epoch"` (dynamic sharding) gives each row to one worker, so a
pass delivers every video once, whatever the number of workers. Each pass is a new job (a new
registration when the order changes), which is how training reshuffles per epoch. Clips of a
pass arrive in the order workers finish them. Each element carries its video's position and
decode status back, so the client's `DecodeReport` counts the work of every worker, and a
pass that came back short or with a position twice is logged and recorded in
`report.history[i]` (`expected`, `lost`, `duplicated`).

A worker that dies: tf.data service never drops a worker from a job; clients wait for it to
come back at the same address, and its rows still unread are handed to whoever asks next. So
`keras-vtn data-service worker` runs the server in a child process and starts it again at the
same port when it dies: the pass goes on, short of the rows the dead server held (a few per
worker: what its parallel map had started), never with a row twice. If the command itself is
killed, start it again with the same `--port`; until then the pass waits.

Start the servers (the videos must be readable at the same paths on every worker):

    keras-vtn data-service dispatcher --port 5050 [--work-dir DIR]
    keras-vtn data-service worker --dispatcher HOST:5050   # on each decoding machine
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import gen_script_ops, script_ops

from keras_vtn.data.dataset import (
    ClipConfig,
    DecodeReport,
    pass_order,
    resolve_records,
)
from keras_vtn.data.decode import DecodeError, read_frames
from keras_vtn.data.info import DatasetInfo, attach_info

logger = logging.getLogger("keras_vtn.data")

# Fixed callback names (see the module docstring); the version changes with the signature.
DECODE_TOKEN = "keras_vtn.data.service/decode_video/v1"
PICK_TOKEN = "keras_vtn.data.service/pick_frames/v1"

# How often a worker asks the dispatcher for new jobs: it bounds the start of every pass.
DEFAULT_HEARTBEAT_S = 0.5
CONNECT_TIMEOUT_S = 5.0
# How long a pass may go without an element before the client says why it waits.
DEFAULT_SERVICE_WAIT_S = 30.0

_START_HINT = ("start one with `keras-vtn data-service dispatcher --port {port}` and workers "
               "with `keras-vtn data-service worker --dispatcher {host}:{port}`")


# ------------------------------------------------------------------- worker-side functions

@functools.lru_cache(maxsize=64)
def _config(spec: bytes) -> ClipConfig:
    """The sampling part of a `ClipConfig`, rebuilt from its JSON (once per spec)."""
    options = json.loads(spec)
    short = options.pop("short_side")
    # crop="none": the crop happens on the client, so the crop-size checks do not apply here
    return ClipConfig(crop="none", short_side=tuple(short) if isinstance(short, list) else short,
                      **options)


# Paths that failed before in this worker: later passes report them without reopening them.
_known_failures: dict[str, tuple[str, str]] = {}
_known_lock = threading.Lock()


def decode_video(path, seed, spec):
    """One row of a pass -> `(frames, frame_indices, status, reason, detail)`.

    `status` 0 is a decoded clip (`detail` says where its frames stop if the file is cut),
    1 a video that failed (`reason`, `detail`).
    """
    config = _config(bytes(spec))
    path = path.decode() if isinstance(path, bytes) else str(path)
    v, t = config.num_clips, config.num_frames
    empty = (np.zeros((v, t, 1, 1, 3), np.uint8), np.zeros((v, t), np.int64))

    def failed(reason, detail):
        return (*empty, np.int32(1), reason.encode(), detail[:500].encode())

    with _known_lock:
        known = _known_failures.get(path)
    if known is not None:
        return failed(*known)
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    picked = []

    def pick(info):
        if info.num_frames < config.min_frames:
            raise DecodeError("too_short", f"{info.num_frames} frames < {config.min_frames}")
        short, idx = config.draw(rng, info.num_frames, info.fps)
        picked.append((short, idx))
        return idx

    try:
        frames, info = read_frames(path, None, short_side=lambda: picked[0][0],
                                   threads=config.decode_threads, info_callback=pick)
    except Exception as error:  # never let one file stop a run (as in-process)
        reason, detail = ((error.reason, error.detail) if isinstance(error, DecodeError)
                          else ("decode_error", repr(error)))
        with _known_lock:
            _known_failures[path] = (reason, detail)
        return failed(reason, detail)
    stop = info.stop_detail if info.truncated else ""
    return frames, picked[-1][1], np.int32(0), b"", stop.encode()


def pick_frames(num_frames, fps, seed, spec):
    """Short side and frame indices of one stored video (the TFRecord path)."""
    config = _config(bytes(spec))
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    short, idx = config.draw(rng, int(num_frames), float(fps))
    return np.int32(short or 0), idx.astype(np.int64)


_REGISTERED = {DECODE_TOKEN: decode_video, PICK_TOKEN: pick_frames}


def register_functions() -> None:
    """Make the fixed callback names resolve in this process (client and worker alike).

    TensorFlow keeps callbacks in a weak-valued registry; the functions are module-level, so
    the module keeps them alive.
    """
    registry = script_ops._py_funcs  # the registry PyFunc ops look tokens up in
    for token, func in _REGISTERED.items():
        registry._funcs[token] = func


register_functions()


def _call(token, inputs, types):
    # A PyFunc op naming a fixed token (what `tf.numpy_function` builds with a counter).
    return gen_script_ops.py_func(input=inputs, token=token, Tout=types)


# ------------------------------------------------------------------------------ addresses


def _split_address(service: str) -> tuple[str, str, int]:
    """`"grpc://host:port"` (or `"host:port"`) -> (target, host, port)."""
    if not isinstance(service, str) or not service:
        raise ValueError(f'service must be "grpc://HOST:PORT", not {service!r}')
    protocol, sep, rest = service.partition("://")
    if not sep:
        protocol, rest = "grpc", service
    if protocol != "grpc":
        raise ValueError(f"service {service!r}: only grpc:// is supported")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f'service {service!r}: expected "grpc://HOST:PORT"')
    return f"grpc://{host}:{port}", host.strip("[]"), int(port)


def check_reachable(service: str, timeout: float = CONNECT_TIMEOUT_S) -> str:
    """The service's target, or `ConnectionError` naming the address and what to start.

    TensorFlow's client retries an absent dispatcher for a long time without a word; this
    answers within `timeout` seconds instead.
    """
    target, host, port = _split_address(service)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        raise ConnectionError(
            f"No tf.data service dispatcher answers at {target} ({error}); "
            + _START_HINT.format(host=host, port=port) + "."
        ) from None
    return target


def registered_workers(service: str, timeout: float = CONNECT_TIMEOUT_S) -> list[str]:
    """Addresses of the workers the dispatcher at `service` lists (its `GetWorkers` call).

    A worker that died stays listed until the dispatcher's worker timeout drops it.
    """
    import grpc  # TensorFlow's own dependency

    target, host, port = _split_address(service)
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        get_workers = channel.unary_unary("/tensorflow.data.DispatcherService/GetWorkers")
        reply = get_workers(b"", timeout=timeout)  # GetWorkersRequest has no fields
    # GetWorkersResponse: repeated WorkerInfo workers = 1; WorkerInfo: string address = 1.
    return [b"".join(_length_delimited(info, field=1)).decode("utf-8", "replace")
            for info in _length_delimited(reply, field=1)]


def _length_delimited(message: bytes, field: int) -> list[bytes]:
    """The values of one length-delimited field of a serialized protobuf message."""

    def varint(at):
        value = shift = 0
        while True:
            byte = message[at]
            value |= (byte & 0x7F) << shift
            at, shift = at + 1, shift + 7
            if byte < 0x80:
                return value, at

    values, at = [], 0
    while at < len(message):
        key, at = varint(at)
        wire = key & 7
        if wire == 0:
            _, at = varint(at)
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == 2:
            size, at = varint(at)
            if key >> 3 == field:
                values.append(message[at:at + size])
            at += size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return values


def _exiting() -> bool:
    # the main thread has ended: the interpreter is shutting down, nobody reads clips
    return not threading.main_thread().is_alive() or sys.is_finalizing()


class _WorkerWatch:
    """Warns while a pass gets no element for `wait` seconds, naming the dispatcher, the
    workers it lists and the command that starts one; again every `wait` seconds, until an
    element comes, the pass ends or its dataset is gone (`owner`, held weakly)."""

    def __init__(self, owner, target: str, wait: float, name: str):
        self.owner = weakref.ref(owner)
        _, self.host, self.port = _split_address(target)
        self.target, self.wait, self.name = target, wait, name
        self.last = time.monotonic()
        self.open_passes: set[int] = set()
        self.lock = threading.Lock()
        self.thread = None

    def progress(self):
        self.last = time.monotonic()

    def opened(self, number: int):
        with self.lock:
            self.open_passes.add(number)
            self.last = time.monotonic()
            if self.thread is None and self.wait and self.wait > 0:
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name="keras_vtn-data-service-watch")
                self.thread.start()

    def closed(self, number: int):
        with self.lock:
            self.open_passes.discard(number)
            self.last = time.monotonic()
            if not self.open_passes:
                self.thread = None  # the watching thread ends at its next look

    def _run(self):
        me = threading.current_thread()
        warned = 0.0
        while True:
            time.sleep(min(self.wait, 5.0) / 2)
            with self.lock:
                if self.thread is not me or self.owner() is None or _exiting():
                    return
            idle = time.monotonic() - self.last
            if idle < self.wait or time.monotonic() - warned < self.wait:
                continue
            warned = time.monotonic()
            message = self.message(idle)
            if not _exiting():
                logger.warning("%s", message)

    def message(self, idle: float) -> str:
        start = (f"`keras-vtn data-service worker --dispatcher {self.host}:{self.port}` on a "
                 "machine that reads the videos at the same paths")
        try:
            workers = registered_workers(self.target)
        except Exception as error:  # the dispatcher itself went away
            return (f"{self.name}: no element for {idle:.0f} s and the dispatcher at "
                    f"{self.target} does not answer ({type(error).__name__}); start it again "
                    f"with `keras-vtn data-service dispatcher --port {self.port}` (same "
                    f"--work-dir) and workers with {start}.")
        if not workers:
            return (f"{self.name}: waiting {idle:.0f} s for clips, but no tf.data service worker "
                    f"is registered with the dispatcher at {self.target}; start one with "
                    f"{start}.")
        return (f"{self.name}: no element for {idle:.0f} s from the {len(workers)} worker(s) "
                f"the dispatcher at {self.target} lists ({', '.join(workers)}); if they are "
                f"gone, start them again (same --port) or start new ones with {start}.")


# ------------------------------------------------------------------------- client: passes


class _Pass:
    """What the client knows about one pass: rows sent, and which came back."""

    def __init__(self, paths):
        self.paths = paths
        self.seen = Counter()


class _Passes:
    """Registers each pass with the dispatcher and closes it in the `DecodeReport`."""

    def __init__(self, target, table, build_graph, report, shuffled, name,
                 wait: float = DEFAULT_SERVICE_WAIT_S):
        self.target = target
        self.watch = _WorkerWatch(self, target, wait, name)
        self.table = table  # () -> (positions, paths, labels, seeds) of the next pass
        self.build_graph = build_graph
        self.report = report
        self.shuffled = shuffled
        self.name = name
        self.passes: dict[int, _Pass] = {}
        self.count = 0
        self.lock = threading.Lock()
        self._dataset_id = None  # unshuffled passes are all the same dataset

    def start(self):
        """Next pass: registered (unless it is the same as the last), returns its id."""
        check_reachable(self.target)
        positions, paths, labels, seeds = self.table()
        with self.lock:
            number = self.count
            self.count += 1
            self.passes[number] = _Pass(paths)
        self.watch.opened(number)
        if self.shuffled or self._dataset_id is None:
            graph = self.build_graph(positions, paths, labels, seeds)
            self._dataset_id = tf.data.experimental.service.register_dataset(
                self.target, graph
            ).numpy()
        return self._dataset_id, np.int64(number)

    def each_pass(self, repeat: bool):
        """Yields `(dataset_id, number)` of pass after pass. When the iterator reading them
        is dropped mid-pass, tf.data closes this generator: the pass is abandoned, and
        nobody waits for its elements any more."""
        number = None
        try:
            while True:
                dataset_id, number = self.start()
                yield dataset_id, number
                number = None  # its end marker came: `end` closed it
                if not repeat:
                    return
        finally:
            if number is not None:
                self.abandon(int(number))

    def abandon(self, number: int):
        with self.lock:
            self.passes.pop(number, None)
        self.watch.closed(number)

    def note(self, number, position, status, reason, detail):
        """One element back from a worker: into the report."""
        number, position = int(number), int(position)
        self.watch.progress()
        with self.lock:
            record = self.passes[number]
            record.seen[position] += 1
        path = record.paths[position]
        detail = detail.decode("utf-8", "replace")
        if status == 0:
            self.report.ok()
            if detail:
                self.report.note_truncated(path, detail)
        else:
            reason = reason.decode()
            if not self.report.known_failure(path):
                self.report.fail(path, reason, detail)
        return np.int32(status)

    def end(self, number):
        """The pass's job has ended: every element that will come has come."""
        with self.lock:
            record = self.passes.pop(int(number))
        self.watch.closed(int(number))
        self.report.end_pass()
        entry = self.report.history[-1]
        entry.update(self.pass_counts(record, entry))
        if entry.get("lost") or entry["duplicated"]:
            logger.warning(
                "%s pass %d through %s: %s of %s videos never came back (a worker left "
                "mid-pass), %d came twice.", self.name, len(self.report.history), self.target,
                entry.get("lost", "?"), entry.get("expected", "?"), entry["duplicated"])
        return np.int32(0)

    def pass_counts(self, record: _Pass, entry: dict) -> dict:
        """`expected`, `lost` and `duplicated` videos of a finished pass (`entry` holds its
        `report.history` counts)."""
        expected = len(record.paths)
        return dict(expected=expected, lost=expected - len(record.seen),
                    duplicated=sum(n - 1 for n in record.seen.values()))


def _client_dataset(passes, element_spec, repeat: bool, note):
    """Elements `(frames, idx, status, label, clip_seed)` of pass after pass: each pass is
    registered with the dispatcher, read once, and closed by an end marker (or abandoned when
    its reader is dropped mid-pass). `note(number)` gives the map that records each element
    of pass `number` in the report."""
    target = passes.target

    def one_pass(dataset_id, number):
        remote = tf.data.experimental.service.from_dataset_id(
            processing_mode="distributed_epoch", service=target, dataset_id=dataset_id,
            element_spec=element_spec,
        )

        def end(_):
            tf.numpy_function(passes.end, [number], tf.int32, name="end_pass")
            return _empty_element(element_spec)

        marker = tf.data.Dataset.range(1).map(end)
        return remote.map(note(number)).concatenate(marker)

    passes_ds = tf.data.Dataset.from_generator(
        lambda: passes.each_pass(repeat),
        output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64)),
    )
    return passes_ds.flat_map(one_pass)


def _note_video(passes: _Passes):
    def for_pass(number):
        def note(frames, idx, status, label, clip_seed, position, reason, detail):
            status = tf.numpy_function(passes.note, [number, position, status, reason, detail],
                                       tf.int32, name="note_element")
            status.set_shape([])
            return frames, idx, status, label, clip_seed

        return note

    return for_pass


def _empty_element(spec):
    frames, idx, _, label, clip_seed = spec[:5]
    v, t = idx.shape
    return (tf.zeros([v, t, 1, 1, 3], frames.dtype), tf.zeros([v, t], idx.dtype),
            tf.constant(-1, tf.int32), tf.constant(-1, label.dtype),
            tf.zeros([2], clip_seed.dtype))


def _sampling_spec(config: ClipConfig) -> bytes:
    sampler = config.sampler
    short = config.short_side
    return json.dumps({
        "training": config.training, "num_frames": config.num_frames,
        "sampling": sampler.kind, "frame_stride": sampler.frame_stride,
        "target_fps": sampler.target_fps, "num_clips": config.num_clips,
        "short_side": list(short) if isinstance(short, (tuple, list)) else short,
        "min_frames": config.min_frames, "decode_threads": config.decode_threads,
    }, sort_keys=True).encode()


# ------------------------------------------------------------------------ the video path


def video_dataset(source=None, *, root=None, label_names=None, input_context=None,
                  service: str, service_wait: float = DEFAULT_SERVICE_WAIT_S,
                  **kwargs) -> tf.data.Dataset:
    """`keras_vtn.data.video_dataset` with decoding on tf.data service workers.

    A pass that gets no clip for `service_wait` seconds (no worker registered, or all gone)
    logs a warning naming the dispatcher and how to start a worker, again every
    `service_wait` seconds while it waits (0 turns this off).
    """
    target = check_reachable(service)
    records = resolve_records(source, root, label_names)
    config = ClipConfig(**kwargs)
    report = DecodeReport(config.training)
    num_classes = max(len(records.label_names), max(records.labels) + 1, 1)
    v, t = config.num_clips, config.num_frames
    spec = _sampling_spec(config)
    paths = np.asarray(records.paths, object)
    labels = np.asarray(records.labels, np.int32)

    # The order and seeds of a pass, made exactly as `video_dataset` makes them in-process:
    # each new iteration of this small dataset is the next pass (reshuffled, new seeds).
    order = pass_order(len(records), config, input_context).batch(1 << 20)

    def table():
        rows = [batch for batch in order.as_numpy_iterator()]
        index = np.concatenate([r[0] for r in rows]) if rows else np.zeros([0], np.int64)
        seed = np.concatenate([r[1] for r in rows]) if rows else np.zeros([0], np.int64)
        return np.arange(len(index)), paths[index].tolist(), labels[index], seed

    def build_graph(positions, row_paths, row_labels, row_seeds):
        rows = tf.data.Dataset.from_tensor_slices((
            tf.constant(positions, tf.int64), tf.constant(row_paths, tf.string),
            tf.constant(row_labels, tf.int32), tf.constant(row_seeds, tf.int64),
        ))
        spec_tensor = tf.constant(spec)

        def decode(position, path, label, seed):
            frames, idx, status, reason, detail = _call(
                DECODE_TOKEN, [path, seed, spec_tensor],
                [tf.uint8, tf.int64, tf.int32, tf.string, tf.string],
            )
            frames.set_shape([v, t, None, None, 3])
            idx.set_shape([v, t])
            status.set_shape([])
            reason.set_shape([])
            detail.set_shape([])
            return (frames, idx, status, label, tf.stack([seed, seed // 7]), position, reason,
                    detail)

        return rows.map(decode, num_parallel_calls=config.parallel, deterministic=False)

    element_spec = (
        tf.TensorSpec([v, t, None, None, 3], tf.uint8), tf.TensorSpec([v, t], tf.int64),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64),
        tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string),
    )
    passes = _Passes(target, table, build_graph, report, bool(config.shuffle or config.training),
                     "video_dataset", service_wait)
    ds = _client_dataset(passes, element_spec, config.repeat, _note_video(passes))
    ds = config.finish(ds, num_classes)
    if records.skipped:
        report.skipped.update(records.skipped)
        logger.warning("%d paths left out of the listing: %s", len(records.skipped), "; ".join(
            f"{p} ({why})" for p, why in list(records.skipped.items())[: report.max_logged]))
    return attach_info(ds, DatasetInfo(list(records.label_names), report, config, records,
                                       service=target))


# --------------------------------------------------------------------- the TFRecord path


def tfrecord_dataset(path, *, label_names=None, input_context=None, cycle_length=None,
                     shuffle_buffer: int = 256, allow_incomplete: bool = False, service: str,
                     service_wait: float = DEFAULT_SERVICE_WAIT_S, **kwargs) -> tf.data.Dataset:
    """`keras_vtn.data.tfrecord_dataset` with parsing and JPEG decoding on the workers.

    Workers receive whole shard files (dynamic sharding by file), so a pass reads every
    record once; `shuffle_buffer` shuffles within each worker. `service_wait`: as in
    `video_dataset`. A record's seed is drawn from
    the pass's seed and the record's bytes, so it does not depend on which worker reads it.
    """
    from keras_vtn.data import tfrecord as tfr

    target = check_reachable(service)
    files, manifest = tfr.shard_files(path, allow_incomplete)
    stored = manifest.get("label_names", [])
    names = list(label_names) if label_names is not None else stored
    label_table = tfr.stored_label_table(stored, names)
    config = ClipConfig(**kwargs)
    num_classes = max(len(names), 1)
    v, t = config.num_clips, config.num_frames
    spec = _sampling_spec(config)
    if input_context is not None and input_context.num_input_pipelines > 1:
        files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
    base_seed = config.seed if config.seed is not None else int(np.random.SeedSequence().entropy
                                                                 % (1 << 62))
    counter = iter(range(1 << 62))

    def table():
        number = next(counter)
        rng = np.random.default_rng([base_seed, number])
        order = rng.permutation(len(files)) if config.shuffle else np.arange(len(files))
        pass_seed = int(rng.integers(0, 1 << 62))
        return None, [files[i] for i in order], None, pass_seed

    def build_graph(_, row_files, __, pass_seed):
        spec_tensor = tf.constant(spec)
        files_ds = tf.data.Dataset.from_tensor_slices(tf.constant(row_files, tf.string))
        records = files_ds.interleave(
            tf.data.TFRecordDataset, cycle_length=cycle_length or 2,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        if config.shuffle:
            records = records.shuffle(shuffle_buffer, seed=pass_seed % (1 << 31))

        context_features = {**tfr._CONTEXT,
                            "video/filename": tf.io.FixedLenFeature([], tf.string, "")}

        def parse(serialized):
            context, sequence = tf.io.parse_single_sequence_example(
                serialized, context_features=context_features,
                sequence_features=tfr._SEQUENCE,
            )
            seed = tf.bitwise.bitwise_xor(
                tf.strings.to_hash_bucket_fast(serialized, (1 << 62)),
                tf.constant(pass_seed, tf.int64))
            jpegs = sequence["image/encoded"]
            short, idx = _call(PICK_TOKEN, [tf.shape(jpegs)[0], context["video/fps"], seed,
                                            spec_tensor], [tf.int32, tf.int64])
            short.set_shape([])
            idx.set_shape([v, t])
            frames, source_idx, label = tfr.decode_clip(
                context, jpegs, idx, short, config.short_side is not None, label_table)
            return (frames, source_idx, tf.constant(0, tf.int32), label,
                    tf.stack([seed, seed // 7]), context["video/filename"])

        return records.map(parse, num_parallel_calls=config.parallel, deterministic=False)

    element_spec = (
        tf.TensorSpec([v, t, None, None, 3], tf.uint8), tf.TensorSpec([v, t], tf.int64),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64),
        tf.TensorSpec([], tf.string),
    )
    report = DecodeReport(config.training)
    for failed_path, reason in manifest.get("failed", {}).items():
        report.failed[failed_path] = (reason.split(":")[0], "failed in prepare")
    passes = _RecordPasses(target, table, build_graph, report, True, "tfrecord_dataset",
                           service_wait)
    passes.expected = tfr._count_videos(files, manifest.get("fingerprint"))
    ds = _client_dataset(passes, element_spec, config.repeat, _note_record(passes))
    ds = config.finish(ds, num_classes)
    return attach_info(ds, DatasetInfo(list(names), report, config,
                                       stored_videos=passes.expected, service=target))


class _RecordPasses(_Passes):
    """Passes of the TFRecord path: records are known by file name, counted as they come;
    `expected` is the number of videos in the shards (None when `prepare` did not say)."""

    expected: int | None = None

    def note_record(self, number, name):
        self.watch.progress()
        with self.lock:
            self.passes[int(number)].seen[bytes(name)] += 1
        self.report.ok()
        return np.int32(0)

    def pass_counts(self, record: _Pass, entry: dict) -> dict:
        # records without a file name cannot be told apart: not counted as duplicates
        duplicated = sum(n - 1 for name, n in record.seen.items() if name)
        if self.expected is None:
            return dict(duplicated=duplicated)
        return dict(expected=self.expected, lost=self.expected - entry["decoded"] + duplicated,
                    duplicated=duplicated)


def _note_record(passes: _RecordPasses):
    def for_pass(number):
        def note(frames, idx, status, label, clip_seed, name):
            done = tf.numpy_function(passes.note_record, [number, name], tf.int32,
                                     name="note_record")
            done.set_shape([])
            return frames, idx, status + done, label, clip_seed

        return note

    return for_pass


# ------------------------------------------------------------------------------ servers


def _serve(server, what: str) -> int:
    """Blocks until SIGINT / SIGTERM, then stops `server`."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(what, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


def serve_dispatcher(port: int, work_dir: str | None = None) -> int:
    """Runs a `DispatchServer` until SIGINT / SIGTERM; with `work_dir` it journals its state
    there, so a restarted dispatcher resumes its jobs."""
    options = {"port": port}
    if work_dir:
        os.makedirs(work_dir, exist_ok=True)
        options.update(work_dir=work_dir, fault_tolerant_mode=True)
    server = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(**options))
    return _serve(server, f"keras-vtn data-service: dispatcher at {server.target} "
                          "(Ctrl-C stops it)")


# A server that dies this often this quickly has a problem a restart will not fix.
_MAX_RESTARTS, _RESTART_WINDOW_S = 5, 60.0


def supervise_worker(dispatcher: str, *, port: int = 0, host: str | None = None,
                     heartbeat: float = DEFAULT_HEARTBEAT_S, wait: float = 60.0) -> int:
    """Runs a `WorkerServer` for `dispatcher` in a child process, started again at the same
    address when it dies, until SIGINT / SIGTERM. `port` 0 picks a free one; `host` is the
    name clients reach the worker by; `wait` is how long the dispatcher may take to answer."""
    address = dispatcher.split("://")[-1]
    _, dispatcher_host, dispatcher_port = _split_address(address)
    # Workers are often started together with their dispatcher: give it time to come up.
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            check_reachable(address, timeout=min(CONNECT_TIMEOUT_S, max(wait, 0.1)))
            break
        except ConnectionError as error:
            if time.monotonic() >= deadline:
                print(f"keras-vtn data-service worker: error: {error}", file=sys.stderr)
                return 2
            time.sleep(0.5)
    name = host or ("localhost" if dispatcher_host in ("localhost", "127.0.0.1", "::1")
                    else socket.getfqdn())
    worker_port = port or _free_port()
    command = [sys.executable, "-m", "keras_vtn.data.service",
               f"{dispatcher_host}:{dispatcher_port}", str(worker_port), name, str(heartbeat)]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    deaths: list[float] = []
    while not stop.is_set():
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        child = subprocess.Popen(command, env=env)
        while child.poll() is None and not stop.wait(0.2):
            pass
        if stop.is_set():
            child.terminate()
            child.wait()
            return 0
        code = child.returncode
        if code == 0:
            return 0
        now = time.monotonic()
        deaths = [t for t in deaths if now - t < _RESTART_WINDOW_S] + [now]
        how = f"signal {-code}" if code < 0 else f"status {code}"
        if len(deaths) > _MAX_RESTARTS:
            print(f"keras-vtn data-service worker: error: the worker server died "
                  f"{len(deaths)} times in {_RESTART_WINDOW_S:g} s (last: {how}); giving up.",
                  file=sys.stderr)
            return 1
        print(f"keras-vtn data-service worker: the server (pid {child.pid}) died ({how}); "
              f"starting it again at {name}:{worker_port}", file=sys.stderr, flush=True)
        time.sleep(0.5)
    return 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _worker_server(dispatcher: str, port: int, name: str, heartbeat: float) -> int:
    """The child process of `keras-vtn data-service worker`: one `WorkerServer`."""
    with contextlib.suppress(Exception):  # Linux: end with the supervisor, even on SIGKILL
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    server = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=dispatcher, worker_address=f"{name}:%port%", port=port,
            heartbeat_interval_ms=max(1, int(heartbeat * 1000)),
        ))
    return _serve(server, f"keras-vtn data-service: worker {name}:{port} (pid {os.getpid()}) "
                          f"serving dispatcher {dispatcher}")


if __name__ == "__main__":
    sys.exit(_worker_server(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])))
