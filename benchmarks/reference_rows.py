"""Reference rows on generated datasets: what a segmenter that ignores objects scores.

Usage: python benchmarks/reference_rows.py data/movi-a-like:11 data/movi-c-like:11 data/movi-e-like:15 [--size 64]
Each argument is DATASET:SEGMENTS (use the model's number of slots). Prints a Markdown table of video
FG-ARI and video mBO on the validation split, with the share of foreground pixels.
"""

import argparse

import numpy as np
import torch

from slotmatch.data import open_dataset
from slotmatch.references import reference_ids
from slotmatch.train import video_scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--split", default="validation")
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


if __name__ == "__main__":
    main()
