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
