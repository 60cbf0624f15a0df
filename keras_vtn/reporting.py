"""PNG reports of training, evaluation and prediction: the loss / accuracy curves, the
confusion matrix, the sampled frames (matplotlib with the Agg backend: no display needed)."""

from __future__ import annotations

import os

from keras_vtn.io_utils import atomic_path


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - matplotlib is a core dependency
        raise ImportError("PNG reports need matplotlib: pip install matplotlib") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> str:
    """Saves `fig` atomically (the format from the extension) and closes it."""
    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp:
        fig.savefig(tmp, dpi=100)
    _pyplot().close(fig)
    return os.fspath(path)


def plot_history(history: dict[str, list[float]], path: str | os.PathLike) -> str:
    """Loss and accuracy per epoch (train and validation) as a two-panel PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = history.get(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, ms=3,
                        label="validation" if prefix else "train")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(matrix, label_names, path: str | os.PathLike, title: str = "") -> str:
    """A row-normalised confusion matrix (rows: true class) as a PNG; counts in small matrices."""
    import numpy as np

    plt = _pyplot()
    matrix = np.asarray(matrix)
    n = len(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    size = min(max(4.0, 0.45 * n + 2), 20)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), label_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), label_names, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path)


def plot_frames(frames, path: str | os.PathLike, title: str = "", frame_indices=None) -> str:
    """The sampled frames of a clip `(T, H, W, 3)` in one row (or a grid), with a title."""
    import numpy as np

    plt = _pyplot()
    frames = np.asarray(frames)
    count = len(frames)
    cols = min(count, 8)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.8), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < count:
            ax.imshow(np.clip(frames[i], 0, 255).astype("uint8"))
            if frame_indices is not None:
                ax.set_title(f"#{int(frame_indices[i])}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
