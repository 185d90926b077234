"""`slotmatch show`: a preview of a dataset, frames with their ground-truth masks overlaid."""

from __future__ import annotations

import os

import numpy as np

from slotmatch.data.dataset import open_dataset
from slotmatch.visualize import overlay, save_gif, save_image, upscale, video_grid


def show_dataset(root: str, out: str, split: str = "train", num_videos: int = 4, num_frames: int = 6,
                 raw: bool = False) -> str:
    """Write a PNG grid (frames and overlays for a few videos) or, for a .gif/.mp4 path, an animation.

    raw: frames only, without the masks (e.g. an mp4 to try `slotmatch segment` on)."""
    ds = open_dataset(root, split)
    n = min(num_videos, len(ds))
    if n == 0:
        raise ValueError(f"{root}: split {split} holds no videos")
    rows, anim = [], []
    for i in range(n):
        s = ds[i]
        frames = (s["video"].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (T, H, W, 3)
        ids = s["segmentations"].numpy()
        factor = max(1, 128 // frames.shape[1])
        frames, over = upscale(frames, factor), upscale(overlay(frames, ids), factor)
        rows += [frames, over]
        anim.append(frames if raw else np.concatenate([frames, over], axis=2))  # (T, H, W or 2W, 3)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if out.lower().endswith(".gif"):
        save_gif(np.concatenate(anim, axis=1), out)
    elif out.lower().endswith(".mp4"):
        from slotmatch.infer import Mp4Writer

        clip = np.concatenate(anim, axis=0)  # videos one after another
        writer = Mp4Writer(out, fps=12, size=clip.shape[1:3])
        for frame in clip:
            writer.write(frame)
        writer.close()
    else:
        T = rows[0].shape[0]
        idx = sorted(set(np.linspace(0, T - 1, min(num_frames, T)).round().astype(int).tolist()))
        save_image(video_grid(rows, idx), out)
    return out
