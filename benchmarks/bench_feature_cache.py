"""What the feature cache buys: a teacher training step with the frozen encoder run every step vs
features read from the cache, timed in alternation in one run.

Usage: python benchmarks/bench_feature_cache.py [--config movi_c] [--img-size 224] [--batch 4] [--frames 4] [--steps 3]
       [--distill]
--distill: a SlotMatch step instead (the student's training step plus the frozen teacher's forward), from frames
(both encoders run) vs from both models' cached features (`train.feature_cache` in `slotmatch distill`).
The config's encoder weights when their file is on this machine (the offline presets' shipped encoders), else random
weights (no download): the cost of a frozen encoder's forward does not depend on its weights.
"""

import argparse
import os
import statistics
import time

import torch

from slotmatch import losses
from slotmatch.config import load_config
from slotmatch.distill import student_config
from slotmatch.models import build_model


def step(model, opt, video=None, features=None) -> float:
    t = time.perf_counter()
    out = model(video, features=features)
    loss = losses.reconstruction_loss(out["reconstruction"], out["target"]) + 0.5 * losses.slot_contrast_loss(out["slots"])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def distill_step(student, teacher, opt, video=None, features=None, teacher_features=None, decoded_tokens=None) -> float:
    t = time.perf_counter()
    out = student(video, features=features, decoded_tokens=decoded_tokens)
    with torch.no_grad():
        t_slots = teacher(video, features=teacher_features, masks_only=True)["slots"]
    loss = (losses.reconstruction_loss(out["reconstruction"], out["target"])
            + 0.5 * losses.slot_contrast_loss(out["slots"]) + losses.slot_distillation_loss(out["slots"], t_slots))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def no_weights(model_cfg: dict, img_size: int) -> dict:
    """The model config at img_size; random weights unless the config's encoder file is on this machine."""
    enc = dict(model_cfg["encoder"])
    if not (enc.get("weights") and os.path.isfile(str(enc["weights"]))):
        enc = {k: v for k, v in enc.items() if k not in ("weights", "readout", "standardize")}
    return dict(model_cfg, encoder=dict(enc, img_size=img_size), img_size=img_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="movi_c")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--distill", action="store_true", help="time a SlotMatch step (student + frozen teacher)")
    a = ap.parse_args()
    full = load_config(a.config)
    cfg = no_weights(full["model"], a.img_size)
    torch.manual_seed(0)
    model = build_model(cfg)
    if a.distill:
        return bench_distill(a, model, build_model(no_weights(student_config(full), a.img_size)),
                             full.get("train", {}).get("decoded_tokens"))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    video = torch.rand(a.batch, a.frames, 3, a.img_size, a.img_size)
    with torch.no_grad():
        features = model.encode(video, with_target=False)["features"]  # what the cache would hold
    compare(lambda: step(model, opt, video=video), lambda: step(model, opt, features=features), a.steps,
            f"{a.config} encoder {cfg['encoder']['name']} at {a.img_size}px, batch {a.batch}x{a.frames}")


def compare(from_frames, from_cache, steps: int, label: str) -> None:
    """Time two step functions in alternation (after one warm-up each) and print the medians and their ratio."""
    from_frames(), from_cache()
    frames_t, cache_t = [], []
    for _ in range(steps):
        frames_t.append(from_frames())
        cache_t.append(from_cache())
    f, c = statistics.median(frames_t), statistics.median(cache_t)
    print(f"| {label} | step from frames {f * 1000:.0f} ms | step from cache {c * 1000:.0f} ms | speed-up {f / c:.2f}x |")


def bench_distill(a, teacher, student, decoded_tokens=None) -> None:
    """A SlotMatch step (the config's train.decoded_tokens) from frames vs from both caches, alternated."""
    teacher.eval()
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    video = torch.rand(a.batch, a.frames, 3, a.img_size, a.img_size)
    with torch.no_grad():
        s_feat = student.encode(video, with_target=False)["features"]
        t_feat = teacher.encode(video, with_target=False)["features"]
    kw = {"decoded_tokens": decoded_tokens}
    compare(lambda: distill_step(student, teacher, opt, video=video, **kw),
            lambda: distill_step(student, teacher, opt, features=s_feat, teacher_features=t_feat, **kw), a.steps,
            f"SlotMatch step, {a.config}, at {a.img_size}px, batch {a.batch}x{a.frames}")


if __name__ == "__main__":
    main()
