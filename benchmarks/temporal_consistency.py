"""Where does a model lose its objects over time? Video scores by clip length, and slot identity.

Video FG-ARI and mBO pool all frames of a video, so a slot that hands its object to another slot half-way
scores like a wrong segmentation, while the image scores (each frame alone) do not see it. This script
runs a checkpoint over whole validation videos and prints, beside the image scores:
- the video scores over the first T frames only (T = 1, 4, 8, ... , all): how fast they fall with T;
- the image mBO by frame index: whether the frames themselves get worse as the rollout goes on;
- slot drift: the cosine similarity of each slot at frame t with the same slot at frame 0, averaged over slots
  and videos (a slot that keeps its object keeps much of its vector);
- slot stability (`metrics.slot_stability`): for each true object, the share of its frames whose best-overlapping slot is the slot
  that overlaps it best most often (1.0: one slot follows the object through the video);
- where the switches go (`switch_kinds`): in the frames where an object's best slot is not its usual one, what its
  usual slot covers most of instead: another object, the background, still this object (the object is split), or
  nothing (the slot holds no pixel);
- with --reorder: the share of slot-frames that tracking by mask overlap (`model.track: masks`) would re-order;
- per frame, what holds each object (`slot_sharing`): its own slot, a slot that is also another object's best slot
  (two objects merged in that frame), or a slot that holds more background than objects (the object is lost);
  and of the lost ones (`lost_near`), the share whose slot holds little background beyond NEAR pixels of the object
  (--near, 4): a slot of the object's own whose mask spills over its edge, not a slot of the floor;
- with --mask-flow (data generated --with-flow): how far slot attention's masks are from following the optical flow
  from frame to frame (`losses.mask_flow_loss`, what `train.mask_flow` trains down), the mean over videos.

Two evaluation-time variants, to see which part carries the identity from frame to frame (the weights
are unchanged): --no-predictor carries each frame's slots to the next frame as they are, and --sa-iters N
runs N slot-attention iterations on every frame after the first (the model's own number otherwise).

Usage: python benchmarks/temporal_consistency.py CHECKPOINT DATA [--videos 25] [--masks decoder|attention]
       [--no-predictor] [--sa-iters N] [--sa-iters-first N] [--track none|masks] [--reorder] [--mask-flow]
       [--reference grid|kmeans-colour|...]  (that reference instead of the model, with the checkpoint's slot count)
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from slotmatch import metrics
from slotmatch.checkpoint import load_model
from slotmatch.data.dataset import open_dataset
from slotmatch.evaluate import MASK_KINDS, REFERENCE_NAMES, _pair, predict_ids, reference_segmenters, resize_video
from slotmatch.losses import mask_flow_loss
from slotmatch.models.tracking import TRACK_MODES, match_slots, set_track


SWITCH_KINDS = ("another object", "the background", "this object (split)", "nothing")


def switch_kinds(pred: torch.Tensor, true: torch.Tensor) -> dict:
    """pred, true (B, T, H, W) ids -> {"frames": object-frames counted, "switched": share of them whose best-IoU slot
    is not the object's usual one (1 - slot stability, pooled over objects), and for each kind of SWITCH_KINDS the
    share of the object-frames where the usual slot, in that frame, covers mostly that}. The best slots and the
    usual one are `metrics.slot_stability`'s (`metrics.best_segments`, the most frequent best slot)."""
    table, best, present, foreground = metrics.best_segments(pred, true)  # (B, T, C, K), (B, T, C) x 2, (C,)
    B, T, C, K = table.shape
    votes = torch.zeros(B, C, K, dtype=torch.float64)
    votes.scatter_add_(2, best.transpose(1, 2), present.transpose(1, 2).to(torch.float64))
    usual = votes.argmax(-1)  # (B, C): each object's most frequent best slot
    switched = present & (best != usual[:, None])  # (B, T, C)
    # held[b, t, c, c']: pixels of true id c' on object c's usual slot in frame t
    held = table.transpose(2, 3).gather(2, usual[:, None, :, None].expand(B, T, C, C))
    top = held.argmax(-1)  # (B, T, C) the true id the usual slot covers most
    empty = held.sum(-1) == 0
    split = top == torch.arange(C)
    kinds = {"another object": switched & ~empty & ~split & foreground[top],
             "the background": switched & ~empty & ~split & ~foreground[top],
             "this object (split)": switched & ~empty & split,
             "nothing": switched & empty}
    n = max(int(present.sum()), 1)
    return {"frames": int(present.sum()), "switched": int(switched.sum()) / n,
            **{k: int(kinds[k].sum()) / n for k in SWITCH_KINDS}}


def reorder_share(attn: torch.Tensor) -> float:
    """attn (B, T, K, N) slot-attention masks of a model run without tracking -> the share of slot-frames (t >= 1)
    that `model.track: masks` would move: where the best-overlapping order (`tracking.match_slots`) is not the
    model's own."""
    moved = [(match_slots(attn[:, t - 1], attn[:, t]) != torch.arange(attn.shape[2], device=attn.device)).float().mean()
             for t in range(1, attn.shape[1])]
    return float(torch.stack(moved).mean()) if moved else 0.0


SHARING_KINDS = ("its own slot", "a slot shared with another object", "a mostly-background slot")


def lost_to_background(table: torch.Tensor, best: torch.Tensor, present: torch.Tensor,
                       foreground: torch.Tensor) -> torch.Tensor:
    """`metrics.best_segments`' outputs -> (B, T, C) bool: the object is present and its best slot holds more
    background than object pixels in that frame."""
    on_fg = table[:, :, foreground].sum(2)  # (B, T, K) object pixels on each slot
    on_bg = table[:, :, ~foreground].sum(2)
    return present & (on_bg.gather(-1, best) > on_fg.gather(-1, best))


def slot_sharing(pred: torch.Tensor, true: torch.Tensor) -> dict:
    """Per frame, what holds each object: pred, true (B, T, H, W) ids -> {"frames": object-frames counted, and for each
    kind of SHARING_KINDS the share of object-frames whose best-IoU slot (`metrics.best_segments`) is that}: a slot
    with more background pixels than object pixels in that frame (the object is lost to the background), else a slot
    that is also the best slot of another object in that frame (two objects merged), else its own slot."""
    table, best, present, foreground = metrics.best_segments(pred, true)  # (B, T, C, K), (B, T, C) x 2, (C,)
    lost = lost_to_background(table, best, present, foreground)
    objects = torch.zeros_like(table[:, :, 0]).scatter_add_(-1, best, (present & foreground).long())  # per best slot
    shared = present & ~lost & (objects.gather(-1, best) > 1)
    n = max(int(present.sum()), 1)
    counts = {"its own slot": present & ~lost & ~shared, "a slot shared with another object": shared,
              "a mostly-background slot": lost}
    return {"frames": int(present.sum()), **{k: int(v.sum()) / n for k, v in counts.items()}}


def lost_near(pred: torch.Tensor, true: torch.Tensor, near: int = 4) -> dict:
    """Of the object-frames that `slot_sharing` counts as lost to a mostly-background slot, the share whose slot
    holds fewer background pixels beyond `near` pixels of the object (a square neighbourhood) than object pixels:
    its background is a rim around the object (a mask that spills over the object's edge, as a coarse token grid
    gives small objects), not the floor elsewhere. pred, true (B, T, H, W) ids -> {"lost": object-frames lost,
    "near": their share with a rim, not a floor slot}."""
    true_vals = torch.unique(torch.cat([true.new_zeros(1), true.flatten()]))  # 0 first: the background
    true_c = torch.searchsorted(true_vals, true)
    pred_c = torch.unique(pred, return_inverse=True)[1]
    table, best, present, foreground = metrics.best_segments(pred_c, true_c)
    lost = lost_to_background(table, best, present, foreground)  # as slot_sharing counts them
    C, K = table.shape[2], table.shape[3]
    rim = torch.zeros_like(lost)
    for b, t in lost.any(-1).nonzero().tolist():
        objects = F.one_hot(true_c[b, t], C).permute(2, 0, 1).float()  # (C, H, W)
        around = F.max_pool2d(objects[None], 2 * near + 1, stride=1, padding=near)[0] > 0
        slot_of = F.one_hot(pred_c[b, t], K).float()  # (H, W, K)
        far_bg = torch.einsum("chw,hwk->ck", ((true_c[b, t] == 0) & ~around).float(), slot_of)  # (C, K)
        own = table[b, t].gather(-1, best[b, t, :, None])[:, 0]  # the object's pixels on its best slot
        rim[b, t] = lost[b, t] & (far_bg.gather(-1, best[b, t, :, None])[:, 0] < own)
    n = int(lost.sum())
    return {"lost": n, "near": int(rim.sum()) / max(n, 1)}


@torch.no_grad()
def mask_flow_distance(model, data: str, videos: int) -> float:
    """The mean over the first `videos` validation videos of `losses.mask_flow_loss` on the model's slot-attention
    masks, the videos and their flow at the model's input size."""
    ds = open_dataset(data, "validation", size=model.cfg.img_size, with_flow=True)
    values = []
    for i in range(min(videos, len(ds))):
        s = ds[i]
        out = model(s["video"][None], masks_only=True)
        values.append(float(mask_flow_loss(out["attn"], s["flow"][None], out["mask_grid"])))
    return float(np.mean(values))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--videos", type=int, default=25)
    ap.add_argument("--masks", default="decoder", choices=list(MASK_KINDS))
    ap.add_argument("--batch-size", type=int, default=5)
    ap.add_argument("--no-predictor", action="store_true", help="carry the slots unchanged to the next frame")
    ap.add_argument("--sa-iters", type=int, default=None, help="slot-attention iterations after the first frame")
    ap.add_argument("--sa-iters-first", type=int, default=None, help="slot-attention iterations on the first frame")
    ap.add_argument("--track", default=None, choices=list(TRACK_MODES), help="override the model's slot tracking")
    ap.add_argument("--mask-flow", action="store_true", help="also the masks' distance from following the optical flow")
    ap.add_argument("--reorder", action="store_true",
                    help="also the share of slot-frames that tracking by mask overlap (--track masks) would re-order")
    ap.add_argument("--near", type=int, default=4, help="pixels around an object that count as its rim (lost_near)")
    ap.add_argument("--reference", default=None, choices=list(REFERENCE_NAMES),
                    help="score this reference segmenter instead, with as many segments as the checkpoint has slots")
    a = ap.parse_args()
    if a.reference and (a.mask_flow or a.reorder):
        ap.error("--mask-flow and --reorder read a model's masks; they do not apply to --reference")
    model, _ = load_model(a.checkpoint)
    variant = []
    if a.no_predictor:
        model.predictor = torch.nn.Identity()
        variant.append("no predictor")
    if a.track is not None:
        set_track(model, a.track)
        variant.append(f"track {a.track}")
    if a.sa_iters is not None:
        model.cfg.sa_iters = a.sa_iters
        variant.append(f"{a.sa_iters} slot-attention iterations per later frame")
    if a.sa_iters_first is not None:
        model.cfg.sa_iters_first = a.sa_iters_first
        variant.append(f"{a.sa_iters_first} slot-attention iterations on the first frame")
    ds = open_dataset(a.data, "validation")
    items = [ds[i] for i in range(min(a.videos, len(ds)))]
    video = torch.stack([x["video"] for x in items])
    true = torch.stack([x["segmentations"] for x in items])
    preds, drift, reorder = [], [], []
    reference = reference_segmenters(model.cfg.num_slots, [a.reference])[a.reference] if a.reference else None
    with torch.no_grad():
        for i in range(0, len(items), a.batch_size):
            if reference is not None:
                preds.append(reference(video[i:i + a.batch_size], true.shape[-2:]))
                continue
            ids, slots = predict_ids(model, video[i:i + a.batch_size], true.shape[-2:], true[i:i + a.batch_size],
                                     masks=a.masks, with_slots=True)
            z = F.normalize(slots, dim=-1)  # (B, T, K, D)
            preds.append(ids)
            if a.reorder:  # opt-in: a second pass for the masks, which predict_ids does not return
                attn = model(resize_video(video[i:i + a.batch_size], _pair(model.cfg.img_size)), masks_only=True)["attn"]
                reorder.append(reorder_share(attn))
            drift.append((z * z[:, :1]).sum(-1).mean(-1))  # (B, T)
    pred = torch.cat(preds)
    T = true.shape[1]
    if reference is not None:
        what = f"reference {a.reference}, {model.cfg.num_slots} segments (the slots of {a.checkpoint})"
    else:
        drift = torch.cat(drift).mean(0)
        what = f"{a.checkpoint} ({', '.join([a.masks + ' masks'] + variant)})"
    print(f"{what} on {len(items)} validation videos of {a.data}, {T} frames\n")
    print("| first T frames | video FG-ARI | video mBO | image FG-ARI | image mBO |\n|---|---|---|---|---|")
    for t in sorted({1, 4, 8, 12, T} & set(range(1, T + 1))):
        p, g = pred[:, :t], true[:, :t]
        row = [metrics.video_fg_ari(p, g), metrics.video_mbo(p, g), metrics.image_fg_ari(p, g), metrics.image_mbo(p, g)]
        print(f"| {t} | " + " | ".join(f"{np.nanmean(x.numpy()):.3f}" for x in row) + " |")
    by_frame = np.nanmean(metrics.image_mbo(pred, true, per_frame=True).numpy(), 0)
    print("\nimage mBO by frame index: " + " ".join(f"{x:.2f}" for x in by_frame))
    if reference is None:
        print("slot drift, cos(slot at t, slot at 0) for t = " + ", ".join(
            f"{t}: {drift[t]:.2f}" for t in sorted({1, 4, 8, 12, T - 1} & set(range(1, T)))))
    print(f"slot stability (share of an object's frames on its usual slot): {np.nanmean(metrics.slot_stability(pred, true).numpy()):.3f}")
    if a.mask_flow:
        print(f"slot attention's masks' distance from following the optical flow (losses.mask_flow_loss): "
              f"{mask_flow_distance(model, a.data, len(items)):.4f}")
    if a.reorder:
        print(f"slot-frames that tracking by mask overlap would re-order: {np.mean(reorder):.3f}")
    sharing = slot_sharing(pred, true)
    print(f"per frame, the object's best slot is " + ", ".join(f"{k}: {sharing[k]:.3f}" for k in SHARING_KINDS)
          + f" (of {sharing['frames']} object-frames)")
    rim = lost_near(pred, true, a.near)
    print(f"of the {rim['lost']} lost object-frames, a slot whose background lies within {a.near} px of the object "
          f"(a rim, not the floor): {rim['near']:.3f}")
    kinds = switch_kinds(pred, true)
    print(f"object-frames on another slot than the object's usual one: {kinds['switched']:.3f} of {kinds['frames']}; "
          "the usual slot then covers mostly " + ", ".join(f"{k}: {kinds[k]:.3f}" for k in SWITCH_KINDS))


if __name__ == "__main__":
    main()
