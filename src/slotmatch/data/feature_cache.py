"""Feature cache for frozen encoders: compute a dataset's encoder features once, reuse them every epoch.

A frozen backbone (DINOv2 in the paper) gives the same features for a frame at every step, yet it is
most of a training step's cost. `build_feature_cache` runs it once over whole videos and stores float16
features (V, T, N, D) in one .npy file named by a hash of (encoder config, input size, dataset
manifest, split); `CachedFeatureDataset` then serves random clips of features, with no decoding and no
encoder. Written to a per-process `.tmp` and renamed when complete, so a killed build is redone, never half-used (the
next build on the same machine removes its `.tmp`), and two runs building the same cache at once each finish with a
whole file.

`build_flow_cache` stores the generator's optical flow (V, T, H, W, 2) the same way, for `train.mask_flow`, whose
loss reads it beside the cached features.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import socket

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from slotmatch.data.dataset import select_clip


def cache_path(cache_dir: str, model_cfg: dict, dataset, split: str) -> str:
    """Path of the cache file for this encoder, input size and dataset split."""
    weights = model_cfg["encoder"].get("weights")
    stamp = None
    if weights and os.path.isfile(str(weights)):  # a new file at the same path gets a new cache
        st = os.stat(weights)
        stamp = [st.st_size, st.st_mtime_ns]
    ident = {"encoder": model_cfg["encoder"], "weights_file": stamp, "img_size": model_cfg.get("img_size")}
    return _named_path(cache_dir, "features", dataset, split, ident)


def flow_cache_path(cache_dir: str, dataset, split: str) -> str:
    """Path of the optical-flow cache for this dataset split at the dataset's size."""
    return _named_path(cache_dir, "flow", dataset, split, {})


def _named_path(cache_dir: str, kind: str, dataset, split: str, ident: dict) -> str:
    """cache_dir/KIND-SPLIT-DIGEST.npy, the digest a hash of ident, the split, the dataset's size and its manifest
    (less the fields that change with every generation run)."""
    ident = {**ident, "split": split, "size": getattr(dataset, "size", None),
             "manifest": {k: v for k, v in getattr(dataset, "manifest", {}).items() if k not in ("seconds", "software")}}
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"{kind}-{split}-{digest}.npy")


def remove_stale_builds(path: str) -> list[str]:
    """Delete the `.tmp` files that killed builds of the cache at `path` on this machine left (their process is gone);
    a build still running keeps its file, and so does any build on another machine sharing the folder. Returns the
    paths removed."""
    if os.name != "posix":  # no harmless way to ask whether a process lives (os.kill(pid, 0) ends it on Windows)
        return []
    removed, prefix = [], _tmp_prefix(path)
    for tmp in glob.glob(glob.escape(prefix) + "*.tmp"):
        pid = tmp[len(prefix): -len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            os.remove(tmp)
            removed.append(tmp)
        except FileNotFoundError:  # another run removed it first
            pass
    return removed


def _tmp_prefix(path: str) -> str:
    """What the `.tmp` files of this machine's builds of `path` start with, before the process id."""
    return f"{path}.{socket.gethostname()}-"


def _tmp_name(path: str) -> str:
    """The file a build of `path` writes before renaming it: one per machine and process, so that two runs building
    the same cache do not clash."""
    return f"{_tmp_prefix(path)}{os.getpid()}.tmp"


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def build_flow_cache(dataset, path: str, progress: bool = True) -> str:
    """Store every video's optical flow (a dataset opened with flow, whole videos of equal length) as float16
    (V, T, H, W, 2) at `path`, in pixels of the dataset's frames."""
    if os.path.exists(path):
        return path
    from tqdm import tqdm

    first = dataset[0]
    if "flow" not in first:
        raise ValueError(f"{path}: the dataset was opened without optical flow (with_flow=True)")
    shape = (len(dataset),) + tuple(first["flow"].shape)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    remove_stale_builds(path)
    tmp = _tmp_name(path)
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
    for i in tqdm(range(len(dataset)), desc="flow cache", unit="video", disable=not progress):
        flow = dataset[i]["flow"]
        if tuple(flow.shape) != shape[1:]:
            raise ValueError(f"{path}: the flow cache needs videos of equal length and size "
                             f"({shape[1:]} vs {tuple(flow.shape)}, video {i})")
        arr[i] = flow.half().numpy()
    arr.flush()
    del arr
    os.replace(tmp, path)
    return path


@torch.no_grad()
def build_feature_cache(encoder: torch.nn.Module, dataset, path: str, batch_size: int = 4,
                        device: str | torch.device = "cpu", progress: bool = True) -> str:
    """Encode every frame of `dataset` (whole videos of equal length) into the float16 array at `path`."""
    if os.path.exists(path):
        return path
    from tqdm import tqdm

    first = dataset[0]["video"]  # (T, 3, H, W)
    T = first.shape[0]
    N, D = encoder.encode_video(first[None, :1].to(device)).shape[2:]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    remove_stale_builds(path)  # a killed build's file is never used; it would only fill the disk
    tmp = _tmp_name(path)
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(dataset), T, N, D))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=0)
    i = 0
    for batch in tqdm(loader, desc="feature cache", unit="batch", disable=not progress):
        video = batch["video"]  # (B, T, 3, H, W)
        if video.shape[1] != T:
            raise ValueError(f"{path}: the feature cache needs videos of equal length ({T} vs {video.shape[1]})")
        feats = encoder.encode_video(video.to(device))  # (B, T, N, D), each frame with its neighbours if any
        arr[i:i + video.shape[0]] = feats.cpu().half().numpy()
        i += video.shape[0]
    arr.flush()
    del arr
    os.replace(tmp, path)
    return path


class CachedFeatureDataset(Dataset):
    """Random (or first) clips of cached features: samples {"features": (T, N, D) float32, "key"}.

    teacher_path: a second cache of the same videos (the distillation teacher's encoder): the sample then also
    has "teacher_features", the same clip of it. flow_path: a flow cache of the same videos (`build_flow_cache`):
    the sample also has "flow" (T, H, W, 2), the same clip of it."""

    def __init__(self, path: str, clip_length: int | None = None, random_clip: bool = False,
                 teacher_path: str | None = None, flow_path: str | None = None):
        self.path, self.clip_length, self.random_clip = path, clip_length, random_clip
        self.features = np.load(path, mmap_mode="r")  # (V, T, N, D)
        self.teacher = None if teacher_path is None else np.load(teacher_path, mmap_mode="r")
        if self.teacher is not None and self.teacher.shape[:2] != self.features.shape[:2]:
            raise ValueError(f"{teacher_path} holds {self.teacher.shape[:2]} (videos, frames), {path} "
                             f"{self.features.shape[:2]}: not the same videos")
        self.flow = None if flow_path is None else np.load(flow_path, mmap_mode="r")
        if self.flow is not None and self.flow.shape[:2] != self.features.shape[:2]:
            raise ValueError(f"{flow_path} holds {self.flow.shape[:2]} (videos, frames), {path} "
                             f"{self.features.shape[:2]}: not the same videos")

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int) -> dict:
        clip = select_clip(self.features.shape[1], self.clip_length, self.random_clip)
        sample = {"features": torch.from_numpy(np.asarray(self.features[index, clip], dtype=np.float32)),
                  "key": str(index)}
        if self.teacher is not None:
            sample["teacher_features"] = torch.from_numpy(np.asarray(self.teacher[index, clip], dtype=np.float32))
        if self.flow is not None:
            sample["flow"] = torch.from_numpy(np.asarray(self.flow[index, clip], dtype=np.float32))
        return sample
