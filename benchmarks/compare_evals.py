"""Paired differences between evaluations: each `slotmatch evaluate` output against the first.

Usage: python benchmarks/compare_evals.py BASE_EVAL OTHER_EVAL [OTHER_EVAL ...] [--metric video_fg_ari ...]
EVAL: an evaluation folder (its metrics.json) or a metrics.json. Prints, per metric, each model's mean and its
difference from the first model, averaged over the videos both scored, with a 95% t-interval, paired over videos
(`evaluate.paired_difference`), and on how many videos it is better. Models scored on different data or splits
are refused. Used for teacher against student and SlotMatch against its ablations (docs/RESULTS.md, session 9).
"""

import argparse
import json
import os

from slotmatch.evaluate import paired_difference

METRICS = ("video_fg_ari", "video_mbo")


def load_eval(path: str) -> dict:
    """The metrics.json of an evaluation folder (or the file itself), with a clear error if it is not one."""
    file = os.path.join(path, "metrics.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: no metrics.json here; run `slotmatch evaluate --out {path}` first")
    with open(file) as f:
        metrics = json.load(f)
    if "per_video" not in metrics:
        raise ValueError(f"{file}: not a `slotmatch evaluate` output (no per_video scores)")
    return {**metrics, "path": path}


def compare(evals: list[dict], metrics=METRICS) -> list[dict]:
    """One row per (metric, model after the first): its mean and its paired difference from the first model."""
    base = evals[0]
    for e in evals[1:]:
        if (e.get("data"), e.get("split")) != (base.get("data"), base.get("split")):
            raise ValueError(f"{e['path']} scores {e.get('data')}:{e.get('split')}, "
                             f"{base['path']} scores {base.get('data')}:{base.get('split')}: not comparable")
    rows = []
    for metric in metrics:
        for e in evals[1:]:
            d = paired_difference(e["per_video"], base["per_video"], metric)
            rows.append({"metric": metric, "model": e["path"], "mean": e["aggregate"][metric], "base": base["path"],
                         "base_mean": base["aggregate"][metric], **d})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", nargs="+")
    parser.add_argument("--metric", action="append", help=f"default: {', '.join(METRICS)}")
    args = parser.parse_args(argv)
    if len(args.evals) < 2:
        parser.error("give at least two evaluations: the base and one to compare with it")
    rows = compare([load_eval(p) for p in args.evals], args.metric or METRICS)
    print(f"base: {args.evals[0]}\n")
    print("| metric | model | mean | base mean | difference [95% CI] | better on |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["ci95"]
        ci = f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else ""
        print(f"| {r['metric']} | {r['model']} | {r['mean']:.3f} | {r['base_mean']:.3f} | {r['difference']:+.3f}{ci} "
              f"| {r['model_better_videos']} of {r['n']} |")


if __name__ == "__main__":
    main()
