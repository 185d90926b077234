"""The validation curves of training runs as text: held-out (`select/*`) and validation (`val/*`) video FG-ARI and
mBO at every validation (and the segments per frame, where logged), and the masks' mean entropy
(`train/mask_entropy`) averaged over each block of steps, or with --means any other logged training columns
(e.g. `train/kd`, the student's 1 - cosine to its teacher).

Usage: python benchmarks/run_curves.py RUN [RUN ...] [--block 250] [--means train/mask_entropy train/kd]
RUN: a `slotmatch train` or `slotmatch distill` run folder; its logs*/metrics.csv are merged by step
(`plots.read_run_logs`). Steps are printed as logged: a validation after step 250 is logged at step 249.
The per-250-step figures in docs/RESULTS.md (sessions 9 to 12) come from here.
"""

import argparse

import numpy as np

from slotmatch.plots import NoLogsError, read_run_logs

COLUMNS = ("select/video_fg_ari", "select/video_mbo", "val/video_fg_ari", "val/video_mbo",
           "val/segments_per_frame")  # the last only in runs since session 15 (below 1.5: collapsed onto one slot)


def curve_lines(run: str, block: int = 250, means: tuple = ("train/mask_entropy",)) -> list[str]:
    """The printed lines for one run: a header naming the columns, one row per validation, then each column of
    `means` averaged over blocks of `block` steps (the masks' entropy by default)."""
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
    for column in means:
        if column not in series:
            continue
        s, v = series[column]
        blocks = [v[s // block == i].mean() for i in range(int(s.max()) // block + 1) if (s // block == i).any()]
        name = "mask entropy" if column == "train/mask_entropy" else column
        lines.append(f"  {name} by {block} steps: " + " ".join(f"{m:.3f}" for m in blocks))
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--block", type=int, default=250, help="steps per mean (default 250)")
    p.add_argument("--means", nargs="+", default=["train/mask_entropy"],
                   help="logged training columns to average per block (default train/mask_entropy)")
    args = p.parse_args(argv)
    missing = []
    for run in args.runs:
        try:
            print("\n".join(curve_lines(run, args.block, tuple(args.means))))
        except NoLogsError as e:  # a run that has not logged yet: say so, show the others
            print(e)
            missing.append(run)
    if missing:
        raise SystemExit(f"no training logs in {len(missing)} of {len(args.runs)} runs: {', '.join(missing)}")


if __name__ == "__main__":
    main()
