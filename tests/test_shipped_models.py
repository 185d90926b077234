"""The trained models shipped in checkpoints/models/: small, self-contained, described, and they segment."""

import glob
import json
import os

import pytest
import torch

from slotmatch.checkpoint import load_model
from slotmatch.models import count_parameters

ROOT = os.path.join(os.path.dirname(__file__), "..")
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "checkpoints", "models", "*.safetensors")))


def test_models_are_shipped_and_each_is_described():
    assert SHIPPED, "checkpoints/models/ holds the quickstart's trained models"
    described = json.load(open(os.path.join(ROOT, "checkpoints", "models", "models.json")))
    assert sorted(described) == sorted(os.path.basename(p) for p in SHIPPED)
    for name, entry in described.items():
        assert entry["commands"] and entry["config"] and entry["steps"] > 0, name
        for key in ("video_fg_ari", "video_mbo"):  # its validation figures beside the references' (docs/RESULTS.md)
            assert 0 <= entry["validation"][key] <= 1 and key in entry["references"]["grid"], name


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_a_shipped_model_loads_alone_and_segments(path):
    assert os.path.getsize(path) <= 10 * 2 ** 20  # fp16, at most 10 MB
    model, cfg = load_model(path)  # no encoder file, dataset or hub needed: the export carries them
    assert model.encoder.frozen
    with torch.no_grad():
        masks = model(torch.rand(1, 3, 3, 64, 64), masks_only=True)["masks"]
    assert masks.shape[:3] == (1, 3, cfg["model"]["num_slots"])
    assert torch.allclose(masks.sum(2), torch.ones(()), atol=1e-4) and torch.isfinite(masks).all()


def test_each_shipped_student_is_at_least_3_6_times_smaller_than_its_teacher():
    described = json.load(open(os.path.join(ROOT, "checkpoints", "models", "models.json")))
    pairs = [(n, e["teacher"]) for n, e in described.items() if e.get("teacher")]
    assert pairs, "a SlotMatch student ships beside its teacher"
    for student, teacher in pairs:
        count = {n: count_parameters(load_model(os.path.join(ROOT, "checkpoints", "models", n))[0])["total"]
                 for n in (student, teacher)}
        assert count[teacher] >= 3.6 * count[student], (student, count)
