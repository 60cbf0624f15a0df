"""Presets: converted parity fixtures reproduce their logits through VideoClassifier, hf://
from an offline Hugging Face cache, clear errors for damaged or foreign presets, built-ins."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest

import keras_vtn
from keras_vtn.preprocessing import preprocessor_from_registry
from keras_vtn.preset_utils import PresetError, markdown_table, presets, read_preset
from keras_vtn.weights import download, registry

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 2e-5  # the parity bar, on every backend
TINY_VIT = dict(patch_size=8, num_spatial_heads=2, image_size=32, num_classes=5)


def _vivit():
    checkpoint = os.path.join(FIXTURES, "vivit", "scenic_spatio_temporal.msgpack")
    model = keras_vtn.ViViT(weights=checkpoint, num_frames=8, image_size=(32, 32), num_classes=5)
    clip = np.load(os.path.join(FIXTURES, "vivit", "clip.npy")).astype("float32")[:, :, :32]
    return model, clip, np.load(os.path.join(FIXTURES, "vivit", "scenic_logits.npz"))[
        "spatio_temporal"]


def _linear_vtn():
    model = keras_vtn.LinearVTN(weights=os.path.join(FIXTURES, "vtn", "lin_vtn.pth"), **TINY_VIT)
    clip = np.load(os.path.join(FIXTURES, "vtn", "lin_vtn_input.npy")).astype("float32")
    return model, clip, np.load(os.path.join(FIXTURES, "vtn", "lin_vtn_logits.npy"))


def _vtn():
    model = keras_vtn.VTN(weights=os.path.join(FIXTURES, "vtn", "vtn.pyth"), num_frames=10,
                          frame_indices=True, num_temporal_heads=2, attention_window=4,
                          **TINY_VIT)
    inputs = {"frames": np.load(os.path.join(FIXTURES, "vtn", "vtn_input.npy")).astype("float32"),
              "frame_indices": np.load(os.path.join(FIXTURES, "vtn",
                                                    "vtn_frame_indices_dense.npy"))}
    return model, inputs, np.load(os.path.join(FIXTURES, "vtn", "vtn_logits_dense.npy"))


def _laps():
    model = keras_vtn.LAPSTransformer("vit_base", weights=os.path.join(FIXTURES, "laps",
                                                                      "vit_laps_tiny.pth"),
                                      num_classes=5, num_heads=2)
    io = np.load(os.path.join(FIXTURES, "laps", "vit_laps_tiny_io.npz"))
    return model, io["frames"].astype("float32"), io["logits_laps"]


FAMILY_FIXTURES = {"vivit": _vivit, "linear_vtn": _linear_vtn, "vtn": _vtn, "laps": _laps}
LABELS = ["abseiling", "bowling", "cartwheeling", "diving", "esports"]


@pytest.mark.parametrize("family", sorted(FAMILY_FIXTURES))
def test_preset_from_a_parity_fixture_reproduces_its_logits(family, tmp_path):
    backbone, inputs, expected = FAMILY_FIXTURES[family]()
    classifier = keras_vtn.VideoClassifier(backbone, label_names=LABELS)
    folder = classifier.save_to_preset(tmp_path / family, metadata={"parity": {"fixture": family}})
    loaded = keras_vtn.VideoClassifier.from_preset(folder)
    assert loaded.preset_metadata["family"] == family
    logits = loaded.predict(inputs, verbose=0)
    diff = np.abs(logits - expected).max()
    assert diff <= TOLERANCE, f"{family}: max |Δlogit| {diff:.2e}"
    top = loaded.predict_labels(inputs, top_k=2)
    assert [t[0][0] for t in top] == [LABELS[i] for i in expected.argmax(-1)]
    assert [t[1][0] for t in top] == [LABELS[i] for i in np.argsort(-expected, -1)[:, 1]]
    # the backbone alone, as keras_vtn.from_preset gives it
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras_vtn.from_preset(folder)(inputs)),
                               logits, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    backbone = keras_vtn.LAPSTransformer(num_frames=4, image_size=32, patch_size=16,
                                         hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64,
                                         num_classes=3)
    classifier = keras_vtn.VideoClassifier(backbone, label_names=["run", "jump", "swim"])
    return classifier.save_to_preset(tmp_path_factory.mktemp("presets") / "tiny")


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def _rewrite_metadata(folder, **fields):
    path = os.path.join(folder, "metadata.json")
    with open(path) as f:
        metadata = json.load(f)
    metadata.update(fields)
    with open(path, "w") as f:
        json.dump(metadata, f)


def test_partial_preset_is_an_error(tiny_preset, tmp_path):
    folder = _copy(tiny_preset, tmp_path)
    os.remove(folder / "model.weights.h5")
    with pytest.raises(PresetError, match=r"is incomplete: model\.weights\.h5 missing"):
        keras_vtn.VideoClassifier.from_preset(folder)


def test_damaged_preset_is_an_error(tiny_preset, tmp_path):
    folder = _copy(tiny_preset, tmp_path)
    weights = folder / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PresetError, match=r"model\.weights\.h5 does not match the sha256"):
        keras_vtn.VideoClassifier.from_preset(folder)
    (folder / "metadata.json").write_text('{"keras_vtn_version": ')
    with pytest.raises(PresetError, match=r"metadata\.json is damaged \(not valid JSON"):
        keras_vtn.VideoClassifier.from_preset(folder)


def test_preset_of_another_version_is_an_error(tiny_preset, tmp_path):
    folder = _copy(tiny_preset, tmp_path)
    _rewrite_metadata(folder, keras_vtn_version="9.4.0")
    with pytest.raises(PresetError, match=(
            rf"written by keras_vtn 9\.4\.0; this is keras_vtn {keras_vtn.__version__}, which "
            r"reads presets of keras_vtn 0\.1\.x\. Install keras_vtn 9\.4\.x")):
        keras_vtn.VideoClassifier.from_preset(folder)


def test_labels_not_matching_the_head_are_an_error(tiny_preset, tmp_path):
    folder = _copy(tiny_preset, tmp_path)
    (folder / "labels.json").write_text(json.dumps(["run", "jump"]))
    with pytest.raises(PresetError, match=r"labels\.json does not match the sha256"):
        keras_vtn.VideoClassifier.from_preset(folder)
    files = read_preset.__globals__["_sha256"]
    with open(folder / "metadata.json") as f:
        recorded = json.load(f)["files"]
    _rewrite_metadata(folder, files={**recorded, "labels.json": files(folder / "labels.json")})
    with pytest.raises(PresetError, match="names 2 classes but the backbone's head has 3 outputs"):
        keras_vtn.VideoClassifier.from_preset(folder)


def test_save_is_atomic_and_replaces_an_old_preset(tiny_preset, tmp_path):
    target = tmp_path / "preset"
    first = keras_vtn.VideoClassifier.from_preset(tiny_preset)
    first.save_to_preset(target)
    first.save_to_preset(target)  # over an existing preset
    assert sorted(os.listdir(tmp_path)) == ["preset"]  # no temporary folder left beside it
    assert read_preset(target)["labels"] == ["run", "jump", "swim"]


def test_unknown_names_and_missing_hub_clients_are_errors(tmp_path):
    with pytest.raises(PresetError, match="unknown preset 'vivit_huge'.*vivit_b16x2_k400"):
        keras_vtn.VideoClassifier.from_preset("vivit_huge")
    with pytest.raises(FileNotFoundError, match="No preset folder"):
        keras_vtn.VideoClassifier.from_preset(str(tmp_path / "nothing"))
    if importlib.util.find_spec("kagglehub") is None:
        with pytest.raises(ImportError, match=r"needs kagglehub: pip install 'keras-vtn\[hub\]'"):
            keras_vtn.VideoClassifier.from_preset("kaggle://owner/model/keras/tiny")


HF_LOAD = textwrap.dedent("""
    import json, sys
    import keras_vtn
    classifier = keras_vtn.VideoClassifier.from_preset(sys.argv[1])
    print(json.dumps(classifier.label_names))
""")


def test_hf_preset_from_an_offline_cache(tiny_preset, tmp_path):
    if importlib.util.find_spec("huggingface_hub") is None:
        pytest.skip("huggingface_hub is not installed (pip install 'keras-vtn[hub]')")
    # The cache layout huggingface_hub keeps: refs/<branch> names a snapshot folder.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--keras-vtn--tiny-laps"
    shutil.copytree(tiny_preset, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"),
               PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-c", HF_LOAD, "hf://keras-vtn/tiny-laps"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["run", "jump", "swim"]


def test_builtin_presets_come_from_the_registry():
    names = [p["name"] for p in presets()]
    for name in ("vivit_b16x2_k400", "vivit_fe_l16x2_k600", "linear_vtn_k400", "vtn_vit_b_k400"):
        assert name in names
    vtn = next(p for p in presets() if p["name"] == "vtn_vit_b_k400")
    assert vtn["top1"] == 77.72 and "250 frames" in vtn["protocol"]
    # the preset evaluates as the original: the whole video in 250 frames, one centre view
    entry = registry.list_weights("vtn", "k400")[0]
    assert preprocessor_from_registry(entry).describe().startswith(
        "protocol: uniform 250 frames, 224 px (short side 256), 1 clip × 1 crop")
    assert all(p["family"] in ("vivit", "linear_vtn", "vtn") for p in presets())


def test_markdown_table_is_printed_by_the_module(capsys):
    from keras_vtn.preset_utils import main

    assert main(["--markdown"]) == 0  # `python -m keras_vtn.preset_utils --markdown`
    out = capsys.readouterr().out
    assert out.strip() == markdown_table()
    assert "| `vivit_fe_l16x2_k600` | vivit | Kinetics-600 val | 81.6 |" in out


def test_readme_table_is_the_presets_output():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = "<!-- presets table: python -m keras_vtn.preset_utils --markdown -->\n"
    table = text.split(start, 1)[1].split("\n<!-- end presets table -->", 1)[0]
    assert table == markdown_table(), ("README's table: paste `python -m "
                                       "keras_vtn.preset_utils --markdown` between its markers")


class _CountingFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a folder and notes every request path in `server.hits`."""

    def do_GET(self):  # noqa: N802 - http.server API
        self.server.hits.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def toy_server(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving the VTN-format parity fixtures, and an empty
    Keras cache private to the test."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("KERAS_VTN_DOWNLOAD_TIMEOUT", "20")
    monkeypatch.delenv("KERAS_VTN_OFFLINE", raising=False)
    handler = functools.partial(_CountingFiles, directory=os.path.join(FIXTURES, "vtn"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.hits, httpd.entries = [], []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    for entry in httpd.entries:
        registry.unregister(entry["id"])
    httpd.shutdown()
    httpd.server_close()


def _toy_entry(server, family: str, fname: str, reference, **fields) -> dict:
    """A registry entry `<family>/toy_k5` releasing the parity fixture `fname` (the original
    format) through `server`, with `reference`'s architecture as its recorded config."""
    architecture = registry.list_weights(family, "k400")[0]["config"]
    with open(os.path.join(FIXTURES, "vtn", fname), "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    entry = {
        "id": f"{family}/toy_k5", "name": "toy_k5", "family": family, "match": {"size": "base"},
        "kind": "video", "format": "pytorch",
        "description": f"the {family} parity fixture as a released checkpoint",
        "config": {k: v for k, v in keras_vtn.model_config(reference).items()
                   if k in architecture},
        "files": [{"url": f"http://127.0.0.1:{server.server_address[1]}/{fname}",
                   "fname": fname, "sha256": sha256}],
        "cache_dir": f"test/{family}_toy_k5", "license": "test fixture", **fields,
    }
    registry.register(entry)
    server.entries.append(entry)
    return entry


@pytest.fixture
def toy_builtin(toy_server):
    """A built-in preset `linear_vtn_toy_k5` whose original checkpoint (the LinearVTN parity
    fixture, in elb3k/vtn's format) the test server serves."""
    reference, clip, logits = _linear_vtn()
    entry = _toy_entry(
        toy_server, "linear_vtn", "lin_vtn.pth", reference,
        preprocessing={"num_frames": 6, "frame_stride": 2, "resize_short_side": 36,
                       "crop_size": 32},
        eval_views={"clips": 2, "crops": 3, "aggregation": "mean of log-softmax"},
        reported={"dataset": "toy", "top1": 50.0, "views": "2x3"})
    return entry, toy_server, clip, logits


def test_builtin_vtn_preset_evaluates_the_whole_video_with_frame_positions(toy_server):
    """As the original evaluation does (and the registry records): every frame of the video
    uniformly sampled, their positions in the video as frame_indices."""
    reference, inputs, expected = _vtn()
    _toy_entry(toy_server, "vtn", "vtn.pyth", reference,
               preprocessing={"num_frames": {"train": 4, "eval": 10}, "resize_short_side": 36,
                              "crop_size": 32},
               eval_views={"clips": 1, "crops": 1, "aggregation": "single view (full video)"})
    classifier = keras_vtn.VideoClassifier.from_preset("vtn_vit_b_toy_k5")
    assert classifier.preprocessor.describe().startswith(
        "protocol: uniform 10 frames, 32 px (short side 36), 1 clip × 1 crop")
    assert sorted(classifier.input) == ["frame_indices", "frames"]
    logits = classifier.predict(inputs, verbose=0)
    assert np.abs(logits - expected).max() <= TOLERANCE


# A first use killed while it writes the preset (after the download and conversion).
KILLED_FIRST_USE = textwrap.dedent("""
    import json, os, signal, sys
    import keras, keras_vtn
    from keras_vtn.weights import registry
    registry.register(json.loads(sys.argv[1]))
    save_weights = keras.Model.save_weights
    def killed(model, path, **kwargs):
        if ".linear_vtn_toy_k5.tmp-" not in path:  # e.g. the converted-weights cache
            return save_weights(model, path, **kwargs)
        with open(path, "wb") as f:
            f.write(b"\\x89HDF\\r\\n half written")
        os.kill(os.getpid(), signal.SIGKILL)
    keras.Model.save_weights = killed
    keras_vtn.VideoClassifier.from_preset("linear_vtn_toy_k5")
""")


def test_builtin_preset_is_converted_on_first_use_then_read_from_the_cache(toy_builtin):
    entry, server, clip, expected = toy_builtin
    presets_dir = os.path.join(download.cache_root(), "presets")
    folder = os.path.join(presets_dir, "linear_vtn_toy_k5")
    assert "linear_vtn_toy_k5" in [p["name"] for p in presets()]

    killed = subprocess.run([sys.executable, "-c", KILLED_FIRST_USE, json.dumps(entry)],
                            env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    left = os.listdir(presets_dir)
    assert "linear_vtn_toy_k5" not in left and len(left) == 1  # only the killed write's folder
    assert server.hits == ["/lin_vtn.pth"]

    classifier = keras_vtn.VideoClassifier.from_preset("linear_vtn_toy_k5")
    assert os.listdir(presets_dir) == ["linear_vtn_toy_k5"]  # the killed write is cleared
    assert server.hits == ["/lin_vtn.pth"]  # the original came from the download cache
    metadata = read_preset(folder)["metadata"]
    assert metadata["source"]["sha256"] == entry["files"][0]["sha256"]
    assert metadata["source"]["urls"] == [entry["files"][0]["url"]]
    assert metadata["reported"]["top1"] == 50.0 and metadata["license"] == "test fixture"
    assert classifier.preprocessor.describe().startswith(
        "protocol: dense 6×2, 32 px (short side 36), 2 clips × 3 crops; views averaged as "
        "log_probabilities")
    logits = classifier.predict(clip, verbose=0)
    built = keras_vtn.LinearVTN(weights="toy_k5", size="base", num_classes=5)
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(built(clip)), atol=1e-6)
    assert np.abs(logits - expected).max() <= TOLERANCE

    # Second use: the cached preset as it is, no download and no conversion.
    os.remove(download.fetch_entry(entry))
    before = os.stat(folder), os.stat(os.path.join(folder, "model.weights.h5"))
    again = keras_vtn.VideoClassifier.from_preset("linear_vtn_toy_k5")
    after = os.stat(folder), os.stat(os.path.join(folder, "model.weights.h5"))
    assert [(s.st_ino, s.st_mtime_ns) for s in after] == [(s.st_ino, s.st_mtime_ns)
                                                          for s in before]
    assert server.hits == ["/lin_vtn.pth"]
    np.testing.assert_array_equal(again.predict(clip, verbose=0), logits)

    # A partial cached preset is made again (from a new download), not used.
    os.remove(os.path.join(folder, "model.weights.h5"))
    rebuilt = keras_vtn.VideoClassifier.from_preset("linear_vtn_toy_k5")
    assert server.hits == ["/lin_vtn.pth"] * 2
    assert read_preset(folder)["labels"] == rebuilt.label_names
    np.testing.assert_array_equal(rebuilt.predict(clip, verbose=0), logits)
