"""Reconstruction targets that need no pretrained network: pixels, depth, both."""

import pytest
import torch

from slotmatch.models import build_model
from slotmatch.models.encoder import depth_patch_target

CFG = {"encoder": {"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 4}, "img_size": 16,
       "num_slots": 3, "slot_dim": 8, "mlp_hidden": 8, "decoder_hidden": [16]}


def test_depth_patches_follow_the_grid():
    depth = torch.ones(1, 8, 8)
    depth[:, :4, 4:] = torch.e  # one patch twice as far in log space
    d = depth_patch_target(depth, 4)  # (1, 4, 16)
    assert d.shape == (1, 4, 16)
    assert torch.all(d[0, 1] > d[0, 0]) and torch.allclose(d[0, 0], d[0, 2])
    assert abs(float(d.mean())) < 1e-5  # centred per frame


@pytest.mark.parametrize("target,dim", [("pixels", 48), ("pixels_raw", 48), ("depth", 16), ("pixels_raw+depth", 64)])
def test_targets_shapes_and_depth_requirement(target, dim):
    model = build_model(dict(CFG, target=target))
    video, depth = torch.rand(2, 2, 3, 16, 16), torch.rand(2, 2, 16, 16) + 1
    out = model(video, depth=depth)
    assert out["target"].shape == (2, 2, 16, dim) and out["reconstruction"].shape == (2, 2, 16, dim)
    if "depth" in target:
        with pytest.raises(ValueError, match="with-depth"):
            model(video)
