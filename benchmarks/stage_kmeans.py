"""Where in a slot model are objects lost? k-means on each stage of a checkpoint's pipeline, beside the model.

A slot model reads its encoder's tokens, maps them through its input MLP, and slot attention compares the slots'
queries with keys projected from those (after a LayerNorm). The first stage, the frame's colour averaged over each
token's pixels, is what the token grid alone leaves of kmeans-colour. If k-means on one stage keeps objects apart and k-means
on the next merges them into the floor's segments, that step discards what tells them apart; if every stage keeps
them apart and the model does not, slot attention's competition (its initial slots, its iterations) loses them.

For every validation video, all frames' tokens of each stage are clustered into as many segments as the model has
slots (`references.kmeans`, as feature_kmeans.py does for an encoder alone; each stage as the model sees it, with
no further scaling), the ids drawn back at the ground truth's size (nearest), and scored with video and image
FG-ARI and mBO and, per frame, the share of object-frames whose best segment is mostly background
(`temporal_consistency.slot_sharing`). The model's own row uses slot attention's masks (`--masks`).

--plus-pixels adds a row that is no stage of the model: k-means on the encoder tokens beside the token's own pixels
(its p x p x 3 colours, each channel standardised per frame as the encoder's tokens are), a candidate input.

Usage: python benchmarks/stage_kmeans.py CHECKPOINT DATA [--videos 25] [--masks attention|decoder] [--plus-pixels]
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from temporal_consistency import slot_sharing  # noqa: E402

from slotmatch.checkpoint import load_model  # noqa: E402
from slotmatch.data.dataset import open_dataset  # noqa: E402
from slotmatch.evaluate import MASK_KINDS, _pair, predict_ids, resize_video  # noqa: E402
from slotmatch.references import kmeans  # noqa: E402
from slotmatch.train import video_scores  # noqa: E402

STAGES = ("frame's colour averaged over each token's pixels", "encoder tokens", "input MLP", "slot attention keys")
PLUS_PIXELS = "encoder tokens beside the token's own pixels"


@torch.no_grad()
def stage_tokens(model, video: torch.Tensor, plus_pixels: bool = False) -> dict:
    """video (B, T, 3, H, W) at any size -> {stage: (B, T, N, C) tokens} for every stage of STAGES, at the model's
    input size; plus_pixels: also PLUS_PIXELS, the encoder tokens beside `token_pixels`."""
    video = resize_video(video, _pair(model.cfg.img_size))
    features = model.encode(video, with_target=False)["features"]
    inputs = model.encoder_mlp(features)
    sa = model.slot_attention
    B, T, _, H, W = video.shape
    p = model.encoder.patch_size
    colour = F.avg_pool2d(video.flatten(0, 1), p).flatten(2).transpose(1, 2).unflatten(0, (B, T))  # (B, T, N, 3)
    stages = dict(zip(STAGES, (colour, features, inputs, sa.to_k(sa.norm_inputs(inputs)))))
    if plus_pixels:
        stages[PLUS_PIXELS] = torch.cat([features, token_pixels(video, p)], -1)
    return stages


def token_pixels(video: torch.Tensor, p: int) -> torch.Tensor:
    """video (B, T, 3, H, W) -> each p x p token's pixels (B, T, N, 3 p^2), each channel standardised per frame."""
    B, T = video.shape[:2]
    x = F.unfold(video.flatten(0, 1), p, stride=p).transpose(1, 2)  # (B*T, N, 3 p^2)
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-5)
    return x.unflatten(0, (B, T))


def video_kmeans_ids(tokens: torch.Tensor, k: int, grid: tuple, size: tuple) -> torch.Tensor:
    """tokens (B, T, N, C) -> ids (B, T, *size): k-means over all frames of each video, drawn back (nearest)."""
    B, T, N, _ = tokens.shape
    ids = kmeans(tokens.reshape(B, T * N, -1), k, seed=0).reshape(B, T, *grid)
    return F.interpolate(ids.float(), size=size, mode="nearest").long()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--videos", type=int, default=25)
    ap.add_argument("--masks", default="attention", choices=list(MASK_KINDS))
    ap.add_argument("--batch-size", type=int, default=5)
    ap.add_argument("--plus-pixels", action="store_true", help="also k-means on the encoder tokens beside each "
                    "token's own pixels")
    a = ap.parse_args()
    model = load_model(a.checkpoint)[0].eval()
    ds = open_dataset(a.data, "validation")
    items = [ds[i] for i in range(min(a.videos, len(ds)))]
    true = torch.stack([x["segmentations"] for x in items])
    size, k, grid = tuple(true.shape[-2:]), model.cfg.num_slots, tuple(model.grid)
    preds = {name: [] for name in (*STAGES, *([PLUS_PIXELS] if a.plus_pixels else []), "the model")}
    with torch.no_grad():
        for i in range(0, len(items), a.batch_size):
            video = torch.stack([x["video"] for x in items[i:i + a.batch_size]])
            for name, tokens in stage_tokens(model, video, a.plus_pixels).items():
                preds[name].append(video_kmeans_ids(tokens, k, grid, size))
            preds["the model"].append(predict_ids(model, video, size, masks=a.masks))
    print(f"{a.checkpoint}: k-means with {k} segments per video on each stage, {len(items)} validation videos of "
          f"{a.data} at {size[0]}x{size[1]}; the model with its {a.masks} masks\n")
    print("| segmenter | video FG-ARI | video mBO | image FG-ARI | image mBO | object-frames lost to a mostly-background "
          "segment |\n|---|---|---|---|---|---|")
    for name, parts in preds.items():
        pred = torch.cat(parts)
        s = video_scores(pred, true)
        label = name if name == "the model" else f"k-means on the {name}"
        print(f"| {label} | " + " | ".join(f"{np.nanmean(s[m]):.3f}" for m in
                                           ("video_fg_ari", "video_mbo", "image_fg_ari", "image_mbo"))
              + f" | {slot_sharing(pred, true)['a mostly-background slot']:.3f} |")


if __name__ == "__main__":
    main()
