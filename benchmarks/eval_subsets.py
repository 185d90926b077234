"""Means of an evaluation's per-video scores on its first videos and on the rest, for the model and the references.

Usage: python benchmarks/eval_subsets.py EVAL [EVAL ...] [--first 50]
EVAL: a `slotmatch evaluate` folder (or its metrics.json). Videos are taken in their dataset order (`index`), so on a
split generated with more validation videos the first 50 are the usual 50 (the generator renders video i from
(seed, split, i) alone; docs/RESULTS.md, session 27 part 1).
"""

import argparse

import numpy as np

from compare_evals import METRICS, load_eval

REFERENCES = ("grid", "kmeans-colour")


def subset_means(per_video: list, first: int) -> dict:
    """{metric: (mean of the first `first` videos, mean of the rest, mean of all)} in dataset order."""
    rows = sorted(per_video, key=lambda r: r["index"])
    out = {}
    for metric in METRICS:
        x = np.array([r[metric] for r in rows], dtype=float)
        rest = float(x[first:].mean()) if len(x) > first else float("nan")
        out[metric] = (float(x[:first].mean()), rest, float(x.mean()))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", nargs="+")
    parser.add_argument("--first", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"| evaluation | method | first {args.first} videos | the rest | all |")
    print("|---|---|---|---|---|")
    for path in args.evals:
        ev = load_eval(path)
        methods = [("model", ev["per_video"])] + [(name, ev["references"][name]["per_video"])
                                                  for name in REFERENCES if name in ev.get("references", {})]
        for name, per_video in methods:
            m = subset_means(per_video, args.first)
            cells = [" / ".join(f"{m[k][i]:.3f}" for k in METRICS) for i in range(3)]
            print(f"| {path} | {name} | {cells[0]} | {cells[1]} | {cells[2]} |")


if __name__ == "__main__":
    main()
