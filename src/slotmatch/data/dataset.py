"""Datasets of videos with instance masks, behind one interface.

Every reader returns samples as dicts: `video` float (T, 3, H, W) in [0, 1], `segmentations` long
(T, H, W) with 0 = background, and `key`. `open_dataset(path, split)` picks the reader from what is on
disk; the built-in generator's shards are read by `ShardVideoDataset` (random access by byte offset, so
any sampler, shuffling or DistributedSampler works); `slotmatch pack`'s compact copies by
`PackedVideoDataset` (data/packed.py), decoded into memory. Readers for MOVi (tfds), YouTube-VIS and DAVIS
plug in beside it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from slotmatch.data.shards import DatasetError, index_shard, read_member

__all__ = ["DatasetError", "ShardVideoDataset", "make_sample", "open_dataset", "resize_clip", "resize_flow",
           "resize_maps", "select_clip"]


def resize_maps(maps: torch.Tensor, size) -> torch.Tensor:
    """Per-pixel maps (T, H, W) (masks, depth) resized by nearest neighbour to size (int or (h, w)); dtype kept."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0].to(maps.dtype)


def resize_clip(video: torch.Tensor, segmentations: torch.Tensor | None, size: int | None):
    """Resize video (T, 3, H, W) bilinearly with antialiasing and masks (T, H, W) by nearest neighbour."""
    if size is None or video.shape[-1] == size and video.shape[-2] == size:
        return video, segmentations
    video = F.interpolate(video, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    if segmentations is not None:
        segmentations = resize_maps(segmentations, size)
    return video, segmentations


def make_sample(video: np.ndarray, segmentations: np.ndarray, key: str, size: int | None,
                depth: np.ndarray | None = None, flow: np.ndarray | None = None) -> dict:
    """The sample dict every reader returns, from one clip's arrays: video (T, H, W, 3) uint8,
    segmentations (T, H, W), and optionally depth (T, H, W) and flow (T, H, W, 2) in pixels; all
    resized to size x size (None: as they are)."""
    v = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
    s = torch.from_numpy(segmentations.astype(np.int64))  # (T, H, W)
    v, s = resize_clip(v, s, size)
    sample = {"video": v, "segmentations": s, "key": key}
    if depth is not None:
        d = torch.from_numpy(depth.astype(np.float32))
        sample["depth"] = d if size is None else resize_maps(d, size)
    if flow is not None:
        sample["flow"] = resize_flow(torch.from_numpy(flow.astype(np.float32)), size)
    return sample


def select_clip(num_frames: int, clip_length: int | None, random_clip: bool, generator=None) -> slice:
    """The frames to use: the whole video, the first `clip_length`, or a random window of that length."""
    if clip_length is None or clip_length >= num_frames:
        return slice(0, num_frames)
    start = int(torch.randint(0, num_frames - clip_length + 1, (1,), generator=generator)) if random_clip else 0
    return slice(start, start + clip_length)


class ShardVideoDataset(Dataset):
    """Videos from the generator's shards (`slotmatch generate`), one split.

    clip_length: frames per sample (None: whole videos, for evaluation); random_clip: draw the window at
    random (training) instead of taking the first frames; size: resize frames to size x size.
    """

    def __init__(self, root: str, split: str = "train", clip_length: int | None = None,
                 random_clip: bool = False, size: int | None = None, with_depth: bool = False,
                 with_flow: bool = False):
        self.root, self.split = root, split
        self.clip_length, self.random_clip, self.size, self.with_depth = clip_length, random_clip, size, with_depth
        self.with_flow = with_flow
        self.manifest = read_manifest(root)
        if split not in self.manifest["splits"]:
            raise DatasetError(f"{root}: no split {split!r} (has {', '.join(self.manifest['splits'])})")
        if with_depth and "depth" not in self.manifest.get("keys", []):
            raise DatasetError(f"{root}: rendered without depth (generate it with --with-depth)")
        if with_flow and "flow" not in self.manifest.get("keys", []):
            raise DatasetError(f"{root}: rendered without optical flow (generate it with --with-flow)")
        self.samples = []  # (shard path, key, members)
        for rel in self.manifest["splits"][split]["shards"]:
            path = os.path.join(root, rel)
            for key, members in sorted(index_shard(path).items()):
                for field in ("video.npy", "segmentations.npy"):
                    if field not in members:
                        raise DatasetError(f"{path}: sample {key} has no {field}")
                self.samples.append((path, key, members))
        expected = self.manifest["splits"][split]["num_videos"]
        if len(self.samples) != expected:
            raise DatasetError(f"{root}: split {split} has {len(self.samples)} videos, the manifest says {expected}")

    def __len__(self) -> int:
        return len(self.samples)

    def metadata(self, index: int) -> dict:
        path, key, members = self.samples[index]
        return read_member(path, "metadata.json", members["metadata.json"])

    def __getitem__(self, index: int) -> dict:
        path, key, members = self.samples[index]
        video = read_member(path, "video.npy", members["video.npy"])  # (T, H, W, 3) uint8
        segs = read_member(path, "segmentations.npy", members["segmentations.npy"])  # (T, H, W) uint8
        if video.ndim != 4 or video.shape[-1] != 3 or segs.shape != video.shape[:3]:
            raise DatasetError(f"{path}: sample {key} has video {video.shape} and segmentations {segs.shape}, "
                               "expected (T, H, W, 3) and (T, H, W)")
        clip = select_clip(video.shape[0], self.clip_length, self.random_clip)
        depth = read_member(path, "depth.npy", members["depth.npy"])[clip] if self.with_depth else None
        flow = read_member(path, "flow.npy", members["flow.npy"])[clip] if self.with_flow else None
        return make_sample(video[clip], segs[clip], key, self.size, depth, flow)


def resize_flow(flow: torch.Tensor, size: int | None) -> torch.Tensor:
    """Flow (T, H, W, 2) in pixels, resized by nearest neighbour to size x size, vectors rescaled to match."""
    if size is None or flow.shape[-2] == size and flow.shape[-3] == size:
        return flow
    H, W = flow.shape[1:3]
    f = F.interpolate(flow.permute(0, 3, 1, 2), size=(size, size), mode="nearest")
    return (f * torch.tensor([size / W, size / H]).view(1, 2, 1, 1)).permute(0, 2, 3, 1).contiguous()


def read_manifest(root: str) -> dict:
    """The manifest of a generated dataset, or a DatasetError saying why there is none."""
    path = os.path.join(root, "manifest.json")
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: dataset directory does not exist")
    if not os.path.exists(path):
        hint = " (its generation did not finish: rerun `slotmatch generate` with the same arguments to complete it)" \
            if os.path.exists(os.path.join(root, "generate_args.json")) else ""
        raise DatasetError(f"{path}: missing manifest, not a complete slotmatch dataset{hint}")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: corrupt manifest ({e})") from e
    if manifest.get("format") != "slotmatch-shards":
        raise DatasetError(f"{path}: unknown dataset format {manifest.get('format')!r}")
    return manifest


def _manifest_format(path: str) -> str | None:
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            return json.load(f).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def open_dataset(path: str, split: str = "train", **kwargs) -> Dataset:
    """Open the dataset at `path` with the reader that matches its on-disk format."""
    if _manifest_format(path) == "slotmatch-packed":
        from slotmatch.data.packed import PackedVideoDataset

        return PackedVideoDataset(path, split, **kwargs)
    if os.path.exists(os.path.join(path, "manifest.json")) or os.path.exists(os.path.join(path, "generate_args.json")):
        return ShardVideoDataset(path, split, **kwargs)
    if not os.path.exists(path):
        raise DatasetError(f"{path}: dataset directory does not exist")
    raise DatasetError(f"{path}: not a dataset slotmatch can read (expected a manifest.json from `slotmatch generate`)")
