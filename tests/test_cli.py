"""The `keras-vtn` command line as users run it: real processes, real files, tiny models.

Every subprocess pays TensorFlow's import (several seconds on the 2-core machine), so each one
checks as much as it can: output, exit status and a clean stderr together.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vtn
from keras_vtn import cli

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
FIXTURES = os.path.join(TESTS, "fixtures")
HF_FOLDER = os.path.join(FIXTURES, "vivit", "hf_v5")  # tiny HF ViViT: width 32, 4 heads
LAPS_VIT = os.path.join(FIXTURES, "laps", "vit_laps_tiny.pth")  # width 32, 2 heads (not 12)
LIN_VTN = os.path.join(FIXTURES, "vtn", "lin_vtn.pth")

# What TensorFlow and absl print while loading: none of it may reach a user's console.
NOISE = re.compile(
    r"^(?:[IWE]\d{4} \S+ +\d+ \S+:\d+\]"  # absl's C++ log line prefix
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions:)"
    r"|cuInit|oneDNN custom operations"
)


def command_line() -> list[str]:
    """The installed `keras-vtn` script (what users run), else `python -m keras_vtn.cli`."""
    script = os.path.join(os.path.dirname(sys.executable), "keras-vtn")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "keras_vtn.cli"]


def run_cli(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 300,
            env: dict | None = None, module: bool = False) -> subprocess.CompletedProcess:
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", **(env or {})}
    # The test runner's own setting must not hide noise the command would print.
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [*([sys.executable, "-m", "keras_vtn.cli"] if module else command_line()),
         *map(str, args)], cwd=cwd, env=environment, capture_output=True,
        text=True, timeout=timeout,
    )


def noise_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if NOISE.search(line)]


def tiny_laps(num_classes: int = 5, num_frames: int = 4) -> keras.Model:
    return keras_vtn.LAPSTransformer(
        "vit_base", num_frames=num_frames, image_size=32, patch_size=16, hidden_dim=32,
        num_layers=2, num_heads=2, mlp_dim=64, num_classes=num_classes,
    )


def _clip(model, seed: int = 0) -> np.ndarray:
    shape = (1, *model.input_shape[1:])
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


# ------------------------------------------------------------------ convert (HF, LAPS heads)


def test_convert_hf_folder_writes_weights_and_config_that_load_model_rebuilds(tmp_path):
    out = tmp_path / "vivit.weights.h5"
    result = run_cli("convert", HF_FOLDER, "--model-arg", "num_frames=8", "--model-arg",
                     "image_size=32", "-o", out)
    assert result.returncode == 0, result.stderr
    assert noise_lines(result.stderr) == [], result.stderr
    config_path = tmp_path / "vivit.config.json"
    assert out.exists() and config_path.exists()
    assert "vivit.config.json" in result.stdout
    # The recorded architecture rebuilds the model; it computes what the folder loads to.
    model = keras_vtn.load_model(out)
    reference = keras_vtn.ViViT(weights=HF_FOLDER, num_frames=8, image_size=32)
    x = _clip(model)
    np.testing.assert_allclose(
        model.predict_on_batch(x), reference.predict_on_batch(x), atol=1e-5
    )


def test_convert_laps_with_non_default_heads(tmp_path):
    # Without the head count the width cannot be split: the error says how to give it.
    refused = run_cli("convert", LAPS_VIT, "-o", tmp_path / "no.weights.h5")
    assert refused.returncode == 2
    assert "--model-arg" in refused.stderr and "num_heads" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "no.weights.h5").exists()

    out = tmp_path / "laps.keras"
    result = run_cli("convert", LAPS_VIT, "--model-arg", "num_heads=2", "--model-arg",
                     "num_frames=8", "-o", out)
    assert result.returncode == 0, result.stderr
    model = keras_vtn.load_model(out)
    reference = keras_vtn.LAPSTransformer(weights=LAPS_VIT, num_heads=2, num_frames=8,
                                          num_classes=5)
    x = _clip(model)
    np.testing.assert_allclose(
        model.predict_on_batch(x), reference.predict_on_batch(x), atol=1e-5
    )


def test_model_args_are_parsed_as_json():
    from keras_vtn.protocol import parse_model_args

    parsed = parse_model_args(["num_heads=2", "tubelet_size=[2, 8, 8]", "variant=spatio_temporal",
                               "one_kv_head=true"])
    assert parsed == {"num_heads": 2, "tubelet_size": [2, 8, 8],
                      "variant": "spatio_temporal", "one_kv_head": True}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_model_args(["num_heads"])


def test_load_model_without_recorded_config_says_what_to_do(tmp_path):
    weights = tmp_path / "w.weights.h5"
    tiny_laps().save_weights(weights)
    with pytest.raises(FileNotFoundError, match=r"w\.config\.json.*weights=PATH"):
        keras_vtn.load_model(weights)
    with pytest.raises(ValueError, match=r"\.keras model or a \.weights\.h5"):
        keras_vtn.load_model(tmp_path / "w.pth")


# ------------------------------------------------------------- one-line errors for mistakes


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory):
    """Files for the usual mistakes: a tiny model, a text file named .mp4, a cut checkpoint."""
    from keras_vtn.data import generate_motion_dataset

    root = tmp_path_factory.mktemp("mistakes")
    tiny_laps(num_classes=6).save(root / "model.keras")
    (root / "bad.mp4").write_text("not a video\n")
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("neither videos nor a list\n")
    with open(LAPS_VIT, "rb") as f:
        (root / "cut.pth").write_bytes(f.read(3000))
    # A CSV dataset with its own labels (not Kinetics-400's).
    generate_motion_dataset(root / "motion", clips_per_class={"val": 1}, num_frames=8, size=32)
    return root


def _main(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_usual_mistakes_print_one_line_with_exit_status_2(mistakes, capsys, monkeypatch):
    monkeypatch.chdir(mistakes)
    model = ("--model", "model.keras")
    cases = [
        (("predict", "missing.mp4", *model), "missing.mp4"),
        (("predict", "bad.mp4", *model), "Could not decode 'bad.mp4'"),
        (("evaluate", "--model", "gone.keras", "--data-root", "motion", "--layout", "csv"),
         "gone.keras'; check the path"),
        (("prepare", "junk", "out"), "no class sub-folders"),
        (("convert", "cut.pth", "-o", "x.weights.h5"), "truncated or corrupt"),
        (("convert", "missing.pth", "-o", "x.weights.h5"), "check the path"),
        (("convert", "cut.pth", "-o", "x.h5"), ".weights.h5"),
        # A CSV with its own labels read with the Kinetics-400 names: the fix is a flag.
        (("evaluate", *model, "--data-root", "motion", "--layout", "kinetics400"),
         "use --layout csv"),
    ]
    for argv, needle in cases:
        code, err = _main(capsys, *argv)
        assert code == 2, (argv, err)
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"keras-vtn {argv[0]}: error: "), (argv, err)
        assert needle in last, (argv, err)
        assert "Traceback" not in err and "label_names=None" not in err, (argv, err)


def test_bugs_keep_their_traceback():
    """Only the package's own checks and file errors are mistakes; a library error is a bug."""
    def raise_from(exc):
        try:
            raise exc
        except BaseException as error:  # noqa: BLE001
            return error

    assert cli.user_error_message(raise_from(KeyError("x")), "predict") is None
    assert cli.user_error_message(raise_from(TypeError("x")), "predict") is None
    # A ValueError raised outside keras_vtn (here: numpy) is not a user's mistake.
    try:
        np.reshape(np.zeros(3), (2, 2))
    except ValueError as error:
        assert cli.user_error_message(error, "predict") is None
    message = cli.user_error_message(raise_from(FileNotFoundError(2, "No such file", "a.mp4")))
    assert message.startswith("keras-vtn: error: No such file: 'a.mp4'")


def test_debug_flag_shows_the_traceback_and_default_is_one_line(mistakes):
    quiet = run_cli("convert", "cut.pth", "-o", "y.weights.h5", cwd=mistakes)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().startswith("keras-vtn convert: error:")
    assert len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr
    loud = run_cli("--debug", "convert", "cut.pth", "-o", "y.weights.h5", cwd=mistakes)
    assert loud.returncode != 0 and "Traceback" in loud.stderr


# ----------------------------------------------------------------------------- clean console


def test_help_is_clean_and_says_no_issue_numbers():
    # `python -m keras_vtn.cli` too: the package's import must not upset runpy.
    for args, module in ((["--help"], True), (["convert", "--help"], False),
                         (["benchmark", "--help"], False)):
        result = run_cli(*args, module=module)
        assert result.returncode == 0, result.stderr
        assert noise_lines(result.stderr) == [], (args, result.stderr)
        assert result.stderr.strip() == "", (args, result.stderr)
        assert not re.search(r"\(issue \d+\)|issue #?\d+", result.stdout), result.stdout
    assert "--model-arg" in result.stdout or args[0] == "benchmark"


def test_startup_filter_keeps_everything_but_known_noise():
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796546510.362421    4586 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1796546510.362843    4586 cudart_stub.cc:31] Could not find cuda drivers\n"
        "E0000 00:00:1796546514.982958    4586 cuda_platform.cc:52] failed call to cuInit: x\n"
        "E0000 00:00:1796546514.982958    4586 some_op.cc:52] a real error\n"
        "a Python warning\n"
    )
    assert cli.filter_startup_log(text, has_nvidia_driver=False) == (
        "E0000 00:00:1796546514.982958    4586 some_op.cc:52] a real error\n"
        "a Python warning\n"
    )
    # With an NVIDIA driver installed, a failing cuInit explains a missing GPU: kept.
    assert "cuInit" in cli.filter_startup_log(text, has_nvidia_driver=True)


def test_only_the_command_line_process_filters_tensorflow_logs():
    assert cli.is_command_line_process(["/venv/bin/keras-vtn", "predict"])
    assert cli.is_command_line_process(["python", "-m", "keras_vtn.cli", "--help"])
    assert cli.is_command_line_process(["python3", "-m", "keras_vtn.demo"])
    assert not cli.is_command_line_process(["python", "-m", "pytest", "tests"])
    assert not cli.is_command_line_process(["python", "train.py"])


# ------------------------------------------------------------------ top-level Python helpers


def test_top_level_predict_video_and_load_model(mistakes):
    assert keras_vtn.predict_video.__module__ == "keras_vtn.prediction"
    model = keras_vtn.load_model(mistakes / "model.keras")
    result = keras_vtn.predict_video(
        model, next((mistakes / "motion" / "val").rglob("*.mp4")), top_k=2
    )
    assert len(result["top_k"]) == 2


def test_saved_model_loads_in_a_fresh_process_only_after_import_keras_vtn(mistakes):
    """Keras resolves keras_vtn's layers by registered name: `import keras_vtn` must come first
    (README, first example that saves), or `keras_vtn.load_model` does it."""
    path = str(mistakes / "model.keras")
    code = (
        "import sys, keras\n"
        "try:\n"
        "    keras.saving.load_model(sys.argv[1])\n"
        "    print('loaded without import')\n"
        "except Exception as error:\n"
        "    print('refused without import')\n"
        "import keras_vtn\n"
        "keras.saving.load_model(sys.argv[1]); keras_vtn.load_model(sys.argv[1])\n"
        "print('loaded after import')\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                            env=env, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused", "without", "import", "loaded", "after", "import"]
