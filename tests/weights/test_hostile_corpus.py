"""The hostile corpus: every kind of hostile checkpoint at once, then genuine ones.

The test generates more than 60 hostile files and folders (torch zip and legacy `.pth`/`.pyth`/
`.bin`, Flax msgpack, safetensors, `.npz`, Hugging Face folders, FIFOs, `/dev/zero` links,
symlink loops, directories where files belong), including code-execution payloads that would
create a marker file, state-poisoning BUILDs, crashers (deeply nested tuples), memory bombs
(stride 0, memo aliases, overlapping zip members and safetensors ranges, lying shapes) and
loops. They are all read in ONE child process (hostile_runner.py: 4 GiB address-space limit,
a timeout, a crash names the file it was reading), which then reads genuine checkpoints with
known arrays. For each hostile file: `read_checkpoint` raises a CheckpointError naming it, in
under 10 s, with peak RSS growth under 512 MB (VmHWM reset before each read); no marker file
exists afterwards; and the genuine files read in the same process are bit-identical.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
from hostile_builders import flax_array_ext, nested_tuple_ext, torch_zip
from hostile_cases import (
    assert_all_refused,
    code_execution_cases,
    deep_nesting_cases,
    genuine_files,
    leaky_cases,
    memory_bomb_cases,
    misc_cases,
    poison_cases,
    shape_cases,
    special_file_cases,
)
from hostile_runner import run

MAX_SECONDS_PER_FILE = 10
MAX_RSS_GROWTH_MB = 512


def build_corpus(root, canary: str) -> dict[str, tuple[str, str | None]]:
    import msgpack

    groups = {
        "code": code_execution_cases,
        "poison": poison_cases,
        "deep": deep_nesting_cases,
        "bomb": memory_bomb_cases,
        "shape": shape_cases,
        "special": special_file_cases,
        "leak": leaky_cases,
        "misc": misc_cases,
    }
    corpus: dict[str, tuple[str, str | None]] = {}
    for group, make in groups.items():
        folder = root / group
        folder.mkdir(parents=True)
        made = make(folder, canary) if group == "code" else make(folder)
        for name, case in made.items():
            corpus[f"{group}/{name}"] = case if isinstance(case, tuple) else (case, None)
    crash = root / "crash"
    (crash / "ext").mkdir(parents=True)
    (crash / "ext" / "checkpoint").write_bytes(msgpack.packb({"params": nested_tuple_ext(200)}))
    corpus["crash/msgpack_nested_tuples"] = (str(crash / "ext"), "more than 8 levels")
    key = b")" + b"\x85" * 100_000 + b"K\x01s."
    corpus["crash/pickle_deep_tuple_key"] = (
        torch_zip(crash / "key.pth", b"\x80\x02}" + key),
        "deeper than 32 levels",
    )
    inner = msgpack.packb({"w": flax_array_ext([2**64 - 1], "float32", b"\0" * 4)})
    (crash / "shape_2p64_msgpack").write_bytes(inner)
    corpus["crash/msgpack_shape_2p64"] = (str(crash / "shape_2p64_msgpack"), "dimension")
    return corpus


def test_hostile_corpus_is_refused_and_leaves_the_process_sound(tmp_path):
    canary = tmp_path / "canary"
    canary.mkdir()
    started = time.perf_counter()
    corpus = build_corpus(tmp_path / "corpus", str(canary))
    built = time.perf_counter() - started
    assert len(corpus) >= 60, len(corpus)
    formats = {name.split("/")[1].split("_")[0] for name in corpus}
    assert {"pth", "legacy", "msgpack", "safetensors", "npz", "hf", "fifo"} <= formats, formats

    genuine_dir = tmp_path / "genuine"
    genuine_dir.mkdir()
    genuine = []
    for index, (path, known) in enumerate(genuine_files(genuine_dir)):
        expected = genuine_dir / f"expected_{index}.npz"
        np.savez(expected, **known)
        genuine.append((path, str(expected)))

    started = time.perf_counter()
    results, genuine_results, finished = run(
        sorted((name, path) for name, (path, _) in corpus.items()), genuine, timeout=150
    )
    read = time.perf_counter() - started
    by_name = {r["name"]: r for r in results}
    assert_all_refused(
        corpus,
        by_name,
        max_growth_mb=MAX_RSS_GROWTH_MB,
        max_seconds=MAX_SECONDS_PER_FILE,
    )
    assert os.listdir(canary) == [], f"payloads ran: {os.listdir(canary)}"
    assert finished, results[-1]
    assert len(genuine_results) == len(genuine) >= 5
    assert all(g["bit_identical"] for g in genuine_results), genuine_results
    growth = [r["rss_growth_mb"] for r in results if r.get("rss_growth_mb") is not None]
    print(
        f"\nhostile corpus: {len(corpus)} files, built in {built:.1f} s, read in {read:.1f} s; "
        f"slowest read {max(r['seconds'] for r in results):.2f} s; peak RSS growth "
        f"{max(growth, default=float('nan')):.1f} MB (VmHWM reset per file: {bool(growth)})"
    )


def test_the_corpus_payloads_are_live(tmp_path):
    """The code-execution files would run their payload under plain unpickling: the corpus
    tests the reader, not a harmless file."""
    canary = tmp_path / "canary"
    canary.mkdir()
    cases = code_execution_cases(tmp_path, str(canary))
    import zipfile

    with zipfile.ZipFile(cases["pth_reduce_os_system"][0]) as archive:
        data = archive.read("archive/data.pkl")
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=data,
        check=True,
        timeout=60,
    )
    assert os.listdir(canary) == ["os_system"]
