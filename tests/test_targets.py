"""Reconstruction targets that need no pretrained network: pixels, depth, both."""

import pytest
import torch

from slotmatch.models import build_model
from slotmatch.models.encoder import depth_patch_target, disparity_patch_target, floor_plane, relief_patch_target

CFG = {"encoder": {"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 4}, "img_size": 16,
       "num_slots": 3, "slot_dim": 8, "mlp_hidden": 8, "decoder_hidden": [16]}


def test_depth_patches_follow_the_grid():
    depth = torch.ones(1, 8, 8)
    depth[:, :4, 4:] = torch.e  # one patch twice as far in log space
    d = depth_patch_target(depth, 4)  # (1, 4, 16)
    assert d.shape == (1, 4, 16)
    assert torch.all(d[0, 1] > d[0, 0]) and torch.allclose(d[0, 0], d[0, 2])
    assert abs(float(d.mean())) < 1e-5  # centred per frame


def _plane_depth(h: int = 16, w: int = 16) -> torch.Tensor:
    """z-depth of a tilted plane seen by a pinhole camera (a floor): 1/z = a x + b y + c."""
    y, x = torch.meshgrid(torch.linspace(-0.5, 0.5, h), torch.linspace(-0.5, 0.5, w), indexing="ij")
    return 1.0 / (0.2 * x + 0.3 * y + 0.6)  # positive over the image (>= 0.35)


def _affine_residual(values: torch.Tensor) -> float:
    """Relative least-squares residual of fitting values (h, w) with a + b x + c y."""
    h, w = values.shape
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    A = torch.stack([torch.ones_like(x), x, y], -1).reshape(-1, 3)
    v = values.double().reshape(-1, 1)
    fit = A @ torch.linalg.lstsq(A, v).solution
    return float((v - fit).norm() / (v - v.mean()).norm())


def test_disparity_of_a_plane_is_affine_in_position_and_log_depth_is_not():
    depth = _plane_depth()[None]  # (1, 16, 16)
    disp = disparity_patch_target(depth, 1).reshape(16, 16)
    logd = depth_patch_target(depth, 1).reshape(16, 16)
    assert _affine_residual(disp) < 1e-4  # one slot draws the floor exactly from its position embedding
    assert _affine_residual(logd) > 1e-2
    assert abs(float(disp.mean())) < 1e-5 and abs(float(disp.std()) - 1) < 0.05  # standardised per frame


def test_an_object_stands_out_of_the_floor_in_disparity():
    depth = _plane_depth()[None].clone()
    depth[:, 6:10, 6:10] *= 0.5  # an object twice as close as the floor behind it
    d = disparity_patch_target(depth, 1).reshape(16, 16)
    assert _affine_residual(d) > 0.1


def test_relief_is_zero_on_the_floor_and_positive_on_an_object():
    depth = _plane_depth()[None].repeat(2, 1, 1)
    depth[0, 4:11, 5:12] *= 0.6  # a large object (19% of the frame) in front of the floor; frame 1 is bare
    r = relief_patch_target(depth, 1).reshape(2, 16, 16)
    floor = torch.ones(16, 16, dtype=torch.bool)
    floor[4:11, 5:12] = False
    assert float(r[0][floor].abs().max()) < 1e-3  # the robust fit ignores the object
    assert float(r[0][~floor].min()) > 0.3  # the object stands out, in units of the frame's spread
    assert float(r[1].abs().max()) < 1e-3  # a bare floor has no relief
    # a least-squares fit over all pixels would tilt towards the object; the robust one recovers the plane
    d = 1.0 / depth
    assert torch.allclose(floor_plane(d)[0], (1.0 / _plane_depth()), atol=1e-4)


def test_surface_colour_averages_within_a_surface_and_never_across_heights():
    from slotmatch.models.encoder import surface_colour, surface_patch_target

    depth = _plane_depth()[None]
    depth[0, 4:11, 5:12] *= 0.6  # an object standing out of the floor
    obj = torch.zeros(16, 16, dtype=torch.bool)
    obj[4:11, 5:12] = True
    image = torch.zeros(1, 3, 16, 16)
    image[0, 1] = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float()  # green checks on the floor
    image[0, 2] = 1 - image[0, 1]  # ... and blue ones
    image[0, :, obj] = torch.tensor([1.0, 0.0, 0.0])[:, None]  # a red object
    out = surface_colour(image, depth, radius=2)
    assert torch.allclose(out[0, :, obj], torch.tensor([1.0, 0.0, 0.0])[:, None], atol=1e-3)  # no floor mixed in
    assert float(out[0, 0][~obj].max()) < 1e-3  # no red on the floor, even right beside the object
    inner = torch.zeros_like(obj)
    inner[2:14, 2:14] = True
    inner &= ~obj
    # the floor's checks average towards a half (the window is the floor's, minus the object)
    assert float((out[0, 1][inner] - 0.5).abs().mean()) < float((image[0, 1][inner] - 0.5).abs().mean()) / 2
    assert surface_patch_target(image, depth, 2).shape == (1, 64, 12)


def test_surface_colour_equals_the_brute_force_filter_with_and_without_a_graph():
    import sys
    from pathlib import Path

    from slotmatch.models.encoder import SURFACE_SIGMA, surface_colour

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_surface_colour import by_unfold  # the filter written out: every pixel's window unfolded

    torch.manual_seed(0)
    images, relief = torch.rand(2, 3, 9, 11), torch.randn(2, 9, 11)
    want = by_unfold(images, relief, 2, SURFACE_SIGMA)
    torch.testing.assert_close(surface_colour(images, None, radius=2, relief=relief), want)
    # with inputs that need a gradient (the in-place sums are then avoided), the same values and a gradient
    leaf = relief.clone().requires_grad_(True)
    out = surface_colour(images, None, radius=2, relief=leaf)
    torch.testing.assert_close(out.detach(), want)
    out.sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_figure_colour_flattens_the_floor_and_keeps_the_objects_colour():
    from slotmatch.models.encoder import figure_colour, figure_patch_target

    depth = _plane_depth()[None]
    depth[0, 4:11, 5:12] *= 0.6
    obj = torch.zeros(16, 16, dtype=torch.bool)
    obj[4:11, 5:12] = True
    image = torch.zeros(1, 3, 16, 16)
    image[0, 1] = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float()  # checked floor
    image[0, :, obj] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    out = figure_colour(image, depth)
    assert float(out[0][:, ~obj].abs().max()) < 1e-2  # the floor is one flat value: its checks are gone
    assert torch.allclose(out[0, :, obj], torch.tensor([1.0, 0.0, 0.0, 1.0])[:, None], atol=1e-2)
    assert figure_patch_target(image, depth, 2).shape == (1, 64, 16)


@pytest.mark.parametrize("target,dim", [("relief", 16), ("relief+flow", 48), ("surface+relief", 64), ("figure", 64), ("pixels", 48), ("pixels_raw", 48), ("depth", 16), ("pixels_raw+depth", 64),
                                        ("disparity", 16), ("pixels_raw+disparity", 64)])
def test_targets_shapes_and_depth_requirement(target, dim):
    model = build_model(dict(CFG, target=target))
    video, depth = torch.rand(2, 2, 3, 16, 16), torch.rand(2, 2, 16, 16) + 1
    flow = torch.randn(2, 2, 16, 16, 2) if "flow" in target else None
    out = model(video, depth=depth, flow=flow)
    assert out["target"].shape == (2, 2, 16, dim) and out["reconstruction"].shape == (2, 2, 16, dim)
    if "depth" in target or "disparity" in target or "relief" in target or "surface" in target or "figure" in target:
        with pytest.raises(ValueError, match="with-depth"):
            model(video, flow=flow)


def test_the_oracle_diagnostic_codes_each_instance_and_needs_the_masks():
    from slotmatch.models.encoder import ORACLE_DIM, make_target, oracle_patch_target

    segs = torch.zeros(1, 8, 8, dtype=torch.long)
    segs[:, :4, :4] = 3  # one object filling the top-left patch
    t = oracle_patch_target(segs, 4)  # (1, 4, ORACLE_DIM)
    assert t.shape == (1, 4, ORACLE_DIM)
    assert torch.allclose(t[0, 1], t[0, 2]) and not torch.allclose(t[0, 0], t[0, 1])  # same id, same code
    assert torch.allclose(t[0, 0].norm(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="ground-truth masks"):
        make_target("oracle", torch.rand(1, 3, 8, 8), None, 4)
    model = build_model(dict(CFG, target="oracle"))
    out = model(torch.rand(2, 2, 3, 16, 16), segmentations=torch.randint(0, 4, (2, 2, 16, 16)))
    assert out["target"].shape == (2, 2, 16, ORACLE_DIM)


def test_the_oracle_encoder_diagnostic_reads_the_masks():
    cfg = dict(CFG, encoder={"name": "oracle", "patch_size": 4}, target="features")
    model = build_model(cfg)
    video, segs = torch.rand(2, 2, 3, 16, 16), torch.randint(0, 4, (2, 2, 16, 16))
    out = model(video, segmentations=segs)
    assert out["masks"].shape == (2, 2, 3, 16) and out["target"].shape[-1] == 8 + 4  # codes, then position
    with pytest.raises(ValueError, match="ground-truth masks"):
        model(video)
    from slotmatch.evaluate import predict_ids

    ids = predict_ids(model, video, (32, 32), segmentations=torch.randint(0, 4, (2, 2, 32, 32)))
    assert ids.shape == (2, 2, 32, 32)
