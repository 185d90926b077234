"""The guided surface's filter (`encoder.surface_colour`): shifted views summed in place against the unfold it
replaced, on the evaluation batch of the per-pixel presets (8 videos x 4 frames at 64 px, a 7x7 window).

Usage: python benchmarks/bench_surface_colour.py [--threads 1] [--repeats 7]
Prints each one's median milliseconds and the ratio, measured in one run, and the largest difference.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from slotmatch.models.encoder import SURFACE_SIGMA, surface_colour


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


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--frames", type=int, default=32, help="8 videos x 4 frames: evaluation's batch")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, relief = torch.rand(args.frames, 3, args.size, args.size), torch.randn(args.frames, args.size, args.size)
    with torch.inference_mode():
        diff = float((surface_colour(images, None, relief=relief) - by_unfold(images, relief)).abs().max())
        old = median_ms(lambda: by_unfold(images, relief), args.repeats)
        new = median_ms(lambda: surface_colour(images, None, relief=relief), args.repeats)
    print(f"{args.frames} frames at {args.size} px, {args.threads} thread(s), median of {args.repeats}\n")
    print("| implementation | ms |\n|---|---|")
    print(f"| unfold (before) | {old:.1f} |\n| shifted views, in place (now) | {new:.1f} |")
    print(f"\nratio: {old / new:.2f}x faster; largest difference {diff:.2e}")


if __name__ == "__main__":
    main()
