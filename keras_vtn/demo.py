"""`make demo`: learn the built-in motion task end to end on a CPU in a few minutes.

1. writes the motion dataset (real H.264 mp4 + Kinetics CSVs; 6 classes that differ only in
   motion) under `<output>/data`,
2. trains a small model of a family with `model.fit` through the `keras_vtn.data` pipeline,
3. evaluates it with several views per video (JSON report + confusion-matrix PNG),
4. predicts one validation video (top-5 + PNG of its sampled frames),
5. writes the training curve and prints a summary.

Run: `python -m keras_vtn.demo --family vivit` (or `make demo FAMILY=vivit`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping

from keras_vtn.io_utils import write_json

DEFAULT_FAMILY = "vivit"


class _FamilyField(Mapping):
    """`{family: Family.<field>}` over the families registered when it is read."""

    def __init__(self, field: str):
        self._field = field

    def _table(self) -> dict:
        from keras_vtn.models.families import FAMILIES

        return {name: getattr(family, self._field) for name, family in FAMILIES.items()}

    def __getitem__(self, family: str):
        return self._table()[family]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


# Each family's small model for 8 frames of 32x32 pixels, its demo epochs and the training
# settings that differ from the `motion_demo` preset (see `keras_vtn.models.families`).
DEMO_MODELS: Mapping[str, dict] = _FamilyField("demo_model")
DEMO_EPOCHS: Mapping[str, int] = _FamilyField("demo_epochs")
DEMO_TRAINING: Mapping[str, dict] = _FamilyField("demo_training")


def demo_config(family: str, output: str, **overrides):
    """The `TrainConfig` of the demo for `family` (preset `motion_demo` + a small model)."""
    from keras_vtn.training import TrainConfig

    if family not in DEMO_MODELS:
        raise ValueError(f"family must be one of {sorted(DEMO_MODELS)}, not {family!r}")
    values = dict(
        family=family, model_kwargs=dict(DEMO_MODELS[family]),
        data_root=os.path.join(output, "data"), output_dir=os.path.join(output, "run"),
        **dict(DEMO_TRAINING.get(family, {})),
    )
    values.update(overrides)
    return TrainConfig.from_preset("motion_demo", **values)


def run_demo(
    family: str = DEFAULT_FAMILY,
    output: str = "demo_output",
    *,
    train_clips: int = 100,
    val_clips: int = 20,
    epochs: int | None = None,
    seed: int = 0,
    fresh: bool = True,
    verbose: int | str = 2,
) -> dict:
    """Runs the five steps; returns the summary dict (also `<output>/summary.json`)."""
    import shutil

    from keras_vtn.data import dataset_info, generate_motion_dataset
    from keras_vtn.evaluation import evaluate_views
    from keras_vtn.prediction import format_prediction, predict_video
    from keras_vtn.training import eval_dataset, train

    times = {}
    start = time.perf_counter()
    run_dir = os.path.join(output, "run")
    if fresh and os.path.isdir(run_dir):
        shutil.rmtree(run_dir)  # a new run, not a resume of an older one
    t = time.perf_counter()
    generate_motion_dataset(
        os.path.join(output, "data"), clips_per_class={"train": train_clips, "val": val_clips},
        seed=seed,
    )
    times["dataset_s"] = time.perf_counter() - t

    overrides = dict(seed=seed, verbose=verbose, epochs=epochs or DEMO_EPOCHS[family])
    config = demo_config(family, output, **overrides)
    t = time.perf_counter()
    result = train(config)
    times["train_s"] = time.perf_counter() - t
    model = result["model"]

    t = time.perf_counter()
    val = eval_dataset(config)  # the preset's views: 2 clips x 1 crop
    report = evaluate_views(model, val, "logits", output_dir=os.path.join(output, "evaluation"))
    times["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    val_info = dataset_info(val)
    video = str(val_info.records.paths[0])
    prediction = predict_video(
        model, video, label_names=result["label_names"], sampling=config.sampling,
        frame_stride=config.frame_stride, frames_png=os.path.join(output, "prediction.png"),
    )
    times["predict_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - start

    summary = {
        "family": family,
        "model": model.name,
        "parameters": result["parameters"],
        "epochs": config.epochs,
        "train_clips": train_clips * 6,
        "val_clips": report["num_videos"],
        "protocol": report["protocol"],
        "val_top1": report["top1"],
        "val_top5": report["top5"],
        "final_train_accuracy": result["history"].get("accuracy", [None])[-1],
        "chance": 1 / len(result["label_names"]),
        "prediction": {"video": prediction["video"],
                       "true": val_info.label_names[val_info.records.labels[0]],
                       "top1": prediction["top_k"][0]["label"]},
        "files": {
            "model": result.get("model_path"),
            "training_curve": result.get("curve_png"),
            "evaluation_json": report["json_path"],
            "confusion_matrix": report["confusion_png"],
            "prediction_png": prediction["frames_png"],
        },
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "cpu_count": os.cpu_count(),
    }
    write_json(os.path.join(output, "summary.json"), summary, indent=2)
    print()
    print("=" * 72)
    print(f"keras_vtn demo: {family} ({summary['parameters']:,} parameters) on the motion task")
    print(f"  data     {summary['train_clips']} train / {summary['val_clips']} val mp4 clips, "
          f"6 classes (chance {100 * summary['chance']:.1f}%)")
    print(f"  trained  {config.epochs} epochs in {times['train_s']:.0f} s; "
          f"final train accuracy {100 * summary['final_train_accuracy']:.1f}%")
    print(f"  eval     {report['protocol']} views, logits averaged: top-1 "
          f"{100 * report['top1']:.1f}%  top-5 {100 * report['top5']:.1f}%")
    print("  predict  " + format_prediction(prediction).replace("\n", "\n           "))
    for name, path in summary["files"].items():
        print(f"  {name:<17s}{path}")
    print(f"  total    {times['total_s']:.0f} s (dataset {times['dataset_s']:.0f} s)")
    print("=" * 72)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default=os.environ.get("FAMILY") or DEFAULT_FAMILY,
                        choices=sorted(DEMO_MODELS))
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--train-clips", type=int, default=100, help="per class")
    parser.add_argument("--val-clips", type=int, default=20, help="per class")
    parser.add_argument("--epochs", type=int, help="default: DEMO_EPOCHS[family]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help="exit with status 1 if validation top-1 is lower")
    args = parser.parse_args(argv)
    summary = run_demo(args.family, args.output, train_clips=args.train_clips,
                       val_clips=args.val_clips, epochs=args.epochs, seed=args.seed)
    return 0 if summary["val_top1"] >= args.min_accuracy else 1


if __name__ == "__main__":
    # TensorFlow's start-up log is filtered by `keras_vtn/__init__.py`, which runs before this
    # module: setting TF_CPP_MIN_LOG_LEVEL here would come after TensorFlow has loaded.
    sys.exit(main())
