"""What the feature cache buys: a teacher training step with the frozen encoder run every step vs
features read from the cache, timed in alternation in one run.

Usage: python benchmarks/bench_feature_cache.py [--config movi_c] [--img-size 224] [--batch 4] [--frames 4] [--steps 3]
Random weights (no download): the cost of a frozen DINOv2 forward does not depend on its weights.
"""

import argparse
import statistics
import time

import torch

from slotmatch import losses
from slotmatch.config import load_config
from slotmatch.models import build_model


def step(model, opt, video=None, features=None) -> float:
    t = time.perf_counter()
    out = model(video, features=features)
    loss = losses.reconstruction_loss(out["reconstruction"], out["target"]) + 0.5 * losses.slot_contrast_loss(out["slots"])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="movi_c")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    cfg = load_config(a.config)["model"]
    cfg["encoder"] = dict(cfg["encoder"], weights=None, img_size=a.img_size)
    cfg["img_size"] = a.img_size
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    video = torch.rand(a.batch, a.frames, 3, a.img_size, a.img_size)
    with torch.no_grad():
        features = model.encode(video, with_target=False)["features"]  # what the cache would hold
    step(model, opt, video=video), step(model, opt, features=features)  # warm-up
    frames_t, cache_t = [], []
    for _ in range(a.steps):
        frames_t.append(step(model, opt, video=video))
        cache_t.append(step(model, opt, features=features))
    f, c = statistics.median(frames_t), statistics.median(cache_t)
    print(f"| {a.config} encoder {cfg['encoder']['name']} at {a.img_size}px, batch {a.batch}x{a.frames} | "
          f"step from frames {f * 1000:.0f} ms | step from cache {c * 1000:.0f} ms | speed-up {f / c:.2f}x |")


if __name__ == "__main__":
    main()
