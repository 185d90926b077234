"""Configs: bundled names, inheritance, overrides."""

import pytest

from slotmatch.config import apply_overrides, load_config


def test_bundled_configs_load_and_inherit():
    cfg = load_config("movi-e-like")
    assert cfg["model"]["num_slots"] == 15 and cfg["data"]["path"] == "data/movi-e-like"
    assert cfg["train"]["contrast_weight"] == 0.5  # from offline-base.yaml


def test_overrides_parse_values():
    cfg = apply_overrides({"train": {"lr": 1}}, ["train.lr=1e-3", "model.decoder_hidden=[8,8]", "data.path=x"])
    assert cfg["train"]["lr"] == pytest.approx(1e-3) and isinstance(cfg["train"]["lr"], float)
    assert cfg["model"]["decoder_hidden"] == [8, 8] and cfg["data"]["path"] == "x"
    with pytest.raises(ValueError, match="key.sub=value"):
        apply_overrides({}, ["nonsense"])


def test_unknown_config_lists_the_bundled_ones():
    with pytest.raises(FileNotFoundError, match="movi-c-like"):
        load_config("no-such-config")


@pytest.mark.parametrize("name, teacher_grid, student_grid", [
    ("movi-c-like-frozen", (32, 32), (32, 32)), ("movi-e-like-frozen", (32, 32), (32, 32)),
    ("movi-c-like-pixel", (64, 64), (32, 32)), ("movi-e-like-pixel", (64, 64), (32, 32)),
    ("movi-c-like-pixel-grid", (64, 64), (64, 64)), ("movi-e-like-pixel-grid", (64, 64), (64, 64))])
def test_presets_with_shipped_encoders_build_both_models_from_the_shipped_files(name, teacher_grid, student_grid):
    import os

    import torch

    from slotmatch.distill import student_config
    from slotmatch.models import build_model, count_parameters

    cfg = load_config(name)
    models = []
    for model_cfg, grid in ((cfg["model"], teacher_grid), (student_config(cfg), student_grid)):
        weights = model_cfg["encoder"]["weights"]
        assert weights.startswith("checkpoints/encoders/") and os.path.getsize(weights) < 10 * 2 ** 20
        model = build_model(model_cfg)
        assert model.encoder.frozen and tuple(model.grid) == grid
        with torch.no_grad():
            features = model.encode(torch.rand(1, 2, 3, 64, 64), with_target=False)["features"]
        assert features.shape[:3] == (1, 2, grid[0] * grid[1]) and torch.isfinite(features).all()
        models.append(model)
    teacher, student = (count_parameters(m)["total"] for m in models)
    assert teacher >= 3.6 * student, (name, teacher, student)  # issue 4, claim 2
