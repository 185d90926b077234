"""`slotmatch segment`: a short video written with PyAV, segmented end to end; outputs, chunking, errors."""

import json
import os
import shutil

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from slotmatch import infer
from slotmatch.cli import main
from slotmatch.infer import segment
from slotmatch.train import train
from slotmatch.visualize import PALETTE

T, H, W = 10, 40, 48  # a non-square video: the model sees 32x32, the masks come back at 40x48
K = 4  # tiny_config's num_slots


def write_mp4(path, frames, fps=12):
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def decoded_frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def read_masks(out):
    names = sorted(os.listdir(os.path.join(out, "masks")))
    return np.stack([np.asarray(Image.open(os.path.join(out, "masks", n))) for n in names])


@pytest.fixture(scope="module")
def ckpt(tiny_dataset, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "segment-teacher")
    return train(tiny_config(tiny_dataset, max_steps=2, val_every=2, checkpoint_every=2), run, progress=False)


@pytest.fixture(scope="module")
def frames():
    from slotmatch.data.presets import get_preset
    from slotmatch.data.scenes import render_video

    return render_video(get_preset("movi-a-like"), 5, frames=T, size=W)["video"][:, 4:4 + H]  # (T, H, W, 3)


@pytest.fixture(scope="module")
def video(frames, tmp_path_factory):
    return write_mp4(tmp_path_factory.mktemp("videos") / "scene.mp4", frames)


def last_line(text):
    return text.strip().splitlines()[-1]


def leftovers(parent):
    return [n for n in os.listdir(parent) if ".tmp-" in n or ".old-" in n]


def test_cli_writes_masks_overlays_and_objects(ckpt, video, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["segment", video, "--checkpoint", ckpt, "--out", out, "--chunk", "4", "--gif"]) == 0
    assert "frames/s" in capsys.readouterr().out

    names = sorted(os.listdir(os.path.join(out, "masks")))
    assert names == [f"{t:06d}.png" for t in range(T)]
    im = Image.open(os.path.join(out, "masks", names[0]))
    assert im.mode == "P" and im.size == (W, H)
    assert np.array_equal(np.asarray(im.getpalette(), np.uint8).reshape(-1, 3), PALETTE)
    masks = read_masks(out)  # (T, H, W) palette indices = slot id + 1
    assert masks.min() >= 1 and masks.max() <= K

    overlay = decoded_frames(os.path.join(out, "overlay.mp4"))
    assert len(overlay) == T and overlay[0].shape == (H, W, 3)
    gif = Image.open(os.path.join(out, "overlay.gif"))
    assert gif.n_frames == T and gif.size == (W, H)

    obj = json.load(open(os.path.join(out, "objects.json")))
    assert obj["format"] == "slotmatch-segment-v1" and obj["video"] == "scene"
    assert (obj["num_frames"], obj["size"], obj["model_size"], obj["num_slots"]) == (T, [H, W], [32, 32], K)
    assert obj["fps"] == pytest.approx(12)
    assert [s["slot"] for s in obj["slots"]] == list(range(K))
    for s in obj["slots"]:
        assert s["palette_index"] == s["slot"] + 1 and s["colour"] == PALETTE[s["slot"] + 1].tolist()
        assert len(s["frames"]) == len(s["area"]) == len(s["bbox"]) and s["frames"] == sorted(s["frames"])
        for t, area, (x0, y0, x1, y1) in zip(s["frames"], s["area"], s["bbox"]):
            m = masks[t] == s["palette_index"]
            ys, xs = np.nonzero(m)
            assert area == m.sum() > 0
            assert [x0, y0, x1, y1] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    present = sum(len(s["frames"]) for s in obj["slots"])
    assert present == sum(len(np.unique(m)) for m in masks)  # every (frame, slot) present is listed
    assert obj["speed"]["model_fps"] > 0

    # a rerun replaces the previous output in place, leaving no temporary folder
    assert main(["segment", video, "--checkpoint", ckpt, "--out", out]) == 0
    assert not os.path.exists(os.path.join(out, "overlay.gif")) and leftovers(tmp_path) == []


def test_chunked_equals_one_pass(ckpt, video, tmp_path):
    one = segment(video, ckpt, str(tmp_path / "one"), chunk=100, progress=False)
    chunked = segment(video, ckpt, str(tmp_path / "chunked"), chunk=3, progress=False)
    assert one["frames"] == chunked["frames"] == T and one["videos"] == 1
    a, b = read_masks(tmp_path / "one"), read_masks(tmp_path / "chunked")
    assert np.array_equal(a, b)
    oa = json.load(open(tmp_path / "one" / "objects.json"))
    ob = json.load(open(tmp_path / "chunked" / "objects.json"))
    assert oa["slots"] == ob["slots"]

    # and both equal the model run on the whole clip at once
    from slotmatch.checkpoint import load_model

    model, _ = load_model(ckpt)
    ids, _ = infer.segment_frames(model, decoded_frames(video), (32, 32))
    assert np.array_equal(ids + 1, a)


def test_tracked_chunks_carry_the_last_masks(ckpt, video):
    """With `model.track: masks` a chunk's first frame is matched to the last chunk's masks (carry["prev_attn"])."""
    from test_models import _Scramble

    from slotmatch.checkpoint import load_model

    model, _ = load_model(ckpt)
    model.cfg.track = "masks"
    model.slot_attention = _Scramble(model.slot_attention)  # slot order shuffled every frame: tracking must undo it
    frames = decoded_frames(video)

    def chunked(drop_masks=False):
        model.slot_attention.g.manual_seed(1)
        parts, carry = [], None
        for i in range(0, len(frames), 3):
            ids, carry = infer.segment_frames(model, frames[i:i + 3], (32, 32), carry)
            parts.append(ids)
            if drop_masks:
                carry.pop("prev_attn")
        return np.concatenate(parts)

    model.slot_attention.g.manual_seed(1)
    one, _ = infer.segment_frames(model, frames, (32, 32))
    assert np.array_equal(chunked(), one)
    assert not np.array_equal(chunked(drop_masks=True), one)  # without the masks, each chunk restarts the order


def test_segment_track_override_is_recorded(ckpt, video, tmp_path):
    assert main(["segment", video, "--checkpoint", ckpt, "--out", str(tmp_path / "t"), "--track", "masks",
                 "--chunk", "3"]) == 0
    assert json.load(open(tmp_path / "t" / "objects.json"))["track"] == "masks"
    with pytest.raises(ValueError, match="track must be"):
        segment(video, ckpt, str(tmp_path / "u"), track="hungarian", progress=False)


def test_parts_come_with_the_frames_around_them():
    frames = [np.full((2, 2, 3), t, np.uint8) for t in range(7)]
    got = [([f[0, 0, 0] for f in b], [f[0, 0, 0] for f in p], [f[0, 0, 0] for f in a])
           for b, p, a in infer._chunks(iter(frames), 3, "v.mp4", context=2)]
    assert got == [([], [0, 1, 2], [3, 4]), ([1, 2], [3, 4, 5], [6]), ([4, 5], [6], [])]
    assert [len(p) for _, p, _ in infer._chunks(iter(frames), 1, "v.mp4", context=3)] == [1] * 7
    assert [(b, a) for b, _, a in infer._chunks(iter(frames), 4, "v.mp4")] == [([], []), ([], [])]


def test_an_encoder_with_context_segments_chunked_as_in_one_pass(tiny_dataset, video, tmp_path):
    cfg = tiny_config(tiny_dataset, max_steps=2, val_every=2, checkpoint_every=2)
    cfg["model"]["encoder"]["context"] = 1  # each frame seen with its neighbours
    ckpt = train(cfg, str(tmp_path / "run"), progress=False)
    one = segment(video, ckpt, str(tmp_path / "one"), chunk=100, progress=False)
    for chunk in (1, 3):
        segment(video, ckpt, str(tmp_path / f"chunk{chunk}"), chunk=chunk, progress=False)
        assert np.array_equal(read_masks(tmp_path / "one"), read_masks(tmp_path / f"chunk{chunk}"))
    from slotmatch.checkpoint import load_model

    model, _ = load_model(ckpt)
    assert model.encoder.context == 1 and one["frames"] == T
    ids, _ = infer.segment_frames(model, decoded_frames(video), (32, 32))
    assert np.array_equal(ids + 1, read_masks(tmp_path / "one"))


def test_folder_of_frames(ckpt, frames, tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame{t}.png")  # natural order: frame2 before frame10
    summary = segment(str(folder), ckpt, str(tmp_path / "out"), chunk=4, progress=False)
    assert summary["videos"] == 1 and summary["frames"] == T
    obj = json.load(open(tmp_path / "out" / "objects.json"))
    assert obj["video"] == "clip" and obj["num_frames"] == T and obj["size"] == [H, W]
    assert read_masks(tmp_path / "out").shape == (T, H, W)


def test_folder_of_videos_one_subfolder_each_bad_one_reported(ckpt, video, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(video, folder / "a.mp4")
    shutil.copy(video, folder / "b.mov")
    (folder / "notes.txt").write_text("not a video, not listed")
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--checkpoint", ckpt, "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["a", "b"]
    for name in ("a", "b"):
        assert json.load(open(out / name / "objects.json"))["num_frames"] == T

    (folder / "c.mp4").write_text("a text file named like a video")
    capsys.readouterr()
    assert main(["segment", str(folder), "--checkpoint", ckpt, "--out", str(out)]) == 2
    err = last_line(capsys.readouterr().err)
    assert err.startswith("slotmatch segment: error: 1 of 3 videos") and "c.mp4" in err
    assert sorted(os.listdir(out)) == ["a", "b"]  # the good ones are written, nothing for c


def test_imageio_ffmpeg_backend(ckpt, video, tmp_path, monkeypatch):
    pytest.importorskip("imageio_ffmpeg")
    monkeypatch.setattr(infer, "video_backend", lambda: "imageio-ffmpeg")
    summary = segment(video, ckpt, str(tmp_path / "out"), progress=False)
    assert summary["frames"] == T
    assert read_masks(tmp_path / "out").shape == (T, H, W)
    assert len(decoded_frames(tmp_path / "out" / "overlay.mp4")) == T


def run_failing(capsys, args, name):
    capsys.readouterr()
    assert main(["segment", *args]) == 2
    err = last_line(capsys.readouterr().err)
    assert err.startswith("slotmatch segment: error: ") and name in err, err
    return err


def test_bad_video_files_fail_cleanly(ckpt, video, tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("hello, I am not a video\n")
    out = tmp_path / "out"
    run_failing(capsys, [str(text), "--checkpoint", ckpt, "--out", str(out)], "notes.mp4")
    assert not out.exists() and leftovers(tmp_path) == []

    data = open(video, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    run_failing(capsys, [str(cut), "--checkpoint", ckpt, "--out", str(out)], "cut.mp4")
    assert not out.exists() and leftovers(tmp_path) == []

    # moov atom first: the first frames decode, then the file ends; nothing is written either
    fast = tmp_path / "fast.mp4"
    with av.open(video) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        for packet in src.demux(s_in):
            if packet.dts is not None:
                packet.stream = s_out
                dst.mux(packet)
    data = fast.read_bytes()
    (tmp_path / "fastcut.mp4").write_bytes(data[: int(len(data) * 0.7)])
    run_failing(capsys, [str(tmp_path / "fastcut.mp4"), "--checkpoint", ckpt, "--out", str(out)], "fastcut.mp4")
    assert not out.exists() and leftovers(tmp_path) == []

    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "keep.txt").write_text("not a segment output")
    run_failing(capsys, [video, "--checkpoint", ckpt, "--out", str(existing)], "mine")
    assert os.listdir(existing) == ["keep.txt"]


def test_bad_checkpoints_fail_cleanly(video, tmp_path, capsys):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    out = tmp_path / "out"
    err = run_failing(capsys, [video, "--checkpoint", str(other), "--out", str(out)], "other.ckpt")
    assert "not a slotmatch checkpoint" in err and not out.exists()

    # exported weights without the encoder, whose config names an encoder weight file that is gone
    from safetensors.torch import save_file

    from slotmatch.checkpoint import FORMAT
    from slotmatch.models import build_model

    vit = {"name": "vit_small_patch14_dinov2", "weights": None, "frozen": True, "img_size": 28,
           "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
    model_cfg = {"encoder": vit, "img_size": 28, "num_slots": 2, "slot_dim": 8, "decoder_hidden": [8]}
    state = {k: v.contiguous() for k, v in build_model(model_cfg).state_dict().items()
             if not k.startswith("encoder.")}
    model_cfg["encoder"]["weights"] = str(tmp_path / "gone" / "dinov2.pth")
    weights = tmp_path / "student.safetensors"
    save_file(state, str(weights), metadata={"format": FORMAT, "config": json.dumps({"model": model_cfg})})
    err = run_failing(capsys, [video, "--checkpoint", str(weights), "--out", str(out)], "dinov2.pth")
    assert "student.safetensors" in err and not out.exists()
