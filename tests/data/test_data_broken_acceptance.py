"""Acceptance: one folder of good videos and every kind of broken one, through `video_dataset`
(training and evaluation), `check_videos` and the real `check-videos` command.

No crash and no hang (each run is bounded); every broken file is named with its reason; no file
is counted twice; every good file decodes.
"""

from __future__ import annotations

import concurrent.futures
import fractions
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from keras_vtn.data import dataset_info, video_dataset
from keras_vtn.data.check import check_videos
from keras_vtn.data.testing import damage, write_audio_only, write_video

SMALL = dict(width=32, height=32)
TIMEOUT = 180  # seconds for one pass over the folder; a hang fails instead of blocking

# Outcomes: "ok" decodes; a reason is a failure with that reason; "truncated" is decoded
# within the frames that exist and named in report.truncated; "damaged" is either that or a
# decode_error (which one depends on where the sampled frames fall); "skipped" is left out
# of the listing and named in skipped.
#   name -> (dataset outcome, check-videos outcome)
KINDS = {
    "good/h264.mp4": ("ok", "ok"),
    "good/vp9.webm": ("ok", "ok"),
    "good/h264.mkv": ("ok", "ok"),
    "good/mpeg4.avi": ("ok", "ok"),
    "good/two_frames.mp4": ("ok", "ok"),  # shorter than a clip: the sampler loops it
    "good/one_by_one.mkv": ("ok", "ok"),
    "good/three_by_five.webm": ("ok", "ok"),
    "good/variable_frame_rate.mp4": ("ok", "ok"),
    "good/webm_named.mp4": ("ok", "ok"),
    "good/caf\udce9.mp4": ("ok", "ok"),  # a Latin-1 file name: not UTF-8
    "broken/empty.mp4": ("empty", "empty"),
    "broken/cut_at_10pct.mp4": ("unreadable", "unreadable"),  # the index (moov) is at the end
    "broken/cut_at_50pct.mp4": ("unreadable", "unreadable"),
    "broken/cut_at_90pct.mp4": ("no_video_stream", "no_video_stream"),  # FFmpeg finds no track
    "broken/index_first_cut_at_40pct.mp4": ("truncated", "truncated"),
    "broken/cut_at_50pct.webm": ("truncated", "truncated"),
    "broken/random_bytes.mp4": ("unreadable", "unreadable"),
    "broken/header_only.mp4": ("no_frames", "no_frames"),
    "broken/text.mp4": ("unreadable", "unreadable"),
    "broken/png_image.mp4": ("not_a_video", "not_a_video"),
    "broken/audio_only.mp4": ("no_video_stream", "no_video_stream"),
    "broken/zero_video_frames.mkv": ("no_frames", "no_frames"),
    "broken/damaged_middle.mp4": ("damaged", "decode_error"),
    "broken/damaged_keyframe.mp4": ("damaged", "decode_error"),
    "broken/a_folder.mp4": ("not_a_file", "not_a_file"),
    "broken/fifo.mp4": ("not_a_file", "not_a_file"),
    "broken/dangling_symlink.mp4": ("missing", "missing"),
    "broken/huge_dimensions.mp4": ("bad_dimensions", "bad_dimensions"),
    "broken/bad\udcff name.mp4": ("unreadable", "unreadable"),
    "broken/loop": ("skipped", "skipped"),  # -> . (a symlink loop)
    "broken/second_path.mp4": ("skipped", "skipped"),  # -> ../good/h264.mp4
}
if os.geteuid() != 0:  # root reads any file, so the kind cannot exist for root
    KINDS["broken/no_permission.mp4"] = ("unreadable", "unreadable")


def _cut(path: str, fraction: float) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * fraction)])


def _png(path: str) -> None:
    with av.open(path, "w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _zero_video_frames(path: str) -> None:
    """A video track that never gets a packet, beside an audio track that does."""
    with av.open(path, "w", format="matroska") as container:
        video = container.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=16000)
        for start in range(0, 16000, 1024):
            chunk = np.zeros((1, 1024), np.int16)
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            frame.time_base = fractions.Fraction(1, 16000)
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))


def _damage_keyframe(path: str) -> None:
    """Overwrite the payload of the second key frame (the first stays, so the file opens)."""
    with av.open(path) as container:
        keys = [(p.pos, p.size) for p in container.demux(video=0) if p.size and p.is_keyframe]
    pos, size = keys[1]
    with open(path, "r+b") as f:
        f.seek(pos + 4)  # keep the NAL length so the demuxer still finds the packet
        f.write(np.random.default_rng(1).bytes(size - 4))


def _build(root: str) -> None:
    def at(name: str) -> str:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    write_video(at("good/h264.mp4"), num_frames=30, **SMALL)
    write_video(at("good/vp9.webm"), num_frames=20, **SMALL)
    write_video(at("good/h264.mkv"), num_frames=20, **SMALL)
    write_video(at("good/mpeg4.avi"), num_frames=20, **SMALL)
    write_video(at("good/two_frames.mp4"), num_frames=2, **SMALL)
    write_video(at("good/one_by_one.mkv"), num_frames=10, width=1, height=1, codec="ffv1",
                pix_fmt="yuv444p")
    write_video(at("good/three_by_five.webm"), num_frames=10, width=3, height=5)
    times = np.cumsum([0.0] + [0.02, 0.07] * 10)[:20]
    write_video(at("good/variable_frame_rate.mp4"), num_frames=20, frame_times=times, **SMALL)
    write_video(at("good/webm_named.mp4.tmp.webm"), num_frames=20, **SMALL)
    os.rename(at("good/webm_named.mp4.tmp.webm"), at("good/webm_named.mp4"))
    write_video(at("good/caf\udce9.mp4"), num_frames=20, **SMALL)

    open(at("broken/empty.mp4"), "wb").close()
    for pct in (10, 50, 90):
        write_video(at(f"broken/cut_at_{pct}pct.mp4"), num_frames=40, noise=20, **SMALL)
        _cut(at(f"broken/cut_at_{pct}pct.mp4"), pct / 100)
    write_video(at("broken/index_first_cut_at_40pct.mp4"), num_frames=60, noise=20,
                faststart=True, **SMALL)
    _cut(at("broken/index_first_cut_at_40pct.mp4"), 0.4)
    write_video(at("broken/cut_at_50pct.webm"), num_frames=60, noise=20, **SMALL)
    _cut(at("broken/cut_at_50pct.webm"), 0.5)
    open(at("broken/random_bytes.mp4"), "wb").write(np.random.default_rng(0).bytes(5000))
    write_video(at("broken/header_only.mp4"), num_frames=20, faststart=True, **SMALL)
    data = open(at("broken/header_only.mp4"), "rb").read()
    open(at("broken/header_only.mp4"), "wb").write(data[: data.index(b"mdat") + 4])
    open(at("broken/text.mp4"), "w").write("This is not a video.\n" * 20)
    _png(at("broken/png_image.mp4"))
    write_audio_only(at("broken/audio_only.mp4"))
    _zero_video_frames(at("broken/zero_video_frames.mkv"))
    write_video(at("broken/damaged_middle.mp4"), num_frames=100, noise=20, **SMALL)
    damage(at("broken/damaged_middle.mp4"), 0.35, 0.65)
    write_video(at("broken/damaged_keyframe.mp4"), num_frames=60, noise=20, **SMALL)
    _damage_keyframe(at("broken/damaged_keyframe.mp4"))
    os.mkdir(at("broken/a_folder.mp4"))
    os.mkfifo(at("broken/fifo.mp4"))
    os.symlink("gone.mp4", at("broken/dangling_symlink.mp4"))
    # a YUV4MPEG header asking for 16000x16000 frames
    open(at("broken/huge_dimensions.mp4"), "wb").write(
        b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4000
    )
    open(at("broken/bad\udcff name.mp4"), "wb").write(np.random.default_rng(1).bytes(3000))
    os.symlink(".", at("broken/loop"))
    os.symlink("../good/h264.mp4", at("broken/second_path.mp4"))
    if "broken/no_permission.mp4" in KINDS:
        write_video(at("broken/no_permission.mp4"), num_frames=10, **SMALL)
        os.chmod(at("broken/no_permission.mp4"), 0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("acceptance"))
    _build(root)
    return root


def _bounded(fn, *args, **kwargs):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result(timeout=TIMEOUT)


def _expected(folder: str, column: int) -> dict[str, str]:
    return {os.path.join(folder, name): outcomes[column] for name, outcomes in KINDS.items()}


def test_the_set_has_at_least_twenty_broken_kinds():
    assert sum(name.startswith("broken/") for name in KINDS) >= 20


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_video_dataset_over_every_broken_kind(folder, training):
    # uniform sampling spreads the frames over the whole video, so the damage is always met
    ds = video_dataset(folder, training=training, sampling="uniform", num_frames=4,
                       image_size=16, short_side=16, seed=0, num_parallel_calls=4,
                       return_frame_indices=True)
    report = dataset_info(ds).report
    paths = dataset_info(ds).records.paths
    assert len(paths) == len(set(paths)) == len({os.path.realpath(p) for p in paths})
    for _ in range(2):
        clips = _bounded(lambda: [x["frames"].numpy() for x, _ in ds])
        assert all(c.shape == (4, 16, 16, 3) for c in clips)
    expected = _expected(folder, 0)
    named: dict[str, str] = {}
    for path, (reason, _) in report.failed.items():
        named[path] = reason
    for path in report.truncated:
        assert path not in named, f"{path} counted twice"
        named[path] = "truncated"
    for path in report.skipped:
        assert path not in named, f"{path} counted twice"
        named[path] = "skipped"
    got = {path: named.get(path, "ok") for path in expected}
    for path, outcome in expected.items():
        if outcome == "damaged" and got[path] in ("truncated", "decode_error"):
            got[path] = "damaged"
    assert got == expected
    assert set(named) <= set(expected)
    decodable = sum(o in ("ok", "truncated", "damaged") for o in got.values())
    failed = sum(o not in ("ok", "truncated", "damaged", "skipped") for o in got.values())
    assert len(clips) == decodable == report.history[-1]["decoded"]
    assert report.history == [{"decoded": decodable, "failed": failed,
                               "attempted": decodable + failed}] * 2
    summary = report.summary()
    if not training:  # evaluation lists every failed and truncated file by name
        for path, outcome in got.items():
            if outcome not in ("ok", "skipped"):
                assert path in summary


def test_check_videos_over_every_broken_kind(folder):
    result = _bounded(check_videos, folder, workers=2)
    expected = _expected(folder, 1)
    got = {path: "ok" for path in expected}
    for path, problem in result["files"].items():
        got[path] = problem["reason"]
        assert problem["detail"]
    for path in result["skipped"]:
        assert got[path] == "ok", f"{path} counted twice"
        got[path] = "skipped"
    assert got == expected
    listed = [p for p, o in expected.items() if o != "skipped"]
    assert result["num_files"] == len(listed)
    assert result["num_ok"] == sum(o == "ok" for o in expected.values())


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def test_check_videos_command_over_every_broken_kind(folder, tmp_path):
    output = str(tmp_path / "report.json")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    run = subprocess.run(
        [sys.executable, "-m", "keras_vtn.cli", "check-videos", folder, "--list", "--workers",
         "2", "--output", output],
        capture_output=True, text=True, timeout=TIMEOUT + 120, env=env,
    )
    assert run.returncode == 1, run.stderr[-3000:]  # problems found
    expected = _expected(folder, 1)
    lines = {}
    for line in run.stdout.splitlines():
        if "\t" in line:
            reason, path = line.split("\t")[:2]
            assert path not in lines, f"{path} printed twice"
            lines[path] = reason
    for path, outcome in expected.items():
        if outcome != "ok":
            assert lines.get(_printable(path)) == outcome, (path, run.stdout)
    broken = sum(o not in ("ok", "skipped") for o in expected.values())
    good = sum(o == "ok" for o in expected.values())
    assert f"{good + broken} video files, {good} ok" in run.stdout
    report = json.load(open(output))
    assert len(report["files"]) == broken and len(report["skipped"]) == 2
