"""benchmarks/readout_errors.py: depth regions that share out the pixels, and k-means on mixes of parts."""

import importlib.util
import os
import subprocess
import sys

import torch

from slotmatch.data.dataset import open_dataset
from slotmatch.models.encoder import make_target
from slotmatch.pretrain import pretrain_encoder

HERE = os.path.dirname(__file__)
spec = importlib.util.spec_from_file_location("readout_errors", os.path.join(HERE, "..", "benchmarks",
                                                                             "readout_errors.py"))
readout_errors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readout_errors)


def test_regions_share_out_every_pixel_and_exact_parts_give_the_targets_kmeans(flow_dataset, tmp_path):
    sample = open_dataset(flow_dataset, "validation", with_depth=True)[0]
    T, _, H, W = sample["video"].shape
    r = readout_errors.regions(sample["depth"])
    total = sum(m.long() for m in r.values())
    assert torch.equal(total, torch.ones(T, H, W, dtype=torch.long))  # each pixel in exactly one region
    assert r["edge band"].any() and r["floor inside"].any()
    exact = make_target("surface+relief", sample["video"], None, 1, sample["depth"], None)
    parts = readout_errors.split_parts(exact, [3, 1])
    noisy = [p + torch.randn_like(p) for p in parts]
    ids = readout_errors.mixed_ids(noisy, parts, (True, True), 3).reshape(T, H, W)
    feature_kmeans = sys.modules.get("feature_kmeans")  # imported by readout_errors from benchmarks/
    assert torch.equal(ids, feature_kmeans.target_ids(sample, "surface+relief", 3))
    assert not torch.equal(readout_errors.mixed_ids(noisy, parts, (False, True), 3).reshape(T, H, W), ids)
    # end to end on a pretrained encoder
    out = str(tmp_path / "pt")
    pretrain_encoder(flow_dataset, out, {"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 2},
                     progress=False, steps=1, batch_size=2, size=32, num_workers=0, targets="surface+relief")
    run = subprocess.run([sys.executable, os.path.join(HERE, "..", "benchmarks", "readout_errors.py"), flow_dataset,
                          out, "--segments", "3", "--size", "32"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "| edge band |" in run.stdout and "| exact surface + predicted relief |" in run.stdout
