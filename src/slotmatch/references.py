"""Reference segmenters that need no model, to print beside a model's figures.

FG-ARI ignores the background, so on scenes of small objects any spatial tiling scores well
(`grid`), and colour alone nearly solves plain-coloured scenes (`kmeans-colour`). A model
discovers objects when it beats these on the same videos (design brief, "Honest references").

Every reference takes a video (B, T, H, W, 3), uint8 (scaled to [0, 1]) or float (taken as
is, expected in [0, 1]), and returns long ids (B, T, H, W). Clustering runs over all pixels of
a whole video at once, so ids are consistent over time; results are deterministic given `seed`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "kmeans",
    "grid",
    "kmeans_colour",
    "kmeans_colour_position",
    "one_segment",
    "REFERENCES",
    "reference_ids",
]


def _sq_dist(x: Tensor, c: Tensor) -> Tensor:
    """Squared distances between x (B, N, D) and c (B, K, D) -> (B, N, K)."""
    d = (x * x).sum(-1, keepdim=True) - 2 * x @ c.transpose(1, 2) + (c * c).sum(-1).unsqueeze(1)
    return d.clamp_min_(0)


def kmeans(
    x: Tensor,
    k: int,
    seed: int = 0,
    iters: int = 20,
    max_fit_points: int = 8192,
    tol: float = 1e-6,
) -> Tensor:
    """Batched k-means (k-means++ init, Lloyd iterations) -> ids (B, N) long.

    x: (B, N, D) float points, one independent problem per batch row. Centres are fitted on at
    most `max_fit_points` points per row (sampled with replacement with a generator seeded by
    `seed`), then every point is assigned to its nearest centre. Empty clusters keep their centre.
    Rows are solved one at a time with the same seed, so a row's result does not depend on the batch.
    """
    b, n, d = x.shape
    if b > 1:  # each row on its own, with its own generator: a video's ids never depend on its batch
        return torch.cat([kmeans(x[i : i + 1], k, seed, iters, max_fit_points, tol) for i in range(b)])
    x = x.float()
    g = torch.Generator(device=x.device).manual_seed(seed)
    rows = torch.arange(b, device=x.device).unsqueeze(1)  # (B, 1)
    if n > max_fit_points:
        pick = torch.randint(n, (b, max_fit_points), generator=g, device=x.device)
        fit = x[rows, pick]  # (B, S, D)
    else:
        fit = x
    s = fit.shape[1]

    # k-means++: each new centre drawn with probability proportional to squared distance.
    first = torch.randint(s, (b, 1), generator=g, device=x.device)  # (B, 1)
    centres = fit[rows, first]  # (B, 1, D)
    d2 = _sq_dist(fit, centres).squeeze(-1)  # (B, S)
    for _ in range(1, k):
        w = torch.where(d2.sum(-1, keepdim=True) > 0, d2, torch.ones_like(d2))
        nxt = torch.multinomial(w, 1, generator=g)  # (B, 1)
        c = fit[rows, nxt]  # (B, 1, D)
        centres = torch.cat([centres, c], 1)
        d2 = torch.minimum(d2, _sq_dist(fit, c).squeeze(-1))

    for _ in range(iters):  # Lloyd
        assign = _sq_dist(fit, centres).argmin(-1)  # (B, S)
        sums = torch.zeros_like(centres).scatter_add_(
            1, assign.unsqueeze(-1).expand(-1, -1, d), fit
        )  # (B, K, D)
        counts = torch.zeros(b, k, 1, device=x.device).scatter_add_(
            1, assign.unsqueeze(-1), torch.ones_like(fit[..., :1])
        )  # (B, K, 1)
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        shift = (new - centres).abs().max()
        centres = new
        if shift <= tol:
            break

    return torch.cat(
        [_sq_dist(x[i : i + 1], centres[i : i + 1]).argmin(-1) for i in range(b)]
    )  # (B, N)


def _check_video(video: Tensor) -> None:
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"expected video of shape (B, T, H, W, 3), got {tuple(video.shape)}")


def _colour(video: Tensor) -> Tensor:
    """(B, T, H, W, 3) -> (B, T*H*W, 3) float colours in [0, 1] for uint8 input."""
    v = video.float() / 255 if video.dtype == torch.uint8 else video.float()
    return v.reshape(v.shape[0], -1, 3)


def _position(t: int, h: int, w: int, device: torch.device) -> Tensor:
    """Normalised (y, x) in [0, 1] of every pixel of every frame -> (T*H*W, 2)."""
    y = torch.linspace(0, 1, h, device=device)
    x = torch.linspace(0, 1, w, device=device)
    yx = torch.stack(torch.meshgrid(y, x, indexing="ij"), -1)  # (H, W, 2)
    return yx.expand(t, h, w, 2).reshape(-1, 2)


def grid(video: Tensor, num_segments: int, seed: int = 0) -> Tensor:
    """k-means on pixel coordinates (y, x) only: a spatial tiling shared by all frames."""
    _check_video(video)
    b, t, h, w, _ = video.shape
    pos = _position(1, h, w, video.device).unsqueeze(0)  # (1, H*W, 2)
    ids = kmeans(pos, num_segments, seed).view(1, 1, h, w)
    return ids.expand(b, t, h, w).contiguous()


def kmeans_colour(video: Tensor, num_segments: int, seed: int = 0) -> Tensor:
    """k-means on pixel colour (RGB) over the whole video."""
    _check_video(video)
    b, t, h, w, _ = video.shape
    return kmeans(_colour(video), num_segments, seed).view(b, t, h, w)


def kmeans_colour_position(
    video: Tensor, num_segments: int, seed: int = 0, position_weight: float = 1.0
) -> Tensor:
    """k-means on colour plus normalised (y, x) position (times `position_weight`)."""
    _check_video(video)
    b, t, h, w, _ = video.shape
    pos = _position(t, h, w, video.device).expand(b, -1, -1) * position_weight  # (B, T*H*W, 2)
    feats = torch.cat([_colour(video), pos], -1)  # (B, T*H*W, 5)
    return kmeans(feats, num_segments, seed).view(b, t, h, w)


def one_segment(video: Tensor, num_segments: int = 1, seed: int = 0) -> Tensor:
    """Every pixel in segment 0."""
    _check_video(video)
    return torch.zeros(video.shape[:4], dtype=torch.long, device=video.device)


def ideal_on_grid(true: Tensor, grid: int) -> Tensor:
    """An upper bound, not a segmenter: the ground truth (B, T, H, W) pooled to a grid x grid patch grid as
    soft masks (each id's share of each patch), then turned back into ids at (H, W) as a model's masks are
    (`metrics.masks_to_ids`: bilinear upsampling, argmax). What a model whose every patch is perfectly
    assigned scores: its masks live on that grid too."""
    import torch.nn.functional as F

    from slotmatch.metrics import masks_to_ids

    b, t, h, w = true.shape
    ids = torch.unique(true, sorted=True)
    onehot = (true.reshape(b * t, 1, h, w) == ids.view(1, -1, 1, 1)).float()  # (B*T, I, H, W)
    pooled = F.adaptive_avg_pool2d(onehot, grid).unflatten(0, (b, t))  # (B, T, I, g, g)
    return ids[masks_to_ids(pooled, (h, w))]


REFERENCES: dict[str, Callable[..., Tensor]] = {
    "grid": grid,
    "kmeans-colour": kmeans_colour,
    "kmeans-colour-position": kmeans_colour_position,
    "one-segment": one_segment,
}


def reference_ids(name: str, video: Tensor, num_segments: int, seed: int = 0) -> Tensor:
    """Ids (B, T, H, W) of the reference `name` (a key of `REFERENCES`) for `video`."""
    if name not in REFERENCES:
        raise ValueError(f"unknown reference {name!r}; choose one of {sorted(REFERENCES)}")
    return REFERENCES[name](video, num_segments, seed=seed)
