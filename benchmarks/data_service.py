"""Clips per second through tf.data service (1 and 2 local workers) against in-process decoding,
and what each sharding mode of the service does to an epoch.

Same videos and clips as `benchmarks/data_pipeline.py` (320x240 noisy H.264, dense 16 frames at
stride 4, random 224 crop, batch 8). A dispatcher and workers are started as real
`keras-vtn data-service` processes on 127.0.0.1; the in-process pipeline is timed in the same
phase as each service configuration (alternating), so both see the same machine load.
CPU seconds per clip add the client's and the workers' processes.

On a machine with few cores the workers compete with the client for the same cores: the
numbers measure the service's overhead and correctness, not a speed-up; the speed-up comes
from workers on other machines (or idle cores).

Run: `python benchmarks/data_service.py [--videos 8 --clips 24 --repeats 3]`; writes
`benchmarks/results/data_service.json` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter

import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keras_vtn.data import video_dataset  # noqa: E402
from keras_vtn.data.testing import write_video  # noqa: E402

# 16 frames at stride 4, short side 256, random 224 crops, batches of 8: a training input.
KWARGS = dict(training=True, num_frames=16, frame_stride=4, image_size=224, short_side=256,
              batch_size=8, repeat=True)
TICKS = os.sysconf("SC_CLK_TCK")


def make_videos(folder: str, count: int) -> list[str]:
    """`count` noisy 320x240 H.264 videos of 10 s (made once, kept in `folder`)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"noisy_{i:02d}.mp4")
        if not os.path.exists(path):
            write_video(path, num_frames=250, height=240, width=320, fps=25, gop=50,
                        noise=15.0, bit_rate=2_700_000, seed=i)
        paths.append(path)
    return paths


def consume(ds, num_clips: int) -> int:
    """Reads up to `num_clips` clips from a fresh iterator of `ds`."""
    seen = 0
    for _ in ds:
        seen += 1
        if seen >= num_clips:
            break
    return seen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _start(*args) -> tuple[subprocess.Popen, int]:
    """A `keras-vtn data-service` process and the pid of its server, once it serves."""
    script = os.path.join(os.path.dirname(sys.executable), "keras-vtn")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "keras_vtn.cli"]
    process = subprocess.Popen([*command, "data-service", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 0.5)[0]:
            line = process.stdout.readline()
            match = re.search(r"\(pid (\d+)\)", line)
            return process, int(match.group(1)) if match else process.pid
        if process.poll() is not None:
            raise RuntimeError(f"keras-vtn data-service {args[0]} exited")
    raise RuntimeError(f"keras-vtn data-service {args[0]} did not start")


def timed(ds, clips: int, pids: list[int]) -> dict:
    cpu0 = os.times()
    others0 = sum(_cpu_seconds(p) for p in pids)
    start = time.perf_counter()
    seen = consume(ds, clips)
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    workers = sum(_cpu_seconds(p) for p in pids) - others0
    return {"clips": seen, "seconds": seconds, "clips_per_s": seen / seconds,
            "client_cpu_s": cpu, "worker_cpu_s": workers,
            "cpu_s_per_clip": (cpu + workers) / seen, "load_before": os.getloadavg()[0]}


def sharding_modes(num_elements: int = 24) -> dict:
    """How often each element of one epoch arrives, per processing mode, with 2 workers.

    In-process servers (no Python callbacks in this dataset). FILE and DATA sharding need
    the workers listed in the dispatcher's configuration.
    """
    service = tf.data.experimental.service
    ports = [_free_port(), _free_port()]
    dispatcher = service.DispatchServer(service.DispatcherConfig(
        port=0, worker_addresses=[f"localhost:{p}" for p in ports]))
    address = dispatcher.target.split("://")[1]
    workers = [service.WorkerServer(service.WorkerConfig(
        dispatcher_address=address, port=p, worker_address="localhost:%port%",
        heartbeat_interval_ms=200)) for p in ports]
    source = tf.data.Dataset.range(num_elements)
    out = {}
    modes = {
        "parallel_epochs (ShardingPolicy.OFF)": "parallel_epochs",
        "distributed_epoch (ShardingPolicy.DYNAMIC)": "distributed_epoch",
        "ShardingPolicy.DATA": service.ShardingPolicy.DATA,
        "ShardingPolicy.FILE (range: not files)": service.ShardingPolicy.FILE,
    }
    for label, mode in modes.items():
        try:
            ds = source.apply(service.distribute(mode, dispatcher.target))
            counts = Counter(int(x) for x in ds.as_numpy_iterator())
            copies = Counter(counts.values())
            out[label] = {
                "elements_delivered": sum(counts.values()),
                "distinct": len(counts), "of": num_elements,
                "copies_per_element": {str(k): v for k, v in sorted(copies.items())},
            }
        except Exception as error:  # a mode this source does not support: say so
            out[label] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    for w in workers:
        w.stop()
    dispatcher.stop()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--clips", type=int, default=24, help="clips per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/keras_vtn_bench")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "data_service.json"))
    args = parser.parse_args(argv)

    paths = make_videos(os.path.join(args.workdir, "videos"), args.videos)
    pairs = [(p, 0) for p in paths]
    port = _free_port()
    target = f"grpc://127.0.0.1:{port}"
    processes = []
    runs: dict[str, list[dict]] = {}
    try:
        processes.append(_start("dispatcher", "--port", str(port)))
        local = video_dataset(pairs, seed=0, **KWARGS)
        consume(local, 8)
        for count in (1, 2):
            processes.append(_start("worker", "--dispatcher", f"127.0.0.1:{port}"))
            pids = [pid for _, pid in processes]
            remote = video_dataset(pairs, seed=0, service=target, **KWARGS)
            consume(remote, 8)  # warm up: registration, the workers' first task
            key = f"service_{count}_worker{'s' if count > 1 else ''}"
            base = f"in_process_with_{count}_worker{'s' if count > 1 else ''}_idle"
            for r in range(args.repeats):
                runs.setdefault(base, []).append(timed(local, args.clips, []))
                runs.setdefault(key, []).append(timed(remote, args.clips, pids))
                print(f"{count} worker(s), repeat {r}: in-process "
                      f"{runs[base][-1]['clips_per_s']:.2f}, service "
                      f"{runs[key][-1]['clips_per_s']:.2f} clips/s", file=sys.stderr)
    finally:
        for process, _ in reversed(processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    median = {k: statistics.median(x["clips_per_s"] for x in v) for k, v in runs.items()}
    cpu = {k: statistics.median(x["cpu_s_per_clip"] for x in v) for k, v in runs.items()}
    result = {
        "setup": {
            "videos": args.videos, "clips_per_run": args.clips, "repeats": args.repeats,
            "clip": "as benchmarks/data_pipeline.py (dense 16 x stride 4, 224 crop, batch 8)",
            "servers": "keras-vtn data-service dispatcher + workers, separate processes, "
                       "127.0.0.1",
            "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(), "tensorflow": tf.__version__,
        },
        "note": (f"{os.cpu_count()} cores shared by the client and the workers (and other "
                 "jobs): these numbers show the service's overhead and that it works, not a "
                 "speed-up, which needs workers with cores of their own."),
        "runs": runs,
        "median_clips_per_s": median,
        "cpu_seconds_per_clip": cpu,
        "sharding_modes_2_workers": sharding_modes(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average": os.getloadavg(),
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(table(result))
    return 0


def table(result) -> str:
    lines = ["| pipeline | clips/s (median) | runs | CPU s per clip (client + workers) |",
             "|---|---|---|---|"]
    for key, values in result["runs"].items():
        each = " / ".join(f"{x['clips_per_s']:.1f}" for x in values)
        lines.append(f"| {key} | {result['median_clips_per_s'][key]:.1f} | {each} | "
                     f"{result['cpu_seconds_per_clip'][key]:.2f} |")
    lines.append("")
    for mode, what in result["sharding_modes_2_workers"].items():
        lines.append(f"- {mode}: {what}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
