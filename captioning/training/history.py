"""Training curves: the per-epoch history as CSV (Keras' CSVLogger, appended across
resumed runs) and a PNG of every loss/metric against the epoch, drawn from that CSV."""

from __future__ import annotations

import csv
from pathlib import Path

HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"


def read_history(path: Path) -> dict[str, list[float]]:
    """Columns of the history CSV; a resumed run's repeated epochs keep their last row."""
    rows: dict[int, dict[str, str]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows[int(row["epoch"])] = row
    ordered = [rows[epoch] for epoch in sorted(rows)]
    columns = list(ordered[0]) if ordered else []
    return {name: [float(row[name]) for row in ordered] for name in columns}


def plot_history(csv_path: Path, png_path: Path) -> Path:
    """One panel per metric (training and validation together), x = epoch (1-based)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    history = read_history(csv_path)
    epochs = [int(epoch) + 1 for epoch in history.pop("epoch", [])]
    metrics = sorted(name for name in history if not name.startswith("val_"))
    metrics = [name for name in metrics if name != "learning_rate"] + (
        ["learning_rate"] if "learning_rate" in history else []
    )
    figure, axes = plt.subplots(
        1, max(len(metrics), 1), figsize=(4.5 * max(len(metrics), 1), 3.4), squeeze=False
    )
    for axis, name in zip(axes[0], metrics, strict=False):
        axis.plot(epochs, history[name], marker="o", label=f"train {name}")
        if f"val_{name}" in history:
            axis.plot(epochs, history[f"val_{name}"], marker="o", label=f"validation {name}")
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path
