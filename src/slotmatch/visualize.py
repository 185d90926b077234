"""Pictures people look at: mask overlays, frame grids and animated GIFs."""

from __future__ import annotations

import numpy as np
from PIL import Image


def palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours, index 0 black (background), the rest well separated (golden-ratio hues)."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(1, n):
        h = (i * 0.618033988749895) % 1.0
        s, v = (0.9, 1.0) if i % 2 else (0.6, 0.85)
        k = int(h * 6) % 6
        f = h * 6 - int(h * 6)
        p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
        out[i] = np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][k]) * 255
    return out


PALETTE = palette()


def overlay(frames: np.ndarray, ids: np.ndarray, alpha: float = 0.55, skip_background: bool = True) -> np.ndarray:
    """Blend id colours over frames (..., H, W, 3) uint8 with ids (..., H, W); draws segment borders white."""
    colours = PALETTE[ids % len(PALETTE)].astype(np.float32)
    out = frames.astype(np.float32)
    mask = (ids > 0)[..., None] if skip_background else np.ones(ids.shape + (1,), bool)
    out = np.where(mask, (1 - alpha) * out + alpha * colours, out)
    edge = np.zeros(ids.shape, bool)
    edge[..., 1:, :] |= ids[..., 1:, :] != ids[..., :-1, :]
    edge[..., :, 1:] |= ids[..., :, 1:] != ids[..., :, :-1]
    out[edge] = 255
    return out.clip(0, 255).astype(np.uint8)


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, C) so small frames stay readable."""
    return img.repeat(factor, axis=-3).repeat(factor, axis=-2) if factor > 1 else img


def video_grid(rows: list[np.ndarray], frame_indices: list[int] | None = None, pad: int = 2) -> np.ndarray:
    """Tile rows of videos (each (T, H, W, 3) uint8) into one image: a row per video, chosen frames as columns."""
    pieces = []
    for row in rows:
        idx = frame_indices if frame_indices is not None else range(row.shape[0])
        frames = [np.pad(row[i], ((pad, pad), (pad, pad), (0, 0)), constant_values=255) for i in idx]
        pieces.append(np.concatenate(frames, axis=1))
    width = max(p.shape[1] for p in pieces)
    pieces = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in pieces]
    return np.concatenate(pieces, axis=0)


def save_image(img: np.ndarray, path: str) -> None:
    Image.fromarray(img).save(path)


def save_gif(frames: np.ndarray, path: str, fps: int = 6) -> None:
    """Write (T, H, W, 3) uint8 frames as a looping GIF."""
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
