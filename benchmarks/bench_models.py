"""Teacher vs student, parameters and speed: the paper setting and the offline preset (random weights).

For each config, `slotmatch.benchmark.benchmark(config, config)` (teacher = `model`, student =
merge(model, student)) prints its table; then, per model, where the time goes at batch 1: the
encoder alone, the heads alone (encoder MLP + slot attention + predictor + decoder, on cached
features) and the decoder alone (masks only), in ms per frame.

  movi_e       the paper: DINOv2 ViT-B/14 teacher vs ViT-S/14 student, 336 x 336, 15 slots
  movi-c-like  the offline preset: small CNN encoders, 64 x 64, 11 slots
  movi_c       (optional) ViT-S/14 teacher vs the same ViT-S/14 with a 512-wide decoder (our choice)

Usage: python benchmarks/bench_models.py [--configs movi_e movi-c-like] [--paper-batch-size 2]
       [--paper-frames 4] [--repeats 3] [--device cpu] [--out-dir DIR]
The paper-size models take about 1 s (teacher) and 0.5 s (student) per frame on 2 CPU cores: keep
the batch and the repeats small there; the offline preset uses --batch-size / --frames.
"""

import argparse
import os
from contextlib import nullcontext

import torch

from slotmatch.benchmark import benchmark, format_table, median_seconds, resolve_model
from slotmatch.config import load_config

PAPER = ("movi_c", "movi_e", "ytvis")


def stage_ms(model, frames: int, repeats: int, device: torch.device, bf16: bool = False) -> dict:
    """ms per frame of the encoder, the heads on cached features, and the decoder alone (one video)."""
    model = model.to(device).eval()
    img = model.cfg.img_size
    H, W = (img, img) if isinstance(img, int) else tuple(img)
    video = torch.rand(1, frames, 3, H, W, generator=torch.Generator().manual_seed(0)).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with torch.inference_mode(), autocast:
        features = model.encode(video, with_target=False)["features"]  # (1, T, N, D)
        slots = model(features=features, masks_only=True)["slots"].flatten(0, 1)  # (T, K, D)
        enc = median_seconds(lambda: model.encode(video, with_target=False), repeats, device)
        heads = median_seconds(lambda: model(features=features, masks_only=True), repeats, device)
        dec = median_seconds(lambda: model.decoder(slots, masks_only=True), repeats, device)
        total = median_seconds(lambda: model(video, masks_only=True), repeats, device)
    model.to("cpu")
    return {k: 1000 * v / frames for k, v in
            {"encoder": enc, "heads": heads, "decoder": dec, "total": total}.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=["movi_e", "movi-c-like"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8, help="evaluation batch (videos), offline presets")
    ap.add_argument("--frames", type=int, default=4, help="frames per video, offline presets")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs, offline presets")
    ap.add_argument("--paper-batch-size", type=int, default=2, help="evaluation batch for the paper configs")
    ap.add_argument("--paper-frames", type=int, default=4)
    ap.add_argument("--paper-repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA, or a CPU with native bf16)")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    ap.add_argument("--out-dir", default=None, help="write bench_<config>.json there")
    a = ap.parse_args()
    device = torch.device(a.device)

    summary = []
    for name in a.configs:
        paper = name in PAPER
        b, f, r = ((a.paper_batch_size, a.paper_frames, a.paper_repeats) if paper
                   else (a.batch_size, a.frames, a.repeats))
        out = os.path.join(a.out_dir, f"bench_{name}.json") if a.out_dir else None
        cfg = load_config(name)
        result = benchmark(cfg, cfg, device=a.device, batch_size=b, frames=f, repeats=r, bf16=a.bf16, out=out)
        print(f"\n## {name}: teacher {cfg['model']['encoder']['name']} vs student "
              f"{result['student']['model']['encoder']['name']}\n")
        print(format_table(result))
        summary.append((name, result))
        if not a.no_stages:
            print(f"\nwhere the time goes, batch 1 x {f} frames, ms per frame (median of {r}):\n")
            print("| model | encoder | heads (MLP + SA + predictor + decoder) | of which decoder | total |")
            print("|---|---|---|---|---|")
            for role in ("teacher", "student"):
                model, _ = resolve_model(cfg, role)
                ms = stage_ms(model, f, r, device, a.bf16)
                print(f"| {role} | {ms['encoder']:.1f} | {ms['heads']:.1f} | {ms['decoder']:.1f} | {ms['total']:.1f} |")
                del model

    print("\n## ratios (params: teacher / student; fps: student / teacher)\n")
    print("| config | input | params | fps, eval batch | fps, batch 1 | peak memory |")
    print("|---|---|---|---|---|---|")
    for name, result in summary:
        r, st, t = result["ratios"], result["settings"], result["teacher"]
        print(f"| {name} | {t['img_size'][0]}px, batch {st['batch_size']} x {st['frames']} | {r['params']:.2f}x "
              f"| {r['fps']:.2f}x | {r['fps_batch1']:.2f}x | "
              f"{'n/a' if r['peak_mem_mb'] is None else format(r['peak_mem_mb'], '.2f') + 'x'} |")


if __name__ == "__main__":
    main()
