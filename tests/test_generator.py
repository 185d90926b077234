"""The PyBullet generator: determinism, masks, presets, shards, resume and errors."""

import filecmp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from slotmatch.data.generate import GenerateArgs, generate_dataset, shard_path, video_seed
from slotmatch.data.presets import PRESETS, get_preset
from slotmatch.data.scenes import render_video, sample_objects


def _shards(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".tar"))


def test_same_seed_gives_same_bytes_whatever_the_workers(tmp_path, tiny_dataset):
    args = GenerateArgs(preset="movi-c-like", num_train=6, num_val=3, frames=6, size=32, seed=3, videos_per_shard=2)
    generate_dataset(str(tmp_path / "b"), args, workers=2, progress=False)
    a, b = _shards(tiny_dataset), _shards(str(tmp_path / "b"))
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert filecmp.cmp(x, y, shallow=False), (x, y)


def test_other_seed_gives_other_videos():
    a = render_video(PRESETS["movi-a-like"], video_seed(0, "train", 0), frames=2, size=32)
    b = render_video(PRESETS["movi-a-like"], video_seed(1, "train", 0), frames=2, size=32)
    c = render_video(PRESETS["movi-a-like"], video_seed(0, "train", 1), frames=2, size=32)
    assert not np.array_equal(a["video"], b["video"]) and not np.array_equal(a["video"], c["video"])


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_object_counts_in_range(name):
    preset = get_preset(name)
    counts = [len(sample_objects(preset, np.random.default_rng(s))) for s in range(200)]
    lo, hi = preset.num_objects
    assert min(counts) >= lo and max(counts) <= hi
    assert min(counts) <= lo + 1 and max(counts) >= hi - 1  # the whole range is used
    if preset.num_dynamic is not None:  # MOVi-E: most objects static, a few thrown
        specs = sample_objects(preset, np.random.default_rng(0))
        n_dyn = sum(not s.static for s in specs)
        assert preset.num_dynamic[0] <= n_dyn <= preset.num_dynamic[1]


@pytest.mark.parametrize("name", list(PRESETS))
def test_video_shapes_ids_and_metadata(name):
    out = render_video(get_preset(name), video_seed(0, "train", 2), frames=5, size=48)
    assert out["video"].shape == (5, 48, 48, 3) and out["video"].dtype == np.uint8
    assert out["segmentations"].shape == (5, 48, 48) and out["segmentations"].dtype == np.uint8
    n = out["metadata"]["num_objects"]
    assert get_preset(name).num_objects[0] <= n <= get_preset(name).num_objects[1]
    assert [o["id"] for o in out["metadata"]["objects"]] == list(range(1, n + 1))
    ids = np.unique(out["segmentations"])
    assert ids.min() == 0 and ids.max() <= n and len(ids) > 1


def test_masks_cover_exactly_what_the_renderer_drew():
    """Where the mask says background, the frame equals the same scene rendered without objects."""
    preset = get_preset("movi-c-like")
    seed = video_seed(5, "validation", 0)
    full = render_video(preset, seed, frames=4, size=64, shadows=False)
    empty = render_video(preset, seed, frames=4, size=64, shadows=False, hide_objects=True)
    assert (empty["segmentations"] == 0).all()
    bg = full["segmentations"] == 0
    diff = np.abs(full["video"].astype(int) - empty["video"].astype(int)).max(-1)
    assert diff[bg].max() == 0  # no object pixel is labelled background
    # and every object pixel really differs from the empty scene somewhere in the object
    for oid in np.unique(full["segmentations"])[1:]:
        assert diff[full["segmentations"] == oid].mean() > 5


def test_one_id_per_object_across_frames():
    """Plain-coloured objects: each id's pixels keep the hue of the object the metadata gives that id."""
    out = render_video(get_preset("movi-a-like"), video_seed(0, "train", 7), frames=12, size=64, shadows=False)
    video, segs = out["video"].astype(float), out["segmentations"]
    for obj in out["metadata"]["objects"]:
        want = np.array(obj["colour"]) / np.linalg.norm(obj["colour"])
        for t in range(12):
            px = video[t][segs[t] == obj["id"]]
            if len(px) < 4:
                continue
            got = px.mean(0) / np.linalg.norm(px.mean(0))
            assert got @ want > 0.97, (obj, t, got, want)


def test_depth_is_rendered_when_asked(tmp_path):
    args = GenerateArgs(preset="movi-a-like", num_train=1, num_val=1, frames=2, size=16, seed=0, with_depth=True)
    generate_dataset(str(tmp_path / "d"), args, progress=False)
    from slotmatch.data.dataset import ShardVideoDataset

    s = ShardVideoDataset(str(tmp_path / "d"), "train", with_depth=True)[0]
    assert s["depth"].shape == (2, 16, 16) and float(s["depth"].min()) > 0


def test_resume_rewrites_partial_shard_and_keeps_complete_ones(tmp_path, tiny_dataset):
    root = str(tmp_path / "r")
    args = GenerateArgs(preset="movi-c-like", num_train=6, num_val=3, frames=6, size=32, seed=3, videos_per_shard=2)
    generate_dataset(root, args, progress=False)
    # simulate a killed run: manifest not yet written, one shard half-written, one not started
    os.remove(os.path.join(root, "manifest.json"))
    os.remove(shard_path(root, "train", 1))
    os.remove(shard_path(root, "validation", 1))
    with open(shard_path(root, "train", 1) + ".tmp", "wb") as f:
        f.write(b"half a shard")
    kept = os.stat(shard_path(root, "train", 0)).st_mtime_ns
    from slotmatch.data.dataset import DatasetError, ShardVideoDataset

    with pytest.raises(DatasetError, match="did not finish"):
        ShardVideoDataset(root, "train")
    generate_dataset(root, args, progress=False)
    assert os.stat(shard_path(root, "train", 0)).st_mtime_ns == kept  # not redone
    assert not any(f.endswith(".tmp") for f in os.listdir(os.path.join(root, "train")))
    for x, y in zip(_shards(tiny_dataset), _shards(root)):
        assert filecmp.cmp(x, y, shallow=False)


def test_killed_generate_resumes_to_the_same_bytes(tmp_path, tiny_dataset):
    root = str(tmp_path / "k")
    cmd = [sys.executable, "-m", "slotmatch.cli", "generate", "--preset", "movi-c-like", "--out", root,
           "--num-train", "6", "--num-val", "3", "--frames", "6", "--size", "32", "--seed", "3",
           "--videos-per-shard", "2", "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not os.path.exists(shard_path(root, "train", 0)) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(root, "manifest.json")) or proc.returncode == 0
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    for x, y in zip(_shards(tiny_dataset), _shards(root)):
        assert filecmp.cmp(x, y, shallow=False)


def test_rerun_with_other_arguments_is_refused(tmp_path):
    root = str(tmp_path / "o")
    generate_dataset(root, GenerateArgs(preset="movi-a-like", num_train=1, num_val=1, frames=2, size=16), progress=False)
    with pytest.raises(ValueError, match="other arguments"):
        generate_dataset(root, GenerateArgs(preset="movi-a-like", num_train=2, num_val=1, frames=2, size=16),
                         progress=False)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="movi-a-like"):
        get_preset("movi-z")


def test_impossible_arguments_are_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "bad"
    with pytest.raises(ValueError, match="--videos-per-shard"):
        generate_dataset(str(root), GenerateArgs(preset="movi-a-like", videos_per_shard=0), progress=False)
    assert not root.exists()
