"""`keras-vtn check-videos` through the real command line: its exit status says whether it found
problems, so a script or CI job can stop on a damaged dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from keras_vtn.data.testing import write_video

REPO = Path(__file__).resolve().parents[1]


def _check_videos(root) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "keras_vtn.cli", "check-videos", str(root), "--workers", "1"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )


def test_check_videos_exit_status(tmp_path):
    write_video(str(tmp_path / "good.mp4"), num_frames=10)
    clean = _check_videos(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr[-2000:]
    assert "1 video files, 1 ok" in clean.stdout

    (tmp_path / "empty.mp4").write_bytes(b"")
    broken = _check_videos(tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr[-2000:]
    assert "2 video files, 1 ok" in broken.stdout and "empty: 1" in broken.stdout


def test_check_videos_on_a_missing_folder_is_an_error(tmp_path):
    result = _check_videos(tmp_path / "no_such_folder")
    assert result.returncode == 2, result.stdout + result.stderr[-2000:]
    assert "No such folder of videos" in result.stderr and "no_such_folder" in result.stderr
    assert "Traceback" not in result.stderr
