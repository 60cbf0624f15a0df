"""Every command the README and the `--help` examples show runs, on tiny data.

The walker collects the README's ```bash blocks, its inline `keras-vtn ...` spans and the
`examples:` of every sub-command's `--help` (whatever commands exist when it runs), then runs
each one in a scratch folder that holds tiny stand-ins under the names the examples use. Paths
that cannot be created there are substituted by the explicit table `SUBSTITUTIONS`; a command
that cannot run on tiny data must be listed in `NOT_RUN` with the reason. A command that is
neither runnable nor listed fails the test: nothing is skipped silently.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import shutil
import subprocess
import sys

from test_cli import HF_FOLDER, LAPS_VIT, LIN_VTN, REPO, command_line, noise_lines

README = os.path.join(REPO, "README.md")

# Words of an example that name things the scratch folder cannot hold -> their stand-ins.
SUBSTITUTIONS = {
    "/data/k400": "k400",  # an absolute path: the tiny Kinetics-400 tree in the scratch folder
    "ROOT": "videos",  # a placeholder for "your video folder"
}
# Registry downloads need the network; the same command runs on a local checkpoint instead.
WORD_PAIRS = {
    ("--weights", "k400"): ("--weights", "path/to/hf_vivit_folder"),
}

# Commands that do not run here, by how they start, with the reason.
NOT_RUN = {
    "pip install": "installs packages from the network; this test runs in that installation",
    "python examples/train_kinetics400.py --preset vivit_k400": (
        "trains the full-size ViViT-B recipe for its 30 epochs; tests/training runs the same "
        "script on tiny data"
    ),
    "keras-vtn data-service dispatcher": (
        "a server that runs until stopped; tests/data/test_data_service.py starts one and "
        "reads through it"
    ),
    "keras-vtn data-service worker": "a server that needs a running dispatcher (as above)",
    "keras-vtn convert k400 --family": (
        "downloads a registry checkpoint (network); the same code path converts local files "
        "in the other convert examples"
    ),
    "keras-vtn convert --preset vivit_b16x2_k400": (
        "downloads a registry checkpoint (network); tests/test_cli_presets.py writes a built-in "
        "preset served on 127.0.0.1 to a folder"
    ),
    "keras-vtn evaluate --preset vivit_b16x2_k400": (
        "downloads a registry checkpoint (network); tests/test_cli_presets.py evaluates with a "
        "trained preset"
    ),
    "keras-vtn train --preset vivit_k400": (
        "trains the full-size ViViT-B recipe for its 30 epochs; tests/test_cli_presets.py runs "
        "keras-vtn train on tiny data"
    ),
    "keras-vtn predict video.mp4 --preset runs/vivit/preset": (
        "needs the preset the full-size training above writes; tests/test_cli_presets.py "
        "predicts with the preset of a tiny run"
    ),
}

# Commands that run here but fail from a known bug outside this test: (start, message the
# failure must show, the bug). Each still runs; once it passes, the entry must go.
KNOWN_FAILURES: dict[str, tuple[str, str]] = {}


def _bash_blocks(text: str) -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def _inline_commands(text: str) -> list[str]:
    spans = [" ".join(span.split()) for span in re.findall(r"`(keras-vtn [^`]+)`", text)]
    # `keras-vtn export` alone names a command in prose; a span with arguments is one to run.
    return [span for span in spans if len(span.split()) > 2]


def readme_commands() -> list[str]:
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    return _bash_blocks(text) + _inline_commands(text)


def help_examples() -> list[str]:
    """The `examples:` lines of every sub-command's `--help` (argparse epilog or description)."""
    import argparse

    from keras_vtn import cli

    parser = cli.build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = []
    for name, sub in actions[0].choices.items():
        text = sub.format_help()
        if "examples:" not in text:
            continue
        tail = text.split("examples:", 1)[1]
        for line in tail.splitlines():
            if line.strip().startswith("keras-vtn "):
                commands.append(" ".join(line.split()))
        assert any(c.startswith(f"keras-vtn {name}") for c in commands), name
    return commands


def _reason_not_run(command: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


def _substitute(words: list[str]) -> list[str]:
    words = [SUBSTITUTIONS.get(w, w) for w in words]
    out, i = [], 0
    while i < len(words):
        pair = tuple(words[i:i + 2])
        if pair in WORD_PAIRS:
            out.extend(WORD_PAIRS[pair])
            i += 2
        else:
            out.append(words[i])
            i += 1
    return out


# -------------------------------------------------------------------------- the tiny world

_KINETICS_ROWS = [("abseiling", "aaaaaaaaa-1"), ("zumba", "ddddddddddd")]


def _kinetics_csv(path: str, split: str) -> None:
    with open(path, "w") as f:
        f.write("label,youtube_id,time_start,time_end,split,is_cc\n")
        for label, vid in _KINETICS_ROWS:
            f.write(f'"{label}",{vid},0,10,{split},0\n')


def build_scratch(folder: str) -> None:
    """Tiny stand-ins, under the names the README and the help examples use."""
    import keras_vtn
    from keras_vtn.data.testing import write_video

    def join(*parts):
        return os.path.join(folder, *parts)

    write_video(join("video.mp4"), num_frames=24)
    # /data/k400 -> a Kinetics-400 tree (official CSVs, downloader layout) of two videos each.
    for split in ("train", "val"):
        os.makedirs(join("k400", split), exist_ok=True)
        _kinetics_csv(join("k400", f"{split}.csv"), split)
        for label, vid in _KINETICS_ROWS:
            os.makedirs(join("k400", split, label), exist_ok=True)
            write_video(join("k400", split, label, f"{vid}_000000_000010.mp4"), num_frames=24)
    # `prepare train.csv out/ --root videos/` and `check-videos ROOT --csv train.csv`.
    _kinetics_csv(join("train.csv"), "train")
    os.makedirs(join("videos"), exist_ok=True)
    for _, vid in _KINETICS_ROWS:
        write_video(join("videos", f"{vid}_000000_000010.mp4"), num_frames=24)
    # A trained run's model (400 classes: evaluated on Kinetics-400 labels).
    model = keras_vtn.LAPSTransformer(
        "vit_base", num_frames=4, image_size=32, patch_size=16, hidden_dim=32, num_layers=2,
        num_heads=2, mlp_dim=64, num_classes=400,
    )
    os.makedirs(join("runs", "vivit"), exist_ok=True)
    model.save(join("runs", "vivit", "model.keras"))
    # Original checkpoints: the tiny fixtures of each format.
    shutil.copy(LIN_VTN, join("lin-vtn.pth"))
    shutil.copy(LAPS_VIT, join("ckpt_e30.pth"))
    shutil.copytree(HF_FOLDER, join("path", "to", "hf_vivit_folder"))
    shutil.copytree(HF_FOLDER, join("hf_vivit_folder"))


def _run(command: str, folder: str) -> subprocess.CompletedProcess:
    words = _substitute(shlex.split(command))
    if words[0] == "keras-vtn":
        argv = [*command_line(), *words[1:]]
    elif words[0] == "python":
        argv = [sys.executable, *[os.path.join(REPO, w) if w.startswith("examples/") else w
                                  for w in words[1:]]]
    else:
        raise AssertionError(f"{command!r}: neither keras-vtn nor python; list it in NOT_RUN")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


def test_collects_commands_from_every_source():
    readme = readme_commands()
    examples = help_examples()
    assert any(c.startswith("keras-vtn evaluate") for c in readme)
    assert any(c.startswith("keras-vtn prepare") for c in readme)
    assert any(c.startswith("keras-vtn convert") for c in examples)
    assert any(c.startswith("keras-vtn benchmark") for c in examples)
    # Every entry of the table still matches a shown command (no stale excuses).
    shown = readme + examples
    for start in NOT_RUN:
        assert any(c.startswith(start) for c in shown), f"NOT_RUN entry {start!r} is stale"


def test_every_readme_and_help_command_runs_on_tiny_data(tmp_path):
    build_scratch(str(tmp_path))
    commands = list(dict.fromkeys(readme_commands() + help_examples()))
    not_run = [(c, _reason_not_run(c)) for c in commands if _reason_not_run(c)]
    ran = [c for c in commands if not _reason_not_run(c)]
    # Two at a time: each command mostly waits on TensorFlow's import, one core each.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda c: _run(c, str(tmp_path)), ran))
    failures = []
    for command, result in zip(ran, results, strict=True):
        problems = []
        if result.returncode != 0:
            problems.append(f"exit status {result.returncode}")
        if "Traceback" in result.stderr:
            problems.append("traceback")
        if noise_lines(result.stderr):
            problems.append(f"TensorFlow noise {noise_lines(result.stderr)}")
        known = next((v for k, v in KNOWN_FAILURES.items() if command.startswith(k)), None)
        if known is not None:
            if not problems:
                failures.append(f"{command}\n  now runs: remove its KNOWN_FAILURES entry")
            elif known[0] not in result.stderr + result.stdout:
                failures.append(f"{command}\n  fails other than known\n{result.stderr[-2000:]}")
            continue
        if problems:
            failures.append(f"{command}\n  {'; '.join(problems)}\n{result.stderr[-2000:]}")
    print("ran:", *ran, "not run:", *(f"{c}  ({why})" for c, why in not_run), sep="\n  ")
    assert not failures, "\n\n".join(failures)
    assert len(not_run) <= len(NOT_RUN) + 6, not_run  # the list must stay short
