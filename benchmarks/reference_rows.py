"""Reference rows on generated datasets: what a segmenter that ignores objects scores.

Usage: python benchmarks/reference_rows.py data/movi-a-like:11 data/movi-c-like:11 data/movi-e-like:15 [--size 64]
       [--grid-bound 16 32]
Each argument is DATASET:SEGMENTS (use the model's number of slots). Prints a Markdown table of video
FG-ARI and video mBO on the validation split, with the share of foreground pixels.
"""

import argparse

import numpy as np
import torch

from slotmatch.data import open_dataset
from slotmatch.references import ideal_on_grid, reference_ids
from slotmatch.train import video_scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--split", default="validation")
    ap.add_argument("--grid-bound", type=int, nargs="*", default=[],
                    help="also print the upper bound of a model whose masks live on a G x G patch grid")
    a = ap.parse_args()
    print("| dataset | foreground | reference | video FG-ARI | video mBO |\n|---|---|---|---|---|")
    for item in a.datasets:
        path, _, k = item.partition(":")
        ds = open_dataset(path, a.split, size=a.size)
        video = torch.stack([ds[i]["video"] for i in range(len(ds))]).permute(0, 1, 3, 4, 2)
        true = torch.stack([ds[i]["segmentations"] for i in range(len(ds))])
        fg = float((true > 0).float().mean())
        for ref in ("grid", "kmeans-colour", "kmeans-colour-position", "one-segment"):
            s = video_scores(reference_ids(ref, video, int(k or 11)), true)
            print(f"| {path} ({len(ds)} videos, {k} segments, {a.size}px) | {fg:.1%} | {ref} | "
                  f"{np.nanmean(s['video_fg_ari']):.3f} | {np.nanmean(s['video_mbo']):.3f} |")
        for g in a.grid_bound:
            s = video_scores(ideal_on_grid(true, g), true)
            print(f"| {path} ({len(ds)} videos, {a.size}px) | {fg:.1%} | upper bound: ground truth on a {g}x{g} grid | "
                  f"{np.nanmean(s['video_fg_ari']):.3f} | {np.nanmean(s['video_mbo']):.3f} |")


if __name__ == "__main__":
    main()
