"""Packed datasets: a whole split in one compact file, decoded into memory when opened.

`slotmatch pack SRC OUT --size 64` turns a generated dataset (shards of raw arrays, about 1.6 MB per
128x128 video) into JPEG frames (4:4:4), 16-bit PNG log-depth and compressed masks at the given size,
about 20x smaller. It is meant for moving data to a machine that cannot run the generator (a GPU box
without PyBullet) and for training from memory: `PackedVideoDataset` decodes everything once, so a
sample is an array slice and no loader workers are needed. Frames are lossy (JPEG quality 92 by
default); masks are exact at the packed size, depth to 0.2%.

On disk: OUT/manifest.json ({"format": "slotmatch-packed", ...}, written last) and OUT/<split>.npz with
`frames` (the JPEG bytes of all frames, concatenated) and `frame_offsets`, `segmentations`
(N, T, H, W) uint8, when the source has depth `depth` / `depth_offsets` (PNG bytes), and when it has
optical flow `flow` (N, T, H, W, 2) int16 in 1/64 pixel.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from slotmatch.data.shards import DatasetError

FORMAT = "slotmatch-packed"
LOG_DEPTH_RANGE = (np.log(0.05), np.log(100.0))  # scene units; the generator's camera sees 0.1 to 60
FLOW_STEPS = 64  # flow is stored as int16 in 1/64 pixel (at the packed size)
DEPTH_LEVELS = 4096  # log-depth steps over that range: 0.19% of the depth per step, and small PNGs


def _encode_depth(depth: np.ndarray) -> bytes:
    lo, hi = LOG_DEPTH_RANGE
    q = (np.log(np.clip(depth, 0.05, 100.0)) - lo) / (hi - lo) * (DEPTH_LEVELS - 1)
    buf = io.BytesIO()
    Image.fromarray(np.round(q).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _decode_depth(data: bytes) -> np.ndarray:
    lo, hi = LOG_DEPTH_RANGE
    q = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
    return np.exp(q / (DEPTH_LEVELS - 1) * (hi - lo) + lo).astype(np.float32)


def _concat(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), np.uint8), offsets


def pack_dataset(src: str, out: str, size: int = 64, num_videos: dict | None = None, quality: int = 92,
                 progress: bool = True) -> dict:
    """Pack the generated dataset at `src` into `out` at size x size; returns the manifest.

    num_videos: {"train": n, ...} to keep only the first n videos of a split (all by default)."""
    from tqdm import tqdm

    from slotmatch.data.dataset import ShardVideoDataset, read_manifest

    source = read_manifest(src)
    with_depth = "depth" in source.get("keys", [])
    with_flow = "flow" in source.get("keys", [])
    if os.path.exists(os.path.join(out, "manifest.json")):
        raise DatasetError(f"{out}: already holds a packed dataset; choose another output directory")
    os.makedirs(out, exist_ok=True)
    manifest = {"format": FORMAT, "version": 1, "source": os.path.abspath(src), "preset": source.get("preset"),
                "size": size, "frames": source["frames"], "quality": quality,
                "keys": ["video", "segmentations"] + (["depth"] if with_depth else []) + (["flow"] if with_flow else []),
                "splits": {}}
    for split in source["splits"]:
        ds = ShardVideoDataset(src, split, size=size, with_depth=with_depth, with_flow=with_flow)  # resized
        n = min(len(ds), (num_videos or {}).get(split, len(ds)))
        if n == 0:
            continue  # an empty split is left out of the packed copy
        frames, depths, segs, flows = [], [], [], []
        for i in tqdm(range(n), desc=f"pack {split}", disable=not progress, leave=False):
            s = ds[i]
            v8 = (s["video"].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            for f in v8:
                buf = io.BytesIO()
                Image.fromarray(f).save(buf, format="JPEG", quality=quality, subsampling=0)
                frames.append(buf.getvalue())
            segs.append(s["segmentations"].numpy().astype(np.uint8))
            if with_depth:
                depths += [_encode_depth(f) for f in s["depth"].numpy()]
            if with_flow:
                f = s["flow"].numpy() * FLOW_STEPS
                flows.append(np.clip(np.round(f), -32768, 32767).astype(np.int16))
        arrays = {"segmentations": np.stack(segs)}
        if with_flow:
            arrays["flow"] = np.stack(flows)
        arrays["frames"], arrays["frame_offsets"] = _concat(frames)
        if with_depth:
            arrays["depth"], arrays["depth_offsets"] = _concat(depths)
        tmp = os.path.join(out, f"{split}.npz.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, os.path.join(out, f"{split}.npz"))
        manifest["splits"][split] = {"num_videos": n, "file": f"{split}.npz"}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


class PackedVideoDataset(Dataset):
    """One split of a packed dataset, decoded into memory at construction (same samples as
    `ShardVideoDataset`: video (T, 3, H, W) float, segmentations (T, H, W) long, key, optional depth)."""

    def __init__(self, root: str, split: str = "train", clip_length: int | None = None,
                 random_clip: bool = False, size: int | None = None, with_depth: bool = False,
                 with_flow: bool = False):
        self.root, self.split, self.with_flow = root, split, with_flow
        self.clip_length, self.random_clip, self.size, self.with_depth = clip_length, random_clip, size, with_depth
        path = os.path.join(root, "manifest.json")
        try:
            with open(path) as f:
                self.manifest = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: unreadable manifest ({e})") from e
        if split not in self.manifest.get("splits", {}):
            raise DatasetError(f"{root}: no split {split!r} (has {', '.join(self.manifest.get('splits', {}))})")
        if with_depth and "depth" not in self.manifest.get("keys", []):
            raise DatasetError(f"{root}: packed without depth (pack a dataset generated with --with-depth)")
        if with_flow and "flow" not in self.manifest.get("keys", []):
            raise DatasetError(f"{root}: packed without optical flow (pack a dataset generated with --with-flow)")
        file = os.path.join(root, self.manifest["splits"][split]["file"])
        n = self.manifest["splits"][split]["num_videos"]
        try:
            with np.load(file) as z:
                self.segmentations = z["segmentations"]
                frames, offsets = z["frames"], z["frame_offsets"]
                depth = (z["depth"], z["depth_offsets"]) if with_depth else None
                self.flow = z["flow"] if with_flow else None
            T = self.segmentations.shape[1]
            if self.segmentations.shape[0] != n or len(offsets) != n * T + 1:
                raise DatasetError(f"{file}: holds {self.segmentations.shape[0]} videos and {len(offsets) - 1} "
                                   f"frames, the manifest says {n} videos of {T} frames")
            self.video = np.stack([np.asarray(Image.open(io.BytesIO(frames[a:b].tobytes())).convert("RGB"))
                                   for a, b in zip(offsets[:-1], offsets[1:])]).reshape(n, T, *self.segmentations.shape[2:], 3)
            self.depth = None if depth is None else np.stack(
                [_decode_depth(depth[0][a:b].tobytes()) for a, b in zip(depth[1][:-1], depth[1][1:])]
            ).reshape(self.segmentations.shape)
        except DatasetError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{file}: corrupt or incomplete packed split ({type(e).__name__}: {e})") from e

    def __len__(self) -> int:
        return self.video.shape[0]

    def __getitem__(self, index: int) -> dict:
        from slotmatch.data.dataset import make_sample, select_clip

        clip = select_clip(self.video.shape[1], self.clip_length, self.random_clip)
        return make_sample(self.video[index, clip], self.segmentations[index, clip], f"{self.split}_{index:06d}",
                           self.size, None if self.depth is None else self.depth[index, clip],
                           None if self.flow is None else self.flow[index, clip].astype(np.float32) / FLOW_STEPS)
