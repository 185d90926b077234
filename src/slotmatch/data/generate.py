"""`slotmatch generate`: render a MOVi-style dataset into webdataset shards, in parallel and resumably.

Video i of split s is rendered from the seed sequence (seed, s, i) alone, so any split of the work over
processes gives the same bytes. Shards are the unit of work and of resumption: a rerun with the same
arguments keeps every finished shard, rewrites any half-written one, and writes `manifest.json` last,
so a dataset without a manifest is known to be incomplete.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import queue
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from slotmatch.data.presets import get_preset
from slotmatch.data.shards import write_shard

SPLITS = {"train": 0, "validation": 1}
MANIFEST = "manifest.json"
ARGS_FILE = "generate_args.json"


@dataclass(frozen=True)
class GenerateArgs:
    preset: str
    num_train: int = 1000
    num_val: int = 100
    frames: int = 24
    size: int = 128
    seed: int = 0
    videos_per_shard: int = 25
    with_depth: bool = False
    with_flow: bool = False

    def check(self) -> None:
        """Refuse impossible arguments before anything is written."""
        for name in ("frames", "size", "videos_per_shard"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("num_train", "num_val"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")

    def num_videos(self, split: str) -> int:
        return self.num_train if split == "train" else self.num_val


def video_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed of video `index` of `split`: a function of (seed, split, index) only."""
    return np.random.SeedSequence([seed, SPLITS[split], index])


def shard_path(root: str, split: str, shard: int) -> str:
    return os.path.join(root, split, f"shard-{shard:06d}.tar")


def _tasks(args: GenerateArgs) -> list[tuple[str, int, int, int]]:
    """(split, shard, first video, end video) for every shard of the dataset."""
    tasks = []
    for split in SPLITS:
        n = args.num_videos(split)
        for shard, start in enumerate(range(0, n, args.videos_per_shard)):
            tasks.append((split, shard, start, min(start + args.videos_per_shard, n)))
    return tasks


_progress: "mp.Queue | None" = None


def _init_worker(progress) -> None:
    global _progress
    _progress = progress


def _render_shard(root: str, args: GenerateArgs, task: tuple[str, int, int, int]) -> str:
    from slotmatch.data.scenes import render_video

    split, shard, start, end = task
    preset = get_preset(args.preset)
    work_dir = tempfile.mkdtemp(prefix="slotmatch_gen_")
    samples = []
    try:
        for i in range(start, end):
            out = render_video(preset, video_seed(args.seed, split, i), args.frames, args.size, work_dir=work_dir,
                               with_flow=args.with_flow)
            fields = {"video.npy": out["video"], "segmentations.npy": out["segmentations"],
                      "metadata.json": dict(out["metadata"], split=split, index=i, seed=args.seed)}
            if args.with_depth:
                fields["depth.npy"] = out["depth"].astype(np.float16)
            if args.with_flow:
                fields["flow.npy"] = out["flow"].astype(np.float16)  # (T, H, W, 2) pixels
            samples.append((f"{split}_{i:06d}", fields))
            if _progress is not None:
                _progress.put(1)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    path = shard_path(root, split, shard)
    write_shard(path, samples)
    return path


def generate_dataset(root: str, args: GenerateArgs, workers: int = 1, progress: bool = True) -> dict:
    """Render (or finish rendering) the dataset described by `args` into `root`; return the manifest."""
    get_preset(args.preset)  # fail fast on an unknown preset
    args.check()
    os.makedirs(root, exist_ok=True)
    args_path = os.path.join(root, ARGS_FILE)
    if os.path.exists(args_path):
        with open(args_path) as f:
            previous = json.load(f)
        if previous != asdict(args):
            raise ValueError(f"{root} already holds a dataset generated with other arguments "
                             f"({previous}); use another --out or the same arguments to resume")
    else:
        with open(args_path, "w") as f:
            json.dump(asdict(args), f, indent=1)
    for split in SPLITS:
        os.makedirs(os.path.join(root, split), exist_ok=True)
        for name in os.listdir(os.path.join(root, split)):
            if name.endswith(".tmp"):  # left by a killed run: never complete, rewrite it
                os.remove(os.path.join(root, split, name))

    tasks = _tasks(args)
    todo = [t for t in tasks if not os.path.exists(shard_path(root, t[0], t[1]))]
    total = sum(args.num_videos(s) for s in SPLITS)
    done_before = total - sum(t[3] - t[2] for t in todo)
    started = time.time()
    if todo:
        _run(root, args, todo, workers, total, done_before, progress)

    manifest = dict(
        format="slotmatch-shards", version=1, **asdict(args),
        splits={s: dict(num_videos=args.num_videos(s),
                        shards=[os.path.relpath(shard_path(root, t[0], t[1]), root) for t in tasks if t[0] == s])
                for s in SPLITS},
        keys=["video", "segmentations", "metadata"] + (["depth"] if args.with_depth else [])
        + (["flow"] if args.with_flow else []),
        software=_versions(), seconds=round(time.time() - started, 1),
    )
    tmp = os.path.join(root, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(root, MANIFEST))
    return manifest


def _run(root, args, todo, workers, total, done_before, progress) -> None:
    from tqdm import tqdm

    bar = tqdm(total=total, initial=done_before, unit="video", desc=f"generate {args.preset}", disable=not progress)
    if workers <= 1:
        _init_worker(None)
        for task in todo:
            _render_shard(root, args, task)
            bar.update(task[3] - task[2])
        bar.close()
        return
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with ctx.Pool(workers, initializer=_init_worker, initargs=(q,)) as pool:
        result = pool.starmap_async(_render_shard, [(root, args, t) for t in todo], chunksize=1)
        while not result.ready():
            try:
                bar.update(q.get(timeout=0.2))
            except queue.Empty:
                pass
        result.get()  # re-raises a worker's exception
        while not q.empty():
            bar.update(q.get())
    bar.close()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("slotmatch", "pybullet", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
