"""Do an encoder's features separate objects? k-means on them, beside k-means on colour.

Usage: python benchmarks/feature_kmeans.py DATASET ENCODER [ENCODER ...] [--segments 11] [--videos 25] [--size 64]
ENCODER: a `slotmatch pretrain` folder or encoder.safetensors (a CNN; its sizes are read from pretrain.json).

Every validation video's tokens (all frames together) are clustered into SEGMENTS with k-means, as the
kmeans-colour reference clusters pixels, and the ids, upsampled from the token grid, are scored with video
FG-ARI and mBO. Features that beat kmeans-colour carry what slot attention needs to find objects; this is
the "k-means on DINO features" baseline of DINOSAUR (Seitzer et al. 2023), for the offline encoders.
"""

import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from slotmatch.data import open_dataset
from slotmatch.models.encoder import CNNEncoder
from slotmatch.references import kmeans, reference_ids
from slotmatch.train import video_scores


def load_encoder(spec: str) -> CNNEncoder:
    folder = spec if os.path.isdir(spec) else os.path.dirname(spec)
    weights = os.path.join(spec, "encoder.safetensors") if os.path.isdir(spec) else spec
    cfg = json.load(open(os.path.join(folder, "pretrain.json")))["encoder"]
    cfg = {k: v for k, v in cfg.items() if k not in ("name", "weights", "frozen")}  # pretrain.json may name them
    return CNNEncoder(**cfg, weights=weights, frozen=True).eval()


@torch.no_grad()
def feature_ids(encoder: CNNEncoder, video: torch.Tensor, k: int, size: int) -> torch.Tensor:
    """video (T, 3, H, W) -> ids (T, size, size) of k-means on the standardised features of all its tokens."""
    T, _, H, W = video.shape
    feats = encoder(video)  # (T, N, D)
    h, w = H // encoder.patch_size, W // encoder.patch_size
    x = feats.reshape(1, T * h * w, -1)
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)
    ids = kmeans(x, k, seed=0).reshape(T, 1, h, w).float()
    return F.interpolate(ids, size=(size, size), mode="nearest").reshape(T, size, size).long()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("encoders", nargs="+")
    ap.add_argument("--segments", type=int, default=11)
    ap.add_argument("--videos", type=int, default=25)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    ds = open_dataset(a.dataset, "validation", size=a.size)
    n = min(a.videos, len(ds))
    samples = [ds[i] for i in range(n)]
    true = torch.stack([s["segmentations"] for s in samples])
    rows = {}
    video = torch.stack([s["video"] for s in samples]).permute(0, 1, 3, 4, 2)
    for ref in ("grid", "kmeans-colour"):
        rows[f"reference: {ref}"] = video_scores(reference_ids(ref, video, a.segments), true)
    for spec in a.encoders:
        enc = load_encoder(spec)
        pred = torch.stack([feature_ids(enc, s["video"], a.segments, a.size) for s in samples])
        rows[f"k-means on {spec}"] = video_scores(pred, true)
    print(f"{a.dataset}, {n} validation videos at {a.size}x{a.size}, {a.segments} segments per video\n")
    print("| segmenter | video FG-ARI | video mBO | image FG-ARI | image mBO |\n|---|---|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(s[k]):.3f}" for k in
                                          ("video_fg_ari", "video_mbo", "image_fg_ari", "image_mbo")) + " |")


if __name__ == "__main__":
    main()
