"""Training with Lightning: the SlotContrast teacher (`slotmatch train`).

The module is thin: it calls the model and the losses, logs, and validates with the video metrics.
`slotmatch distill` (distill.py) subclasses it to add the frozen teacher and the SlotMatch loss.
"""

from __future__ import annotations

import math
import os

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from slotmatch import losses, metrics
from slotmatch.checkpoint import FORMAT, CheckpointError, read_checkpoint
from slotmatch.data.dataset import open_dataset
from slotmatch.evaluate import predict_ids
from slotmatch.models import build_model
from slotmatch.models.encoder import target_needs_depth, target_needs_flow
from slotmatch.references import reference_ids
from slotmatch.visualize import overlay, save_image, upscale, video_grid

TRAIN_DEFAULTS = dict(
    max_steps=10000, lr=4e-4, warmup_steps=2500, decay_rate=0.5,  # SlotContrast: exp_decay_with_warmup
    grad_clip=0.05, contrast_weight=0.5, temperature=0.1,  # SlotContrast configs/slotcontrast/movi_c.yaml
    contrast_max_gap=1,  # 1: the paper's loss (frames t, t+1); n > 1 also ties t to t+2..t+n (losses.py)
    val_every=1000, checkpoint_every=500, log_every=10, num_val_videos=None, seed=0, feature_cache=False,
    max_time=None,  # wall-clock budget "DD:HH:MM:SS": stop (and checkpoint) when it is spent; it counts the
                    # whole run, a --resume included (the timer is in the checkpoint): raise it to go on
    decoded_tokens=None,  # decode a random subset of this many patches per step (None: all; see SlotContrast.forward)
    burn_in=0,  # ours (paper: 0): up to this many frames before each clip, run without gradient, hand the clip
                # the model's own carried slots (rollout_slots), so training sees slots as deep into a video as
                # evaluation does, not only fresh from the initialiser (docs/RESULTS.md, "Where the teachers lose")
    init_from=None,  # a checkpoint (.ckpt or .safetensors) whose model weights start this run; fresh optimiser
    select_videos=0,  # ours: hold out the training split's last n videos from training, score them at every
                      # validation, and keep checkpoints/best.ckpt, the step where they score best; the reported
                      # validation split never chooses (docs/RESULTS.md, session 8)
    select_metric="video_mbo",  # what best.ckpt maximises on the held-out videos: video_mbo, video_fg_ari, ...
    mask_entropy=0.0,  # ours (paper: 0): weight of the masks' mean entropy over slots (losses.mask_entropy), a
                       # penalty on masks that blend slots; the entropy is logged (train/mask_entropy) at any weight
    mask_entropy_from=0,  # ours: the step from which the penalty applies; from step 0 it collapses a fresh model
                          # onto one slot (docs/RESULTS.md, session 8), once the slots have found objects it holds them
    mask_entropy_ramp=0,  # ours: over this many steps from mask_entropy_from, the weight grows linearly from 0 to
                          # train.mask_entropy (0: switched on at full weight)
    contrast_anchor=0.0,  # ours (paper: none): weight of losses.slot_anchor_contrast_loss, the clip's slots against
                          # the same slots in the burn-in frames before it (no gradient to those), so each slot keeps
                          # its object over burn-in + clip frames, not only over contrast_max_gap; needs burn_in > 0
    mask_flow=0.0,  # ours (paper: 0): weight of losses.mask_flow_loss, slot attention's masks at frame t carried by
                    # the generator's optical flow against those at t + 1 (training only; data made --with-flow)
    mask_flow_from=0,  # ours: the step from which mask_flow applies (like mask_entropy_from: once slots hold objects)
    ema=0.0,  # ours (paper: none): validate, select and save an exponential moving average of the weights with this
              # decay per step (e.g. 0.995: about the last 200 steps); the raw weights keep training. 0: off
    precision="32-true", devices=1, accelerator="auto",
)


DATA_KEYS = {"path", "preset", "size", "clip_length", "batch_size", "val_batch_size", "val_clip_length",
             "num_workers", "cache_dir"}


def check_keys(section: dict, known, where: str) -> None:
    """A typo in a config key is an error, not a silently ignored setting."""
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + '.' + k for k in unknown)}; "
                         f"known: {', '.join(sorted(known))}")


def train_settings(cfg: dict) -> dict:
    check_keys(cfg.get("train", {}), TRAIN_DEFAULTS, "train")
    check_keys(cfg.get("data", {}), DATA_KEYS, "data")
    return {**TRAIN_DEFAULTS, **cfg.get("train", {})}


TIME_KEYS = ("video", "features", "teacher_features", "depth", "flow", "segmentations")  # batch tensors (B, T, ...)


def batch_frames(batch: dict) -> int:
    """The number of frames T of a batch's (B, T, ...) tensors."""
    return next(batch[k].shape[1] for k in TIME_KEYS if k in batch)


def split_burn_in(batch: dict, burn: int, clip_length: int) -> tuple[dict, dict]:
    """A batch of windows of up to burn_in + clip_length frames -> (its first `burn` frames, the clip_length
    frames after them); other entries are kept in both. The windows start anywhere in the videos, so a clip
    with no burn-in starts anywhere but in a video's last burn_in frames, which clips reach after a burn-in."""
    T = batch_frames(batch)
    if T < clip_length + burn:
        raise ValueError(f"a training window of {T} frames cannot hold a burn-in of {burn} and a clip of {clip_length}")
    head = {k: (v[:, :burn] if k in TIME_KEYS else v) for k, v in batch.items()}
    tail = {k: (v[:, burn:burn + clip_length] if k in TIME_KEYS else v) for k, v in batch.items()}
    return head, tail


def rollout_slots(model, burn: dict, features_key: str = "features") -> torch.Tensor | None:
    """The slots a model carries out of the burn-in frames (no gradient), to start the clip after them
    from (`SlotContrast.forward(prev_slots=...)`); None for an empty burn-in (the clip starts fresh)."""
    slots = rollout(model, burn, features_key)
    return None if slots is None else slots[:, -1]


@torch.no_grad()
def rollout(model, burn: dict, features_key: str = "features") -> torch.Tensor | None:
    """The slots (B, T_burn, K, D) of every burn-in frame, computed in eval mode with no gradient; None for an
    empty burn-in."""
    frames = next((burn[k].shape[1] for k in ("video", features_key) if burn.get(k) is not None), 0)
    if frames == 0:
        return None
    was_training = model.training
    model.eval()  # the slots as evaluation carries them
    try:
        out = model(burn.get("video"), features=burn.get(features_key), depth=burn.get("depth"),
                    flow=burn.get("flow"), segmentations=oracle_input(model, burn), masks_only=True)
    finally:
        model.train(was_training)
    return out["slots"].detach()


def lr_factor(step: int, warmup: int, decay_rate: float, decay_steps: int) -> float:
    """Linear warmup, then exponential decay: decay_rate ** (step / decay_steps) (SlotContrast's schedule)."""
    return min(1.0, (step + 1) / max(warmup, 1)) * decay_rate ** (step / max(decay_steps, 1))


class SlotContrastModule(L.LightningModule):
    """Trains one SlotContrast model with reconstruction + slot-slot contrast (Manasyan et al., 2024, Eq. 4)."""

    uses_feature_cache = True  # training batches may be cached encoder features instead of videos

    def __init__(self, cfg: dict, run_dir: str | None = None):
        super().__init__()
        self.cfg, self.run_dir = cfg, run_dir
        self.ts = train_settings(cfg)
        if self.ts["contrast_anchor"] and not self.ts["burn_in"]:
            raise ValueError("train.contrast_anchor ties a clip's slots to the burn-in frames before it: "
                             "it needs train.burn_in > 0")
        self.model = build_model(cfg["model"])
        self.save_hyperparameters({"format": FORMAT, "cfg": cfg, "model_cfg": cfg["model"], "teacher_cfg": None})
        self._val: list[dict] = []
        self._select: list[dict] = []  # scores on the held-out training videos (train.select_videos)
        self._references: dict | None = None

    # ---- training ----
    def draw_burn_in(self, batch: dict) -> tuple[dict, dict]:
        """(burn-in frames, clip) of a training batch: a burn-in of 0..train.burn_in frames, drawn per step,
        so that clips start both fresh from the initialiser and deep into a rollout."""
        if not self.ts["burn_in"]:
            return {}, batch
        frames = batch_frames(batch)  # videos shorter than the window: a shorter burn-in
        clip = min(self.cfg["data"].get("clip_length", 4) or frames, frames)
        burn = int(torch.randint(0, max(0, min(self.ts["burn_in"], frames - clip)) + 1, (1,)))
        return split_burn_in(batch, burn, clip)

    def compute_losses(self, batch: dict) -> dict:
        burn, batch = self.draw_burn_in(batch)
        burn_slots = rollout(self.model, burn)
        out = self.model(batch.get("video"), features=batch.get("features"), depth=batch.get("depth"),
                         flow=batch.get("flow"), segmentations=oracle_input(self.model, batch),
                         decoded_tokens=self.ts["decoded_tokens"],
                         prev_slots=None if burn_slots is None else burn_slots[:, -1])
        rec = losses.reconstruction_loss(out["reconstruction"], out["target"])
        con = losses.slot_contrast_loss(out["slots"], self.ts["temperature"],
                                        max_gap=self.ts["contrast_max_gap"])
        terms = {"loss": rec + self.ts["contrast_weight"] * con, "rec": rec, "contrast": con, "out": out}
        return self.add_mask_flow(self.add_mask_entropy(self.add_anchor_contrast(terms, burn_slots)), batch)

    def add_anchor_contrast(self, terms: dict, burn_slots: torch.Tensor | None) -> dict:
        """terms with "anchor_contrast" (losses.slot_anchor_contrast_loss of the clip's slots against the burn-in's)
        added to "loss" with weight `train.contrast_anchor`, when that is above 0 (0 on a step without burn-in)."""
        w = self.ts["contrast_anchor"]
        if not w:
            return terms
        anchor = losses.slot_anchor_contrast_loss(terms["out"]["slots"], burn_slots, self.ts["temperature"])
        return {**terms, "loss": terms["loss"] + w * anchor, "anchor_contrast": anchor}

    def add_mask_flow(self, terms: dict, batch: dict) -> dict:
        """terms with "mask_flow" (losses.mask_flow_loss on slot attention's masks) added to "loss" with weight
        `train.mask_flow`, when that is above 0."""
        w = self.ts["mask_flow"]
        if not w or self.global_step < self.ts["mask_flow_from"]:
            return terms
        if batch.get("flow") is None:
            raise ValueError("train.mask_flow needs the data's optical flow: generate the dataset with --with-flow")
        out = terms["out"]
        mf = losses.mask_flow_loss(out["attn"], batch["flow"], out["mask_grid"])
        return {**terms, "loss": terms["loss"] + w * mf, "mask_flow": mf}

    def mask_entropy_weight(self) -> float:
        """The penalty's weight at this step: 0 before `train.mask_entropy_from`, then rising linearly to
        `train.mask_entropy` over `train.mask_entropy_ramp` steps."""
        w, start, ramp = self.ts["mask_entropy"], self.ts["mask_entropy_from"], self.ts["mask_entropy_ramp"]
        if not w or self.global_step < start:
            return 0.0
        return w * min(1.0, (self.global_step - start + 1) / ramp) if ramp > 0 else w

    def add_mask_entropy(self, terms: dict) -> dict:
        """terms with "mask_entropy" (the masks' mean entropy over slots) and, while `mask_entropy_weight` is
        above 0, that weight of it added to "loss"."""
        w = self.mask_entropy_weight()
        with torch.set_grad_enabled(torch.is_grad_enabled() and w > 0):  # only logged: no graph to keep
            ent = losses.mask_entropy(terms["out"]["masks"])
        loss = terms["loss"] + w * ent if w > 0 else terms["loss"]
        return {**terms, "loss": loss, "mask_entropy": ent}

    def training_step(self, batch, batch_idx):
        terms = self.compute_losses(batch)
        n = (batch["video"] if "video" in batch else batch["features"]).shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items() if k != "out"}, prog_bar=True, batch_size=n)
        return terms["loss"]

    def data_targets(self) -> list:
        """The reconstruction targets computed during training: they decide whether batches carry depth or flow."""
        return [self.model.target_type]

    def trainable_parameters(self) -> list:
        """What the optimizer updates (the frozen encoder and, in distillation, the teacher excluded)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.trainable_parameters(), lr=self.ts["lr"])
        ts = self.ts
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, ts["warmup_steps"], ts["decay_rate"], ts["max_steps"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- validation ----
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        """Dataloader 0: the validation split (scores, references, overlays); 1: the held-out training
        videos that choose best.ckpt (`train.select_videos`)."""
        true = batch["segmentations"]  # (B, T, H, W)
        pred = predict_ids(self.model, batch["video"], true.shape[-2:], segmentations=oracle_input(self.model, batch))
        scores = video_scores(pred, true)
        if dataloader_idx == 1:
            self._select.append(scores)
            return
        scores["segments_per_frame"] = metrics.segments_per_frame(pred).cpu().numpy()  # health check, not a score
        self._val.append(scores)
        if batch_idx == 0 and self.run_dir is not None:
            self._save_overlay(batch["video"][:2], true[:2], pred[:2])
        if self._references is None:
            self._reference_batches = getattr(self, "_reference_batches", []) + [(batch["video"], true)]

    def on_validation_epoch_end(self):
        if self._select:
            self.log_dict({f"select/{k}": v for k, v in mean_scores(self._select).items()}, prog_bar=False)
            self._select = []
        if not self._val:
            return
        agg = mean_scores(self._val)
        self._val = []
        self.log_dict({f"val/{k}": v for k, v in agg.items()}, prog_bar=False)
        warn_if_collapsed(agg["segments_per_frame"], self.model.cfg.num_slots, self.global_step,
                          self.ts["warmup_steps"])
        if self._references is None and getattr(self, "_reference_batches", None):
            self._references = {}
            k = self.model.cfg.num_slots
            for name in ("grid", "kmeans-colour"):
                rows = [video_scores(reference_ids(name, v.permute(0, 1, 3, 4, 2), k), t)
                        for v, t in self._reference_batches]
                for m in ("video_fg_ari", "video_mbo"):
                    self._references[f"ref_{name}/{m}"] = float(np.nanmean(np.concatenate([r[m] for r in rows])))
            self._reference_batches = []
        if self._references:
            self.log_dict(self._references)

    def _save_overlay(self, video, true, pred):
        frames = (video.permute(0, 1, 3, 4, 2).float().cpu().numpy() * 255).round().astype(np.uint8)
        rows = []
        for i in range(frames.shape[0]):
            f = upscale(frames[i], max(1, 96 // frames.shape[2]))
            factor = f.shape[1] // frames.shape[2]
            rows += [f, upscale(overlay(frames[i], true[i].cpu().numpy()), factor),
                     upscale(overlay(frames[i], pred[i].cpu().numpy() + 1, skip_background=False), factor)]
        T = frames.shape[1]
        idx = sorted(set(np.linspace(0, T - 1, min(T, 8)).round().astype(int).tolist()))
        path = os.path.join(self.run_dir, "overlays", f"step_{self.global_step:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_image(video_grid(rows, idx), path)


COLLAPSED_SEGMENTS = 1.5  # fewer segments per validation frame than this: the masks sit on one slot


def warn_if_collapsed(segments: float, num_slots: int, step: int, warmup_steps: int = 0) -> bool:
    """Warn (and return True) when, after the warm-up, a validation's frames use fewer than COLLAPSED_SEGMENTS
    segments on average: one slot has the whole image. The runs of docs/RESULTS.md that came to this after
    segmenting did not leave it again (a student in session 9, a teacher in session 15)."""
    if step < warmup_steps or not segments < COLLAPSED_SEGMENTS:
        return False
    rank_zero_warn(f"step {step}: the masks sit on one slot: the validation frames use {segments:.2f} segments of "
                   f"{num_slots} slots on average (val/segments_per_frame), so FG-ARI reads 0. Runs that collapsed "
                   f"like this after segmenting did not recover; best.ckpt (train.select_videos) keeps the best step "
                   f"so far. docs/RESULTS.md names the settings that led there (the mask-entropy penalty with "
                   f"12-frame clips, or with the KD term, on movi-e-like).")
    return True


def oracle_input(model, batch: dict):
    """The ground-truth masks, handed to the model only when it is the "oracle" diagnostic (encoder or target)."""
    return batch.get("segmentations") if model.needs_segmentations else None


def mean_scores(batches: list[dict]) -> dict[str, float]:
    """The mean of each score over the videos of a list of video_scores() results."""
    return {k: float(np.nanmean(np.concatenate([b[k] for b in batches]))) for k in batches[0]}


SCORES = ("video_fg_ari", "video_mbo", "image_fg_ari", "image_mbo")  # what video_scores() returns


def video_scores(pred: torch.Tensor, true: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-video FG-ARI and mBO (video and image variants) as numpy arrays of B values."""
    return {"video_fg_ari": metrics.video_fg_ari(pred, true).cpu().numpy(),
            "video_mbo": metrics.video_mbo(pred, true).cpu().numpy(),
            "image_fg_ari": metrics.image_fg_ari(pred, true).cpu().numpy(),
            "image_mbo": metrics.image_mbo(pred, true).cpu().numpy()}


# ---- data ----
def make_loaders(cfg: dict, model=None, progress: bool = True, targets: list | None = None,
                 teacher=None, teacher_cfg: dict | None = None,
                 model_cfg: dict | None = None) -> tuple[DataLoader, DataLoader | list[DataLoader]]:
    """Training clips (random windows) and whole validation videos, resized to the model's input.

    With `train.select_videos: n`, the training split's last n videos are held out of training and the second
    value is a list: [validation videos, the n held-out videos whole] (they choose best.ckpt).

    With `train.feature_cache: true` and a frozen encoder, training clips are cached encoder features
    (built on first use under `data.path/cache`), so the backbone never runs during training.
    teacher (its model config teacher_cfg): distillation's frozen teacher, whose encoder's features are cached
    too, and served with the same clips as "teacher_features"; model_cfg: the model's config, when not cfg["model"]
    (the student's, in distillation).
    targets: the reconstruction targets to load inputs for (default: the config's model target)."""
    d = cfg["data"]
    size = d.get("size")
    targets = [cfg["model"].get("target")] if targets is None else targets
    mask_flow = train_settings(cfg)["mask_flow"] > 0
    extras = {**({"with_depth": True} if any(target_needs_depth(t) for t in targets) else {}),
              **({"with_flow": True} if mask_flow or any(target_needs_flow(t) for t in targets) else {})}
    clip = d.get("clip_length", 4)
    if clip is not None:
        clip += train_settings(cfg)["burn_in"]  # the burn-in frames come before each clip
    train = open_dataset(d["path"], "train", clip_length=clip, random_clip=True, size=size,
                         **extras)
    if train_settings(cfg).get("feature_cache") and model is not None:
        if not model.encoder.frozen or model.target_type != "features":
            raise ValueError("train.feature_cache needs a frozen encoder whose features are the target")
        from slotmatch.data.feature_cache import (CachedFeatureDataset, build_feature_cache, build_flow_cache, cache_path,
                                                 flow_cache_path)

        whole = open_dataset(d["path"], "train", size=size)
        cache_dir = d.get("cache_dir") or os.path.join(d["path"], "cache")
        ts = train_settings(cfg)
        device = "cuda" if torch.cuda.is_available() and ts["accelerator"] in ("auto", "gpu", "cuda") else "cpu"
        paths = []
        for m, m_cfg in [(model, model_cfg or cfg["model"])] + ([(teacher, teacher_cfg)] if teacher is not None else []):
            paths.append(cache_path(cache_dir, m_cfg, whole, "train"))
            encoder_device = next(m.encoder.parameters()).device
            build_feature_cache(m.encoder.to(device), whole, paths[-1], device=device, progress=progress)
            m.encoder.to(encoder_device)
        flow_path = None
        if mask_flow:  # the loss reads the flow beside the cached features
            with_flow = open_dataset(d["path"], "train", size=size, with_flow=True)
            flow_path = build_flow_cache(with_flow, flow_cache_path(cache_dir, with_flow, "train"), progress=progress)
        train = CachedFeatureDataset(paths[0], clip_length=clip, random_clip=True,
                                     teacher_path=paths[1] if teacher is not None else None, flow_path=flow_path)
    n_select = train_settings(cfg)["select_videos"] or 0
    if n_select:
        if n_select >= len(train):
            raise ValueError(f"train.select_videos={n_select}: {d['path']} has only {len(train)} training videos; "
                             "hold out fewer so that some are left to train on")
        train = torch.utils.data.Subset(train, range(len(train) - n_select))
    val = open_dataset(d["path"], "validation", clip_length=d.get("val_clip_length"), size=size)
    n_val = train_settings(cfg).get("num_val_videos")
    if n_val is not None and n_val < len(val):
        val = torch.utils.data.Subset(val, range(n_val))
    workers = d.get("num_workers", 0)
    train_loader = DataLoader(train, batch_size=d.get("batch_size", 16), shuffle=True, drop_last=len(train) >= d.get("batch_size", 16),
                              num_workers=workers, persistent_workers=workers > 0)
    val_loader = DataLoader(val, batch_size=d.get("val_batch_size", 8), num_workers=0)
    if n_select:
        whole = open_dataset(d["path"], "train", clip_length=d.get("val_clip_length"), size=size)
        held_out = torch.utils.data.Subset(whole, range(len(whole) - n_select, len(whole)))
        val_loader = [val_loader, DataLoader(held_out, batch_size=d.get("val_batch_size", 8), num_workers=0)]
    return train_loader, val_loader


# ---- runs ----
def prepare_run(cfg: dict, run_dir: str, resume: bool, model_cfg: dict | None = None) -> str | None:
    """Create run_dir with config.yaml; on resume, check the config matches and return the last checkpoint."""
    os.makedirs(run_dir, exist_ok=True)
    cfg_path = os.path.join(run_dir, "config.yaml")
    last = os.path.join(run_dir, "checkpoints", "last.ckpt")
    if os.path.exists(last) and not resume:
        raise ValueError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
    if resume:
        if not os.path.exists(last):
            raise ValueError(f"{last}: no checkpoint to resume from")
        hp = read_checkpoint(last)["hyper_parameters"]
        model_cfg = cfg["model"] if model_cfg is None else model_cfg
        if hp["model_cfg"] != model_cfg:
            raise CheckpointError(f"{last}: checkpoint is from another model config than the one given "
                                  f"(saved {hp['model_cfg']}, given {model_cfg})")
        saved, ts = (hp.get("cfg") or {}).get("train", {}), train_settings(cfg)
        saved_burn, saved_ema = saved.get("burn_in", 0), saved.get("ema", 0)
        if saved_burn != ts["burn_in"]:  # the presets changed it: say so, do not switch silently
            raise CheckpointError(f"{last}: the run was trained with train.burn_in={saved_burn}, the config given "
                                  f"has {ts['burn_in']}; pass train.burn_in={saved_burn} to resume it")
        if saved_ema and not ts["ema"]:  # its state_dict is the average: do not train on from it
            raise CheckpointError(f"{last}: the run was trained with train.ema={saved_ema} (its raw weights travel "
                                  f"beside the average); pass train.ema={saved_ema} to resume it")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return last if resume else None


def quiet_lightning() -> None:
    """Hide Lightning's notices that do not concern slotmatch users (tips, device banners, and warnings
    about choices made on purpose: a frozen encoder or teacher in eval mode, clips that are not resumable)."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (r".*LeafSpec.*", r".*smaller than the logging interval.*", r".*module\(s\) in eval mode.*",
                    r".*exists and is not empty.*", r".*dataloader is not resumable.*", r".*dirpath has changed.*",
                    r".*does not have many workers.*", r".*litlogger.*"):
        warnings.filterwarnings("ignore", message=message)


def _run_checkpoint_class():
    from lightning.pytorch.callbacks import ModelCheckpoint

    class RunCheckpoint(ModelCheckpoint):
        """Lightning's ModelCheckpoint that survives a moved or copied run folder: on resume, paths recorded under
        the old checkpoints folder are read as the same files in this one, so best.ckpt keeps its score (Lightning
        would forget it and overwrite best.ckpt with the next, possibly worse, step). A recorded best file that is
        missing here is forgotten, as before."""

        @property
        def state_key(self) -> str:  # ModelCheckpoint's key: runs checkpointed before this class resume as before
            return "ModelCheckpoint" + super().state_key[len(type(self).__qualname__):]

        def load_state_dict(self, state_dict: dict) -> None:
            old = state_dict.get("dirpath", self.dirpath)
            if old and self.dirpath and old != self.dirpath:
                def here(path):
                    if isinstance(path, str) and os.path.dirname(path) == old:
                        return os.path.join(self.dirpath, os.path.basename(path))
                    return path

                moved = dict(state_dict, dirpath=self.dirpath)
                for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                    moved[key] = here(state_dict.get(key))
                moved["best_k_models"] = {here(p): v for p, v in (state_dict.get("best_k_models") or {}).items()}
                if not moved["best_model_path"] or os.path.exists(moved["best_model_path"]):
                    state_dict = moved
            super().load_state_dict(state_dict)

    return RunCheckpoint


def ema_callback(decay: float):
    """Lightning's WeightAveraging with an exponential moving average: validation, overlays, best.ckpt and every
    checkpoint's `state_dict` hold the averaged weights (what evaluate, export and distill read); the raw weights
    travel in the checkpoint as `current_model_state`, so a resumed run keeps training them. The average lives on
    the training device and each step moves only the trained weights (and floating buffers): a frozen encoder or
    teacher is never touched, so it stays bit-exact and costs no time."""
    from lightning.pytorch.callbacks import WeightAveraging

    if not 0.0 < decay < 1.0:
        raise ValueError(f"train.ema={decay}: the decay must lie in (0, 1), e.g. 0.995, or be 0 to switch it off")

    class EMAWeights(WeightAveraging):
        def setup(self, trainer, pl_module, stage):  # on the device the module trains on, not where it was built
            if stage == "fit" and self._device is None:
                self._device = trainer.strategy.root_device
            self._pairs = None
            super().setup(trainer, pl_module, stage)

        def averaged_pairs(self, pl_module) -> tuple[list, list]:
            """(average, current) tensors that move: trained parameters and floating-point buffers. Found at the
            first update, once the module sits on its device (moving a module replaces its buffers)."""
            if self._pairs is None:
                avg = self._average_model.module
                pairs = [(a, w) for a, w in zip(avg.parameters(), pl_module.parameters()) if w.requires_grad]
                pairs += [(a, w) for a, w in zip(avg.buffers(), pl_module.buffers()) if w.is_floating_point()]
                self._pairs = ([a for a, _ in pairs], [w for _, w in pairs])
            return self._pairs

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step <= self._latest_update_step:
                return
            # the first update copies every weight (no device sync to ask, once this fit's pairs are found)
            if self._pairs is None and int(self._average_model.n_averaged) == 0:
                self._average_model.update_parameters(pl_module)
            else:
                with torch.no_grad():  # average + (1 - d)(current - average)
                    average, current = self.averaged_pairs(pl_module)
                    torch._foreach_lerp_(average, [w.detach() for w in current], 1.0 - decay)
                self._average_model.n_averaged += 1
            self._latest_update_step = trainer.global_step

        def on_train_end(self, trainer, pl_module):  # keep the raw weights in the module, so the last.ckpt that
            pass                                     # fit() writes after training still resumes them

    return EMAWeights(use_buffers=True)


def make_trainer(cfg: dict, run_dir: str, progress: bool = True) -> L.Trainer:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    RunCheckpoint = _run_checkpoint_class()

    ts = train_settings(cfg)
    ckpt = RunCheckpoint(dirpath=os.path.join(run_dir, "checkpoints"), filename="step{step:07d}",
                           auto_insert_metric_name=False, every_n_train_steps=ts["checkpoint_every"],
                           save_last=True, save_top_k=1, monitor="step", mode="max")
    callbacks = [ckpt]
    if ts["select_metric"] not in SCORES:
        raise ValueError(f"train.select_metric={ts['select_metric']!r}: choose one of {', '.join(SCORES)}")
    if ts["select_videos"]:  # best.ckpt: the step whose held-out training videos score best
        callbacks.append(RunCheckpoint(dirpath=os.path.join(run_dir, "checkpoints"), filename="best",
                                       auto_insert_metric_name=False, monitor=f"select/{ts['select_metric']}",
                                       mode="max", save_top_k=1, save_on_train_epoch_end=False,
                                       enable_version_counter=False))
    if ts["ema"]:
        callbacks.append(ema_callback(ts["ema"]))
    # a resumed run logs into logs_1, logs_2, ...: Lightning's CSV logger would overwrite an earlier metrics.csv
    n = 0
    while os.path.exists(os.path.join(run_dir, "logs" if n == 0 else f"logs_{n}", "metrics.csv")):
        n += 1
    version = "logs" if n == 0 else f"logs_{n}"
    loggers = [CSVLogger(run_dir, name="", version=version)]
    try:
        loggers.append(TensorBoardLogger(run_dir, name="", version="tensorboard", default_hp_metric=False))
    except ModuleNotFoundError:  # tensorboard is optional at run time
        pass
    return L.Trainer(
        max_steps=ts["max_steps"], max_time=ts["max_time"], val_check_interval=ts["val_every"], check_val_every_n_epoch=None,
        gradient_clip_val=ts["grad_clip"], log_every_n_steps=ts["log_every"], callbacks=callbacks, logger=loggers,
        accelerator=ts["accelerator"], devices=ts["devices"], precision=ts["precision"],
        # a burn-in step starts from carried slots, leaving the initialiser unused: DDP must allow that
        **({"strategy": "ddp_find_unused_parameters_true"} if ts["burn_in"] and ts["devices"] not in (1, "1") else {}),
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=run_dir,
    )


def fit(module: L.LightningModule, cfg: dict, run_dir: str, resume: bool = False, progress: bool = True,
        model_cfg: dict | None = None) -> str:
    """Run (or resume) training; returns the path of the final checkpoint (run_dir/checkpoints/last.ckpt)."""
    ckpt_path = prepare_run(cfg, run_dir, resume, model_cfg)
    quiet_lightning()
    L.seed_everything(train_settings(cfg)["seed"], workers=True, verbose=False)
    teacher = getattr(module, "teacher", None) if module.uses_feature_cache else None
    train_loader, val_loader = make_loaders(cfg, module.model if module.uses_feature_cache else None, progress,
                                            targets=module.data_targets(), teacher=teacher,
                                            teacher_cfg=getattr(module, "teacher_model_cfg", None), model_cfg=model_cfg)
    trainer = make_trainer(cfg, run_dir, progress)
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    last = os.path.join(run_dir, "checkpoints", "last.ckpt")
    trainer.save_checkpoint(last, weights_only=False)  # full state: a later --resume continues from here
    return last


def train(cfg: dict, run_dir: str, resume: bool = False, progress: bool = True) -> str:
    """Train the SlotContrast teacher described by `cfg` into `run_dir`."""
    L.seed_everything(train_settings(cfg)["seed"], workers=True, verbose=False)  # before the weights exist
    module = SlotContrastModule(cfg, run_dir)
    init_from = train_settings(cfg)["init_from"]
    if init_from and not resume:  # a resumed run's checkpoint already holds the weights it reached
        init_weights(module.model, init_from)
    return fit(module, cfg, run_dir, resume, progress)


def init_weights(model: torch.nn.Module, path: str) -> None:
    """Copy the weights of the model saved in `path` (a run's .ckpt or an export) into `model`.

    For fine-tuning with other settings (longer clips, another schedule). The architectures must agree:
    a checkpoint of another model size is a CheckpointError naming the file."""
    from slotmatch.checkpoint import load_model

    source, _ = load_model(path)
    state, own = source.state_dict(), model.state_dict()
    wrong = [k for k in own if k not in state or state[k].shape != own[k].shape]
    extra = [k for k in state if k not in own]
    if wrong or extra:
        raise CheckpointError(f"{path}: its model does not fit this config's model (differs at "
                              f"{', '.join((wrong + extra)[:3])}); train.init_from needs the same architecture")
    model.load_state_dict(state)
