"""`slotmatch plot`: training curves of a run directory as PNGs (matplotlib, Agg backend).

Reads every RUN/logs*/metrics.csv (Lightning's CSVLogger; a resumed run logs into logs_1, logs_2, ...),
merges them by step (a later file wins where steps repeat) and writes:
- train_losses.png: one panel per train/* column (train/loss, train/rec, train/contrast and, in
  distillation runs, train/kd, ...), raw values faint and a moving average on top;
- validation.png: one panel per val/* metric over steps, with the reference rows (ref_grid/*,
  ref_kmeans-colour/*) and, in distillation runs, the frozen teacher (teacher/*) as dashed lines; with
  `train.select_videos`, the held-out training videos' curve (select/*) beside the model's.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import re

import numpy as np

__all__ = ["read_run_logs", "plot_run", "plot_main", "NoLogsError"]

METRIC_ORDER = ("video_fg_ari", "video_mbo", "image_fg_ari", "image_mbo")
LOSS_ORDER = ("loss", "rec", "contrast", "kd", "feature_kd", "mask_kd")
LABELS = {"video_fg_ari": "video FG-ARI", "video_mbo": "video mBO", "image_fg_ari": "image FG-ARI",
          "image_mbo": "image mBO"}


class NoLogsError(FileNotFoundError):
    """The directory holds no training logs (RUN/logs*/metrics.csv) to plot."""


def log_files(run_dir: str) -> list[str]:
    """RUN/logs/metrics.csv, RUN/logs_1/metrics.csv, ... in the order they were written."""
    def order(path: str) -> int:
        m = re.fullmatch(r"logs(?:_(\d+))?", os.path.basename(os.path.dirname(path)))
        return int(m.group(1) or 0) if m else -1
    files = [p for p in glob.glob(os.path.join(run_dir, "logs*", "metrics.csv")) if order(p) >= 0]
    return sorted(files, key=order)


def read_run_logs(run_dir: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[int]]:
    """({column: (steps, values)} merged over all log files, sorted by step; [first step of each resumed part]).

    Raises NoLogsError when `run_dir` has no logs*/metrics.csv or they hold no values.
    """
    if not os.path.isdir(run_dir):
        raise NoLogsError(f"{run_dir}: no such run directory")
    files = log_files(run_dir)
    if not files:
        raise NoLogsError(f"{run_dir}: no training logs (expected logs/metrics.csv, written by "
                          "`slotmatch train` or `slotmatch distill`)")
    merged: dict[str, dict[int, float]] = {}
    starts = []
    for path in files:
        first = None
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    step = int(float(row.get("step") or ""))
                except ValueError:
                    continue
                first = step if first is None else min(first, step)
                for col, val in row.items():
                    if col in ("step", "epoch") or col is None or val in (None, ""):
                        continue
                    try:
                        v = float(val)
                    except ValueError:
                        continue
                    merged.setdefault(col, {})[step] = v
        if first is not None and path != files[0]:
            starts.append(first)
    if not merged:
        raise NoLogsError(f"{run_dir}: the training logs ({', '.join(files)}) hold no logged values yet")
    series = {}
    for col, pts in merged.items():
        steps = np.array(sorted(pts), dtype=np.int64)
        series[col] = (steps, np.array([pts[s] for s in steps], dtype=np.float64))
    return series, starts


def new_figure(n_panels: int, cols: int = 2, panel=(5.0, 3.2)):
    """A matplotlib Figure on the Agg canvas with `n_panels` axes, `cols` per row; returns (fig, axes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(cols, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(panel[0] * cols, panel[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)  # Agg: no display, no global pyplot state
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


def _smooth(v: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what there is)."""
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def _ordered(names: list[str], order: tuple[str, ...]) -> list[str]:
    rank = {n: i for i, n in enumerate(order)}
    return sorted(names, key=lambda n: (rank.get(n, len(order)), n))


def _steps_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")


def _mark_resumes(ax, starts: list[int]) -> None:
    for i, s in enumerate(starts):
        ax.axvline(s, color="0.6", linestyle=":", linewidth=1, label="resumed" if i == 0 else None)


def plot_losses(series: dict, starts: list[int], path: str) -> str | None:
    names = _ordered([c.split("/", 1)[1] for c in series if c.startswith("train/")], LOSS_ORDER)
    if not names:
        return None
    fig, axes = new_figure(len(names))
    for ax, name in zip(axes, names):
        steps, values = series[f"train/{name}"]
        window = max(1, len(values) // 20)
        ax.plot(steps, values, color="C0", alpha=0.35 if window > 1 else 1.0, linewidth=1,
                marker="o" if len(values) < 12 else None, markersize=3, label="logged")
        if window > 1:
            ax.plot(steps, _smooth(values, window), color="C0", linewidth=1.8, label=f"mean of {window}")
        _mark_resumes(ax, starts)
        ax.set_title(f"train/{name}")
        _steps_axis(ax)
        ax.grid(alpha=0.3)
        if window > 1 or starts:
            ax.legend(fontsize=8)
    fig.suptitle("training losses")
    fig.savefig(path, dpi=100)
    return path


def plot_validation(series: dict, starts: list[int], path: str) -> str | None:
    names = _ordered([c.split("/", 1)[1] for c in series if c.startswith("val/")], METRIC_ORDER)
    if not names:
        return None
    fig, axes = new_figure(len(names))
    styles = [("teacher/", "teacher (frozen)", "C3")]
    refs = sorted({c.split("/", 1)[0][4:] for c in series if c.startswith("ref_")})
    colours = ["C2", "C1", "C4", "C5", "C6", "C7", "C8", "C9"]
    styles += [(f"ref_{r}/", f"reference: {r}", colours[i % len(colours)]) for i, r in enumerate(refs)]
    for ax, name in zip(axes, names):
        steps, values = series[f"val/{name}"]
        ax.plot(steps, values, color="C0", marker="o", markersize=4, linewidth=1.8, label="model")
        if f"select/{name}" in series:  # the held-out training videos that choose best.ckpt (train.select_videos)
            s_steps, s_values = series[f"select/{name}"]
            ax.plot(s_steps, s_values, color="C9", marker="s", markersize=3, linewidth=1.2,
                    label="model, held-out training videos")
        for prefix, label, colour in styles:
            if f"{prefix}{name}" in series:
                ref = series[f"{prefix}{name}"][1][-1]  # constant over the run: the last value
                ax.axhline(ref, color=colour, linestyle="--", linewidth=1.4, label=f"{label} ({ref:.2f})")
        _mark_resumes(ax, starts)
        ax.set_title(f"val/{name}" + (f" ({LABELS[name]})" if name in LABELS else ""))
        _steps_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("validation")
    fig.savefig(path, dpi=100)
    return path


def plot_run(run_dir: str, out: str | None = None) -> list[str]:
    """Write the PNGs of a run (train_losses.png, validation.png: those that have data) into `out`
    (default RUN/plots); returns their paths."""
    series, starts = read_run_logs(run_dir)
    out = out or os.path.join(run_dir, "plots")
    os.makedirs(out, exist_ok=True)
    written = [p for p in (plot_losses(series, starts, os.path.join(out, "train_losses.png")),
                           plot_validation(series, starts, os.path.join(out, "validation.png"))) if p]
    if not written:
        raise NoLogsError(f"{run_dir}: the logs hold no train/* or val/* columns to plot "
                          f"(columns: {', '.join(sorted(series))})")
    return written


def plot_main(args) -> None:
    """`slotmatch plot RUN_DIR [--out DIR]`."""
    for path in plot_run(args.run_dir, args.out):
        print(path)
