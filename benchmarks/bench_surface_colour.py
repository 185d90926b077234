"""The guided surface's filter (`encoder.surface_colour`): shifted views summed in place against the unfold it
replaced, on the evaluation batch of the per-pixel presets (8 videos x 4 frames at 64 px, a 7x7 window).

Usage: python benchmarks/bench_surface_colour.py [--threads 1] [--repeats 7] [--checkpoint CKPT ...]
Prints each one's median milliseconds and the ratio, measured in one run, and the largest difference; with
--checkpoint, also each model's frames per second at that batch (masks only, as `slotmatch benchmark` times it)
with either filter inside its encoder, the two alternating.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from slotmatch.benchmark import median_seconds
from slotmatch.models import encoder as encoder_module
from slotmatch.models.encoder import SURFACE_RADIUS, SURFACE_SIGMA, surface_colour


def by_unfold(images: torch.Tensor, relief: torch.Tensor, r: int = 3, sigma: float = SURFACE_SIGMA) -> torch.Tensor:
    """The earlier implementation: every pixel's window unfolded, (B, 3, k * k, H * W) at once."""
    B, _, H, W = images.shape
    k = 2 * r + 1
    rel = relief.unsqueeze(1)
    cols = F.unfold(images, k, padding=r).view(B, 3, k * k, H * W)
    rels = F.unfold(rel, k, padding=r).view(B, 1, k * k, H * W)
    inside = F.unfold(torch.ones_like(rel), k, padding=r).view(B, 1, k * k, H * W)
    w = torch.exp(-(rels - rel.view(B, 1, 1, H * W)) ** 2 / (2 * sigma ** 2)) * inside
    return ((cols * w).sum(2) / w.sum(2)).view(B, 3, H, W)


def old_surface_colour(images, depth, radius=None, sigma=SURFACE_SIGMA, relief=None):
    """`surface_colour` as it was (the unfold), for the model timings."""
    r = radius if radius is not None else max(1, round(SURFACE_RADIUS * images.shape[-1] / 64))
    return by_unfold(images, encoder_module._relief(depth) if relief is None else relief, r, sigma)


def model_fps(checkpoint: str, frames: int, size: int, repeats: int) -> dict:
    """Frames per second of a model's masks-only inference with each filter, timed alternately."""
    from slotmatch.checkpoint import load_model

    model = load_model(checkpoint)[0].eval()
    video = torch.rand(frames // 4, 4, 3, size, size)
    times = {"unfold": [], "shifted": []}
    with torch.inference_mode():
        for i in range(2 * repeats + 2):
            name = ("unfold", "shifted")[i % 2]
            encoder_module.surface_colour = old_surface_colour if name == "unfold" else surface_colour
            start = time.perf_counter()
            model(video, masks_only=True)
            if i >= 2:  # the first of each is the warm-up
                times[name].append(time.perf_counter() - start)
    encoder_module.surface_colour = surface_colour
    return {name: frames / sorted(t)[len(t) // 2] for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--frames", type=int, default=32, help="8 videos x 4 frames: evaluation's batch")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--checkpoint", nargs="*", default=[], help="models to time with either filter")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, relief = torch.rand(args.frames, 3, args.size, args.size), torch.randn(args.frames, args.size, args.size)
    with torch.inference_mode():
        diff = float((surface_colour(images, None, relief=relief) - by_unfold(images, relief)).abs().max())
        old = 1000 * median_seconds(lambda: by_unfold(images, relief), args.repeats)
        new = 1000 * median_seconds(lambda: surface_colour(images, None, relief=relief), args.repeats)
    print(f"{args.frames} frames at {args.size} px, {args.threads} thread(s), median of {args.repeats}\n")
    print("| implementation | ms |\n|---|---|")
    print(f"| unfold (before) | {old:.1f} |\n| shifted views, in place (now) | {new:.1f} |")
    print(f"\nratio: {old / new:.2f}x faster; largest difference {diff:.2e}")
    if args.checkpoint:
        print(f"\n| model ({args.frames // 4} videos x 4 frames, masks only) | frames/s, unfold | frames/s, shifted | ratio |")
        print("|---|---|---|---|")
    for ckpt in args.checkpoint:
        fps = model_fps(ckpt, args.frames, args.size, args.repeats)
        print(f"| {ckpt} | {fps['unfold']:.1f} | {fps['shifted']:.1f} | {fps['shifted'] / fps['unfold']:.2f}x |")


if __name__ == "__main__":
    main()
