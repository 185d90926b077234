"""The shard reader: clips, resizing, webdataset compatibility, and errors that name the file."""

import os
import shutil

import numpy as np
import pytest
import torch

from slotmatch.data.dataset import DatasetError, ShardVideoDataset, open_dataset


def test_whole_videos_and_clips(tiny_dataset):
    ds = open_dataset(tiny_dataset, "validation")
    assert len(ds) == 3
    s = ds[0]
    assert s["video"].shape == (6, 3, 32, 32) and s["video"].dtype == torch.float32
    assert 0 <= float(s["video"].min()) and float(s["video"].max()) <= 1
    assert s["segmentations"].shape == (6, 32, 32) and s["segmentations"].dtype == torch.int64
    clip = open_dataset(tiny_dataset, "validation", clip_length=4)[0]
    assert torch.equal(clip["video"], s["video"][:4])  # evaluation clips start at frame 0
    torch.manual_seed(0)
    starts = set()
    rnd = open_dataset(tiny_dataset, "validation", clip_length=2, random_clip=True)
    for _ in range(20):
        v = rnd[0]["video"]
        starts.add(next(t for t in range(6) if torch.equal(s["video"][t], v[0])))
    assert len(starts) > 1  # training clips are drawn at random


def test_resizing_keeps_ids_nearest(tiny_dataset):
    big = open_dataset(tiny_dataset, "train", size=48)[0]
    assert big["video"].shape[-2:] == (48, 48) and big["segmentations"].shape[-2:] == (48, 48)
    orig = open_dataset(tiny_dataset, "train")[0]["segmentations"]
    assert set(big["segmentations"].unique().tolist()) <= set(orig.unique().tolist())


def test_shards_read_with_the_webdataset_library(tiny_dataset):
    import webdataset as wds

    url = os.path.join(tiny_dataset, "train", "shard-000000.tar")
    samples = list(wds.WebDataset(url, shardshuffle=False).decode())
    assert len(samples) == 2
    ours = ShardVideoDataset(tiny_dataset, "train")
    assert np.array_equal(samples[0]["video.npy"], (ours[0]["video"].permute(0, 2, 3, 1) * 255).round().byte().numpy())
    assert samples[0]["metadata.json"]["preset"] == "movi-c-like"


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "delete"])
def test_damaged_shard_is_named_in_the_error(tiny_dataset, tmp_path, damage):
    root = str(tmp_path / "copy")
    shutil.copytree(tiny_dataset, root)
    shard = os.path.join(root, "train", "shard-000001.tar")
    if damage == "truncate":
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) // 3)
    elif damage == "empty":
        open(shard, "wb").close()
    elif damage == "garbage":
        with open(shard, "wb") as f:
            f.write(os.urandom(5000))
    else:
        os.remove(shard)
    with pytest.raises(DatasetError, match="shard-000001.tar"):
        ds = ShardVideoDataset(root, "train")
        for i in range(len(ds)):
            ds[i]


def test_missing_dataset_and_unknown_split(tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(str(tmp_path / "nothing"))
    with pytest.raises(DatasetError, match="no split 'test'"):
        open_dataset(tiny_dataset, "test")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not a dataset"):
        open_dataset(str(tmp_path / "empty"))
