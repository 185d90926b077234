"""Frame encoders: images -> patch features on a grid, plus the reconstruction target.

SlotContrast (Manasyan et al. 2024, Sec. 3 "Feature extraction"; code: martius-lab/slotcontrast,
`TimmExtractor` + `FrameEncoder`) takes the output of the *last block* of a frozen DINOv2 ViT
(config key `vit_block12`: `blocks.11`, before the final LayerNorm, CLS token dropped) both as the
input of slot attention (after a 2-layer MLP, see `slotcontrast.py`) and as the reconstruction
target. `TimmViTEncoder` is that backbone. It never asks timm to download anything: weights come from
a local file or from the Hugging Face cache that timm would use.

For the offline default, `CNNEncoder` is a small conv net trained jointly with the slots (no
pretrained weights); it reconstructs `pixel_patch_target` (raw pixel patches, normalised per
patch) because reconstructing its own trainable features would collapse.

Every encoder maps (B, 3, H, W) images in [0, 1] to (B, N, D) tokens, N = h * w on a grid, and has
`feature_dim`, `patch_size`, `frozen` and `grid_size(img_size) -> (h, w)`.
"""

import math
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A target is "features" or "+"-joined parts, concatenated per patch in the order given.
TARGET_PARTS = ("pixels", "pixels_raw", "depth", "disparity", "relief", "surface", "figure", "flow", "oracle")
TARGET_TYPES = ("features", "pixels", "pixels_raw", "depth", "pixels_raw+depth", "disparity",
                "pixels_raw+disparity", "flow", "disparity+flow", "pixels_raw+flow", "relief",
                "relief+flow", "surface+relief")  # the ones measured


def target_parts(target: Optional[str]) -> list:
    """The parts of a target name ("disparity+flow" -> ["disparity", "flow"]); a ValueError if unknown."""
    if target == "features":
        return ["features"]
    parts = str(target).split("+")
    if not parts or any(p not in TARGET_PARTS for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"unknown target {target!r}: 'features', or '+'-joined parts of {', '.join(TARGET_PARTS)}")
    return parts


def target_needs_depth(target: Optional[str]) -> bool:
    """Whether a reconstruction target is computed from the generator's depth maps."""
    return target is not None and any(p in str(target).split("+")
                                      for p in ("depth", "disparity", "relief", "surface", "figure"))


def target_needs_segmentations(target: Optional[str]) -> bool:
    """Whether a target reads the ground-truth masks: the "oracle" diagnostic, never a result."""
    return target is not None and "oracle" in str(target).split("+")


def target_needs_flow(target: Optional[str]) -> bool:
    """Whether a reconstruction target is computed from the generator's optical flow."""
    return target is not None and "flow" in str(target).split("+")


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained encoder weights are not on this machine (and will not be downloaded)."""


def _to_2tuple(x: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    h, w = x
    return (int(h), int(w))


class Encoder(nn.Module):
    """Interface shared by all encoders: (B, 3, H, W) in [0, 1] -> (B, N, feature_dim)."""

    feature_dim: int
    patch_size: int
    frozen: bool
    needs_segmentations: bool = False  # only the oracle diagnostic reads the ground truth
    context: int = 0  # neighbouring frames on each side that each frame is encoded with (`stack_context`)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, 3, H, W) -> tokens (B, T, N, feature_dim): each frame with its `context` neighbours."""
        B, T = video.shape[:2]
        return self(stack_context(video, self.context).flatten(0, 1)).unflatten(0, (B, T))

    def grid_size(self, img_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
        """Token grid (h, w) for an input of img_size (int or (H, W))."""
        H, W = _to_2tuple(img_size)
        return (H // self.patch_size, W // self.patch_size)


def stack_context(video: torch.Tensor, context: int) -> torch.Tensor:
    """video (B, T, 3, H, W) -> (B, T, 3 * (2 * context + 1), H, W): frame t with frames t - context .. t + context
    stacked on the channels in time order, the first and last frame repeated past the ends of the video."""
    if context == 0:
        return video
    T = video.shape[1]
    index = (torch.arange(T).unsqueeze(1) + torch.arange(-context, context + 1)).clamp(0, T - 1)  # (T, 2c + 1)
    return video[:, index].flatten(2, 3)


def position_grid(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """(h * w, 4) patch positions (y, x, 1 - y, 1 - x) in [0, 1], row-major: the soft position code
    (Locatello et al. 2020) of the CNN encoder and of the oracle diagnostic."""
    yy, xx = torch.meshgrid(torch.linspace(0.0, 1.0, h, device=device, dtype=dtype),
                            torch.linspace(0.0, 1.0, w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([yy, xx, 1 - yy, 1 - xx], dim=-1).reshape(h * w, 4)


# ----------------------------------------------------------------------------------------------
# Reconstruction targets


def pixel_patch_target(images: torch.Tensor, patch_size: int, normalize: bool = True,
                       eps: float = 1e-6) -> torch.Tensor:
    """Pixels of each non-overlapping patch, flattened; optionally normalised per patch (MAE-style).

    images: (B, 3, H, W) in [0, 1] -> (B, N, 3 * p * p), N = (H // p) * (W // p), row-major grid.
    """
    p = patch_size
    B, C, H, W = images.shape
    h, w = H // p, W // p
    x = images[:, :, : h * p, : w * p].reshape(B, C, h, p, w, p)
    x = x.permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, C * p * p)  # (B, N, 3*p*p)
    if normalize:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        x = (x - mean) / (var + eps).sqrt()
    return x


def depth_patch_target(depth: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Log depth of each patch, centred per frame and scaled to unit-ish range (SAVi++-style depth target).

    depth: (B, H, W) positive distances -> (B, N, p * p).
    """
    p = patch_size
    B, H, W = depth.shape
    h, w = H // p, W // p
    d = torch.log(depth[:, : h * p, : w * p].clamp_min(1e-3))
    d = (d - d.mean(dim=(1, 2), keepdim=True)) * 4.0
    return d.reshape(B, h, p, w, p).permute(0, 1, 3, 2, 4).reshape(B, h * w, p * p)


def _disparity(depth: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse depth (B, H, W) -> (B, H', W'), cropped to whole patches of size p."""
    return 1.0 / depth[:, : depth.shape[1] // p * p, : depth.shape[2] // p * p].clamp_min(1e-3)


def disparity_patch_target(depth: torch.Tensor, patch_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Inverse depth (disparity) of each patch, standardised per frame.

    The floor, or any plane, has a disparity that is an affine function of the pixel coordinates, whatever
    the camera's pose (1/z = n.(x, y, 1) / d for a plane n.X = d): one slot with a position embedding draws
    it exactly, so the decoder's cheapest explanation gives the floor one slot and each object its own.
    Standardising per frame is affine too, so it keeps that property.
    depth: (B, H, W) positive z-depths -> (B, N, p * p).
    """
    p = patch_size
    B, H, W = depth.shape
    h, w = H // p, W // p
    d = _disparity(depth, p)
    d = (d - d.mean(dim=(1, 2), keepdim=True)) / (d.std(dim=(1, 2), keepdim=True) + eps)
    return d.reshape(B, h, p, w, p).permute(0, 1, 3, 2, 4).reshape(B, h * w, p * p)


def floor_plane(disparity: torch.Tensor, iters: int = 4) -> torch.Tensor:
    """The dominant plane of each frame's disparity, fitted robustly: (B, H, W) -> (B, H, W).

    A plane's disparity is affine in the pixel coordinates (`disparity_patch_target`), so a weighted least
    squares fit d ~ a u + b v + c, refitted on the pixels close to it (within 3 median absolute residuals),
    finds the floor whenever the floor covers most of the frame, as in MOVi and the generator's scenes.
    """
    B, H, W = disparity.shape
    v, u = torch.meshgrid(torch.linspace(-1, 1, H, device=disparity.device, dtype=torch.float64),
                          torch.linspace(-1, 1, W, device=disparity.device, dtype=torch.float64), indexing="ij")
    A = torch.stack([u, v, torch.ones_like(u)], -1).reshape(1, H * W, 3).expand(B, -1, -1)
    d = disparity.double().reshape(B, H * W, 1)
    weights = torch.ones(B, H * W, 1, dtype=torch.float64, device=disparity.device)
    for _ in range(iters):
        Aw = A * weights
        coef = torch.linalg.solve(Aw.transpose(1, 2) @ A + 1e-9 * torch.eye(3, dtype=torch.float64, device=d.device),
                                  Aw.transpose(1, 2) @ d)  # (B, 3, 1)
        residual = (d - A @ coef).abs()
        mad = residual.median(dim=1, keepdim=True).values
        weights = (residual <= 3 * mad + 1e-12).double()
    return (A @ coef).reshape(B, H, W).to(disparity.dtype)


def relief_patch_target(depth: torch.Tensor, patch_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Disparity minus the floor's plane (`floor_plane`), in units of the frame's disparity spread: what
    stands out of the floor. The floor is 0 wherever it is seen, objects are bumps of 1-3 units, so the
    reconstruction loss is spent on the objects (about 9% of the pixels), not on drawing the floor.
    Derived from depth alone, like "disparity"; the planar floor is the only assumption.
    depth: (B, H, W) positive z-depths -> (B, N, p * p).
    """
    p = patch_size
    r = _relief(depth, p, eps)
    B, H, W = r.shape
    return r.reshape(B, H // p, p, W // p, p).permute(0, 1, 3, 2, 4).reshape(B, (H // p) * (W // p), p * p)


def _relief(depth: torch.Tensor, p: int = 1, eps: float = 1e-6) -> torch.Tensor:
    """Disparity minus the floor's plane over the frame's disparity spread: (B, H, W) -> (B, H', W'), cropped
    to whole patches of size p (`relief_patch_target`, `surface_colour`)."""
    d = _disparity(depth, p)
    return (d - floor_plane(d)) / (d.std(dim=(1, 2), keepdim=True) + eps)


SURFACE_RADIUS = 3  # pixels of a 64-pixel-wide frame (scaled with the frame's width): 7x7 at 64 px
SURFACE_SIGMA = 0.3  # relief units (the frame's disparity spread): the floor (0) and objects (1-3) do not mix


def surface_colour(images: torch.Tensor, depth: torch.Tensor, radius: Optional[int] = None,
                   sigma: float = SURFACE_SIGMA, relief: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Each pixel's colour averaged over its neighbours on the same surface: a bilateral filter whose range
    kernel is on the relief above the floor (`relief_patch_target`), not on colour.

    Within an object the texture averages out towards the object's mean colour, the floor's checks towards
    the floor's, and the two never mix, because they stand at different heights. A pretext that predicts it
    from the frame alone must know how far each object extends: what k-means needs to tell objects apart
    (docs/RESULTS.md, "Surface colour"). Reads depth, never the masks.
    images (B, 3, H, W) in [0, 1], depth (B, H, W) of the same size -> (B, 3, H, W); relief: `_relief(depth)`
    when the caller has it already.
    """
    B, _, H, W = images.shape
    r = radius if radius is not None else max(1, round(SURFACE_RADIUS * W / 64))
    rel = (_relief(depth) if relief is None else relief).unsqueeze(1)  # (B, 1, H, W)
    # one shifted view per neighbour, summed in place: no (B, 3, k * k, H * W) unfold (7.4x faster on one CPU thread;
    # benchmarks/bench_surface_colour.py); the out-of-place sums keep a graph when an input needs one
    grad = torch.is_grad_enabled() and (images.requires_grad or rel.requires_grad)
    padded_cols = F.pad(images, (r, r, r, r))
    padded_rel = F.pad(rel, (r, r, r, r))
    inside = F.pad(torch.ones_like(rel[:1]), (r, r, r, r))  # not the zero padding
    scale = -1.0 / (2 * sigma ** 2)
    num, den = torch.zeros_like(images), torch.zeros_like(rel)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            window = (slice(None), slice(None), slice(dy, dy + H), slice(dx, dx + W))
            diff = padded_rel[window] - rel
            if grad:
                w = torch.exp(diff ** 2 * scale) * inside[window]
                num, den = num + padded_cols[window] * w, den + w
            else:
                w = diff.square_().mul_(scale).exp_().mul_(inside[window])
                num.addcmul_(padded_cols[window], w)
                den.add_(w)
    return num / den


def surface_patch_target(images: torch.Tensor, depth: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`surface_colour` as patches, like "pixels_raw": (B, 3, H, W), (B, H, W) -> (B, N, 3 * p * p)."""
    return pixel_patch_target(surface_colour(images, depth), patch_size, normalize=False)


FIGURE_RELIEF = 0.5  # relief units: the floor is 0, objects stand 1-3 units out of it
FIGURE_SOFTNESS = 0.1


def standing(relief: torch.Tensor) -> torch.Tensor:
    """How surely each value of a relief map (`relief_patch_target`, `_relief`) stands out of the floor: a soft
    step at FIGURE_RELIEF, 0 on the floor, 1 on objects; any shape -> the same shape."""
    return torch.sigmoid((relief - FIGURE_RELIEF) / FIGURE_SOFTNESS)


def figure_colour(images: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """The figure against the ground: each pixel's surface colour (`surface_colour`) where it stands out of
    the floor, 0 on the floor, and how surely it stands out (a soft step on the relief at FIGURE_RELIEF).

    The floor's checks, which `surface_colour` keeps, become one flat value, so that what varies is the
    objects and only they. It does not help k-means (docs/RESULTS.md, "Three things that did not help").
    Reads depth, never the masks.
    images (B, 3, H, W) in [0, 1], depth (B, H, W) -> (B, 4, H, W): colour x standing, standing.
    """
    relief = _relief(depth)  # the floor's plane is fitted once, for both parts
    up = standing(relief).unsqueeze(1)
    return torch.cat([surface_colour(images, depth, relief=relief) * up, up], 1)


def figure_patch_target(images: torch.Tensor, depth: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`figure_colour` as patches: (B, 3, H, W), (B, H, W) -> (B, N, 4 * p * p)."""
    return pixel_patch_target(figure_colour(images, depth), patch_size, normalize=False)


FLOW_SCALE = 64.0  # flow target = flow in image widths x 64: pixels of a 64-pixel-wide frame


def flow_patch_target(flow: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Optical flow of each patch, in image widths (x FLOW_SCALE), so the target does not depend on
    the resolution. Unlike depth it is not standardised per frame: a still frame has zero flow.

    flow: (B, H, W, 2) in pixels (dx, dy) -> (B, N, 2 * p * p).
    """
    p = patch_size
    B, H, W, _ = flow.shape
    h, w = H // p, W // p
    f = flow[:, : h * p, : w * p] * (FLOW_SCALE / W)
    return f.reshape(B, h, p, w, p, 2).permute(0, 1, 3, 5, 2, 4).reshape(B, h * w, 2 * p * p)


ORACLE_DIM = 8


def oracle_patch_target(segmentations: torch.Tensor, patch_size: int) -> torch.Tensor:
    """A DIAGNOSTIC target that reads the ground truth: every instance id gets a fixed random unit code
    (background too), averaged over each patch. Features that separate objects perfectly: a model that
    fails to segment with this target has a problem in slot attention, the decoder or the grid, not in
    its features. Never a result: the ground truth is an input here.

    segmentations: (B, H, W) ids -> (B, N, ORACLE_DIM).
    """
    g = torch.Generator().manual_seed(0)
    codes = F.normalize(torch.randn(256, ORACLE_DIM, generator=g), dim=-1).to(segmentations.device)
    p = patch_size
    B, H, W = segmentations.shape
    h, w = H // p, W // p
    x = codes[segmentations[:, : h * p, : w * p].long().clamp(0, 255)]  # (B, H, W, D)
    return x.reshape(B, h, p, w, p, ORACLE_DIM).mean(dim=(2, 4)).reshape(B, h * w, ORACLE_DIM)


def target_dim(target: str, encoder: Encoder) -> int:
    """Feature size F of the reconstruction target for this encoder."""
    p2 = encoder.patch_size ** 2
    sizes = {"features": encoder.feature_dim, "pixels": 3 * p2, "pixels_raw": 3 * p2, "depth": p2,
             "disparity": p2, "relief": p2, "surface": 3 * p2, "figure": 4 * p2, "flow": 2 * p2, "oracle": ORACLE_DIM}
    return sum(sizes[part] for part in target_parts(target))


def make_target(target: str, images: Optional[torch.Tensor], features: Optional[torch.Tensor],
                patch_size: int, depth: Optional[torch.Tensor] = None,
                flow: Optional[torch.Tensor] = None, segmentations: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The tensor the decoder reconstructs, never carrying gradients.

    images: (B, 3, H, W) or None; features: (B, N, D) backbone features or None -> (B, N, F).
    "features": the (frozen) backbone features themselves (SlotContrast / DINOSAUR); otherwise
    "+"-joined parts, concatenated: "pixels" (pixel patches normalised per patch), "pixels_raw" (as
    they are), "depth" (log-depth), "disparity" (inverse depth, standardised per frame), "relief" (disparity above the floor's plane), "surface"
    (colour averaged over the pixel's own surface, `surface_colour`), "figure" (that colour where the pixel
    stands out of the floor, 0 on the floor, and the soft standing mask, `figure_colour`), from
    depth (B, H, W) of the generator's --with-depth, and "flow" (optical flow, flow (B, H, W, 2) in
    pixels, from --with-flow); "oracle" reads the ground-truth masks (segmentations (B, H, W)), a
    diagnostic of the model, never a result (`oracle_patch_target`).
    """
    parts = target_parts(target)
    if parts == ["features"]:
        if features is None:
            raise ValueError("target 'features' needs the backbone features")
        return features.detach()
    out = []
    with torch.no_grad():
        for part in parts:
            if part in ("pixels", "pixels_raw"):
                if images is None:
                    raise ValueError(f"target {target!r} needs the input images")
                out.append(pixel_patch_target(images, patch_size, normalize=(part == "pixels")))
            elif part in ("depth", "disparity", "relief"):
                if depth is None:
                    raise ValueError(f"target {target!r} needs depth maps (generate the data with --with-depth)")
                fn = {"depth": depth_patch_target, "disparity": disparity_patch_target, "relief": relief_patch_target}[part]
                out.append(fn(depth, patch_size))
            elif part in ("surface", "figure"):
                if images is None or depth is None:
                    raise ValueError(f"target {target!r} needs the input images and depth maps (--with-depth)")
                fn = surface_patch_target if part == "surface" else figure_patch_target
                out.append(fn(images, depth, patch_size))
            elif part == "flow":
                if flow is None:
                    raise ValueError(f"target {target!r} needs optical flow (generate the data with --with-flow)")
                out.append(flow_patch_target(flow, patch_size))
            elif part == "oracle":
                if segmentations is None:
                    raise ValueError(f"target {target!r} needs the ground-truth masks")
                out.append(oracle_patch_target(segmentations, patch_size))
    return out[0] if len(out) == 1 else torch.cat(out, -1)


# ----------------------------------------------------------------------------------------------
# timm ViT (DINOv2) backbone


def _hub_offline() -> bool:
    """Offline unless HF_HUB_OFFLINE is explicitly set to a false value ("0", "false", "no")."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return True
    return value.strip().lower() not in ("0", "false", "no", "off")


def _how_to_provide(name: str, url: Optional[str], hf_id: Optional[str]) -> str:
    lines = [
        "Provide the weights in one of these ways:",
        "  - encoder weights=/path/to/file: a timm state dict (.safetensors or .pth) "
        "or the official DINOv2 .pth" + (f" ({url})" if url else ""),
    ]
    if hf_id:
        lines.append(
            f"  - put timm's file in the Hugging Face cache (e.g. on a machine with network: "
            f"`hf download {hf_id} model.safetensors`, then copy ~/.cache/huggingface/hub)")
        lines.append("  - or allow a download with HF_HUB_OFFLINE=0 and weights='timm'")
    return "\n".join(lines)


def _resolve_timm_cache(model: nn.Module, name: str) -> Path:
    """Path of the cached HF hub file for this timm model; raise fast if it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    cfg = getattr(model, "pretrained_cfg", {}) or {}
    hf_id = cfg.get("hf_hub_id")
    url = cfg.get("url")
    if not hf_id:
        raise WeightsNotFoundError(
            f"timm model {name!r} has no Hugging Face hub id, so weights='timm' cannot find it.\n"
            + _how_to_provide(name, url, None))
    filename = cfg.get("hf_hub_filename") or "model.safetensors"
    candidates = [filename] if filename != "model.safetensors" else [
        "model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
    for fn in candidates:
        path = try_to_load_from_cache(hf_id, fn)  # local lookup only, never the network
        if isinstance(path, str) and os.path.isfile(path):
            return Path(path)
    if not _hub_offline():
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(hf_id, filename))
    from huggingface_hub import constants

    raise WeightsNotFoundError(
        f"weights for timm model {name!r} ({hf_id}/{filename}) are not in the Hugging Face cache "
        f"{constants.HF_HUB_CACHE}, and downloads are off (HF_HUB_OFFLINE unset or true).\n"
        + _how_to_provide(name, url, hf_id))


def load_state_dict_file(path: Union[str, Path]) -> dict:
    """Read a state dict from .safetensors or a torch checkpoint; unwrap 'model'/'state_dict'."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def load_timm_weights(model: nn.Module, state_dict: dict, source: str = "") -> None:
    """Load a timm or official-DINOv2 state dict into a timm model.

    timm's own checkpoint filter maps DINOv2 keys (mask_token, w12/w3, registers) and resamples
    pos_embed to the model's grid (bicubic). The classifier head may be dropped; nothing else.
    """
    import sys

    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    unexpected = [k for k in unexpected if not k.startswith(("head.", "fc_norm.", "head_drop"))]
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise RuntimeError(
            f"weights {source} do not fit the model: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}")


class TimmViTEncoder(Encoder):
    """A timm ViT returning the patch tokens of one block (default: the last), prefix tokens dropped.

    name: any timm ViT name (`vit_base_patch14_dinov2`, `vit_small_patch14_dinov2`, ...).
    weights: None (random init), "timm" (timm's HF cache; download only if HF_HUB_OFFLINE=0),
        or a path to a .safetensors / .pth file (timm keys or the official DINOv2 keys).
    block: index of the block whose output is returned (None: last, SlotContrast's `vit_block12`).
    final_norm: apply the ViT's final LayerNorm (SlotContrast: no).
    model_kwargs: extra timm.create_model arguments (e.g. depth, embed_dim, num_heads, patch_size).
    Input (B, 3, H, W) in [0, 1]; ImageNet normalisation is done inside.
    """

    def __init__(self, name: str, weights: Optional[str] = None, frozen: bool = True,
                 img_size: Union[int, Sequence[int]] = 224, block: Optional[int] = None,
                 final_norm: bool = False, model_kwargs: Optional[dict] = None):
        super().__init__()
        import timm

        self.name = name
        self.img_size = _to_2tuple(img_size)
        kwargs = dict(model_kwargs or {})
        self.vit = timm.create_model(name, pretrained=False, img_size=self.img_size,
                                     num_classes=0, **kwargs)
        if weights is not None:
            if str(weights) == "timm":
                path = _resolve_timm_cache(self.vit, name)
            else:
                path = Path(weights).expanduser()
                if not path.is_file():
                    cfg = getattr(self.vit, "pretrained_cfg", {}) or {}
                    raise WeightsNotFoundError(
                        f"encoder weight file not found: {path}\n"
                        + _how_to_provide(name, cfg.get("url"), cfg.get("hf_hub_id")))
            load_timm_weights(self.vit, load_state_dict_file(path), source=str(path))
        self.weights = None if weights is None else str(weights)

        depth = len(self.vit.blocks)
        self.block = depth - 1 if block is None else (block % depth)
        self.final_norm = final_norm
        self.feature_dim = self.vit.embed_dim
        ps = self.vit.patch_embed.patch_size
        self.patch_size = ps[0] if isinstance(ps, (tuple, list)) else int(ps)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        self.frozen = frozen
        if frozen:
            self.vit.requires_grad_(False)
            self.vit.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.vit.eval()  # a frozen backbone stays in eval mode (no dropout / drop-path)
        return self

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        (out,) = self.vit.forward_intermediates(
            x, indices=[self.block], norm=self.final_norm, stop_early=True,
            output_fmt="NLC", intermediates_only=True)
        return out  # (B, N, D), prefix (cls / register) tokens already removed

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] -> (B, N, D) patch tokens."""
        if self.frozen:
            with torch.no_grad():
                return self._features(images)
        return self._features(images)


# ----------------------------------------------------------------------------------------------
# Small CNN trained from scratch (offline default)


class CNNEncoder(Encoder):
    """Small conv net trained jointly with the slots (Slot Attention paper / SAVi style).

    log2(patch_size) stride-2 convs then stride-1 convs, ReLU; then a soft position embedding
    (linear map of the (y, x, 1-y, 1-x) grid coordinates, Locatello et al. 2020) is added.
    `deep_patch_size` > patch_size: the deep layers work at that stride and a lateral 1x1 conv adds the
    features of the layer at stride patch_size to them, upsampled: a finer token grid at little cost. With
    patch_size 1 a first layer at full resolution gives those features (one token per pixel).
    `weights` loads a pretrained one (`slotmatch pretrain`), usually with `frozen=True`: the offline
    stand-in for the paper's frozen DINOv2.
    `readout` ("+"-joined parts of the pretext, e.g. "surface+relief", optionally "+position"): the tokens are
    the pretrained linear head's predictions of those pretext parts (the file must hold the head, as
    `slotmatch pretrain` writes it), plus the patch's (y, x, 1 - y, 1 - x) for "position", instead of the
    CNN's features: the few directions of the feature space that carry what the pretext taught. `pretext` (what the
    head predicts, read from the file's metadata when `weights` is given) lets a readout encoder be built without its
    file, for a checkpoint that holds its weights.
    `standardize`: each output channel is standardised over the frame's tokens (zero mean, unit variance per frame,
    no parameters): every channel then weighs alike in the reconstruction loss, as in k-means on standardised
    features; without it the loss follows the channels' raw scales (docs/RESULTS.md, "Reading the frozen encoder through its pretext head").
    `unpack` (with a readout): the tokens are the readout's per-pixel predictions, one token per pixel of the
    patch_size x patch_size patch (each pretext part predicts its values for every pixel of the patch), so the token
    grid is the frame's pixel grid (`patch_size` becomes 1) and the masks can follow object edges finer than a
    patch; "position" is then the pixel's.
    `context` > 0: each frame is seen with its `context` neighbours on each side (`stack_context`, through
    `encode_video`), so the CNN can use motion: what moves against the floor is an object.
    `guided_surface` (with a readout that has "surface", pretrained on relief too): the surface part is not the
    head's prediction but `surface_colour` of the frame itself under the head's predicted relief (in place of
    depth's): the frame's colours averaged over each surface, as the pretext target is, so its edges are the
    frame's own, not the CNN's blurred ones (docs/RESULTS.md, session 18).
    `part_weights` (with a readout; e.g. {relief: 0.5}): those parts' channels times the weight, after `standardize`,
    so a part weighs more or less than one standardised channel per value in what slot attention compares and in the
    reconstruction (benchmarks/feature_kmeans.py --part-weight measures it for k-means).
    `refine_layers` n > 0: n 3x3 conv + ReLU layers on the output grid after the lateral merge, so that the fine
    layer's detail and the deep layers' context combine non-linearly before the readout (a U-Net-like decoder).
    (B, 3 * (2 * context + 1), H, W) in [0, 1] -> (B, (H/p)*(W/p), channels), or the readout's size.
    """

    def __init__(self, channels: int = 64, num_layers: int = 4, patch_size: int = 4,
                 kernel_size: int = 5, frozen: bool = False, img_size=None, weights: Optional[str] = None,
                 deep_patch_size: Optional[int] = None, readout: Optional[str] = None, pretext: Optional[str] = None,
                 standardize: bool = False, context: int = 0, unpack: bool = False, refine_layers: int = 0,
                 guided_surface: bool = False, part_weights: Optional[dict] = None):
        super().__init__()
        if int(context) != context or context < 0:
            raise ValueError(f"encoder context must be a whole number of frames >= 0, got {context!r}")
        self.context = int(context)
        deep = deep_patch_size or patch_size
        n_out, n_down = int(round(math.log2(patch_size))), int(round(math.log2(deep)))
        if 2 ** n_out != patch_size or 2 ** n_down != deep or deep < patch_size or n_down > num_layers:
            raise ValueError(f"patch_size and deep_patch_size must be powers of 2 with patch_size <= deep_patch_size "
                             f"<= 2**num_layers, got {patch_size} and {deep_patch_size}")
        # patch_size 1 below a coarser deep grid: a first layer at full resolution, whose features the lateral adds
        full_res = int(patch_size == 1 and deep > 1)
        if n_down + full_res > num_layers:
            raise ValueError(f"patch_size 1 with deep_patch_size {deep} needs at least {n_down + 1} layers")
        layers, c_in = [], 3 * (2 * self.context + 1)
        for i in range(num_layers):
            stride = 2 if full_res <= i < n_down + full_res else 1
            layers += [nn.Conv2d(c_in, channels, kernel_size, stride, padding=kernel_size // 2),
                       nn.ReLU(inplace=True)]
            c_in = channels
        self.convs = nn.Sequential(*layers)
        # a finer output grid than the deep layers': the deep features are upsampled to it and the features of the
        # layer at that stride are added through a 1x1 conv (a one-level feature pyramid): fine masks, cheap layers
        self.fine_layer = 2 * (n_out + full_res) - 1 if deep != patch_size else None  # index of that layer's ReLU
        self.lateral = nn.Conv2d(channels, channels, 1) if self.fine_layer is not None else None
        if int(refine_layers) != refine_layers or refine_layers < 0:
            raise ValueError(f"encoder refine_layers must be a whole number >= 0, got {refine_layers!r}")
        # convs on the output grid after the merge: the fine features and the upsampled deep ones combine through
        # non-linear layers, as in a U-Net's decoder, not only by the lateral's sum
        self.refine = nn.Sequential(*[m for _ in range(int(refine_layers)) for m in (
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))]) if refine_layers else None
        self.deep_patch_size = deep
        self.pos = nn.Linear(4, channels)
        self.feature_dim = channels
        self.patch_size = patch_size
        self.frozen = frozen
        self.standardize = standardize
        self.readout_names, self.readout_parts, self.readout = None, None, None
        if readout and not weights:
            if not pretext:
                raise ValueError(f"encoder readout {readout!r} reads a pretrained pretext head: give the encoder's weights")
            self._build_readout(readout, pretext, "the config")  # its weights come from a checkpoint
        if weights:  # `slotmatch pretrain`'s encoder.safetensors
            if not os.path.isfile(weights):
                raise WeightsNotFoundError(
                    f"CNN encoder weights not found: {weights}. They are made on the generator's data by "
                    f"`slotmatch pretrain --config CONFIG --out FOLDER` (add --student for the student's encoder); "
                    f"see README.md, 'Frozen pretrained encoders'")
            sd = load_state_dict_file(weights)
            head = {k[len("readout."):]: sd.pop(k) for k in list(sd) if k.startswith("readout.")}
            try:
                self.load_state_dict(sd)
            except RuntimeError as e:
                shapes = {k: tuple(v.shape) for k, v in sd.items()}
                raise ValueError(f"{weights} does not fit a CNN encoder with channels={channels}, "
                                 f"num_layers={num_layers}, patch_size={patch_size}, kernel_size={kernel_size}, "
                                 f"context={self.context}, refine_layers={refine_layers} "
                                 f"(the file holds {shapes}): {str(e).splitlines()[0]}") from None
            if readout:
                stored = safetensors_metadata(weights).get("pretext")
                if not head or not stored:
                    raise ValueError(f"{weights} has no pretext head, which encoder readout {readout!r} needs: "
                                     f"re-export it with `slotmatch pretrain ... --resume` from its pretrain folder "
                                     f"(the head is written beside the CNN since session 5)")
                if pretext and pretext != stored:
                    raise ValueError(f"{weights} was pretrained on {stored!r}, not {pretext!r} (encoder.pretext)")
                self._build_readout(readout, stored, weights)
                self.readout.load_state_dict(head)
        self.cnn_patch_size = patch_size  # the CNN's stride; patch_size is the token grid's
        self.guided_surface = bool(guided_surface)
        if self.guided_surface and (self.readout is None or "relief" not in self.pretext_slices
                                    or "surface" not in readout.split("+")):
            raise ValueError("encoder guided_surface recomputes the readout's surface part from the frame under the "
                             "predicted relief: give a readout with 'surface', from weights pretrained on relief too")
        self.unpack = bool(unpack)
        if self.unpack:
            if self.readout is None:
                raise ValueError("encoder unpack reads the readout's per-pixel predictions: give it a readout")
            p2 = patch_size ** 2
            self.feature_dim = sum(n // p2 for _, n in self.readout_parts) + 4 * self.readout_position
            self.patch_size = 1
        # not in the state dict: a config setting, so checkpoints with and without it load alike
        self.register_buffer("part_weights", self._channel_weights(part_weights or {}), persistent=False)
        if frozen:
            self.requires_grad_(False)

    def _channel_weights(self, part_weights: dict) -> Optional[torch.Tensor]:
        """{part: weight} -> (feature_dim,) per-channel weights for the readout's tokens, or None."""
        if not part_weights:
            return None
        if self.readout is None:
            raise ValueError("encoder part_weights weigh the readout's parts: give the encoder a readout")
        unknown = sorted(set(part_weights) - set(self.readout_names))
        if unknown:
            raise ValueError(f"encoder part_weights name {unknown}, not among the readout's parts {self.readout_names}")
        p2 = self.cnn_patch_size ** 2 if self.unpack else 1
        weights = [float(part_weights.get(name, 1.0)) for name, (_, n) in zip(self.readout_names, self.readout_parts)
                   for _ in range(n // p2)]
        weights += [1.0] * (4 * self.readout_position)
        return torch.tensor(weights)

    def _build_readout(self, readout: str, pretext: str, source: str) -> None:
        """A linear head from the features to the `pretext` parts, keeping the parts named in `readout`."""
        have, want = target_parts(pretext), readout.split("+")
        missing = [p for p in want if p != "position" and p not in have]
        if missing or len(set(want)) != len(want):
            raise ValueError(f"encoder readout {readout!r}: {source} was pretrained on {pretext!r}; choose among "
                             f"its parts (and 'position'), each once")
        sizes = [target_dim(p, self) for p in have]
        starts = [sum(sizes[:i]) for i in range(len(have))]
        self.readout_names = [p for p in want if p != "position"]
        self.readout_parts = [(starts[have.index(p)], sizes[have.index(p)]) for p in self.readout_names]
        self.pretext_slices = {p: (starts[i], sizes[i]) for i, p in enumerate(have)}
        self.readout_position = "position" in want
        self.readout = nn.Linear(self.feature_dim, sum(sizes))
        self.feature_dim = sum(n for _, n in self.readout_parts) + 4 * self.readout_position

    def _guide(self, pred: torch.Tensor, frame: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The head's predictions (B, h * w, D) with their surface part replaced by `surface_colour` of the frame
        (B, 3, H, W) under the predicted relief in place of depth's: the frame's own colours, sharp at every edge
        the relief finds, averaged over each surface."""
        p, B = self.cnn_patch_size, pred.shape[0]
        rs, rn = self.pretext_slices["relief"]
        ss, sn = self.pretext_slices["surface"]
        relief = pred[..., rs:rs + rn].reshape(B, h, w, p, p).permute(0, 1, 3, 2, 4).reshape(B, h * p, w * p)
        surface = surface_colour(frame[:, :, : h * p, : w * p], None, relief=relief)
        return torch.cat([pred[..., :ss], pixel_patch_target(surface, p, normalize=False), pred[..., ss + sn:]], -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1], or (B, 3 * (2 * context + 1), H, W) with context -> (B, N, C)."""
        B, C, H, W = images.shape
        p = self.cnn_patch_size
        if C != self.convs[0].in_channels:
            raise ValueError(f"this CNN encoder takes {self.convs[0].in_channels} input channels (context "
                             f"{self.context}), got images of shape {tuple(images.shape)}: with context, encode "
                             f"whole videos with encode_video")
        x = images * 2.0 - 1.0
        fine = None
        for i, layer in enumerate(self.convs):
            x = layer(x)
            if i == self.fine_layer:
                fine = x
        if fine is not None:
            x = self.lateral(fine) + F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        if self.refine is not None:
            x = self.refine(x)
        x = x[:, :, : H // p, : W // p]  # (B, C, h, w)
        h, w = x.shape[-2:]
        grid = position_grid(h, w, x.device, x.dtype)
        x = x.flatten(2).transpose(1, 2) + self.pos(grid)  # (B, N, C)
        if self.readout is not None:
            pred = self.readout(x)
            if self.guided_surface:
                pred = self._guide(pred, images[:, 3 * self.context: 3 * self.context + 3], h, w)
            out = [pred[..., start:start + n] for start, n in self.readout_parts]
            if self.unpack:  # each part's (m, p, p) values of a patch -> m values at each of its p * p pixels
                out = [part.reshape(B, h, w, -1, p, p).permute(0, 1, 4, 2, 5, 3).reshape(B, h * p * w * p, -1)
                       for part in out]
                grid = position_grid(h * p, w * p, x.device, x.dtype)
            if self.readout_position:
                out.append(grid.expand(B, -1, -1))
            x = torch.cat(out, -1)
        if self.standardize:
            x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-5)
        if self.part_weights is not None:
            x = x * self.part_weights.to(x.dtype)
        return x


def safetensors_metadata(path: str) -> dict:
    """The string metadata of a .safetensors file ({} for other files)."""
    if not str(path).endswith(".safetensors"):
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


# ----------------------------------------------------------------------------------------------


class OracleEncoder(Encoder):
    """A DIAGNOSTIC encoder that reads the ground truth: each patch's feature is the patch-averaged
    instance code of `oracle_patch_target`, plus a position code. Slot attention and the decoder then
    get features that separate objects perfectly (DINOSAUR with ideal features): if they still do not
    segment, the problem is in them, not in the features. Frozen (nothing to learn); never a result.
    """

    needs_segmentations = True

    def __init__(self, patch_size: int = 4, frozen: bool = True, img_size=None):
        super().__init__()
        self.patch_size, self.frozen, self.feature_dim = patch_size, True, ORACLE_DIM + 4

    def forward(self, images: torch.Tensor, segmentations: Optional[torch.Tensor] = None) -> torch.Tensor:
        """images (B, 3, H, W) (unused), segmentations (B, H, W) -> (B, N, ORACLE_DIM + 4): the codes, then
        the patch's (y, x, 1 - y, 1 - x) in [0, 1] (a slot must learn where its object is, to draw it)."""
        if segmentations is None:
            raise ValueError("the oracle encoder needs the ground-truth masks (a diagnostic: train or evaluate "
                             "with a dataset that has them)")
        codes = oracle_patch_target(segmentations, self.patch_size)
        h, w = segmentations.shape[-2] // self.patch_size, segmentations.shape[-1] // self.patch_size
        grid = position_grid(h, w, codes.device, codes.dtype).expand(codes.shape[0], -1, -1)
        return torch.cat([codes, grid], -1)


def build_encoder(cfg: dict, img_size: Optional[Union[int, Sequence[int]]] = None) -> Encoder:
    """Encoder from a config dict: {"name": "cnn", ...} or {"name": <timm ViT name>, ...}.

    Remaining keys are the constructor's arguments; img_size fills in a missing cfg["img_size"].
    """
    cfg = dict(cfg)
    name = cfg.pop("name")
    if img_size is not None:
        cfg.setdefault("img_size", img_size)
    if name == "cnn":
        cfg.pop("img_size", None)
        return CNNEncoder(**cfg)
    if name == "oracle":
        return OracleEncoder(**cfg)
    return TimmViTEncoder(name, **cfg)
