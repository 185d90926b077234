"""Pretraining a frame encoder on the generator's videos, to be used frozen: the offline stand-in for DINOv2.

In the paper the teacher's and the student's encoders are frozen DINOv2 ViTs, pretrained once on a large
image collection (ViT-B/14 and ViT-S/14). Offline there is no such network, and a CNN trained jointly with
the slots from scratch does not learn object-separating features in a CPU budget (docs/RESULTS.md). So,
as DINOv2 is trained before and apart from the slot model, `pretrain_encoder` trains the same small CNN
once, on the training split's frames, to predict per patch what the simulator knows about the scene:

- "pixels_raw": the patch's colours (what the object looks like),
- "relief": disparity above the floor's plane (what stands out of the floor, `encoder.relief_patch_target`),
- "flow": optical flow (what moves, and how).

With a `teacher` encoder (a pretrained one with its head, e.g. the teacher's frozen encoder), the targets are that
encoder's predictions of the same pretext parts instead of the simulator's: the student's encoder is distilled
from the teacher's, as DINOv2's ViT-S/14 (the paper's student encoder) was distilled from its ViT-g/14. The loss
weights (`object_weight`, `edge_weight`) still come from depth.

No masks are read: the pretext targets are the same depth and flow that the reconstruction targets may
use. With `object_weight` the loss of each token is weighted by how much of it stands out of the floor
(`object_weights`, from depth), so that the small objects count as much as the floor. A linear head maps each
token to the concatenated targets, so the frozen features carry them linearly, which slot attention's linear keys
can use. Each part's squared error is divided by that part's target variance in the batch, so the parts weigh
alike whatever their units.

Output: `OUT/encoder.safetensors` (the CNN's weights in fp16, loaded by `encoder: {name: cnn, weights: ...}`, and
the pretext head, for `encoder: {readout: PARTS}`, whose tokens are the head's predictions) and
`OUT/pretrain.json` (the encoder config, the pretext, the final losses). A state file every
`checkpoint_every` steps lets a killed run continue with `resume=True`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from slotmatch.data.dataset import open_dataset
from slotmatch.models.encoder import (CNNEncoder, make_target, relief_patch_target, safetensors_metadata, standing,
                                      target_dim, target_needs_depth, target_needs_flow, target_parts)
from slotmatch.models.slotcontrast import flatten_frames

# encoder settings that say where the weights are and how the trained CNN is read, not what network is pretrained
READ_KEYS = ("weights", "frozen", "readout", "pretext", "standardize", "unpack", "guided_surface", "part_weights")
PRETRAIN_DEFAULTS = dict(targets="pixels_raw+relief+flow", steps=4000, batch_size=32, lr=2e-3, size=64,
                         max_minutes=None, checkpoint_every=500, seed=0, num_workers=1, object_weight=0.0,
                         edge_weight=0.0, teacher=None)


def object_weights(depth: torch.Tensor, patch_size: int, object_weight: float,
                   edge_weight: float = 0.0) -> torch.Tensor:
    """Each token's weight in the pretext loss: 1 + object_weight x the share of its pixels that stand out of the
    floor (`encoder.standing` of its relief, read from depth, never the masks) + edge_weight x the share of its
    pixels on an object's edge (where standing changes within the pixel's 3x3 neighbourhood), scaled to mean 1
    over the batch.

    Objects cover about 5% of the generator's pixels, so an unweighted loss is mostly spent on the floor; with a
    weight of about 1 / 0.05 objects and floor count alike. Their edges are where the encoder's surface colour is
    most wrong (docs/RESULTS.md, session 18). depth (B, H, W) -> (B, N).
    """
    p = patch_size
    up = standing(relief_patch_target(depth, 1).view(depth.shape))  # (B, H, W), 0 on the floor, 1 on objects
    B, H, W = up.shape
    edge = (F.max_pool2d(up[:, None], 3, 1, 1) + F.max_pool2d(-up[:, None], 3, 1, 1))[:, 0]  # max - min over 3x3

    def share(x):  # (B, H, W) -> (B, N): the mean over each token's p * p pixels
        return x[:, : H // p * p, : W // p * p].reshape(B, H // p, p, W // p, p).mean((2, 4)).flatten(1)

    w = 1.0 + object_weight * share(up) + edge_weight * share(edge)
    return w / w.mean()


class PretextModel(nn.Module):
    """A CNN encoder and a linear head from each token to its pretext targets."""

    def __init__(self, encoder_cfg: dict, targets: str, object_weight: float = 0.0, edge_weight: float = 0.0,
                 teacher: Optional[dict] = None):
        super().__init__()
        self.object_weight, self.edge_weight = float(object_weight), float(edge_weight)
        cfg = {k: v for k, v in encoder_cfg.items() if k not in READ_KEYS + ("name",)}
        self.encoder = CNNEncoder(**cfg)
        self.targets = targets
        self.sizes = [target_dim(p, self.encoder) for p in target_parts(targets)]
        self.head = nn.Linear(self.encoder.feature_dim, sum(self.sizes))
        # kept out of the module tree (a tuple): the frozen teacher is neither trained, saved nor put in train mode
        self._teacher = (teacher_predictor(teacher, targets, self.encoder.patch_size),) if teacher else ()

    def loss(self, video: torch.Tensor, depth=None, flow=None) -> tuple[torch.Tensor, dict]:
        """video clips (B, T, 3, H, W), depth (B, T, H, W), flow (B, T, H, W, 2) -> total loss and each part's
        variance-normalised squared error over all frames (each token weighted by `object_weights` when
        object_weight or edge_weight > 0); an encoder with context sees each frame with its neighbours in the clip."""
        frames, depth, flow = flatten_frames(video, depth, flow)
        if self._teacher:
            with torch.no_grad():
                target = self._teacher[0].encode_video(video).flatten(0, 1)  # its head's predictions, pretext layout
        else:
            target = make_target(self.targets, frames, None, self.encoder.patch_size, depth, flow)
        pred = self.head(self.encoder.encode_video(video).flatten(0, 1))
        weight = 1.0
        if self.object_weight > 0 or self.edge_weight > 0:
            if depth is None:
                raise ValueError("object_weight and edge_weight read the relief above the floor: the dataset needs "
                                 "depth")
            weight = object_weights(depth, self.encoder.patch_size, self.object_weight, self.edge_weight).unsqueeze(-1)
        parts, total, start = {}, 0.0, 0
        for name, size in zip(target_parts(self.targets), self.sizes):
            t, p = target[..., start:start + size], pred[..., start:start + size]
            part = (weight * (p - t) ** 2).mean() / (t.var() + 1e-4)
            parts[name], total, start = float(part.detach()), total + part, start + size
        return total, parts


def teacher_predictor(encoder_cfg: dict, targets: str, patch_size: int) -> CNNEncoder:
    """The frozen encoder of `encoder_cfg` (its `weights` a `slotmatch pretrain` file with the head) read through its
    whole pretext head: tokens (B, N, D) laid out as `make_target(targets, ...)` lays out the pretext targets."""
    weights = encoder_cfg.get("weights")
    if encoder_cfg.get("name", "cnn") != "cnn" or not weights:
        raise ValueError("a teacher for pretraining is a pretrained CNN encoder: give its config with `weights`")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"teacher encoder weights not found: {weights}")
    pretext = safetensors_metadata(weights).get("pretext")
    if pretext != targets:
        raise ValueError(f"{weights} was pretrained on {pretext!r}; its predictions can only stand in for the same "
                         f"targets, not {targets!r} (pretrain with --targets {pretext})")
    how_read = (set(READ_KEYS) - {"weights"}) | {"name", "img_size"}  # the teacher is read through its whole head
    cfg = {k: v for k, v in encoder_cfg.items() if k not in how_read}
    teacher = CNNEncoder(**cfg, readout=pretext, frozen=True).eval()
    if teacher.cnn_patch_size != patch_size:
        raise ValueError(f"{weights} predicts {teacher.cnn_patch_size}x{teacher.cnn_patch_size}-pixel patches, the "
                         f"encoder pretrained here {patch_size}x{patch_size}: their targets differ")
    return teacher


def _architecture(encoder_cfg: dict) -> dict:
    """What makes two encoder configs the same network to pretrain (not where its weights are or how it is read)."""
    return {k: v for k, v in encoder_cfg.items() if k not in READ_KEYS}


def pretrain_encoder(data_path, out: str, encoder_cfg: dict, resume: bool = False, progress: bool = True,
                     **settings) -> str:
    """Train `encoder_cfg`'s CNN on the pretext targets of the training frames of `data_path` (a dataset, or a
    list of them, used together: one encoder for several presets, as one DINOv2 serves every dataset);
    -> weights path."""
    unknown = sorted(set(settings) - set(PRETRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown pretrain setting(s) {', '.join(unknown)}; known: {', '.join(PRETRAIN_DEFAULTS)}")
    s = {**PRETRAIN_DEFAULTS, **settings}
    if encoder_cfg.get("name", "cnn") != "cnn":
        raise ValueError(f"pretraining is for the offline CNN encoder, got encoder {encoder_cfg.get('name')!r}")
    torch.manual_seed(s["seed"])
    os.makedirs(out, exist_ok=True)
    state_path, weights_path = os.path.join(out, "pretrain-state.pt"), os.path.join(out, "encoder.safetensors")
    targets = s["targets"]
    if "oracle" in target_parts(targets):
        raise ValueError("the oracle reads the ground truth; it is no pretext")
    paths = [data_path] if isinstance(data_path, str) else list(data_path)
    # clips of 2 frames, or 2 * context + 1: a frame with its neighbours on both sides, and at the clip's ends frames
    # whose neighbours are repeated, as at a video's ends
    clip_length = max(2, 2 * int(encoder_cfg.get("context", 0)) + 1)
    data = torch.utils.data.ConcatDataset([
        open_dataset(p, "train", clip_length=clip_length, random_clip=True, size=s["size"],
                     with_depth=(target_needs_depth(targets) and not s["teacher"]) or s["object_weight"] > 0
                     or s["edge_weight"] > 0,
                     with_flow=target_needs_flow(targets) and not s["teacher"]) for p in paths])
    clips = max(1, s["batch_size"] // clip_length)  # about batch_size frames per step
    loader = DataLoader(data, batch_size=clips, shuffle=True, drop_last=len(data) >= clips,
                        num_workers=s["num_workers"], persistent_workers=s["num_workers"] > 0)
    model = PretextModel(encoder_cfg, targets, s["object_weight"], s["edge_weight"], s["teacher"])
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 200) * 0.1 ** (k / s["steps"]))
    step = 0
    if resume and os.path.isfile(state_path):
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if _architecture(state["encoder_cfg"]) != _architecture(encoder_cfg) or state["targets"] != targets:
            raise ValueError(f"{state_path} was written for encoder {state['encoder_cfg']} and targets "
                             f"{state['targets']!r}, not {dict(encoder_cfg)} and {targets!r}")
        if float(state.get("object_weight", 0.0)) != float(s["object_weight"]):  # states before session 16: 0
            raise ValueError(f"{state_path} was written with object_weight {state.get('object_weight', 0.0)}, "
                             f"not {s['object_weight']}: resume with the same loss")
        if float(state.get("edge_weight", 0.0)) != float(s["edge_weight"]):  # states before session 18: 0
            raise ValueError(f"{state_path} was written with edge_weight {state.get('edge_weight', 0.0)}, "
                             f"not {s['edge_weight']}: resume with the same loss")
        if state.get("teacher") != (s["teacher"] or {}).get("weights"):
            raise ValueError(f"{state_path} was written with teacher encoder {state.get('teacher')}, not "
                             f"{(s['teacher'] or {}).get('weights')}: resume with the same targets")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = int(state["step"])

    def save_state():
        tmp = state_path + ".tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step,
                    "encoder_cfg": dict(encoder_cfg), "targets": targets,
                    "object_weight": float(s["object_weight"]), "edge_weight": float(s["edge_weight"]),
                    "teacher": (s["teacher"] or {}).get("weights")}, tmp)
        os.replace(tmp, state_path)

    from tqdm import tqdm

    bar = tqdm(total=s["steps"], initial=step, desc="pretrain", disable=not progress)
    deadline = None if s["max_minutes"] is None else time.time() + 60 * float(s["max_minutes"])
    parts, running = {}, None
    model.train()
    while step < s["steps"] and (deadline is None or time.time() < deadline):
        for batch in loader:
            loss, parts = model.loss(batch["video"], batch.get("depth"), batch.get("flow"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            value = loss.item()
            running = value if running is None else 0.98 * running + 0.02 * value
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", **{k: f"{v:.3f}" for k, v in parts.items()})
            if step % s["checkpoint_every"] == 0:
                save_state()
            if step >= s["steps"] or (deadline is not None and time.time() >= deadline):
                break
    bar.close()
    save_state()
    from slotmatch.checkpoint import save_safetensors

    # fp16 on disk, like the shipped checkpoints: under 1.5 MB for the 96-channel CNN; loaded into fp32. The pretext
    # head goes beside it (keys readout.*, the pretext in the metadata), for `encoder: {readout: PARTS}`
    tensors = {**model.encoder.state_dict(), **{f"readout.{k}": v for k, v in model.head.state_dict().items()}}
    save_safetensors({k: v.half().contiguous() for k, v in tensors.items()}, weights_path, metadata={"pretext": targets})
    info = {"encoder": {**{k: v for k, v in encoder_cfg.items() if k not in READ_KEYS}, "name": "cnn"},
            "data": paths, "steps": step, "settings": s, "loss": running, "parts": parts,
            "parameters": sum(p.numel() for p in model.encoder.parameters())}
    with open(os.path.join(out, "pretrain.json"), "w") as f:
        json.dump(info, f, indent=1)
    return weights_path
