"""Offline recipe sweep: train variants of the offline teacher for the same wall-clock budget, then
score each on the validation split beside the reference rows (video FG-ARI / video mBO).

Usage:
  python benchmarks/recipe_sweep.py --data data/movi-c-like-depth --minutes 12 --out runs/sweep \
      --variant pixels model.target=pixels --variant depth model.target=depth
Each --variant is NAME followed by config overrides (applied to --config, default movi-c-like).
Runs go to OUT/NAME; a finished run is scored again without retraining. Threads per run: --threads.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch


def score(ckpt: str, data: str, max_videos: int, size: int) -> dict:
    from slotmatch.checkpoint import load_model
    from slotmatch.data import open_dataset
    from slotmatch.metrics import masks_to_ids
    from slotmatch.train import video_scores

    model, cfg = load_model(ckpt)
    ds = open_dataset(data, "validation", size=size)
    rows = []
    with torch.no_grad():
        for i in range(0, min(len(ds), max_videos), 8):
            items = [ds[j] for j in range(i, min(i + 8, len(ds), max_videos))]
            video = torch.stack([s["video"] for s in items])
            true = torch.stack([s["segmentations"] for s in items])
            pred = masks_to_ids(model(video, masks_only=True)["masks"], true.shape[-2:])
            rows.append(video_scores(pred, true))
    return {k: float(np.nanmean(np.concatenate([r[k] for r in rows]))) for k in rows[0]}


def references(data: str, max_videos: int, size: int, k: int) -> dict:
    from slotmatch.data import open_dataset
    from slotmatch.references import reference_ids
    from slotmatch.train import video_scores

    ds = open_dataset(data, "validation", size=size)
    n = min(len(ds), max_videos)
    video = torch.stack([ds[i]["video"] for i in range(n)]).permute(0, 1, 3, 4, 2)
    true = torch.stack([ds[i]["segmentations"] for i in range(n)])
    out = {}
    for name in ("grid", "kmeans-colour", "kmeans-colour-position"):
        s = video_scores(reference_ids(name, video, k), true)
        out[name] = {m: float(np.nanmean(v)) for m, v in s.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="movi-c-like")
    ap.add_argument("--data", required=True)
    ap.add_argument("--minutes", type=float, default=12)
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-videos", type=int, default=50)
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME OVERRIDE")
    ap.add_argument("--only", default=None, help="train only this variant (to run variants in parallel)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from slotmatch.config import load_config
    from slotmatch.train import train

    results = {}
    for name, *overrides in a.variant:
        if a.only and name != a.only:
            continue
        mins = int(a.minutes)
        secs = int(round((a.minutes - mins) * 60))
        cfg = load_config(a.config, [f"data.path={a.data}", f"train.max_time=00:00:{mins:02d}:{secs:02d}",
                                     "train.max_steps=1000000", "train.val_every=1000000", "data.num_workers=0",
                                     *overrides])
        run = os.path.join(a.out, name)
        last = os.path.join(run, "checkpoints", "last.ckpt")
        if not os.path.exists(last):
            train(cfg, run, progress=False)
        from slotmatch.checkpoint import read_checkpoint

        steps = read_checkpoint(last)["global_step"]
        results[name] = dict(score(last, a.data, a.max_videos, cfg["data"]["size"]), steps=steps,
                             overrides=overrides)
        print(name, json.dumps(results[name]), flush=True)
    k = load_config(a.config)["model"]["num_slots"]
    refs = references(a.data, a.max_videos, load_config(a.config)["data"]["size"], k)
    print(f"\n| row | steps | video FG-ARI | video mBO | overrides |\n|---|---|---|---|---|")
    for name, r in refs.items():
        print(f"| reference: {name} | - | {r['video_fg_ari']:.3f} | {r['video_mbo']:.3f} | |")
    for name, r in results.items():
        print(f"| {name} | {r['steps']} | {r['video_fg_ari']:.3f} | {r['video_mbo']:.3f} | {' '.join(r['overrides'])} |")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"sweep{'-' + a.only if a.only else ''}.json"), "w") as f:
        json.dump({"results": results, "references": refs, "argv": sys.argv}, f, indent=1)


if __name__ == "__main__":
    main()
