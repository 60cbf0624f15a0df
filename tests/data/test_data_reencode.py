"""`reencode_video` / `keras-vtn reencode-videos`: same frames, short side, key frame interval."""

from __future__ import annotations

import doctest
import os

import av

from keras_vtn.data import reencode
from keras_vtn.data.decode import probe, read_frames
from keras_vtn.data.testing import read_index, write_video


def _keyframes(path):
    with av.open(path) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.is_keyframe)


def test_docstring_example():
    result = doctest.testmod(reencode, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_frames_keep_their_indices_and_keyframes_get_dense(tmp_path):
    src = str(tmp_path / "in.webm")
    write_video(src, num_frames=60, height=120, width=160, gop=60)
    dst = reencode.reencode_video(src, str(tmp_path / "out.mp4"), short_side=96, keyint=10)
    info = probe(dst)
    assert (info.width, info.height, info.num_frames) == (128, 96, 60)
    assert _keyframes(dst) >= 6 > _keyframes(src)
    frames, _ = read_frames(dst, [59, 0, 33, 34])
    assert [read_index(f) for f in frames] == [59, 0, 33, 34]


def test_rotation_is_applied_to_the_pixels(tmp_path):
    src = str(tmp_path / "rot.mp4")
    write_video(src, num_frames=12, height=48, width=64, rotation=90)
    dst = reencode.reencode_video(src, str(tmp_path / "out.mp4"), short_side=None, keyint=4)
    before, _ = read_frames(src, [0, 11])
    after, info = read_frames(dst, [0, 11])
    assert before.shape == after.shape == (2, 64, 48, 3) and info.rotation == 0
    # upright pixels like the decoder's own rotation of the source (lossy: compare means)
    assert abs(after.astype(float) - before.astype(float)).mean() < 12


def test_folder_keeps_layout_resumes_and_reports_broken_files(tmp_path, capsys):
    from keras_vtn import cli

    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    write_video(str(root / "a" / "x.webm"), num_frames=20)
    (root / "a" / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    assert cli.main(["reencode-videos", str(root), str(out), "--keyint", "5"]) == 1
    assert os.path.exists(out / "a" / "x.mp4") and not os.path.exists(out / "a" / "broken.mp4")
    assert "1 re-encoded, 0 already there, 1 failed" in capsys.readouterr().out
    again = reencode.reencode_folder(str(root), str(out), keyint=5)
    assert again["kept"] == 1 and again["done"] == 0 and len(again["failed"]) == 1


def test_short_key_frame_intervals_are_used_for_seeking(tmp_path):
    # what re-encoding buys: with key frames every 10 frames, frames 31 apart cost a seek and
    # a few frames each, not the whole gap; and every frame is still the one asked for
    path = str(tmp_path / "k10.mp4")
    write_video(path, num_frames=250, height=32, width=32, gop=10)
    wanted = [15, 46, 77, 108, 139, 170, 201, 232]
    frames, info = read_frames(path, wanted)
    assert [read_index(f) for f in frames] == wanted
    assert info.decoded_frames < 120  # the gaps alone are 217 frames
    # the container's index gives each seek's key frame before any decoding, so the
    # first gap is skipped too: 46 frames from the key frame before each wanted one
    assert info.decoded_frames <= 48
