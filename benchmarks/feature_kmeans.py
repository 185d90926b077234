"""Do an encoder's features separate objects? k-means on them, beside k-means on colour.

Usage: python benchmarks/feature_kmeans.py DATASET [ENCODER ...] [--segments 11] [--videos 25] [--size 64]
       [--target NAME ...] [--readout PARTS] [--scale video|frame|none] [--surface-radius R]
       [--token-norm] [--unpack] [--guided] [--target-pool P] [--position-weight W ...]
       [--part-weight PART=W ...]
ENCODER: a `slotmatch pretrain` folder or encoder.safetensors (a CNN; its sizes are read from pretrain.json).
--target NAME: k-means on a pretext target itself, per pixel, computed from the simulator's depth and flow
(e.g. pixels_raw, surface, relief, pixels_raw+relief+flow; add "+position" for the pixel's coordinates):
what an encoder that predicted that target perfectly would give k-means. No masks are read.
--readout PARTS: k-means on each encoder's tokens read through its pretext head (`encoder: {readout: PARTS}`,
e.g. surface, surface+relief, surface+position): its predictions of those pretext parts instead of its features.
--unpack (with --readout): one token per pixel, each the readout's predictions for that pixel (`encoder: {unpack:
true}`), instead of one token per patch.
--guided (with --readout): the surface part is the frame's own colours averaged over each surface under the predicted
relief (`encoder: {guided_surface: true}`), not the head's prediction.
--part-weight PART=W (with --readout): that readout part's channels times W after the scaling, in every row of the
encoder (e.g. relief=0.5: the relief above the floor weighs half a standardised channel).
--target-pool P: the targets averaged over P x P pixels before k-means (the ids drawn back at every pixel): what a
perfect prediction gives on a token grid P times coarser than the frame, as the encoders' patches are.

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
from slotmatch.models.encoder import CNNEncoder, make_target, position_grid, target_needs_depth, target_needs_flow
from slotmatch.references import kmeans, reference_ids
from slotmatch.train import video_scores


def load_encoder(spec: str, readout: str | None = None, standardize: bool = False, unpack: bool = False,
                 guided: bool = False, part_weights: dict | None = None) -> CNNEncoder:
    """A `slotmatch pretrain` folder or its encoder.safetensors -> the frozen CNN (read through its head: readout;
    one token per pixel: unpack; the surface part from the frame under the predicted relief: guided; readout parts
    re-weighted: part_weights)."""
    folder = spec if os.path.isdir(spec) else os.path.dirname(spec)
    weights = os.path.join(spec, "encoder.safetensors") if os.path.isdir(spec) else spec
    cfg = json.load(open(os.path.join(folder, "pretrain.json")))["encoder"]
    cfg = {k: v for k, v in cfg.items() if k not in ("name", "weights", "frozen")}  # pretrain.json may name them
    return CNNEncoder(**cfg, weights=weights, frozen=True, readout=readout, standardize=standardize,
                      unpack=unpack, guided_surface=guided, part_weights=part_weights).eval()


@torch.no_grad()
def feature_tokens(encoder: torch.nn.Module, video: torch.Tensor, scale: str = "video") -> torch.Tensor:
    """video (T, 3, H, W) -> its tokens (T, h, w, D), each channel standardised over the video (scale "video"),
    over each frame (the encoder's `standardize`; "frame"), or as they are ("none")."""
    T, _, H, W = video.shape
    x = encoder.encode_video(video[None])[0]  # (T, N, D), each frame with its neighbours if the encoder has context
    if scale == "video":
        x = (x - x.mean((0, 1), keepdim=True)) / (x.flatten(0, 1).std(0) + 1e-6)
        if getattr(encoder, "part_weights", None) is not None:  # the encoder weighed them before this scaling
            x = x * encoder.part_weights
    return x.reshape(T, H // encoder.patch_size, W // encoder.patch_size, -1)


def token_ids(tokens: torch.Tensor, k: int, size: int, token_norm: bool = False,
              position_weight: float = 0.0) -> torch.Tensor:
    """tokens (T, h, w, D) -> ids (T, size, size) of k-means on all of them; token_norm: each token first
    normalised over its channels, as the LayerNorm that opens the slot model's input MLP does
    (SlotContrast.encoder_mlp); position_weight w > 0: each token's (y, x), standardised over the frame, times w,
    joins its channels (w = 1: the position weighs as much as one standardised channel per axis)."""
    T, h, w, _ = tokens.shape
    x = tokens.reshape(1, T * h * w, -1)
    if token_norm:
        x = F.layer_norm(x, x.shape[-1:])
    if position_weight > 0:
        yx = position_grid(h, w)[:, :2]  # (h * w, 2) in [0, 1]
        yx = (yx - yx.mean(0)) / yx.std(0) * position_weight
        x = torch.cat([x, yx.repeat(T, 1)[None]], -1)
    ids = kmeans(x, k, seed=0).reshape(T, 1, h, w).float()
    return F.interpolate(ids, size=(size, size), mode="nearest").reshape(T, size, size).long()


def split_position(target: str) -> tuple[str, bool]:
    """"surface+position" -> ("surface", True): the pixel's coordinates are not a target part."""
    parts = target.split("+")
    return "+".join(p for p in parts if p != "position"), "position" in parts


@torch.no_grad()
def target_ids(sample: dict, target: str, k: int, pool: int = 1) -> torch.Tensor:
    """k-means over all pixels of a video on a target computed per pixel (patch size 1), or over its averages on
    pool x pool blocks (each pixel then takes its block's id) -> ids (T, H, W)."""
    target, position = split_position(target)
    video = sample["video"]
    T, _, H, W = video.shape
    x = make_target(target, video, None, 1, sample.get("depth"), sample.get("flow"))  # (T, H*W, F)
    if position:
        x = torch.cat([x, position_grid(H, W)[:, :2].expand(T, -1, -1)], -1)  # (y, x) in [0, 1]
    h, w = H // pool, W // pool
    if pool > 1:
        x = F.avg_pool2d(x.transpose(1, 2).reshape(T, -1, H, W), pool).flatten(2).transpose(1, 2)  # (T, h*w, F)
    ids = video_kmeans(x, k).reshape(T, 1, h, w).float()
    return F.interpolate(ids, size=(H, W), mode="nearest").reshape(T, H, W).long()


def video_kmeans(x: torch.Tensor, k: int) -> torch.Tensor:
    """(T, N, F) values of a video's tokens or pixels -> k-means ids (T, N), each channel standardised over the
    whole video first."""
    T = x.shape[0]
    x = x.reshape(1, -1, x.shape[-1])
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)
    return kmeans(x, k, seed=0).reshape(T, -1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("encoders", nargs="*")
    ap.add_argument("--target", action="append", default=[], help="k-means on this target (repeatable)")
    ap.add_argument("--readout", default=None, help="k-means on each encoder's pretext predictions of these parts")
    ap.add_argument("--scale", choices=("video", "frame", "none"), default="video",
                    help="standardise each feature channel over the video (default), each frame, or not at all")
    ap.add_argument("--token-norm", action="store_true",
                    help="also k-means on each encoder's tokens normalised over their channels (the input MLP's "
                         "LayerNorm)")
    ap.add_argument("--unpack", action="store_true", help="with --readout: one token per pixel (encoder unpack)")
    ap.add_argument("--guided", action="store_true", help="with --readout: the surface part recomputed from the "
                    "frame under the predicted relief (encoder guided_surface)")
    ap.add_argument("--target-pool", type=int, default=1,
                    help="average each target over P x P pixels before k-means (a token grid P times coarser)")
    ap.add_argument("--position-weight", type=float, action="append", default=[],
                    help="also k-means on each encoder's tokens with their (y, x) as two more channels, standardised "
                         "and times this weight (repeatable): between the tokens (0) and the grid reference (large)")
    ap.add_argument("--part-weight", action="append", default=[], metavar="PART=W",
                    help="with --readout: that readout part's channels times W in every k-means on the encoder's tokens")
    ap.add_argument("--segments", type=int, default=11)
    ap.add_argument("--videos", type=int, default=25)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--surface-radius", type=int, default=None,
                    help="the surface target's window radius at 64 px (default encoder.SURFACE_RADIUS)")
    a = ap.parse_args()
    if (a.unpack or a.guided or a.part_weight) and not a.readout:
        ap.error("--unpack, --guided and --part-weight read the readout's per-pixel predictions: give --readout")
    if a.surface_radius is not None:  # surface_colour reads the module's default window at every call
        import slotmatch.models.encoder as encoder_module

        encoder_module.SURFACE_RADIUS = a.surface_radius
    part_weights = {w.partition("=")[0]: float(w.partition("=")[2]) for w in a.part_weight}  # every encoder row
    parts = [split_position(t)[0] for t in a.target]
    ds = open_dataset(a.dataset, "validation", size=a.size, with_depth=any(target_needs_depth(t) for t in parts),
                      with_flow=any(target_needs_flow(t) for t in parts))
    n = min(a.videos, len(ds))
    samples = [ds[i] for i in range(n)]
    true = torch.stack([s["segmentations"] for s in samples])
    rows = {}
    video = torch.stack([s["video"] for s in samples]).permute(0, 1, 3, 4, 2)
    for ref in ("grid", "kmeans-colour"):
        rows[f"reference: {ref}"] = video_scores(reference_ids(ref, video, a.segments), true)
    for spec in a.encoders:
        enc = load_encoder(spec, a.readout, standardize=a.scale == "frame", unpack=a.unpack, guided=a.guided,
                           part_weights=part_weights)
        tokens = [feature_tokens(enc, s["video"], a.scale) for s in samples]
        name = f"k-means on {spec}" + ("" if a.readout is None else f" (its predicted {a.readout}"
                                         + (", the surface guided by the predicted relief" if a.guided else "")
                                         + (", one token per pixel)" if a.unpack else ")"))
        name += "".join(f", {part} at weight {w:g}" for part, w in part_weights.items())
        rows[name + {"video": "", "frame": ", standardised per frame", "none": ", not standardised"}[a.scale]] = \
            video_scores(torch.stack([token_ids(t, a.segments, a.size) for t in tokens]), true)
        for weight in a.position_weight:
            pred = torch.stack([token_ids(t, a.segments, a.size, position_weight=weight) for t in tokens])
            rows[name + f", with (y, x) at weight {weight:g}"] = video_scores(pred, true)
        if a.token_norm:
            pred = torch.stack([token_ids(t, a.segments, a.size, token_norm=True) for t in tokens])
            rows[name + ", each token normalised over its channels (LayerNorm)"] = video_scores(pred, true)
        if enc.readout is not None:  # how much each readout part varies over the tokens, before any scaling
            with torch.no_grad():
                raw = load_encoder(spec, a.readout)
                std = torch.cat([raw.encode_video(s["video"][None]).flatten(0, 2) for s in samples]).std(0)
            spreads = [f"{float(std[start:start + size].mean()):.3f}" for start, size in raw.readout_parts]
            print(f"{spec}: standard deviation over tokens of each readout part ({a.readout}): {', '.join(spreads)}")
    for target in a.target:
        pred = torch.stack([target_ids(s, target, a.segments, a.target_pool) for s in samples])
        pooled = "" if a.target_pool == 1 else f", averaged over {a.target_pool}x{a.target_pool} pixels"
        rows[f"k-means on the target {target}{pooled}"] = video_scores(pred, true)
    radius = "" if a.surface_radius is None else f", surface window radius {a.surface_radius}"
    print(f"{a.dataset}, {n} validation videos at {a.size}x{a.size}, {a.segments} segments per video{radius}\n")
    print("| segmenter | video FG-ARI | video mBO | image FG-ARI | image mBO |\n|---|---|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(s[k]):.3f}" for k in
                                          ("video_fg_ari", "video_mbo", "image_fg_ari", "image_mbo")) + " |")


if __name__ == "__main__":
    main()
