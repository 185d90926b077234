"""Slot tracking by mask overlap: keep each object on its slot from one frame to the next (ours).

SlotContrast carries slot k of frame t to frame t+1 through the predictor and slot attention and takes
the slot index as the identity. Slot attention can still hand an object to another slot at t+1 (on the
offline data, a quarter of the object-frames sit on another slot than the object's usual one:
docs/RESULTS.md, session 19 part 2). With `model.track: masks`, the slots of frame t+1 are re-ordered
after slot attention so that slot k's mask overlaps slot k's mask of frame t as much as possible (the
assignment that maximises the summed soft IoU, Hungarian algorithm), and the predictor then carries the
re-ordered slots on. A permutation of the slots changes no mask, only which index it carries.
"""

import torch
from scipy.optimize import linear_sum_assignment

TRACK_MODES = ("none", "masks")


def check_track_mode(track: str) -> str:
    """`track` if it is one of TRACK_MODES, else a ValueError naming them."""
    if track not in TRACK_MODES:
        raise ValueError(f"track must be {' or '.join(repr(m) for m in TRACK_MODES)}, got {track!r}")
    return track


def set_track(model, track: str | None) -> None:
    """Override a loaded model's `track` (checked); None leaves it as the checkpoint's config says."""
    if track is not None:
        model.cfg.track = check_track_mode(track)


def soft_iou(prev: torch.Tensor, cur: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Soft IoU of every slot pair: prev (B, K, N), cur (B, K, N) masks in [0, 1] -> (B, K, K) [prev k, cur j]."""
    if prev.shape != cur.shape or prev.dim() != 3:
        raise ValueError(f"masks must both be (B, K, N), got {tuple(prev.shape)} and {tuple(cur.shape)}")
    inter = prev @ cur.transpose(1, 2)  # (B, K, K)
    union = prev.sum(-1, keepdim=True) + cur.sum(-1).unsqueeze(1) - inter
    return inter / union.clamp_min(eps)


@torch.no_grad()
def match_slots(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """Permutation (B, K): slot perm[b, k] of `cur` continues slot k of `prev` (the summed soft IoU is maximal).

    prev, cur: (B, K, N) masks of two consecutive frames. Apply with `permute_slots(x, perm)`.
    """
    iou = soft_iou(prev.float(), cur.float()).cpu().numpy()
    perm = torch.empty(iou.shape[:2], dtype=torch.long)
    for b, table in enumerate(iou):
        rows, cols = linear_sum_assignment(table, maximize=True)
        perm[b, torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm.to(prev.device)


def permute_slots(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x (B, K, ...) re-ordered per batch element: out[b, k] = x[b, perm[b, k]]."""
    index = perm.view(*perm.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, index)
