"""Every dataset layout resolves to the right files and class indices."""

from __future__ import annotations

import os

import pytest

from keras_vtn.data import KINETICS400_LABELS, class_folders, dataset_info, kinetics_csv, list_file
from keras_vtn.data.layouts import _scan, read_kinetics_csv, resolve


def test_kinetics400_labels_are_the_400_sorted_names():
    assert len(KINETICS400_LABELS) == 400
    assert list(KINETICS400_LABELS) == sorted(set(KINETICS400_LABELS))
    for name in [
        "abseiling",
        "air drumming",
        "passing American football (in game)",
        "snatch weight lifting",
        "zumba",
    ]:
        assert name in KINETICS400_LABELS
    assert KINETICS400_LABELS.index("air drumming") == 1


def test_kinetics_csv_tree_layout(kinetics_root):
    rows = read_kinetics_csv(os.path.join(kinetics_root, "annotations", "train.csv"))
    assert rows[1]["label"] == "air drumming"  # quoted multi-word label
    records = kinetics_csv(
        os.path.join(kinetics_root, "annotations", "train.csv"),
        os.path.join(kinetics_root, "train"),
        KINETICS400_LABELS,
    )
    assert len(records) == 4 and records.missing == ["eeeeeeeeeee_000001_000011"]
    assert records.present_fraction == pytest.approx(0.8)
    assert records.labels == [0, 1, 1, KINETICS400_LABELS.index("zumba")]
    assert os.path.basename(records.paths[1]) == "bbbbbbbbb_2_000000_000010.webm"
    # without a label list the CSV's own sorted labels index the classes
    own = kinetics_csv(
        os.path.join(kinetics_root, "annotations", "train.csv"),
        os.path.join(kinetics_root, "train"),
    )
    assert own.label_names == ["abseiling", "air drumming", "zumba"] and own.labels == [0, 1, 1, 2]


def test_kinetics_csv_flat_layout_without_labels(kinetics_root):
    records = kinetics_csv(
        os.path.join(kinetics_root, "annotations", "test.csv"), os.path.join(kinetics_root, "test")
    )
    assert records.labels == [-1, -1] and not records.missing
    assert [os.path.basename(p) for p in records.paths] == ["aaaaaaaaa-1.mp4", "bbbbbbbbb_2.webm"]


def test_kinetics_csv_rejects_unknown_labels(kinetics_root, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        'label,youtube_id,time_start,time_end,split\n"not a class",aaaaaaaaa-1,10,20,x\n'
    )
    with pytest.raises(ValueError, match="not one of the 400 label names"):
        kinetics_csv(str(bad), os.path.join(kinetics_root, "train"), KINETICS400_LABELS)


def test_class_folders(kinetics_root):
    records = class_folders(os.path.join(kinetics_root, "train"))
    assert records.label_names == ["abseiling", "air drumming", "zumba"]
    assert records.labels == [0, 1, 1, 2]
    assert {os.path.splitext(p)[1] for p in records.paths} == {".mp4", ".webm", ".mkv", ".avi"}
    # renamed folders (underscores) still map onto the official names
    renamed = class_folders(os.path.join(kinetics_root, "train"), KINETICS400_LABELS)
    assert renamed.labels[0] == 0 and renamed.labels[-1] == 399


def test_hidden_files_are_not_videos(tmp_path):
    """Partial writes (`.name.tmp-….mp4`) and macOS `._name.mp4` files are skipped."""
    folder = tmp_path / "waving"
    folder.mkdir()
    for name in ("a.mp4", "._a.mp4", ".b.mp4.tmp-12-ab.mp4"):
        (folder / name).write_bytes(b"")
    records = class_folders(str(tmp_path))
    assert [os.path.basename(p) for p in records.paths] == ["a.mp4"]


def test_list_files(kinetics_root, tmp_path):
    train = os.path.join(kinetics_root, "train")
    numeric = tmp_path / "list.txt"
    numeric.write_text(
        "# path label\n"
        "abseiling/aaaaaaaaa-1_000010_000020.mp4 0\n"
        "zumba/ddddddddddd_000030_000040.avi 2\n"
        "zumba/gone.mp4 2\n"
    )
    records = list_file(str(numeric), root=train)
    assert records.labels == [0, 2] and len(records.missing) == 1
    assert records.label_names == ["0", "1", "2"]
    named = tmp_path / "named.txt"
    named.write_text(
        f"{train}/air drumming/bbbbbbbbb_2_000000_000010.webm air_drumming\n"
        f"{train}/abseiling/aaaaaaaaa-1_000010_000020.mp4 abseiling\n"
    )
    records = resolve(str(named), label_names=KINETICS400_LABELS)
    assert records.labels == [1, 0]
    unlabelled = tmp_path / "test.txt"
    unlabelled.write_text("abseiling/aaaaaaaaa-1_000010_000020.mp4\n")
    assert list_file(str(unlabelled), root=train).labels == [-1]


def test_resolve_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a video folder"):
        resolve(str(tmp_path / "nothing.csv"))
    csv_path = tmp_path / "k.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\n")
    with pytest.raises(ValueError, match="root="):
        resolve(str(csv_path))


def test_symlink_loops_and_second_paths_are_listed_once(tmp_path):
    """`ln -s . a/loop` is not walked again and a file reached by two paths is listed once."""
    for name in ("a/x.mp4", "b/y.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    os.symlink(".", tmp_path / "a" / "loop")  # the loop of the report: a/loop/loop/.../x.mp4
    os.symlink(".", tmp_path / "loop")  # root again, as a class folder
    os.symlink("../a/x.mp4", tmp_path / "b" / "same_as_x.mp4")
    os.symlink("../a", tmp_path / "b" / "link_to_a")
    # a link that sorts before the real file: the file is listed at its real place (class b)
    os.symlink("../b/y.mp4", tmp_path / "a" / "0_link_to_y.mp4")
    records = class_folders(str(tmp_path))
    assert [os.path.relpath(p, tmp_path) for p in records.paths] == ["a/x.mp4", "b/y.mp4"]
    assert records.labels == [0, 1] and records.label_names == ["a", "b"]
    skipped = {os.path.relpath(p, tmp_path): why for p, why in records.skipped.items()}
    assert skipped["a/loop"].startswith("symlink loop") and skipped["loop"].startswith("symlink")
    assert skipped["b/same_as_x.mp4"] == f"same file as {tmp_path}/a/x.mp4, listed there"
    assert skipped["a/0_link_to_y.mp4"].startswith(f"same file as {tmp_path}/b/y.mp4")
    assert skipped["b/link_to_a/x.mp4"].startswith("same file as")
    # the flat scan behind Kinetics CSVs and check-videos lists the same two files
    found = _scan(str(tmp_path), (".mp4",))
    assert sorted(os.path.relpath(p, tmp_path) for p in found) == ["a/x.mp4", "b/y.mp4"]


def _class_tree(root, classes, per_class=1):
    from keras_vtn.data.testing import write_video

    for name in classes:
        for i in range(per_class):
            path = root / name / f"{name}_{i}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(str(path), num_frames=8, height=32, width=32)
    return root


MODEL_CLASSES = ["approaching", "moving_left", "moving_right", "receding"]


def test_a_subset_of_the_model_classes_keeps_the_model_indices(tmp_path):
    # A split holding two of a 4-class model's classes: numbered by its own sorted names,
    # "receding" would be 1, the model's "moving_left".
    from keras_vtn.data import video_dataset
    from keras_vtn.data.layouts import from_pairs, reindex

    root = _class_tree(tmp_path, ["approaching", "receding"])
    ds = video_dataset(root, label_names=MODEL_CLASSES, num_frames=2, image_size=32,
                       batch_size=4)
    assert dataset_info(ds).label_names == MODEL_CLASSES
    assert sorted(int(y) for y in next(iter(ds))[1]) == [0, 3]
    # the same through records built without the model's names (Records, pairs)
    own = class_folders(str(root))
    assert own.labels == [0, 1]
    assert reindex(own, MODEL_CLASSES).labels == [0, 3]
    assert dataset_info(video_dataset(own, label_names=MODEL_CLASSES, num_frames=2,
                                      image_size=32)).records.labels == [0, 3]
    pairs = list(zip(own.paths, ["approaching", "receding"], strict=True))
    assert from_pairs(pairs, MODEL_CLASSES).labels == [0, 3]


def test_a_class_the_model_does_not_know_is_an_error_naming_it(tmp_path):
    from keras_vtn.data import video_dataset
    from keras_vtn.data.layouts import from_pairs, reindex

    root = _class_tree(tmp_path, ["approaching", "jumping"])
    with pytest.raises(ValueError, match="'jumping'.*not a known class"):
        video_dataset(root, label_names=MODEL_CLASSES, num_frames=2, image_size=32)
    own = class_folders(str(root))
    with pytest.raises(ValueError, match="'jumping'"):
        reindex(own, MODEL_CLASSES)
    with pytest.raises(ValueError, match="'jumping'"):
        video_dataset(own, label_names=MODEL_CLASSES, num_frames=2, image_size=32)
    with pytest.raises(ValueError, match="'jumping'.*not a known class"):
        from_pairs([(own.paths[1], "jumping")], MODEL_CLASSES)


def test_kinetics400_follows_the_model_label_names(kinetics_root):
    # a model trained on a few Kinetics classes, evaluated on a Kinetics-layout split
    from keras_vtn.data import kinetics400

    names = ["zumba", "air drumming", "abseiling"]
    ds = kinetics400(kinetics_root, "train", label_names=names, num_frames=2, image_size=32)
    assert dataset_info(ds).label_names == names
    assert dataset_info(ds).records.labels == [2, 1, 1, 0]
    with pytest.raises(ValueError, match="not known classes"):
        kinetics400(kinetics_root, "train", label_names=["zumba"], num_frames=2, image_size=32)
