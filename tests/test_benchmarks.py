"""Smoke tests of benchmarks/: the FLOP counter against hand counts, the timing harness on a
tiny model, the subprocess protocol. Correctness only; no timing assertions."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import keras
import pytest

sys.path.insert(0, str(Path(__file__).absolute().parents[1]))  # the repository root

from benchmarks import flops  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    median_interval,
    run_worker,
    time_alternating,
    time_calls,
)
from benchmarks.laps_overhead import paired_overhead  # noqa: E402
from benchmarks.models import finalise, merge_rounds, time_ratio  # noqa: E402
from keras_vtn.layers import PatchEmbedding, TransformerBlock  # noqa: E402


def test_contraction_counts_by_hand():
    # q·kᵀ of 2 clips, 3 heads, 5 queries, 7 keys, width 4.
    qk = flops.einsum_macs("...qhd,...khd->...hqk", (2, 5, 3, 4), (2, 7, 3, 4))
    assert qk == 2 * 3 * 5 * 7 * 4
    assert flops.einsum_macs("bij->bji", (2, 3, 4)) == 0
    assert flops.matmul_macs((2, 1, 5, 6), (3, 6, 7)) == 2 * 3 * 5 * 6 * 7
    assert flops.matmul_macs((6,), (6, 7)) == 6 * 7
    assert flops.conv_macs((1, 4, 4, 8), (3, 3, 2, 8)) == 4 * 4 * 8 * 3 * 3 * 2
    assert flops.attention_macs((2, 5, 3, 4), (2, 7, 3, 4)) == 2 * 2 * 3 * 5 * 7 * 4


def test_model_count_matches_hand_count():
    batch, frames, tokens, dim, mlp, classes = 3, 2, 16, 16, 24, 5
    inputs = keras.Input((frames, 32, 32, 3))
    x = PatchEmbedding(dim, 8, name="patch")(inputs)  # (B, 2, 16, D)
    x = keras.layers.Reshape((frames * tokens, dim))(x)
    x = TransformerBlock(num_heads=2, mlp_dim=mlp, name="block_0")(x)
    x = keras.layers.Dense(classes, name="head")(x)
    model = keras.Model(inputs, x)
    count = flops.count_model(model, (batch, frames, 32, 32, 3))
    n = frames * tokens
    patch = batch * frames * tokens * (8 * 8 * 3) * dim
    qkvo = 4 * batch * n * dim * dim
    attention = 2 * batch * n * n * dim  # q·kᵀ and p·v with the real token count
    mlp_macs = 2 * batch * n * dim * mlp
    head = batch * n * dim * classes
    assert count.macs == patch + qkvo + attention + mlp_macs + head
    assert count.flops == 2 * count.macs
    layers = count.by_prefix(2)
    assert layers["patch"] == patch
    assert layers["block_0/attention"] == qkvo + attention
    assert layers["block_0/mlp"] == mlp_macs
    assert layers["head"] == head


def test_time_calls_and_worker_on_a_tiny_model():
    calls = []
    timing = time_calls(lambda: calls.append(1), repeats=2, warmup=1)
    assert len(calls) == 3 and len(timing["times_s"]) == 2
    if importlib.util.find_spec("keras_vtn.models.vivit") is None:
        pytest.skip("ViViT is not on this branch yet")
    from benchmarks.keras_worker import main as measure

    result = measure(dict(config="tiny_vivit", batch=2, repeats=1, matmul_peak=False, jit=False))
    assert result["input_shape"] == (2, 4, 32, 32, 3)
    assert result["flops"]["macs"] > 0 and result["params"] > 0
    assert len(result["timing"]["times_s"]) == 1 and result["timing"]["median_s"] > 0
    assert result["rss_after_build_mb"] > 0


def test_subprocess_protocol_reports_results_and_failures():
    pytest.importorskip("torch")
    spec = dict(reference="hf_vivit", kwargs=dict(num_frames=2, image_size=16,
                tubelet_size=(2, 16, 16), hidden_dim=8, num_heads=2, mlp_dim=8, num_layers=1,
                num_classes=3), batch=1, repeats=1, warmup=0, matmul_peak=False)
    result = run_worker("benchmarks.reference", spec, timeout=120)
    assert "error" not in result, result
    # Either transformers is installed (then it ran) or the skip says what is missing.
    assert result.get("skipped", "").startswith("transformers") or result["timing"]["median_s"]
    assert result["max_rss_mb"] > 0
    broken = run_worker("benchmarks.no_such_worker", spec)
    assert "error" in broken and "no_such_worker" in broken["tail"]


def test_torchvision_stand_ins_look_like_modules_to_inspect():
    # A fresh interpreter: the stand-ins replace torchvision in sys.modules.
    code = (
        "import inspect, sys\n"
        "sys.modules['torchvision'] = None  # as if absent\n"
        "from benchmarks.reference import _stub_torchvision\n"
        "_stub_torchvision()\n"
        "import torchvision.transforms as T\n"
        "T.Compose([T.Resize(8)])\n"
        "assert not hasattr(sys.modules['torchvision'], '__file__')\n"
        "inspect.getmodule(_stub_torchvision, 'not_a_loaded_file.py')  # scans every module\n"
    )
    root = Path(__file__).absolute().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)


def test_rounds_merge_to_medians_and_ratios_pair_rounds():
    # The machine slows down 2x in round 2: both sides see it, that round's ratio stays 0.5.
    ours = merge_rounds([
        dict(s_per_clip=1.0, max_rss_mb=10, run=3),
        dict(s_per_clip=2.0, max_rss_mb=12, run=3),
        dict(s_per_clip=1.5, max_rss_mb=11, run=3),
    ])
    ref = merge_rounds([
        dict(s_per_clip=2.0, run=3), dict(s_per_clip=4.0, run=3), dict(s_per_clip=2.0, run=3)
    ])
    assert ours["round_s_per_clip"] == [1.0, 2.0, 1.5]
    assert ours["s_per_clip"] == 1.5 and ours["max_rss_mb"] == 12
    assert time_ratio(ours, ref) == pytest.approx(0.5)  # median of 0.5, 0.5, 0.75
    # Records from different runs (or single rounds) compare their medians.
    assert time_ratio(dict(ours, run=2), ref) == pytest.approx(1.5 / 2.0)
    single = dict(s_per_clip=3.0)
    assert merge_rounds([single]) is single
    failed = dict(error="boom")
    assert merge_rounds([dict(s_per_clip=1.0), failed]) is failed


def test_matmul_share_uses_the_peak_of_the_records_own_run():
    results = {
        "runs": [{"numpy_matmul_peak": {"gflops": g}} for g in (200.0, 300.0)],
        "records": {
            "a|b1|jax|forward": dict(run=0, achieved_gflops=150.0, matmul_peak={"gflops": 250.0}),
            "b|b1|jax|forward": dict(run=1, achieved_gflops=150.0),
            "c|b1|jax|forward": dict(achieved_gflops=100.0),  # from before runs were numbered
        },
    }
    records = finalise(results)["records"]
    assert records["a|b1|jax|forward"]["fraction_of_run_matmul_peak"] == pytest.approx(0.6)
    assert records["b|b1|jax|forward"]["fraction_of_run_matmul_peak"] == pytest.approx(0.5)
    assert records["c|b1|jax|forward"]["run_matmul_peak_gflops"] == 300.0
    assert results["matmul_peak_gflops_max"] == 300.0


def test_alternating_calls_pair_neighbours():
    order = []
    timing = time_alternating(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=3, warmup=1
    )
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then ab ba ab
    assert [len(timing[k]["times_s"]) for k in "ab"] == [3, 3]


def test_laps_overhead_is_the_median_pair_ratio_with_an_interval():
    ratios = [1.02, 1.10, 1.04, 1.03, 1.50] * 4  # one pair in five hit by a slow moment
    assert paired_overhead(ratios) == pytest.approx(0.04)
    low, high = median_interval(ratios)
    assert 1.02 <= low <= 1.04 <= high <= 1.10
    assert median_interval([1.0] * 9) == (1.0, 1.0)


def test_worker_times_a_pair_of_models_in_one_process():
    if importlib.util.find_spec("keras_vtn.models.vivit") is None:
        pytest.skip("ViViT is not on this branch yet")
    from benchmarks.keras_worker import main as measure

    result = measure(dict(config="tiny_vivit", paired_with=dict(config="tiny_vivit_wide"),
                          repeats=2, matmul_peak=False, jit=False))
    assert "timing" not in result
    assert set(result["paired_timing"]) == {"tiny_vivit", "tiny_vivit_wide"}
    assert all(len(t["times_s"]) == 2 for t in result["paired_timing"].values())
    assert result["paired_info"]["flops"]["macs"] > result["flops"]["macs"]
