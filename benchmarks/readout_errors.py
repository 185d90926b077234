"""Where is an encoder's per-pixel readout wrong, and which of its parts holds k-means back?

Usage: python benchmarks/readout_errors.py DATASET ENCODER ... [--readout surface+relief] [--segments 11]
       [--videos 50] [--size 64]
ENCODER: a `slotmatch pretrain` folder (as in feature_kmeans.py), read through its pretext head one token per pixel
(`encoder: {readout: PARTS, unpack: true}`).

1. Each readout part's squared error against the exact target (computed from the simulator's depth, as the pretext
   computes it), per pixel, in three regions found from depth alone: the edge band (pixels within 2 of a change
   between floor and object, `encoder.standing` of the relief above 0.5), the objects' inside and the floor's.
2. k-means per pixel (as feature_kmeans.py --unpack, every channel standardised over the video) on every mix of
   predicted and exact parts: which part, made exact, would lift k-means most.
No masks are read, except to score.
"""

import argparse
import itertools
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from feature_kmeans import load_encoder, video_kmeans  # noqa: E402

from slotmatch.data import open_dataset  # noqa: E402
from slotmatch.models.encoder import make_target, relief_patch_target, standing  # noqa: E402
from slotmatch.train import video_scores  # noqa: E402

BAND = 2  # pixels on each side of an edge


def regions(depth: torch.Tensor) -> dict:
    """depth (T, H, W) -> {"edge band", "object inside", "floor inside"}: boolean (T, H, W) maps that share out
    every pixel."""
    up = (standing(relief_patch_target(depth, 1).view(depth.shape)) > 0.5).float()[:, None]
    k = 2 * BAND + 1
    band = (F.max_pool2d(up, k, 1, BAND) != -F.max_pool2d(-up, k, 1, BAND))[:, 0]
    return {"edge band": band, "object inside": (up[:, 0] > 0) & ~band, "floor inside": (up[:, 0] == 0) & ~band}


def split_parts(x: torch.Tensor, dims: list) -> list:
    """(..., sum(dims)) -> one tensor per part."""
    return list(torch.split(x, dims, -1))


def mixed_ids(pred: list, exact: list, use_exact: tuple, k: int) -> torch.Tensor:
    """Per-part lists of (T, H*W, d) -> k-means ids (T, H*W) on the parts taken exact where use_exact says so,
    predicted elsewhere, each channel standardised over the video."""
    return video_kmeans(torch.cat([e if u else p for p, e, u in zip(pred, exact, use_exact)], -1), k)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("encoders", nargs="+")
    ap.add_argument("--readout", default="surface+relief")
    ap.add_argument("--segments", type=int, default=11)
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    names = a.readout.split("+")
    ds = open_dataset(a.dataset, "validation", size=a.size, with_depth=True)
    samples = [ds[i] for i in range(min(a.videos, len(ds)))]
    true = torch.stack([s["segmentations"] for s in samples])
    exact_all = [make_target(a.readout, s["video"], None, 1, s["depth"], None) for s in samples]  # (T, H*W, D)
    print(f"{a.dataset}, {len(samples)} validation videos at {a.size}x{a.size}, {a.segments} segments per video\n")
    for spec in a.encoders:
        enc = load_encoder(spec, a.readout, unpack=True)
        p2 = enc.cnn_patch_size ** 2
        dims = [n // p2 for _, n in enc.readout_parts]
        err = {r: np.zeros(len(names) + 1) for r in ("edge band", "object inside", "floor inside")}
        ids = {mix: [] for mix in itertools.product((False, True), repeat=len(names))}
        with torch.no_grad():
            for s, exact in zip(samples, exact_all):
                pred = enc.encode_video(s["video"][None])[0]  # (T, H*W, D)
                T = pred.shape[0]
                for r, m in regions(s["depth"]).items():
                    m = m.reshape(T, -1)
                    err[r][0] += float(m.sum())
                    for i, (p, e) in enumerate(zip(split_parts(pred, dims), split_parts(exact, dims))):
                        err[r][i + 1] += float(((p - e) ** 2).sum(-1)[m].sum())
                for mix in ids:
                    ids[mix].append(mixed_ids(split_parts(pred, dims), split_parts(exact, dims), mix, a.segments)
                                    .reshape(T, a.size, a.size))
        total = sum(e[0] for e in err.values())
        print(f"{spec}: squared error per pixel (summed over each part's channels; share of the part's error)\n")
        print("| region | share of pixels | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
        sums = [sum(e[i + 1] for e in err.values()) for i in range(len(names))]
        for r, e in err.items():
            cells = [f"{e[i + 1] / max(e[0], 1):.4f} ({e[i + 1] / max(sums[i], 1e-12):.2f})" for i in range(len(names))]
            print(f"| {r} | {e[0] / total:.3f} | " + " | ".join(cells) + " |")
        print("\n| k-means per pixel on | video FG-ARI | video mBO |\n|---|---|---|")
        for mix, got in ids.items():
            sc = video_scores(torch.stack(got), true)
            label = " + ".join(f"{'exact' if u else 'predicted'} {n}" for n, u in zip(names, mix))
            print(f"| {label} | {np.mean(sc['video_fg_ari']):.3f} | {np.mean(sc['video_mbo']):.3f} |")
        print()


if __name__ == "__main__":
    main()
