"""The frozen-encoder feature cache: same features as the encoder, built once, trains."""

import os

import numpy as np
import torch

from conftest import tiny_config
from slotmatch.data.dataset import open_dataset
from slotmatch.data.feature_cache import CachedFeatureDataset, build_feature_cache, cache_path, remove_stale_builds
from slotmatch.models import build_model
from slotmatch.models.encoder import CNNEncoder
from slotmatch.train import train

TINY_VIT = {"name": "vit_small_patch14_dinov2", "weights": None, "frozen": True,
            "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}


def vit_config(data):
    cfg = tiny_config(data, feature_cache=True)
    cfg["data"]["size"] = 28
    cfg["model"].update(encoder=dict(TINY_VIT), img_size=28, target="features")
    return cfg


def test_cached_features_equal_the_encoders(tiny_dataset, tmp_path):
    cfg = vit_config(tiny_dataset)
    model = build_model(cfg["model"])
    ds = open_dataset(tiny_dataset, "train", size=28)
    path = cache_path(str(tmp_path), cfg["model"], ds, "train")
    build_feature_cache(model.encoder, ds, path, progress=False)
    cached = CachedFeatureDataset(path)
    assert len(cached) == len(ds)
    with torch.no_grad():
        want = model.encoder(ds[1]["video"])  # (T, N, D)
    assert torch.allclose(cached[1]["features"], want, atol=1e-2, rtol=1e-2)
    mtime = os.stat(path).st_mtime_ns
    build_feature_cache(model.encoder, ds, path, progress=False)  # second call: reused
    assert os.stat(path).st_mtime_ns == mtime
    other = dict(cfg["model"], img_size=42)
    assert cache_path(str(tmp_path), other, ds, "train") != path  # another input size, another cache


def test_a_build_removes_what_killed_builds_left_and_keeps_a_running_ones(tiny_dataset, tmp_path):
    import socket
    import subprocess
    import sys

    cfg = vit_config(tiny_dataset)
    model = build_model(cfg["model"])
    ds = open_dataset(tiny_dataset, "train", size=28)
    path = cache_path(str(tmp_path), cfg["model"], ds, "train")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that has ended: its id is free, as a killed build's is
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host = socket.gethostname()
        for pid in (gone.pid, running.pid):
            with open(f"{path}.{host}-{pid}.tmp", "wb") as f:
                f.write(b"half-written")
        elsewhere = f"{path}.other-machine-{gone.pid}.tmp"  # a build on another machine sharing the folder
        unrelated = str(tmp_path / f"features-train-other.npy.{host}-{gone.pid}.tmp")  # another cache's
        for name in (elsewhere, unrelated):
            open(name, "wb").close()
        build_feature_cache(model.encoder, ds, path, progress=False)
        assert not os.path.exists(f"{path}.{host}-{gone.pid}.tmp")
        assert all(os.path.exists(p) for p in (f"{path}.{host}-{running.pid}.tmp", elsewhere, unrelated))
        assert CachedFeatureDataset(path)[0]["features"].shape[0] == ds[0]["video"].shape[0]
    finally:
        running.kill()
        running.wait()
    assert remove_stale_builds(path) == [f"{path}.{host}-{running.pid}.tmp"]  # once its process has gone


def test_the_cache_of_an_encoder_with_context_holds_each_frame_with_its_neighbours(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    encoder = CNNEncoder(channels=8, num_layers=2, patch_size=4, context=1, frozen=True).eval()
    ds = open_dataset(tiny_dataset, "train", size=32)
    path = build_feature_cache(encoder, ds, str(tmp_path / "ctx.npy"), progress=False)
    with torch.no_grad():
        want = encoder.encode_video(ds[1]["video"][None])[0]
        still = ds[1]["video"][:, None].expand(-1, 3, -1, -1, -1).flatten(1, 2)  # each frame three times
        alone = encoder(still)  # no motion seen
    got = CachedFeatureDataset(path)[1]["features"]
    assert torch.allclose(got, want, atol=1e-2, rtol=1e-2)
    assert not torch.allclose(got, alone, atol=1e-2, rtol=1e-2)


def test_training_from_the_cache_matches_training_from_frames(tiny_dataset, tmp_path):
    cfg = vit_config(tiny_dataset)
    model = build_model(cfg["model"])
    ds = open_dataset(tiny_dataset, "train", size=28)
    path = cache_path(str(tmp_path), cfg["model"], ds, "train")
    build_feature_cache(model.encoder, ds, path, progress=False)
    video = ds[0]["video"][None]  # (1, T, 3, H, W)
    feats = CachedFeatureDataset(path)[0]["features"][None]
    with torch.no_grad():
        a = model(video)
        b = model(None, features=feats)
    assert torch.allclose(a["masks"], b["masks"], atol=1e-2)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    last = train(cfg, str(tmp_path / "run"), progress=False)
    assert os.path.exists(last) and len(os.listdir(tmp_path / "cache")) == 1
    assert np.load(os.path.join(tmp_path / "cache", os.listdir(tmp_path / "cache")[0]), mmap_mode="r").dtype == np.float16
