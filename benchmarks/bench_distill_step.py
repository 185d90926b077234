"""One distillation training step (forward and backward), with and without the ablations' extra terms.

With feature KD the teacher decodes its features too. A per-pixel teacher (the `*-pixel` presets: 64x64 tokens)
over a student that decodes a random subset of its 32x32 patches (`train.decoded_tokens`) needs only the teacher's
tokens under those patches; `distill.covering_tokens` lists them. Rows:
  slotmatch            the paper's loss (reconstruction, contrast, slot KD): the teacher runs masks only
  feature_kd, full     feature KD with the teacher decoding every token, then averaged onto the student's patches
                       (what distillation did before covering_tokens; forced here by switching it off)
  feature_kd, covered  feature KD with the teacher decoding only the covered tokens (what distillation does now)
The two feature-KD rows are checked to give the same loss before they are timed. Both models read cached-style
features (the encoders are not timed) and the burn-in is off, so every row does the same work but the terms.

Usage: python benchmarks/bench_distill_step.py [--config movi-c-like-pixel]
       [--teacher checkpoints/models/movi-c-like-pixel-teacher.safetensors] [--repeats 5] [--batch 8]
"""

import argparse
import os

import torch

import slotmatch.distill as distill_module
from slotmatch.benchmark import median_seconds
from slotmatch.config import load_config
from slotmatch.distill import SlotMatchModule


def step_fn(m: SlotMatchModule, batch: dict):
    """One forward and backward pass of the module's training loss on batch; returns the loss terms."""
    def run():
        torch.manual_seed(0)  # the same decoded patches every call
        m.zero_grad(set_to_none=True)
        terms = m.compute_losses(batch)
        terms["loss"].backward()
        return terms
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="movi-c-like-pixel")
    ap.add_argument("--teacher", default="checkpoints/models/movi-c-like-pixel-teacher.safetensors")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    if not os.path.exists(a.teacher):
        raise SystemExit(f"{a.teacher}: no such teacher checkpoint")
    rows, modules = {}, {}
    for name, overrides in (("slotmatch", []), ("feature_kd", ["distill.feature_kd=1"])):
        cfg = load_config(a.config, ["train.burn_in=0"] + overrides)
        torch.manual_seed(0)
        modules[name] = SlotMatchModule(cfg, a.teacher)
    m = modules["slotmatch"]
    T = m.cfg["data"].get("clip_length", 4)
    size = m.cfg["data"]["size"]
    video = torch.rand(a.batch, T, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch = {"features": m.model.encode(video)["features"], "teacher_features": m.teacher.encode(video)["features"]}
    print(f"{a.config}, teacher {a.teacher}: batch {a.batch} x {T} frames at {size} px, "
          f"student tokens {tuple(batch['features'].shape[2:])}, teacher tokens {tuple(batch['teacher_features'].shape[2:])}, "
          f"decoded_tokens {m.ts['decoded_tokens']}, {torch.get_num_threads()} threads")

    rows["slotmatch"] = median_seconds(step_fn(m, batch), a.repeats)
    fk = modules["feature_kd"]
    covered = step_fn(fk, batch)()["feature_kd"].item()
    covering = distill_module.covering_tokens
    distill_module.covering_tokens = lambda *args: None  # the full decode, as before
    try:
        full = step_fn(fk, batch)()["feature_kd"].item()
        if abs(full - covered) > 1e-4 * max(1.0, abs(full)):
            raise SystemExit(f"feature KD differs: full decode {full}, covered tokens {covered}")
        rows["feature_kd, full"] = median_seconds(step_fn(fk, batch), a.repeats)
    finally:
        distill_module.covering_tokens = covering
    rows["feature_kd, covered"] = median_seconds(step_fn(fk, batch), a.repeats)

    print(f"feature KD term: {covered:.6f} (covered tokens) = {full:.6f} (full decode)")
    print("| step | seconds (median of %d) | x slotmatch |" % a.repeats)
    print("|---|---|---|")
    for name, sec in rows.items():
        print(f"| {name} | {sec:.3f} | {sec / rows['slotmatch']:.2f} |")
    print(f"covered tokens: {rows['feature_kd, full'] / rows['feature_kd, covered']:.2f}x faster than the full decode")


if __name__ == "__main__":
    main()
