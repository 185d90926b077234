"""Packed datasets (`slotmatch pack`): the same samples as the shards, compact, and clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from slotmatch.data.dataset import DatasetError, ShardVideoDataset, open_dataset, resize_clip
from slotmatch.data.generate import GenerateArgs, generate_dataset
from slotmatch.data.packed import PackedVideoDataset, pack_dataset


@pytest.fixture(scope="module")
def depth_dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("depth") / "d")
    generate_dataset(root, GenerateArgs(preset="movi-c-like", num_train=3, num_val=2, frames=4, size=32, seed=5,
                                        videos_per_shard=2, with_depth=True), workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def packed(depth_dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("packed") / "p")
    pack_dataset(depth_dataset, out, size=16, progress=False)
    return out


def test_packed_samples_match_the_shards(depth_dataset, packed):
    src = ShardVideoDataset(depth_dataset, "train", with_depth=True)
    ds = open_dataset(packed, "train", with_depth=True)
    assert isinstance(ds, PackedVideoDataset) and len(ds) == len(src) == 3
    for i in range(len(ds)):
        a, b = src[i], ds[i]
        v, s = resize_clip(a["video"], a["segmentations"], 16)
        assert b["video"].shape == (4, 3, 16, 16) and b["video"].dtype == torch.float32
        assert torch.equal(b["segmentations"], s)  # masks are exact
        assert float((b["video"] - v).abs().mean()) < 0.03  # frames are JPEG: close, not equal
        d = torch.nn.functional.interpolate(a["depth"][:, None], size=(16, 16), mode="nearest")[:, 0]
        assert torch.allclose(b["depth"], d, rtol=3e-3)  # log-depth to 0.2%


def test_packed_clips_and_resizing(packed):
    ds = open_dataset(packed, "validation", clip_length=2, random_clip=True, size=8)
    s = ds[1]
    assert s["video"].shape == (2, 3, 8, 8) and s["segmentations"].shape == (2, 8, 8) and "depth" not in s
    assert len(ds) == 2


def test_pack_keeps_the_first_videos_and_refuses_to_overwrite(depth_dataset, tmp_path):
    out = str(tmp_path / "p")
    m = pack_dataset(depth_dataset, out, size=16, num_videos={"train": 2}, progress=False)
    assert m["splits"]["train"]["num_videos"] == 2 and len(open_dataset(out, "train")) == 2
    with pytest.raises(DatasetError, match="already holds"):
        pack_dataset(depth_dataset, out, size=16, progress=False)


def test_a_truncated_packed_split_names_the_file(packed, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in os.listdir(packed):
        data = open(os.path.join(packed, name), "rb").read()
        (bad / name).write_bytes(data[: len(data) // 2] if name == "train.npz" else data)
    with pytest.raises(DatasetError, match="train.npz"):
        open_dataset(str(bad), "train")
    assert len(open_dataset(str(bad), "validation")) == 2  # the intact split still opens


def test_a_manifest_that_disagrees_with_the_file_is_an_error(packed, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in os.listdir(packed):
        (bad / name).write_bytes(open(os.path.join(packed, name), "rb").read())
    m = json.loads((bad / "manifest.json").read_text())
    m["splits"]["train"]["num_videos"] = 5
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="manifest says 5"):
        open_dataset(str(bad), "train")


def test_depth_from_a_dataset_packed_without_it_is_an_error(tiny_dataset, tmp_path):
    out = str(tmp_path / "p")
    pack_dataset(tiny_dataset, out, size=16, num_videos={"train": 1, "validation": 1}, progress=False)
    with pytest.raises(DatasetError, match="without depth"):
        open_dataset(out, "train", with_depth=True)


def test_pack_cli(depth_dataset, tmp_path):
    out = str(tmp_path / "p")
    cmd = [sys.executable, "-m", "slotmatch.cli", "pack", depth_dataset, "--out", out, "--size", "16", "--quiet",
           "--num-train", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 train, 2 validation videos at 16x16" in r.stdout
    r = subprocess.run(cmd[:4] + [str(tmp_path / "missing")] + cmd[5:], capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr
