"""Evaluation metrics of SlotContrast (Manasyan et al., 2024): video and per-frame FG-ARI, mBO.

SlotContrast follows the VideoSAUR / SAVi conventions; this module reimplements the
definitions of `martius-lab/slotcontrast`, file `slotcontrast/metrics.py` (classes
`VideoARI`, `ImageARI`, `VideoIoU`/`ImageIoU` with `matching="overlap"`, all with
`ignore_background=True`), on integer id maps instead of one-hot masks:

- FG-ARI: adjusted Rand index between predicted ids and true instance ids, over the pixels
  whose true id is not 0 (background). The video variant pools all pixels of all frames of a
  video; the image variant scores each frame alone.
- mBO (mean best overlap): for every true object (id > 0) present, the best IoU over the
  predicted segments, averaged over the objects. Background is not an object, but the
  predicted segments keep all their pixels: the union of segment j and object i counts the
  pixels of j that lie on the background too (SlotContrast's `confusion_matrix` takes the
  false positives over all points after dropping only the background *true* channel).

Conventions (same as SlotContrast unless noted):
- ARI is not clamped: it can be negative (worse than chance). When its denominator is 0 (both
  labelings put all points in one cluster, or every point in its own cluster) it is 1.0.
- A video (or, for the image variants, a frame) with no foreground pixels has nothing to score:
  SlotContrast skips it; here its score is NaN, so aggregate with `torch.nanmean`.
- Image variants return the per-video mean over the frames that have foreground. SlotContrast
  averages the image metrics over all frames of the dataset instead (frames folded into the
  batch); `per_frame=True` returns the (B, T) frame scores, whose nanmean over all entries is
  exactly that figure.
- Scores are float64 (as SlotContrast accumulates them), on the device of the inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "video_fg_ari",
    "image_fg_ari",
    "video_mbo",
    "image_mbo",
    "slot_stability",
    "best_segments",
    "segments_per_frame",
    "masks_to_ids",
    "contingency",
]


def _check_ids(pred: Tensor, true: Tensor) -> None:
    if not isinstance(pred, Tensor) or not isinstance(true, Tensor):
        raise TypeError("pred and true must be torch tensors")
    if pred.ndim != 4 or true.ndim != 4 or pred.shape != true.shape:
        raise ValueError(
            "expected pred and true id maps of the same shape (B, T, H, W), got "
            f"pred {tuple(pred.shape)} and true {tuple(true.shape)}"
        )
    for name, x in (("pred", pred), ("true", true)):
        if x.is_floating_point() or x.is_complex():
            raise ValueError(f"{name} must hold integer ids, got dtype {x.dtype}")


def _direct_size(ids: Tensor) -> int | None:
    """max id + 1 if ids are non-negative (usable as table indices), else None."""
    if not ids.numel():
        return 1
    lo, hi = (int(v) for v in torch.aminmax(ids))
    return hi + 1 if lo >= 0 else None


def contingency(pred: Tensor, true: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row contingency tables of true ids against predicted ids.

    pred, true: (N, P) integer ids. Non-negative ids index the table directly when it stays
    small (ids that never occur give zero rows or columns, which no metric counts); otherwise
    ids are compacted over the whole batch with `torch.unique`, so any id values work.
    Returns `table` (N, C, K) int64 counts of pixels with true id c and predicted id k, and
    `foreground` (C,) bool, False for the row of true id 0.
    """
    n = pred.shape[0]
    pred, true = pred.long(), true.long()
    c, k = _direct_size(true), _direct_size(pred)
    if c is not None and k is not None and n * c * k <= max(4 * pred.numel(), 1 << 22):
        true_ids, true_idx, pred_idx = torch.arange(c, device=true.device), true, pred
    else:
        true_ids, true_idx = torch.unique(true, return_inverse=True)  # (C,), (N, P)
        _, pred_idx = torch.unique(pred, return_inverse=True)  # (N, P)
        c, k = true_ids.numel(), int(pred_idx.max()) + 1 if pred_idx.numel() else 1
    rows = torch.arange(n, device=pred.device).unsqueeze(1)  # (N, 1)
    flat = (rows * c + true_idx) * k + pred_idx  # (N, P)
    table = torch.bincount(flat.reshape(-1), minlength=n * c * k).view(n, c, k)
    return table, true_ids != 0


def _fg_ari(pred: Tensor, true: Tensor) -> Tensor:
    """FG-ARI per row of (N, P) id maps -> (N,) float64, NaN where no foreground."""
    table, fg = contingency(pred, true)
    nij = table[:, fg].to(torch.float64)  # (N, C_fg, K)
    a = nij.sum(-1)  # (N, C_fg) object sizes
    b = nij.sum(-2)  # (N, K) segment sizes within the foreground
    n = a.sum(-1)  # (N,)
    rindex = (nij * (nij - 1)).sum((-2, -1))
    aindex = (a * (a - 1)).sum(-1)
    bindex = (b * (b - 1)).sum(-1)
    expected = aindex * bindex / (n * (n - 1)).clamp_min(1)
    denominator = (aindex + bindex) / 2 - expected
    ari = (rindex - expected) / torch.where(denominator != 0, denominator, 1.0)
    ari = torch.where(denominator != 0, ari, 1.0)
    return torch.where(n > 0, ari, math.nan)


def _mbo(pred: Tensor, true: Tensor) -> Tensor:
    """mBO per row of (N, P) id maps -> (N,) float64, NaN where no foreground object."""
    table, fg = contingency(pred, true)
    inter = table.to(torch.float64)  # (N, C, K)
    n_true = inter.sum(-1)  # (N, C)
    n_pred = inter.sum(-2)  # (N, K): all pixels, background included
    union = n_true.unsqueeze(-1) + n_pred.unsqueeze(-2) - inter  # (N, C, K)
    best = (inter / union.clamp_min(1)).amax(-1)  # (N, C)
    present = fg.unsqueeze(0) & (n_true > 0)  # (N, C)
    count = present.sum(-1)  # (N,)
    total = torch.where(present, best, 0.0).sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), math.nan)


def _per_frame(fn, pred: Tensor, true: Tensor, per_frame: bool) -> Tensor:
    b, t, h, w = pred.shape
    scores = fn(pred.reshape(b * t, h * w), true.reshape(b * t, h * w)).view(b, t)  # (B, T)
    return scores if per_frame else scores.nanmean(-1)


def video_fg_ari(pred: Tensor, true: Tensor) -> Tensor:
    """Video FG-ARI: ARI over all foreground pixels of all frames at once.

    pred: (B, T, H, W) predicted ids (any non-negative ints); true: (B, T, H, W), 0 = background.
    Returns (B,) float64; NaN for a video without foreground; can be negative.
    """
    _check_ids(pred, true)
    b = pred.shape[0]
    return _fg_ari(pred.reshape(b, -1), true.reshape(b, -1))


def image_fg_ari(pred: Tensor, true: Tensor, per_frame: bool = False) -> Tensor:
    """Image FG-ARI: ARI of each frame alone, averaged over the frames with foreground.

    pred, true: (B, T, H, W). Returns (B,) float64 (NaN if no frame has foreground), or the
    (B, T) frame scores (NaN on frames without foreground) with `per_frame=True`.
    """
    _check_ids(pred, true)
    return _per_frame(_fg_ari, pred, true, per_frame)


def video_mbo(pred: Tensor, true: Tensor) -> Tensor:
    """Video mBO: per true object, the best IoU of a predicted segment over the whole video.

    pred, true: (B, T, H, W). IoU counts every pixel of the predicted segment (background
    included) in the union. Returns (B,) float64; NaN for a video without objects.
    """
    _check_ids(pred, true)
    b = pred.shape[0]
    return _mbo(pred.reshape(b, -1), true.reshape(b, -1))


def image_mbo(pred: Tensor, true: Tensor, per_frame: bool = False) -> Tensor:
    """Image mBO: mBO of each frame alone over the objects in that frame, averaged over frames.

    pred, true: (B, T, H, W). Returns (B,) float64 (NaN if no frame has an object), or the
    (B, T) frame scores with `per_frame=True`.
    """
    _check_ids(pred, true)
    return _per_frame(_mbo, pred, true, per_frame)


def best_segments(pred: Tensor, true: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The best-IoU predicted segment of every true id in every frame (IoU as in mBO).

    pred, true: (B, T, H, W). Returns `table` (B, T, C, K) int64 pixel counts (`contingency` per frame, ids
    compacted the same way over the whole batch), `best` (B, T, C) the index k of each true id's best segment,
    `present` (B, T, C) bool: a foreground id with pixels in that frame, and `foreground` (C,) bool.
    """
    _check_ids(pred, true)
    b, t = pred.shape[:2]
    table, fg = contingency(pred.reshape(b * t, -1), true.reshape(b * t, -1))  # (B*T, C, K)
    inter = table.to(torch.float64)
    n_true, n_pred = inter.sum(-1), inter.sum(-2)
    iou = inter / (n_true.unsqueeze(-1) + n_pred.unsqueeze(-2) - inter).clamp_min(1)
    best = iou.argmax(-1).view(b, t, -1)  # (B, T, C) best segment per object and frame
    present = (fg.unsqueeze(0) & (n_true > 0)).view(b, t, -1)  # (B, T, C)
    return table.view(b, t, *table.shape[1:]), best, present, fg


def slot_stability(pred: Tensor, true: Tensor) -> Tensor:
    """How steadily one predicted segment follows each object (not a SlotContrast metric; ours).

    In every frame, each true object (id > 0) present gets its best-IoU predicted segment (IoU as in mBO).
    An object's stability is the share of its frames whose best segment is its most frequent one (1.0: the
    same slot has it throughout; a slot that hands it to another half-way gives 0.5). This separates
    identity switches, which video FG-ARI and mBO punish, from per-frame quality, which the image
    variants measure. pred, true: (B, T, H, W). Returns (B,) float64, the mean over a video's objects;
    NaN for a video without objects.
    """
    table, best, present, _ = best_segments(pred, true)
    b, k = pred.shape[0], table.shape[-1]
    votes = torch.zeros(b, present.shape[-1], k, dtype=torch.float64, device=pred.device)
    votes.scatter_add_(2, best.transpose(1, 2), present.transpose(1, 2).to(torch.float64))  # (B, C, K)
    frames = present.sum(1)  # (B, C)
    share = votes.amax(-1) / frames.clamp_min(1)
    has = frames > 0
    count = has.sum(-1)
    return torch.where(count > 0, torch.where(has, share, 0.0).sum(-1) / count.clamp_min(1), math.nan)


def segments_per_frame(pred: Tensor) -> Tensor:
    """How many distinct segments each video's frames use, on average (ours, a health check, not a score).

    pred: (B, T, H, W) integer ids. Returns (B,) float64. A model whose masks have collapsed onto one slot
    scores 1.0 (FG-ARI then reads 0); any pixel counts, so this is an upper bound on the segments that matter
    (benchmarks/segment_anatomy.py counts those with more than 1% of a frame).
    """
    if pred.dim() != 4:
        raise ValueError(f"pred must be (B, T, H, W), got shape {tuple(pred.shape)}")
    b, t = pred.shape[:2]
    ids = pred.reshape(b * t, -1).long()
    ids = ids - ids.amin(-1, keepdim=True)  # any id range; counts need ids from 0
    used = torch.zeros(b * t, int(ids.max()) + 1, dtype=torch.bool, device=pred.device)
    used.scatter_(1, ids, True)
    return used.sum(-1).view(b, t).to(torch.float64).mean(-1)


def masks_to_ids(masks: Tensor, size: tuple[int, int], chunk: int = 64) -> Tensor:
    """Soft slot masks to hard ids at the ground truth's resolution, as SlotContrast does.

    masks: (B, T, K, h, w) soft masks, or (B, T, K, N) masks over N patches (reshaped to h x w
    with the aspect ratio of `size`, like SlotContrast's `Resizer(patch_inputs=True)`).
    Each frame's masks are upsampled with `F.interpolate(mode="bilinear")` (align_corners=False,
    no antialias), then the argmax over slots gives the id (ties go to the lower slot index).
    `chunk` frames are resized at a time to bound memory. Returns (B, T, H, W) long.
    """
    if masks.ndim == 4:
        b, t, k, n = masks.shape
        ratio = size[1] / size[0]
        h, w = int(math.sqrt(n / ratio)), int(math.sqrt(n * ratio))
        if h * w != n:
            raise ValueError(f"cannot reshape {n} patches to the aspect ratio of {tuple(size)}")
        masks = masks.reshape(b, t, k, h, w)
    if masks.ndim != 5:
        raise ValueError(
            f"expected masks of shape (B, T, K, h, w) or (B, T, K, N), got {tuple(masks.shape)}"
        )
    b, t, k, h, w = masks.shape
    frames = masks.reshape(b * t, k, h, w)
    if not frames.is_floating_point():
        frames = frames.float()
    ids = [
        # argmax over a contiguous last dim is ~5x faster on CPU than over dim 1; same result and ties
        F.interpolate(frames[i : i + chunk], size=tuple(size), mode="bilinear").movedim(1, -1).contiguous().argmax(-1)
        for i in range(0, b * t, chunk)
    ]  # each (chunk, H, W)
    return torch.cat(ids).view(b, t, *size)
