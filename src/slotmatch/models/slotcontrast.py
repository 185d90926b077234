"""The SlotContrast video model (Manasyan et al. 2024, Sec. 3), used as teacher and, lighter, as the
SlotMatch student (Grigore et al. 2025, Sec. 3: same family, smaller encoder).

Per frame t:  features = encoder(frame)                      (frozen DINOv2 in the paper)
              inputs   = MLP(features)                       (LayerNorm [model.input_norm], D -> 2D -> slot_dim)
              slots_t  = SlotAttention(init_t, inputs)       (3 iterations at t = 0, then 2)
              init_t+1 = Predictor(slots_t)                  (init_0 = learned fixed slots)
              masks, reconstruction = MLPDecoder(slots_t)    (reconstructs the target)
The losses live in `slotmatch.losses`; this module computes tensors only.

Hyperparameters of the paper's configs (martius-lab/slotcontrast configs/slotcontrast/*.yaml) are in
`PAPER_PRESETS`.
"""

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .decoder import MLPDecoder
from .encoder import build_encoder, make_target, target_dim, target_needs_segmentations
from .initializer import FixedLearnedInit
from .predictor import TransformerPredictor
from .slot_attention import SlotAttention
from .tracking import check_track_mode, match_slots, permute_slots


@dataclass
class SlotContrastConfig:
    # encoder: {"name": "cnn", ...} or {"name": <timm ViT>, "weights": ..., "frozen": True, ...}
    encoder: dict = field(default_factory=lambda: {"name": "cnn", "channels": 64, "num_layers": 4,
                                                   "patch_size": 4})
    img_size: Union[int, Tuple[int, int]] = 64
    num_slots: int = 7
    slot_dim: int = 64
    mlp_hidden: Optional[int] = None  # encoder MLP hidden size; None: 2 * feature_dim (paper)
    # the LayerNorm that opens the encoder MLP (paper: yes, over DINOv2's 768 channels). Over a few channels
    # already standardised per frame (the offline readout's 16) it erases each token's mean and scale across
    # channels, and with them most of what groups the tokens (docs/RESULTS.md, "The input MLP's LayerNorm")
    input_norm: bool = True
    sa_iters_first: int = 3  # slot-attention iterations on the first frame
    sa_iters: int = 2  # ... on every later frame
    sa_mlp_hidden: Optional[int] = None  # None: 4 * slot_dim
    sa_implicit: bool = False  # detach slots before the last iteration (Chang et al. 2022)
    sa_logits: str = "dot"  # "distance": inputs go to the nearest slot query (slot_attention.py); papers: dot
    predictor_blocks: int = 1
    predictor_heads: int = 4
    predictor_ff: Optional[int] = None  # None: 4 * slot_dim
    predictor_qk_scale: Optional[float] = None  # None: head_dim ** -0.5 (see predictor.py)
    decoder_hidden: Tuple[int, ...] = (1024, 1024, 1024)
    # side of the grid of the decoder's learned positions; None: one per token (the papers). Coarser positions
    # are resampled to the token grid (decoder.py), so a model on many tokens need not learn one per token
    # (ours: a student on the per-pixel teacher's grid, docs/RESULTS.md session 27)
    decoder_pos_grid: Optional[int] = None
    # reconstruction target: "features" (frozen encoder's features, paper), "pixels" (pixel patches
    # normalised per patch), "pixels_raw"; None: "features" if the encoder is frozen, else "pixels"
    target: Optional[str] = None
    # which masks combine the slots' decoded features: "decoder" (the decoder's alpha, the papers) or
    # "attention" (slot attention's own masks; the decoder's alpha is then unused). An experiment: with
    # small objects the alpha masks collapse onto one or two slots (docs/RESULTS.md, "Diagnostic").
    mask_source: str = "decoder"
    # "none" (the papers: the slot index is the identity) or "masks" (ours: re-order each frame's slots so
    # that slot k's attention mask overlaps slot k's of the frame before as much as possible; tracking.py)
    track: str = "none"


def _dinov2(name: str, img_size: int) -> dict:
    return {"name": name, "weights": "timm", "frozen": True, "img_size": img_size}


# Read from martius-lab/slotcontrast configs/slotcontrast/{movi_c,movi_e,ytvis2021}.yaml
PAPER_PRESETS: Dict[str, dict] = {
    "movi_c": dict(encoder=_dinov2("vit_small_patch14_dinov2", 336), img_size=336, num_slots=11,
                   slot_dim=64, mlp_hidden=768, sa_iters_first=3, sa_iters=2, predictor_blocks=1,
                   predictor_heads=4, decoder_hidden=(1024, 1024, 1024), target="features"),
    "movi_e": dict(encoder=_dinov2("vit_base_patch14_dinov2", 336), img_size=336, num_slots=15,
                   slot_dim=128, mlp_hidden=1536, sa_iters_first=3, sa_iters=2, predictor_blocks=1,
                   predictor_heads=4, decoder_hidden=(1024, 1024, 1024), target="features"),
    "ytvis": dict(encoder=_dinov2("vit_base_patch14_dinov2", 518), img_size=518, num_slots=7,
                  slot_dim=64, mlp_hidden=1536, sa_iters_first=3, sa_iters=2, predictor_blocks=1,
                  predictor_heads=4, decoder_hidden=(1024, 1024, 1024), target="features"),
}


class SlotContrast(nn.Module):
    """Video slot model. Input video (B, T, 3, H, W) in [0, 1]."""

    def __init__(self, cfg: SlotContrastConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder, img_size=cfg.img_size)
        self.target_type = cfg.target or ("features" if self.encoder.frozen else "pixels")
        if self.target_type == "features" and not self.encoder.frozen:
            raise ValueError("target 'features' needs a frozen encoder (a trainable encoder "
                             "reconstructing its own features collapses); use target 'pixels'")
        D, S = self.encoder.feature_dim, cfg.slot_dim
        hidden = cfg.mlp_hidden or 2 * D
        self.encoder_mlp = nn.Sequential(nn.LayerNorm(D) if cfg.input_norm else nn.Identity(),
                                         nn.Linear(D, hidden), nn.ReLU(), nn.Linear(hidden, S))
        for layer in (self.encoder_mlp[1], self.encoder_mlp[3]):
            nn.init.zeros_(layer.bias)
        self.initializer = FixedLearnedInit(cfg.num_slots, S)
        self.slot_attention = SlotAttention(S, S, iters=cfg.sa_iters, mlp_hidden=cfg.sa_mlp_hidden,
                                            implicit=cfg.sa_implicit, logits=cfg.sa_logits)
        self.predictor = TransformerPredictor(S, cfg.predictor_blocks, cfg.predictor_heads,
                                              cfg.predictor_ff, cfg.predictor_qk_scale)
        self.grid = self.encoder.grid_size(cfg.img_size)
        self.target_dim = target_dim(self.target_type, self.encoder)
        if cfg.mask_source not in ("decoder", "attention"):
            raise ValueError(f"mask_source must be 'decoder' or 'attention', got {cfg.mask_source!r}")
        check_track_mode(cfg.track)
        self.decoder = MLPDecoder(S, self.target_dim, cfg.decoder_hidden, self.grid,
                                  pos_grid=None if cfg.decoder_pos_grid is None else (cfg.decoder_pos_grid,) * 2)

    def encode(self, video: torch.Tensor, with_target: bool = True, depth: Optional[torch.Tensor] = None,
               flow: Optional[torch.Tensor] = None,
               segmentations: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """video (B, T, 3, H, W) -> features (B, T, N, Dfeat), target (B, T, N, F).

        For a frozen encoder the features can be cached and passed to `forward(features=...)`.
        """
        B, T = video.shape[:2]
        frames = video.flatten(0, 1)  # (B*T, 3, H, W)
        if self.encoder.needs_segmentations:  # the oracle diagnostic
            features = self.encoder(frames, None if segmentations is None else segmentations.flatten(0, 1))
            features = features.unflatten(0, (B, T))
        else:
            features = self.encoder.encode_video(video)  # (B, T, N, Dfeat)
        out = {"features": features}
        if with_target:
            target = make_target(self.target_type, frames, features.flatten(0, 1), self.encoder.patch_size,
                                 *flatten_frames(depth, flow, segmentations))
            out["target"] = target.unflatten(0, (B, T))  # (B, T, N, F)
        return out

    def forward(self, video: Optional[torch.Tensor] = None, prev_slots: Optional[torch.Tensor] = None,
                features: Optional[torch.Tensor] = None, target: Optional[torch.Tensor] = None,
                masks_only: bool = False, depth: Optional[torch.Tensor] = None,
                flow: Optional[torch.Tensor] = None,
                segmentations: Optional[torch.Tensor] = None,
                decoded_tokens: Optional[int] = None,
                prev_attn: Optional[torch.Tensor] = None,
                token_index: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Slots, masks and reconstruction for every frame.

        video: (B, T, 3, H, W) in [0, 1]; may be None when features (and, for a pixel target,
            target) are given.
        prev_slots: (B, K, D) slots of the last frame of the previous chunk of the same video;
            frame 0 then starts from predictor(prev_slots) with the regular iterations, so chunked
            processing equals one pass.
        prev_attn: (B, K, N) slot-attention masks of that frame, for `track: masks` (the first frame is
            then matched to them, so chunked processing still equals one pass).
        features: (B, T, N, Dfeat) cached encoder features: skip the encoder.
        target: (B, T, N, F) cached target (else computed from features or video).
        masks_only: inference fast path; no reconstruction / target in the output.
        depth: (B, T, H, W) depth maps, for the depth and disparity targets.
        flow: (B, T, H, W, 2) optical flow in pixels, for the flow target.
        segmentations: (B, T, H, W) ground truth, only for the "oracle" diagnostic target.
        decoded_tokens: training only: decode a random subset of this many patches (the same for the batch);
            masks, reconstruction and target then cover those patches, listed in "token_index". The decoder
            dominates a small model's step and its loss is a mean over patches, so this cuts the step's cost
            and keeps the loss unbiased.
        token_index: (n,) decode exactly these patches, in this order (as decoded_tokens does at random).
        Returns slots (B, T, K, D), masks (B, T, K, N) decoder masks, attn (B, T, K, N)
        slot-attention masks, reconstruction (B, T, N, F), target (B, T, N, F), mask_grid (h, w).
        """
        if features is None:
            enc = self.encode(video, with_target=(target is None and not masks_only), depth=depth, flow=flow,
                              segmentations=segmentations)
            features = enc["features"]
            target = enc.get("target", target)
        elif target is None and not masks_only:
            frames = None if video is None else video.flatten(0, 1)
            target = make_target(self.target_type, frames, features.flatten(0, 1), self.encoder.patch_size,
                                 *flatten_frames(depth, flow, segmentations)).unflatten(0, features.shape[:2])
        B, T, N, _ = features.shape
        grid = self.token_grid(video)
        assert grid[0] * grid[1] == N, f"{N} tokens do not fit the grid {grid}"

        inputs = self.encoder_mlp(features)  # (B, T, N, D)
        if prev_slots is None:
            slots, iters = self.initializer(B), self.cfg.sa_iters_first
        else:
            slots, iters = self.predictor(prev_slots), self.cfg.sa_iters
        all_slots, all_attn = [], []
        last_attn = prev_attn
        for t in range(T):
            if t > 0:
                slots, iters = self.predictor(slots), self.cfg.sa_iters
            slots, attn = self.slot_attention(slots, inputs[:, t], iters)  # (B, K, D), (B, K, N)
            if self.cfg.track == "masks" and last_attn is not None:
                perm = match_slots(last_attn, attn)
                slots, attn = permute_slots(slots, perm), permute_slots(attn, perm)
            last_attn = attn
            all_slots.append(slots)
            all_attn.append(attn)
        slots = torch.stack(all_slots, dim=1)  # (B, T, K, D)
        attn = torch.stack(all_attn, dim=1)  # (B, T, K, N)

        out = {"slots": slots, "attn": attn, "mask_grid": tuple(grid)}
        if self.cfg.mask_source == "attention" and masks_only:  # the decoder has nothing to add
            out["masks"] = attn
            if token_index is not None:
                out["masks"], out["token_index"] = attn[..., token_index], token_index
            return out
        external = attn.flatten(0, 1) if self.cfg.mask_source == "attention" else None
        index = token_index
        if index is None and decoded_tokens and decoded_tokens < N and not masks_only:
            index = torch.randperm(N, device=features.device)[:decoded_tokens].sort().values
        if index is not None:
            external = None if external is None else external[..., index]
            target = None if target is None else target[:, :, index]
            out["token_index"] = index
        dec = self.decoder(slots.flatten(0, 1), masks_only=masks_only, grid=grid, masks=external, token_index=index)
        out["masks"] = dec["masks"].unflatten(0, (B, T))
        if not masks_only:
            out["reconstruction"] = dec["reconstruction"].unflatten(0, (B, T))  # (B, T, N, F)
            out["target"] = target
        return out

    def token_grid(self, video: Optional[torch.Tensor] = None) -> tuple:
        """(h, w) tokens per frame: for this video's frame size, or for the configured input size."""
        return tuple(self.grid if video is None else self.encoder.grid_size(video.shape[-2:]))

    @property
    def needs_segmentations(self) -> bool:
        """Whether training reads the ground-truth masks: only the oracle diagnostic (encoder or target)."""
        return self.encoder.needs_segmentations or target_needs_segmentations(self.target_type)

    def num_parameters(self) -> Dict[str, object]:
        return count_parameters(self)


def flatten_frames(*maps: Optional[torch.Tensor]) -> list:
    """(B, T, ...) clips flattened to (B*T, ...) frames; None stays None."""
    return [None if m is None else m.flatten(0, 1) for m in maps]


def count_parameters(model: nn.Module) -> Dict[str, object]:
    """{"total": int, "trainable": int, "per_module": {top-level child name: int}}."""
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "per_module": {name: sum(p.numel() for p in m.parameters())
                       for name, m in model.named_children()},
    }


def build_model(cfg: Union[dict, SlotContrastConfig, None] = None) -> SlotContrast:
    """SlotContrast from a config dict (keys of SlotContrastConfig) or a SlotContrastConfig.

    A dict may name a paper preset: {"preset": "movi_e", ...overrides}.
    """
    if isinstance(cfg, SlotContrastConfig):
        return SlotContrast(cfg)
    cfg = dict(cfg or {})
    preset = cfg.pop("preset", None)
    if preset is not None:
        cfg = {**PAPER_PRESETS[preset], **cfg}
    from dataclasses import fields

    unknown = sorted(set(cfg) - {f.name for f in fields(SlotContrastConfig)})
    if unknown:
        raise ValueError(f"unknown model config key(s) {', '.join(unknown)}; known: "
                         f"{', '.join(f.name for f in fields(SlotContrastConfig))}")
    if "decoder_hidden" in cfg:
        cfg["decoder_hidden"] = tuple(cfg["decoder_hidden"])
    if isinstance(cfg.get("img_size"), list):
        cfg["img_size"] = tuple(cfg["img_size"])
    return SlotContrast(SlotContrastConfig(**cfg))


def config_to_dict(cfg: SlotContrastConfig) -> dict:
    """Plain dict (for checkpoints / YAML); build_model(config_to_dict(c)) rebuilds the model."""
    d = asdict(cfg)
    d["decoder_hidden"] = list(d["decoder_hidden"])
    return d
