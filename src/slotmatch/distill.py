"""SlotMatch distillation (Grigore et al., 2025): a light student learns from a frozen SlotContrast teacher.

    L = L_rec + alpha * L_slot-contrast + beta * L_slot-KD,   L_slot-KD = mean_{b,t,k} 1 - cos(s_btk, t_btk)

Student slot k is pulled to teacher slot k: both models start every video from fixed learned slot
initialisations, and the student's are copied from the teacher's at the start of distillation
(`distill.copy_slot_init`), so index k means the same object in both from step 0 — no matching step.
The ablation terms the paper found redundant are switches: `feature_kd` (student decoder output vs
the teacher's, through a linear map when their sizes differ) and `mask_kd` (KL between the two
models' decoder masks). beta = 0 trains the same student alone. `beta_decay_steps: n` (ours, not the paper's)
lowers beta linearly to 0 over the first n steps: the teacher guides early, the student is on its own later.
`copy_slot_modules` (ours, not the paper's) also starts the student's slot attention and predictor from the
teacher's, so only the input MLP, fed by the student's encoder, and the decoder start from scratch.
"""

from __future__ import annotations

import os

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from slotmatch import losses
from slotmatch.checkpoint import CheckpointError, load_model, read_checkpoint
from slotmatch.config import merge
from slotmatch.evaluate import predict_ids
from slotmatch.models import build_model
from slotmatch.train import (FORMAT, SlotContrastModule, fit, mean_scores, oracle_input, rollout, rollout_slots,
                             video_scores)

DISTILL_DEFAULTS = dict(alpha=0.5, beta=1.0, beta_decay_steps=0, feature_kd=0.0, mask_kd=0.0,
                        copy_slot_init=None, copy_slot_modules=False, teacher_checkpoint=None)


def distill_settings(cfg: dict) -> dict:
    """Loss weights and switches; copy_slot_init defaults to on, and to off for beta = 0 (the student alone)."""
    from slotmatch.train import check_keys

    check_keys(cfg.get("distill", {}), DISTILL_DEFAULTS, "distill")
    ds = {**DISTILL_DEFAULTS, **cfg.get("distill", {})}
    if ds["copy_slot_init"] is None:
        ds["copy_slot_init"] = ds["beta"] > 0
    if ds["beta_decay_steps"] < 0:
        raise ValueError(f"distill.beta_decay_steps must be 0 (constant beta) or a number of steps, not {ds['beta_decay_steps']}")
    return ds


def student_config(cfg: dict) -> dict:
    """The student's model config: the config's `model` with its `student` overrides."""
    return merge(cfg["model"], cfg.get("student", {}))


class SlotMatchModule(SlotContrastModule):
    """Trains the student (`self.model`) against the frozen teacher (`self.teacher`)."""

    def __init__(self, cfg: dict, teacher_checkpoint: str, run_dir: str | None = None):
        cfg = merge(cfg, {"distill": {"teacher_checkpoint": teacher_checkpoint}})
        student_cfg = student_config(cfg)
        super().__init__(merge(cfg, {"model": student_cfg}), run_dir)
        self.cfg = cfg
        self.ds = distill_settings(cfg)
        teacher, teacher_run_cfg = load_model(teacher_checkpoint)
        teacher_cfg = read_checkpoint(teacher_checkpoint)["hyper_parameters"]["model_cfg"] \
            if not teacher_checkpoint.endswith(".safetensors") else teacher_run_cfg["model"]
        for key in ("num_slots", "slot_dim"):  # compare the built models: configs may leave defaults implicit
            t, s = getattr(teacher.cfg, key), getattr(self.model.cfg, key)
            if t != s:
                raise CheckpointError(f"{teacher_checkpoint}: teacher has {key}={t}, the student {s}: "
                                      "SlotMatch compares slot k of one with slot k of the other")
        self.teacher = teacher.requires_grad_(False).eval()
        self.teacher_model_cfg = teacher_cfg
        # with train.feature_cache, both frozen encoders' features are cached (one pass over the data) and the
        # training steps run neither encoder; not for a teacher that must see frames (the oracle diagnostic's
        # masks; its own pixel target for feature KD)
        self.uses_feature_cache = bool(teacher.encoder.frozen and not teacher.encoder.needs_segmentations and (
            self.ds["feature_kd"] == 0 or teacher.target_type == "features"))
        if self.ds["copy_slot_init"]:
            with torch.no_grad():
                self.model.initializer.slots.copy_(self.teacher.initializer.slots)
        if self.ds["copy_slot_modules"]:
            for name in ("slot_attention", "predictor"):
                try:  # a strict load: every key present and every shape equal
                    getattr(self.model, name).load_state_dict(getattr(teacher, name).state_dict())
                except RuntimeError as e:
                    raise CheckpointError(f"{teacher_checkpoint}: distill.copy_slot_modules needs the teacher's {name} "
                                          f"shaped like the student's: {e}") from None
        self.feature_proj = None
        if self.ds["feature_kd"] > 0 and self.model.target_dim != self.teacher.target_dim:
            self.feature_proj = nn.Linear(self.model.target_dim, self.teacher.target_dim)
        self.save_hyperparameters({"format": FORMAT, "cfg": cfg, "model_cfg": student_cfg, "teacher_cfg": teacher_cfg})
        self._teacher_val: list[dict] = []
        self._teacher_scores: dict | None = None

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: dropout/norm statistics never change
        return self

    def kd_weight(self) -> float:
        """beta at this step: `distill.beta`, or with `distill.beta_decay_steps: n` beta * (1 - step / n), 0 from step n."""
        beta, n = self.ds["beta"], self.ds["beta_decay_steps"]
        return beta * max(0.0, 1.0 - self.global_step / n) if n > 0 else beta

    def compute_losses(self, batch: dict) -> dict:
        burn, batch = self.draw_burn_in(batch)  # both models carry their own slots through the same burn-in
        burn_slots = rollout(self.model, burn)
        out = self.model(batch.get("video"), features=batch.get("features"), depth=batch.get("depth"),
                         flow=batch.get("flow"), decoded_tokens=self.ts["decoded_tokens"],
                         prev_slots=None if burn_slots is None else burn_slots[:, -1])
        needs_teacher = self.ds["beta"] > 0 or self.ds["feature_kd"] > 0 or self.ds["mask_kd"] > 0
        # feature KD decodes only the teacher's tokens under the student's decoded patches, when the grids allow
        t_index = None if self.ds["feature_kd"] == 0 else covering_tokens(
            out.get("token_index"), out["mask_grid"], self.teacher.token_grid(batch.get("video")))
        with torch.no_grad():
            t_out = self.teacher(batch.get("video"), features=batch.get("teacher_features"),
                                 masks_only=self.ds["feature_kd"] == 0, depth=batch.get("depth"), flow=batch.get("flow"),
                                 segmentations=oracle_input(self.teacher, batch),
                                 prev_slots=rollout_slots(self.teacher, burn, "teacher_features"),
                                 token_index=t_index) if needs_teacher else None
        rec = losses.reconstruction_loss(out["reconstruction"], out["target"])
        con = losses.slot_contrast_loss(out["slots"], self.ts["temperature"],
                                        max_gap=self.ts["contrast_max_gap"])
        kd = losses.slot_distillation_loss(out["slots"], t_out["slots"]) if needs_teacher else rec.new_zeros(())
        terms = {"rec": rec, "contrast": con, "kd": kd}
        loss = rec + self.ds["alpha"] * con + self.kd_weight() * kd
        if self.ds["feature_kd"] > 0:
            s_rec = out["reconstruction"] if self.feature_proj is None else self.feature_proj(out["reconstruction"])
            t_rec = on_student_patches(t_out["reconstruction"].transpose(2, 3), t_out, out, t_index,
                                       renormalise=False).transpose(2, 3)
            terms["feature_kd"] = losses.feature_distillation_loss(s_rec, t_rec)
            loss = loss + self.ds["feature_kd"] * terms["feature_kd"]
        if self.ds["mask_kd"] > 0:
            t_masks = on_student_patches(t_out["masks"], t_out, out, t_index)
            terms["mask_kd"] = losses.mask_distillation_loss(out["masks"], t_masks)
            loss = loss + self.ds["mask_kd"] * terms["mask_kd"]
        terms = self.add_anchor_contrast({"loss": loss, **terms, "out": out}, burn_slots)
        return self.add_mask_flow(self.add_mask_entropy(terms), batch)

    def data_targets(self) -> list:
        """The student's target, and the teacher's when feature KD makes the teacher reconstruct too."""
        return [self.model.target_type] + ([self.teacher.target_type] if self.ds["feature_kd"] > 0 else [])

    def trainable_parameters(self) -> list:
        extra = [] if self.feature_proj is None else list(self.feature_proj.parameters())
        return super().trainable_parameters() + extra

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        super().validation_step(batch, batch_idx, dataloader_idx)
        if self._teacher_scores is None and dataloader_idx == 0:  # the teacher is frozen: score it once
            with torch.no_grad():
                pred = predict_ids(self.teacher, batch["video"], batch["segmentations"].shape[-2:],
                                   batch["segmentations"])  # read only by an oracle (diagnostic) teacher
            self._teacher_val.append(video_scores(pred, batch["segmentations"]))

    def on_validation_epoch_end(self):
        if self._teacher_scores is None and self._teacher_val:
            self._teacher_scores = {f"teacher/{k}": v for k, v in mean_scores(self._teacher_val).items()}
            self._teacher_val = []
        if self._teacher_scores:
            self.log_dict(self._teacher_scores)
        super().on_validation_epoch_end()


def match_grid(masks: torch.Tensor, grid: tuple[int, int], target: tuple[int, int],
               renormalise: bool = True) -> torch.Tensor:
    """Resize masks (B, T, K, h*w) from `grid` to the `target` grid, renormalised over slots; with renormalise=False
    any channels (B, T, C, h*w), such as decoded features. A grid that is a whole multiple of the target is averaged
    over its blocks (each patch of the target: the mean of the tokens it covers); other sizes are interpolated
    bilinearly."""
    if tuple(grid) == tuple(target):
        return masks
    B, T, K, _ = masks.shape
    whole = all(g % t == 0 for g, t in zip(grid, target))
    m = F.interpolate(masks.reshape(B * T, K, *grid), size=tuple(target),
                      **({"mode": "area"} if whole else {"mode": "bilinear", "align_corners": False}))
    if renormalise:
        m = m / m.sum(1, keepdim=True).clamp_min(1e-8)
    return m.reshape(B, T, K, -1)


def covering_tokens(index: torch.Tensor | None, grid: tuple[int, int], fine: tuple[int, int]) -> torch.Tensor | None:
    """The tokens of the `fine` grid under each patch of `grid` listed in `index` (n,): (n * fy * fx,), each
    patch's block of fy x fx tokens in a row. None when there is no index or `fine` is not a whole multiple of
    `grid` (the caller then decodes every token)."""
    if index is None or any(f % g for f, g in zip(fine, grid)):
        return None
    fy, fx = fine[0] // grid[0], fine[1] // grid[1]
    i, j = index // grid[1], index % grid[1]  # (n,) patch rows and columns
    a = torch.arange(fy, device=index.device).view(1, fy, 1)
    b = torch.arange(fx, device=index.device).view(1, 1, fx)
    return ((i.view(-1, 1, 1) * fy + a) * fine[1] + j.view(-1, 1, 1) * fx + b).reshape(-1)


def block_mean(x: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """x with n equal consecutive blocks along `dim` (as `covering_tokens` lists them), each replaced by its mean."""
    return x.unflatten(dim, (n, -1)).mean(dim + 1)


def on_student_patches(x: torch.Tensor, t_out: dict, out: dict, t_index: torch.Tensor | None,
                       renormalise: bool = True) -> torch.Tensor:
    """The teacher's (B, T, C, tokens) values (masks, or decoded features transposed) at the patches the student
    decoded (out["token_index"], else all of its grid), each the mean over the teacher tokens that patch covers.
    With t_index the teacher decoded only those tokens, each patch's block in a row: block means (of distributions
    over slots, still distributions). Otherwise the whole teacher grid is resized to the student's (`match_grid`,
    renormalised over slots unless renormalise=False), then the decoded patches are picked."""
    if t_index is not None:
        return block_mean(x, 3, len(out["token_index"]))
    x = match_grid(x, t_out["mask_grid"], out["mask_grid"], renormalise=renormalise)
    return x[..., out["token_index"]] if "token_index" in out else x


def distill(cfg: dict, teacher_checkpoint: str, run_dir: str, resume: bool = False, progress: bool = True) -> str:
    """Distil the teacher checkpoint into the config's student; returns the student's last checkpoint."""
    if resume:  # the teacher is inside the run's checkpoint; the argument must name the same file
        last = f"{run_dir}/checkpoints/last.ckpt"
        hp = read_checkpoint(last)["hyper_parameters"]
        saved = hp["cfg"].get("distill", {}).get("teacher_checkpoint")
        if teacher_checkpoint and saved and os.path.abspath(teacher_checkpoint) != os.path.abspath(saved):
            raise CheckpointError(f"{last}: this run distils {saved}, not {teacher_checkpoint}")
        teacher_checkpoint = teacher_checkpoint or saved
        # compared with defaults filled in: a run saved before a setting existed resumes with that setting's default
        before, now = (dict(distill_settings(c), teacher_checkpoint=None) for c in (hp["cfg"], cfg))
        if hp["cfg"].get("distill") and before != now:
            changed = {k: (before[k], now[k]) for k in before if before[k] != now[k]}
            raise CheckpointError(f"{last}: this run used other distill settings (saved, asked: {changed})")
    L.seed_everything(cfg.get("train", {}).get("seed", 0), workers=True, verbose=False)
    module = SlotMatchModule(cfg, teacher_checkpoint, run_dir)
    return fit(module, module.cfg, run_dir, resume, progress, model_cfg=student_config(cfg))
