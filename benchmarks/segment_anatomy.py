"""Where a model's object pixels go: a breakdown of its segments against the ground truth.

Usage: python benchmarks/segment_anatomy.py DATASET CKPT [CKPT ...] [--videos 25] [--batch 5]

FG-ARI and mBO say how well a model segments objects, not how it fails. This script sorts every foreground
pixel of the validation videos by the segment (slot) it is given, per frame:
  own        the segment's largest ground-truth part is the pixel's own object;
  background the segment's largest part is background (the object is swallowed by a floor or sky segment);
  other      the segment's largest part is another object (two objects merged);
and per object and frame, how many segments hold at least 10% of its pixels (split), and how many frames
keep the object's most common segment (identity kept over the video). Per frame, the segments with more
than 1% of the pixels (used; used_first: in the first frame, before any slots are carried). For models, the
masks' mean entropy over slots per token (entropy, losses.mask_entropy: 0 for hard masks, log K for shared
ones). Rows for the grid and kmeans-colour references are printed beside the models.
Comparing a model at its peak with the same model later says which failure its drift is made of.
"""

import argparse

import numpy as np
import torch

from slotmatch.checkpoint import load_model
from slotmatch.data import open_dataset
from slotmatch.evaluate import _pair, resize_video
from slotmatch.metrics import masks_to_ids
from slotmatch.losses import mask_entropy
from slotmatch.references import reference_ids
from slotmatch.train import video_scores


def anatomy(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """The breakdown for one video: pred, true (T, H, W) integer ids, true 0 = background.

    Returns the fraction of foreground pixels in own / background / other segments, the mean number of
    segments holding >= 10% of an object per frame (split), the fraction of an object's frames in which its
    most common segment over the video is also its most common segment in the frame (kept), and the mean
    number of segments with > 1% of a frame's pixels (used; used_first: in the first frame)."""
    counts = {"own": 0, "background": 0, "other": 0}
    splits, used = [], []
    per_object_slot: dict[int, list[int]] = {}
    for t in range(true.shape[0]):
        p, g = pred[t].ravel(), true[t].ravel()
        segs, inv = np.unique(p, return_inverse=True)
        labels = np.unique(g)
        table = np.zeros((len(segs), labels.max() + 1), dtype=np.int64)  # segment x ground-truth label
        np.add.at(table, (inv, g), 1)
        majority = table.argmax(1)  # each segment's largest ground-truth part
        used.append(int((table.sum(1) > 0.01 * p.size).sum()))
        fg = g > 0
        owner = majority[inv[fg]]
        counts["own"] += int((owner == g[fg]).sum())
        counts["background"] += int((owner == 0).sum())
        counts["other"] += int(((owner != 0) & (owner != g[fg])).sum())
        for obj in labels[labels > 0]:
            col = table[:, obj]
            splits.append(int((col >= 0.1 * col.sum()).sum()))
            per_object_slot.setdefault(int(obj), []).append(int(segs[col.argmax()]))
    kept = [np.mean(np.array(s) == np.bincount(s).argmax()) for s in per_object_slot.values()]
    total = max(sum(counts.values()), 1)
    return {**{k: v / total for k, v in counts.items()}, "split": float(np.mean(splits)) if splits else np.nan,
            "kept": float(np.mean(kept)) if kept else np.nan, "used": float(np.mean(used)), "used_first": float(used[0])}


COLUMNS = ("video_fg_ari", "video_mbo", "own", "background", "other", "split", "kept", "used", "used_first",
           "entropy")


def model_segmenter(model):
    """(video, size) -> (ids at size, per-video mask entropy) from one pass of the model, as predict_ids segments."""
    def segment(video, size):
        out = model(resize_video(video, _pair(model.cfg.img_size)), masks_only=True)
        ids = masks_to_ids(out["masks"].unflatten(-1, tuple(out["mask_grid"])), tuple(size))
        return ids, [float(mask_entropy(m)) for m in out["masks"]]
    return segment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--videos", type=int, default=25)
    ap.add_argument("--batch", type=int, default=5)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    data = open_dataset(args.data, "validation")
    models = {path: load_model(path)[0].eval() for path in args.checkpoints}
    num_slots = next(iter(models.values())).cfg.num_slots
    def reference(name):  # no masks, so no entropy
        return lambda v, s: (reference_ids(name, v.permute(0, 1, 3, 4, 2), num_slots), [np.nan] * len(v))

    segmenters = {"grid": reference("grid"), "kmeans-colour": reference("kmeans-colour"),
                  **{path: model_segmenter(m) for path, m in models.items()}}
    rows: dict[str, list[dict]] = {name: [] for name in segmenters}
    n = min(args.videos, len(data))
    for start in range(0, n, args.batch):
        samples = [data[i] for i in range(start, min(start + args.batch, n))]
        video = torch.stack([s["video"] for s in samples])
        true = torch.stack([s["segmentations"] for s in samples]).long()
        for name, segment in segmenters.items():
            pred, ent = segment(video, tuple(true.shape[-2:]))
            scores = video_scores(pred, true)
            for b in range(len(samples)):
                rows[name].append({"video_fg_ari": scores["video_fg_ari"][b], "video_mbo": scores["video_mbo"][b],
                                   **anatomy(pred[b].numpy(), true[b].numpy()), "entropy": ent[b]})
    print(f"{n} validation videos of {args.data}, {num_slots} segments; foreground pixels in own / background / "
          "other segments; split: segments with >= 10% of an object; kept: frames keeping the object's segment; "
          "used: segments with > 1% of a frame (used_first: of the first frame); entropy: the masks' over slots")
    print("| segmenter | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, r in rows.items():
        cells = [[x[c] for x in r if not np.isnan(x[c])] for c in COLUMNS]
        print(f"| {name} | " + " | ".join(f"{np.mean(v):.3f}" if v else "-" for v in cells) + " |")


if __name__ == "__main__":
    main()
