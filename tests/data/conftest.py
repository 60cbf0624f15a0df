"""Real videos written with PyAV once per test session; each frame spells its own index."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from data_helpers import AWKWARD, BROKEN, GOOD  # noqa: E402

from keras_vtn.data.testing import write_audio_only, write_video  # noqa: E402


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """{name: path} for GOOD, AWKWARD and BROKEN files under one session folder."""
    root = tmp_path_factory.mktemp("videos")
    paths = {}
    for name, (rel, kwargs) in {**GOOD, **AWKWARD}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kwargs is not None:
            write_video(str(path), **kwargs)
        paths[name] = str(path)
    shutil.copy(paths["webm"], paths["wrong_extension"])
    data = open(paths["cut_faststart"], "rb").read()
    open(paths["cut_faststart"], "wb").write(data[: len(data) // 2])
    broken = root / "broken"
    broken.mkdir()
    (broken / "zero_byte.mp4").write_bytes(b"")
    # mp4 keeps its index (moov) at the end: cutting the file loses it
    data = open(paths["mp4"], "rb").read()
    (broken / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (broken / "wrong_container.mp4").write_bytes(
        b"<html>not a video</html>" + np.random.default_rng(0).bytes(2000)
    )
    write_audio_only(str(broken / "audio_only.mp4"))
    for name, (rel, _) in BROKEN.items():
        paths[name] = str(root / rel)
    paths["root"] = str(root)
    return paths


@pytest.fixture(scope="session")
def kinetics_root(tmp_path_factory, videos):
    """A tiny Kinetics copy: CSVs (quoted labels, label-less test split) and two layouts."""
    root = tmp_path_factory.mktemp("kinetics")
    ann = root / "annotations"
    ann.mkdir()
    rows = [  # label, youtube id (11 chars, may hold - and _), start, end
        ("abseiling", "aaaaaaaaa-1", 10, 20, "mp4"),
        ("air drumming", "bbbbbbbbb_2", 0, 10, "webm"),
        ("air drumming", "ccccccccccc", 5, 15, "mkv"),
        ("zumba", "ddddddddddd", 30, 40, "avi"),
        ("zumba", "eeeeeeeeeee", 1, 11, None),  # listed but missing
    ]
    with open(ann / "train.csv", "w") as f:
        f.write("label,youtube_id,time_start,time_end,split,is_cc\n")
        for label, vid, start, end, _ in rows:
            f.write(f'"{label}",{vid},{start},{end},train,0\n')
    with open(ann / "test.csv", "w") as f:
        f.write("youtube_id,time_start,time_end,split\n")
        for _, vid, start, end, _ in rows[:2]:
            f.write(f"{vid},{start},{end},test\n")
    # downloader tree for train, flat CVDF-style folder for test
    for label, vid, start, end, kind in rows:
        if kind is None:
            continue
        target = root / "train" / label / f"{vid}_{start:06d}_{end:06d}{_ext(videos[kind])}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(videos[kind], target)
    (root / "test").mkdir()
    for _, vid, _, _, kind in rows[:2]:
        shutil.copy(videos[kind], root / "test" / f"{vid}{_ext(videos[kind])}")
    return str(root)


def _ext(path: str) -> str:
    return os.path.splitext(path)[1]
