"""Decoder masks vs slot-attention masks of one checkpoint: where is the grouping lost?

Scores both kinds of masks on the first videos of a validation split (video FG-ARI, video mBO) and
counts the slots that own at least one patch per frame. Works for the oracle diagnostic too (the
ground truth is handed to an encoder that needs it), which `slotmatch evaluate --masks` cannot do.

Usage: python benchmarks/mask_kinds.py CHECKPOINT DATA [--videos 8] [--size 64]
"""

import argparse

import numpy as np
import torch

from slotmatch import metrics
from slotmatch.checkpoint import load_model
from slotmatch.data.dataset import open_dataset
from slotmatch.evaluate import MASK_KINDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="frame and ground-truth size (the model's input)")
    a = ap.parse_args()
    model, _ = load_model(a.checkpoint)
    ds = open_dataset(a.data, "validation", size=a.size)
    items = [ds[i] for i in range(min(a.videos, len(ds)))]
    video = torch.stack([x["video"] for x in items])
    true = torch.stack([x["segmentations"] for x in items])
    extra = {"segmentations": true} if model.encoder.needs_segmentations else {}
    with torch.no_grad():
        out = model(video, masks_only=True, **extra)
    print(f"{a.checkpoint} on {len(items)} videos of {a.data} at {a.size}px")
    print("| masks | video FG-ARI | video mBO | slots in use per frame |\n|---|---|---|---|")
    for kind, key in MASK_KINDS.items():
        m = out[key].unflatten(-1, tuple(out["mask_grid"]))  # (B, T, K, h, w)
        ids = metrics.masks_to_ids(m, (a.size, a.size))
        owners = m.flatten(-2).argmax(2)  # (B, T, N): the slot that owns each patch
        used = torch.stack([(owners == k).any(-1) for k in range(m.shape[2])], -1).sum(-1).float().mean()
        print(f"| {kind} | {np.nanmean(metrics.video_fg_ari(ids, true).numpy()):.3f} | "
              f"{np.nanmean(metrics.video_mbo(ids, true).numpy()):.3f} | {float(used):.1f} |")


if __name__ == "__main__":
    main()
