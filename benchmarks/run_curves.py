"""The validation curves of training runs as text: held-out (`select/*`) and validation (`val/*`) video FG-ARI and
mBO at every validation, and the masks' mean entropy (`train/mask_entropy`) averaged over each block of steps.

Usage: python benchmarks/run_curves.py RUN [RUN ...] [--block 250]
RUN: a `slotmatch train` or `slotmatch distill` run folder; its logs*/metrics.csv are merged by step
(`plots.read_run_logs`). Steps are printed as logged: a validation after step 250 is logged at step 249.
The per-250-step figures in docs/RESULTS.md (sessions 9 and 10) come from here.
"""

import argparse

import numpy as np

from slotmatch.plots import read_run_logs

COLUMNS = ("select/video_fg_ari", "select/video_mbo", "val/video_fg_ari", "val/video_mbo")


def curve_lines(run: str, block: int = 250) -> list[str]:
    """The printed lines for one run: a header naming the columns, one row per validation, the entropy means."""
    series, _ = read_run_logs(run)
    cols = [c for c in COLUMNS if c in series]
    lines = [f"{run}  step  {'  '.join(cols)}"]
    steps = sorted({int(s) for c in cols for s in series[c][0]})
    for step in steps:
        cells = []
        for c in cols:
            hit = np.flatnonzero(series[c][0] == step)
            cells.append(f"{series[c][1][hit[0]]:.3f}" if hit.size else "-")
        lines.append(f"  {step} " + " ".join(cells))
    if "train/mask_entropy" in series:
        s, v = series["train/mask_entropy"]
        means = [v[s // block == i].mean() for i in range(int(s.max()) // block + 1) if (s // block == i).any()]
        lines.append(f"  mask entropy by {block} steps: " + " ".join(f"{m:.3f}" for m in means))
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--block", type=int, default=250, help="steps per entropy mean (default 250)")
    args = p.parse_args(argv)
    for run in args.runs:
        print("\n".join(curve_lines(run, args.block)))


if __name__ == "__main__":
    main()
