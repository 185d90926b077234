"""Optical flow from the simulator: exact where the scene is still, consistent with the next frame,
stored, resized, packed and turned into a reconstruction target."""

import numpy as np
import pytest
import torch

from slotmatch.data.dataset import DatasetError, ShardVideoDataset, open_dataset, resize_flow
from slotmatch.data.generate import GenerateArgs, generate_dataset
from slotmatch.data.packed import pack_dataset
from slotmatch.data.presets import get_preset
from slotmatch.data.scenes import render_video
from slotmatch.models.encoder import flow_patch_target, make_target, target_dim, target_parts


def _consistency(out: dict) -> tuple[float, float, float, float]:
    """How often an object pixel lands on the same object one frame later, following the flow and
    staying put; and the mean colour change along the flow and in place."""
    f, seg, vid = out["flow"], out["segmentations"].astype(int), out["video"].astype(float)
    T, H, W = seg.shape
    v, u = np.mgrid[0:H, 0:W]
    same_f, same_0, ph_f, ph_0 = [], [], [], []
    for t in range(T - 1):
        u1 = np.clip(np.round(u + f[t, ..., 0]).astype(int), 0, W - 1)
        v1 = np.clip(np.round(v + f[t, ..., 1]).astype(int), 0, H - 1)
        fg = seg[t] > 0
        same_f.append((seg[t + 1][v1, u1] == seg[t])[fg].mean())
        same_0.append((seg[t + 1] == seg[t])[fg].mean())
        ph_f.append(np.abs(vid[t + 1][v1, u1] - vid[t]).mean())
        ph_0.append(np.abs(vid[t + 1] - vid[t]).mean())
    return float(np.mean(same_f)), float(np.mean(same_0)), float(np.mean(ph_f)), float(np.mean(ph_0))


def test_flow_is_zero_on_a_still_floor_and_follows_the_objects():
    out = render_video(get_preset("movi-c-like"), 11, frames=8, size=64, with_flow=True)
    assert out["flow"].shape == (8, 64, 64, 2)
    background = out["segmentations"] == 0
    assert np.abs(out["flow"][background]).max() < 1e-6  # static camera: the floor does not move
    assert np.abs(out["flow"][~background]).mean() > 0.3  # thrown objects do
    same_flow, same_still, photo_flow, photo_still = _consistency(out)
    assert same_flow > 0.9 and same_flow > same_still + 0.1
    assert photo_flow < photo_still


def test_flow_follows_a_moving_camera():
    out = render_video(get_preset("movi-e-like"), 11, frames=8, size=64, with_flow=True)
    background = out["segmentations"] == 0
    assert np.abs(out["flow"][background]).mean() > 0.1  # the whole floor moves in the image
    same_flow, same_still, photo_flow, photo_still = _consistency(out)
    assert same_flow > 0.85 and same_flow > same_still
    assert photo_flow < photo_still


def test_asking_for_flow_does_not_change_the_video():
    a = render_video(get_preset("movi-e-like"), 3, frames=3, size=32, with_flow=True)
    b = render_video(get_preset("movi-e-like"), 3, frames=3, size=32)
    assert "flow" not in b and np.array_equal(a["video"], b["video"])
    assert np.array_equal(a["segmentations"], b["segmentations"])


def test_flow_is_stored_resized_and_packed(flow_dataset, tmp_path):
    full = ShardVideoDataset(flow_dataset, "train", with_flow=True)[0]["flow"]  # (T, 32, 32, 2)
    half = ShardVideoDataset(flow_dataset, "train", with_flow=True, size=16)[0]["flow"]
    assert full.shape == (4, 32, 32, 2) and half.shape == (4, 16, 16, 2)
    assert torch.allclose(half, full[:, ::2, ::2] / 2, atol=1e-3)  # nearest neighbour, vectors halved
    out = str(tmp_path / "p")
    pack_dataset(flow_dataset, out, size=16, progress=False)
    packed = open_dataset(out, "train", with_flow=True)[0]["flow"]
    assert (packed - resize_flow(full, 16)).abs().max() <= 1 / 64 + 1e-3  # stored in 1/64 pixel (float16 source)

def test_a_dataset_without_flow_says_so(tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match="--with-flow"):
        ShardVideoDataset(tiny_dataset, "train", with_flow=True)
    pack_dataset(tiny_dataset, str(tmp_path / "p"), size=16, num_videos={"train": 1, "validation": 1}, progress=False)
    with pytest.raises(DatasetError, match="without optical flow"):
        open_dataset(str(tmp_path / "p"), "train", with_flow=True)


def test_flow_target_is_in_pixels_of_a_64_pixel_frame():
    flow = torch.zeros(1, 32, 32, 2)
    flow[..., 0] = 0.5  # half a pixel to the right at 32 px = one pixel at 64 px
    t = flow_patch_target(flow, 4)
    assert t.shape == (1, 64, 32)
    assert torch.allclose(t[..., :16], torch.ones(1, 64, 16)) and torch.all(t[..., 16:] == 0)  # dx then dy


def test_target_parts_concatenate_and_need_their_inputs():
    class Enc:
        patch_size, feature_dim = 4, 8

    assert target_parts("disparity+flow") == ["disparity", "flow"]
    assert target_dim("disparity+flow", Enc) == 16 + 32 and target_dim("pixels_raw+flow", Enc) == 48 + 32
    images, depth, flow = torch.rand(2, 3, 16, 16), torch.rand(2, 16, 16) + 1, torch.rand(2, 16, 16, 2)
    out = make_target("disparity+flow", images, None, 4, depth=depth, flow=flow)
    assert out.shape == (2, 16, 48)
    assert torch.equal(out[..., 16:], flow_patch_target(flow, 4))
    with pytest.raises(ValueError, match="--with-flow"):
        make_target("flow", images, None, 4)
    for bad in ("flows", "pixels+pixels", "features+flow"):
        with pytest.raises(ValueError, match="unknown target"):
            target_parts(bad)


def test_a_rendered_floor_unprojects_onto_the_floor_plane():
    """The pixel convention of `unproject` matches the renderer: an empty floor lands on z = 0."""
    from slotmatch.data import scenes

    seen = {}
    real = scenes.scene_flow

    def spy(depth, body_seg, view0, view1, proj, poses0, poses1):
        seen.setdefault("args", (depth, body_seg, view0, proj))
        return real(depth, body_seg, view0, view1, proj, poses0, poses1)

    scenes.scene_flow = spy
    try:
        out = render_video(get_preset("movi-e-like"), 5, frames=2, size=48, hide_objects=True, with_flow=True)
    finally:
        scenes.scene_flow = real
    depth, body_seg, view, proj = seen["args"]
    floor = (depth < 50) & (out["segmentations"][0] == 0)  # not the sky
    assert floor.mean() > 0.3
    world = scenes.unproject(depth, view, proj)
    assert np.abs(world[..., 2][floor]).max() < 0.02
