"""Losses of SlotContrast (Manasyan et al. 2024, Sec. 3.2) and SlotMatch (Grigore et al. 2025, Sec. 3).

Pure functions of tensors. The teacher loss is
    reconstruction_loss + 0.5 * slot_contrast_loss(slots, temperature=0.1);
the SlotMatch student adds slot_distillation_loss(student_slots, teacher_slots).
feature_distillation_loss and mask_distillation_loss are the extra distillation terms the SlotMatch
paper shows to be redundant (ablation only). mask_entropy is ours: a diagnostic that is logged always and,
weighted by `train.mask_entropy`, a penalty on masks that blend slots instead of assigning patches.
slot_anchor_contrast_loss is ours too: the same InfoNCE against the slots of the burn-in frames before a clip
(`train.contrast_anchor`).
mask_flow_loss is ours too: slot k's mask at frame t, carried by the simulator's optical flow, should be slot k's
mask at t + 1 (`train.mask_flow`; a training signal only, the model never reads flow).
"""

import torch
import torch.nn.functional as F


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; reconstruction (B, T, N, F), target (B, T, N, F) (no gradient to it)."""
    return F.mse_loss(reconstruction, target.detach())


def slot_contrast_loss(slots: torch.Tensor, temperature: float = 0.1,
                       batch_contrast: bool = True, max_gap: int = 1) -> torch.Tensor:
    """SlotContrast's slot-slot contrastive loss (InfoNCE over time), as in their
    `losses.py::Slot_Slot_Contrastive_Loss` (batch_contrast=True in all their configs).

    slots: (B, T, K, D), the slots after slot attention. Slots are L2-normalised. For every frame
    pair (t, t+1) the anchor is slot k of video b at t+1; its positive is slot k of the same video at
    t; the negatives are all other slots at t of every video in the batch (other slots of the same
    video included; with batch_contrast=False only those). Logits are cosine similarities / temperature,
    cross-entropy over the B*K candidates, averaged over anchors and frame pairs. One direction only
    (t+1 -> t), as their code (cross-entropy over dim 1 of the (t, t+1) similarity matrix).
    max_gap > 1 (ours, not the paper's; default 1 is the paper's loss): also the pairs (t, t+g) for
    g = 2..max_gap, every pair weighted equally, so that a slot may not drift slowly away from itself
    over several frames while each step stays close to the last (docs/RESULTS.md, "Slots drift").
    Returns 0 when T < 2.
    """
    B, T, K, D = slots.shape
    if T < 2:
        return slots.sum() * 0.0
    z = F.normalize(slots, dim=-1)  # (B, T, K, D)
    if batch_contrast:
        z = z.transpose(0, 1).reshape(1, T, B * K, D)  # slot index b * K + k
    S = z.shape[2]
    logits = []
    for g in range(1, min(max_gap, T - 1) + 1):
        cur, nxt = z[:, :-g], z[:, g:]  # (B', T-g, S, D)
        logits.append((nxt @ cur.transpose(-1, -2) / temperature).reshape(-1, S))  # anchors (t+g) x cands (t)
    logits = torch.cat(logits)
    labels = torch.arange(S, device=slots.device).repeat(logits.shape[0] // S)
    return F.cross_entropy(logits, labels)


def slot_anchor_contrast_loss(slots: torch.Tensor, anchors: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Ours (not in either paper): the slot-slot InfoNCE against slots from further back in the video.

    slots: (B, T, K, D) the clip's slots; anchors: (B, A, K, D) the same videos' slots from the frames before
    the clip (the burn-in, no gradient to them). For every clip frame t and anchor frame a, slot k of video b
    at t is the anchor of a cross-entropy whose positive is slot k of video b at a and whose negatives are the
    other B*K - 1 slots at a, as in `slot_contrast_loss` with batch contrast; averaged over every (t, a) pair.
    It ties each slot to what it held up to burn-in + clip frames earlier, beyond `max_gap`.
    Returns 0 when there are no anchor frames.
    """
    B, T, K, D = slots.shape
    if anchors is None or anchors.shape[1] == 0:
        return slots.sum() * 0.0
    if anchors.shape[0] != B or anchors.shape[2:] != (K, D):
        raise ValueError(f"anchor slots {tuple(anchors.shape)} do not match the clip's slots {tuple(slots.shape)}")
    z = F.normalize(slots, dim=-1).transpose(0, 1).reshape(T, B * K, D)
    a = F.normalize(anchors.detach(), dim=-1).transpose(0, 1).reshape(anchors.shape[1], B * K, D)
    logits = torch.einsum("tsd,aud->tasu", z, a) / temperature  # (T, A, S anchors, S candidates)
    S = B * K
    labels = torch.arange(S, device=slots.device).repeat(T * a.shape[0])
    return F.cross_entropy(logits.reshape(-1, S), labels)


def slot_distillation_loss(student_slots: torch.Tensor, teacher_slots: torch.Tensor) -> torch.Tensor:
    """SlotMatch: mean over batch, frames and slots of 1 - cos(student slot k, teacher slot k).

    student_slots, teacher_slots: (B, T, K, D) with the same D (give the student the teacher's slot
    dim, or project it first). The teacher is detached here: gradients reach the student only.
    """
    if student_slots.shape != teacher_slots.shape:
        raise ValueError(f"student slots {tuple(student_slots.shape)} and teacher slots "
                         f"{tuple(teacher_slots.shape)} differ; project the student's slots first")
    cos = F.cosine_similarity(student_slots, teacher_slots.detach(), dim=-1)  # (B, T, K)
    return (1.0 - cos).mean()


def feature_distillation_loss(student_reconstruction: torch.Tensor,
                              teacher_reconstruction: torch.Tensor) -> torch.Tensor:
    """Ablation: MSE between the decoders' reconstructions (B, T, N, F), teacher detached.

    Both must have the same N and F. A student whose decoder outputs another feature size (e.g. the
    ViT-S's 384 vs the ViT-B's 768) needs a projection (a Linear on its reconstruction) first.
    """
    if student_reconstruction.shape != teacher_reconstruction.shape:
        raise ValueError(f"reconstructions differ in shape: {tuple(student_reconstruction.shape)} vs "
                         f"{tuple(teacher_reconstruction.shape)}; project the student's first")
    return F.mse_loss(student_reconstruction, teacher_reconstruction.detach())


def mask_distillation_loss(student_masks: torch.Tensor, teacher_masks: torch.Tensor,
                           eps: float = 1e-8) -> torch.Tensor:
    """Ablation: KL(teacher || student) between the mask distributions over slots.

    masks: (B, T, K, N), each summing to 1 over K (dim -2); teacher detached. Summed over slots,
    averaged over batch, frames and patches. Both models need the same K and N.
    """
    if student_masks.shape != teacher_masks.shape:
        raise ValueError(f"masks differ in shape: {tuple(student_masks.shape)} vs "
                         f"{tuple(teacher_masks.shape)}")
    t = teacher_masks.detach()
    kl = t * (torch.log(t.clamp_min(eps)) - torch.log(student_masks.clamp_min(eps)))
    return kl.sum(dim=-2).mean()


def mask_entropy(masks: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean entropy (nats) of masks (..., K, N) over the K slots, per patch: 0 when every patch belongs to one
    slot, log K when the slots share it equally. Ours, not the papers': when the masks weigh the slots'
    decoded features (`model.mask_source`), blended masks can lower the reconstruction loss while the
    argmax segments merge (docs/RESULTS.md, session 8)."""
    return -(masks * (masks + eps).log()).sum(-2).mean()


def mask_flow_loss(masks: torch.Tensor, flow: torch.Tensor, grid: tuple) -> torch.Tensor:
    """How far each slot's mask is from following the optical flow from one frame to the next (ours).

    masks: (B, T, K, N) soft masks on the h x w token grid (N = h * w), e.g. slot attention's; flow: (B, T, H, W, 2)
    forward optical flow in pixels (dx, dy) of frames H x W: where each pixel's surface point is one frame later.
    For every token of frame t, the flow averaged over the token says where it goes; frame t+1's masks are read
    there (bilinear) and compared with frame t's: half the L1 distance over slots, 0 when every slot keeps its
    pixels, 1 when the token changes slot completely. The mean over tokens whose new position lies in the frame and
    over frame pairs; 0 for one-frame clips. Occlusion is not handled (the flow carries hidden points too).
    """
    B, T, K, N = masks.shape
    h, w = grid
    if h * w != N:
        raise ValueError(f"masks hold {N} tokens, the grid {h}x{w} holds {h * w}")
    if flow.shape[:2] != (B, T) or flow.dim() != 5 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (B, T, H, W, 2) with B, T = {B}, {T}; got {tuple(flow.shape)}")
    if T < 2:
        return masks.sum() * 0.0
    H, W = flow.shape[2:4]
    f = F.adaptive_avg_pool2d(flow[:, :-1].flatten(0, 1).permute(0, 3, 1, 2).to(masks.dtype), (h, w))  # (P, 2, h, w)
    ys = (torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5) / h * 2 - 1  # token centres, [-1, 1]
    xs = (torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5) / w * 2 - 1
    gx = xs.view(1, 1, w) + f[:, 0] * (2.0 / W)  # (P, h, w) where each token goes, normalised
    gy = ys.view(1, h, 1) + f[:, 1] * (2.0 / H)
    nxt = masks[:, 1:].flatten(0, 1).reshape(-1, K, h, w)
    warped = F.grid_sample(nxt, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border",
                           align_corners=False)  # (P, K, h, w): frame t+1's masks where frame t's tokens went
    cur = masks[:, :-1].flatten(0, 1).reshape(-1, K, h, w)
    inside = ((gx.abs() <= 1) & (gy.abs() <= 1)).to(masks.dtype)
    distance = 0.5 * (cur - warped).abs().sum(1)  # (P, h, w)
    return (distance * inside).sum() / inside.sum().clamp_min(1)
