"""Read checkpoint files in a separate, resource-limited Python process and report per file.

Hostile files are read here rather than inside pytest because a regression could crash the
interpreter (C stack overflow), block forever (a FIFO) or allocate gigabytes (/dev/zero, a
memory bomb): in a child process with an address-space limit and a timeout, such a regression
shows up as a failed test that names the file, not as a dead or swapping test session. A fresh
process also gives an honest memory baseline (pytest's process has TensorFlow loaded).

`run(files, genuine)` returns one dict per hostile file (`name`, `error` class name, `bases`,
`message`, `seconds`, `rss_growth_mb`, or `crashed`) and the genuine files' comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADDRESS_SPACE_LIMIT = 4 << 30

_CHILD = r"""
import json, os, resource, sys, time, types

limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
# A bare parent package keeps keras_vtn/__init__ (keras, TensorFlow) out of the child.
pkg = types.ModuleType("keras_vtn")
pkg.__path__ = [os.path.join(sys.argv[2], "keras_vtn")]
sys.modules["keras_vtn"] = pkg
import numpy as np
import keras_vtn.weights as w

job = json.load(sys.stdin)


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MB
    return 0.0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM, the peak resident set size
        return True
    except OSError:
        return False


def report(record):
    print(json.dumps(record), flush=True)


for name, path in job["files"]:
    report({"start": name})
    exact = reset_peak()
    before = status("VmRSS")
    start = time.perf_counter()
    record = {"name": name, "error": None}
    try:
        w.read_checkpoint(path)
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        record.update(
            error=type(err).__name__,
            bases=[c.__name__ for c in type(err).__mro__],
            message=str(err)[:2000],
        )
    record["seconds"] = time.perf_counter() - start
    record["rss_growth_mb"] = status("VmHWM") - before if exact else None
    report(record)

for path, expected_path in job.get("genuine", []):
    expected = np.load(expected_path)
    got = w.read_checkpoint(path)
    same = sorted(got) == sorted(expected.files) and all(
        got[k].dtype == expected[k].dtype
        and got[k].shape == expected[k].shape
        and got[k].tobytes() == expected[k].tobytes()
        for k in expected.files
    )
    report({"genuine": path, "bit_identical": bool(same)})
report({"done": True})
"""


def run(files, genuine=(), timeout: float = 120, limit: int = ADDRESS_SPACE_LIMIT):
    """Read `files` ([(name, path)]) then `genuine` ([(path, expected .npz)]) in one child.

    Returns (hostile results, genuine results, finished). A child that dies or times out
    leaves a result with `crashed` for the file it was reading.
    """
    job = json.dumps({"files": [list(f) for f in files], "genuine": [list(g) for g in genuine]})
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(limit), ROOT],
            input=job,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        stdout, code, tail = proc.stdout, proc.returncode, proc.stderr[-2000:]
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        code, tail = "timeout", f"timed out after {timeout} s"
    results, genuine_results, current, finished = [], [], None, False
    for line in stdout.splitlines():
        record = json.loads(line)
        if "start" in record:
            current = record["start"]
        elif "name" in record:
            results.append(record)
            current = None
        elif "genuine" in record:
            genuine_results.append(record)
        elif record.get("done"):
            finished = True
    if current is not None or not finished:
        results.append(
            {"name": current or "<after the hostile files>", "crashed": f"exit {code}: {tail}"}
        )
    return results, genuine_results, finished
