"""Pretraining the offline CNN encoder on pretext targets (colours, relief, flow), then loading it frozen."""

import json
import os

import pytest
import torch

from slotmatch.data.dataset import DatasetError, open_dataset
from slotmatch.models import build_model
from slotmatch.models.encoder import CNNEncoder, load_state_dict_file, position_grid
from slotmatch.pretrain import PretextModel, _architecture, object_weights, pretrain_encoder

ENC = {"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 4}


def test_pretext_steps_lower_the_loss_on_a_fixed_batch(flow_dataset):
    torch.manual_seed(0)
    clip = open_dataset(flow_dataset, "train", with_depth=True, with_flow=True)[0]
    model = PretextModel(ENC, "pixels_raw+relief+flow")
    frames, depth, flow = clip["video"][None], clip["depth"][None], clip["flow"][None]  # one clip
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first, parts = model.loss(frames, depth, flow)
    assert set(parts) == {"pixels_raw", "relief", "flow"}
    for _ in range(30):
        loss, _ = model.loss(frames, depth, flow)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(model.loss(frames, depth, flow)[0].detach()) < 0.7 * float(first.detach())


def test_object_weights_favour_tokens_that_stand_out_of_the_floor(flow_dataset, tmp_path):
    from slotmatch.models.encoder import relief_patch_target

    clip = open_dataset(flow_dataset, "train", with_depth=True, with_flow=True)[0]
    depth = clip["depth"]
    w = object_weights(depth, 4, 20.0)
    assert w.shape == (depth.shape[0], (32 // 4) ** 2)
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    relief = relief_patch_target(depth, 4)
    standing, floor = (relief > 1.0).all(-1), (relief < 0.2).all(-1)  # tokens wholly on an object, wholly on the floor
    assert standing.any() and floor.any()
    assert w[standing].min() > 10 * w[floor].max()
    assert torch.allclose(object_weights(depth, 4, 0.0), torch.ones_like(w))
    from slotmatch.models.encoder import standing as standing_of
    old = 1.0 + 20.0 * standing_of(relief).mean(-1)  # session 16's formula, on the token's own relief values
    assert torch.allclose(w, old / old.mean(), atol=1e-5)
    # edge weights: tokens that hold an object's edge outweigh those wholly on the floor or wholly inside an object
    e = object_weights(depth, 4, 0.0, edge_weight=20.0)
    assert torch.allclose(e.mean(), torch.tensor(1.0))
    s_tok = standing_of(relief)
    edge, inside = (s_tok.max(-1).values > 0.9) & (s_tok.min(-1).values < 0.1), s_tok.min(-1).values > 0.99
    assert edge.any() and floor.any()
    assert e[edge].min() > 1.5 * e[floor].median()  # (a floor token beside an object holds a bit of its edge)
    assert e[edge].mean() > 3 * e[floor].mean()
    assert inside.sum() == 0 or e[edge].mean() > 1.5 * e[inside].mean()
    # the weighted loss differs from the plain one, and pretraining with it runs end to end
    torch.manual_seed(0)
    plain = PretextModel(ENC, "surface+relief")
    weighted = PretextModel(ENC, "surface+relief", object_weight=20.0)
    weighted.load_state_dict(plain.state_dict())
    args = (clip["video"][None], depth[None], clip["flow"][None])
    assert abs(plain.loss(*args)[0].item() - weighted.loss(*args)[0].item()) > 1e-3
    with pytest.raises(ValueError, match="needs depth"):  # even when the targets themselves do not read depth
        PretextModel(ENC, "pixels_raw", object_weight=20.0).loss(clip["video"][None])
    out = str(tmp_path / "pt")
    pretrain_encoder(flow_dataset, out, ENC, progress=False, steps=2, batch_size=2, size=32, num_workers=0,
                     targets="surface", object_weight=20.0)
    assert json.load(open(os.path.join(out, "pretrain.json")))["settings"]["object_weight"] == 20.0
    with pytest.raises(ValueError, match="object_weight 20.0, not 5"):  # resuming keeps the loss it began with
        pretrain_encoder(flow_dataset, out, ENC, resume=True, progress=False, steps=3, batch_size=2, size=32,
                         num_workers=0, targets="surface", object_weight=5)
    with pytest.raises(ValueError, match="edge_weight 0.0, not 5"):
        pretrain_encoder(flow_dataset, out, ENC, resume=True, progress=False, steps=3, batch_size=2, size=32,
                         num_workers=0, targets="surface", object_weight=20.0, edge_weight=5)
    edged = PretextModel(ENC, "surface+relief", edge_weight=20.0)
    edged.load_state_dict(plain.state_dict())
    assert abs(plain.loss(*args)[0].item() - edged.loss(*args)[0].item()) > 1e-3


def test_pretrained_weights_load_frozen_and_give_the_trained_features(flow_dataset, tmp_path):
    out = str(tmp_path / "pt")
    path = pretrain_encoder(flow_dataset, out, ENC, progress=False, steps=3, batch_size=4, size=32, num_workers=0)
    info = json.load(open(os.path.join(out, "pretrain.json")))
    assert info["steps"] == 3 and info["encoder"]["channels"] == 8
    state = torch.load(os.path.join(out, "pretrain-state.pt"), weights_only=True)
    trained = CNNEncoder(**{k: v for k, v in ENC.items() if k != "name"})
    trained.load_state_dict({k[len("encoder."):]: v.half().float()  # stored in fp16
                             for k, v in state["model"].items() if k.startswith("encoder.")})
    model = build_model({"encoder": {**ENC, "weights": path, "frozen": True}, "img_size": 32, "num_slots": 3,
                         "slot_dim": 8, "decoder_hidden": [16], "target": "features"})
    assert not any(p.requires_grad for p in model.encoder.parameters())
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model.encoder(images), trained(images))
    assert model(torch.rand(1, 2, 3, 32, 32))["target"].shape == (1, 2, 64, 8)


def test_weights_of_another_encoder_size_are_a_clear_error(flow_dataset, tmp_path):
    path = pretrain_encoder(flow_dataset, str(tmp_path / "pt"), ENC, progress=False, steps=1, batch_size=2, size=32,
                            num_workers=0)
    with pytest.raises(ValueError, match="encoder.safetensors does not fit a CNN encoder with channels=16"):
        CNNEncoder(channels=16, num_layers=2, patch_size=4, weights=path)


def test_a_killed_pretraining_resumes_from_its_state(flow_dataset, tmp_path):
    out = str(tmp_path / "pt")
    pretrain_encoder(flow_dataset, out, ENC, progress=False, steps=4, batch_size=2, size=32, num_workers=0,
                     checkpoint_every=2)
    pretrain_encoder(flow_dataset, out, ENC, resume=True, progress=False, steps=6, batch_size=2, size=32,
                     num_workers=0)
    assert json.load(open(os.path.join(out, "pretrain.json")))["steps"] == 6
    with pytest.raises(ValueError, match="was written for encoder"):
        pretrain_encoder(flow_dataset, out, {**ENC, "channels": 4}, resume=True, progress=False, steps=8,
                         batch_size=2, size=32, num_workers=0)


def test_pretraining_steps_warn_nothing_and_record_their_running_loss(flow_dataset, tmp_path):
    """The loop reads its loss once per step as a number: reading a tensor that needs gradients with float()
    warns at every step (torch >= 2.5), and pretrain.json must keep the running loss as a plain float."""
    import math
    import warnings

    out = str(tmp_path / "pt")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*requires_grad=True to a scalar.*")
        pretrain_encoder(flow_dataset, out, ENC, progress=False, steps=3, batch_size=2, size=32, num_workers=0)
    loss = json.load(open(os.path.join(out, "pretrain.json")))["loss"]
    assert isinstance(loss, float) and math.isfinite(loss) and loss > 0


def test_the_pretext_needs_depth_and_flow(tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match="--with-depth"):
        pretrain_encoder(tiny_dataset, str(tmp_path / "pt"), ENC, progress=False, steps=1, size=32, num_workers=0)
    with pytest.raises(ValueError, match="oracle"):
        pretrain_encoder(tiny_dataset, str(tmp_path / "pt"), ENC, progress=False, targets="oracle", num_workers=0)


def test_missing_cnn_weights_say_how_to_make_them(tmp_path):
    from slotmatch.models.encoder import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="slotmatch pretrain"):
        CNNEncoder(channels=8, num_layers=2, patch_size=4, weights=str(tmp_path / "none.safetensors"))


def test_the_readout_gives_the_pretext_heads_predictions_of_the_chosen_parts(flow_dataset, tmp_path):
    out = str(tmp_path / "pt")
    path = pretrain_encoder(flow_dataset, out, ENC, progress=False, steps=3, batch_size=4, size=32, num_workers=0,
                            targets="pixels_raw+relief")
    state = torch.load(os.path.join(out, "pretrain-state.pt"), weights_only=True)
    pretext = PretextModel(ENC, "pixels_raw+relief")
    pretext.load_state_dict({k: v.half().float() for k, v in state["model"].items()})  # the file is fp16
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pred = pretext.head(pretext.encoder(images))  # (2, 64, 48 colours + 16 relief)
    cfg = {k: v for k, v in ENC.items() if k != "name"}
    relief = CNNEncoder(**cfg, weights=path, frozen=True, readout="relief")
    assert relief.feature_dim == 16 and torch.allclose(relief(images), pred[..., 48:], atol=1e-5)
    both = CNNEncoder(**cfg, weights=path, frozen=True, readout="relief+pixels_raw+position")
    got = both(images)
    assert both.feature_dim == 16 + 48 + 4 == got.shape[-1]
    assert torch.allclose(got[..., :16], pred[..., 48:], atol=1e-5)
    assert torch.allclose(got[..., 16:64], pred[..., :48], atol=1e-5)
    assert torch.equal(got[1, :, 64:], position_grid(8, 8))
    # without a readout the same file gives the CNN's features; the head is part of a readout model's weights
    assert CNNEncoder(**cfg, weights=path).feature_dim == 8
    model = build_model({"encoder": {**ENC, "weights": path, "frozen": True, "readout": "relief"}, "img_size": 32,
                         "num_slots": 3, "slot_dim": 8, "decoder_hidden": [16], "target": "features"})
    assert model(torch.rand(1, 2, 3, 32, 32))["target"].shape == (1, 2, 64, 16)
    assert any(k.startswith("encoder.readout.") for k in model.state_dict())


def test_a_readout_names_what_is_wrong(flow_dataset, tmp_path):
    path = pretrain_encoder(flow_dataset, str(tmp_path / "pt"), ENC, progress=False, steps=1, batch_size=2, size=32,
                            num_workers=0, targets="relief")
    cfg = {k: v for k, v in ENC.items() if k != "name"}
    with pytest.raises(ValueError, match="pretrained on 'relief'"):
        CNNEncoder(**cfg, weights=path, readout="surface")
    with pytest.raises(ValueError, match="give the encoder's weights"):
        CNNEncoder(**cfg, readout="relief")
    from safetensors.torch import load_file, save_file

    no_head = str(tmp_path / "old.safetensors")  # an encoder file written before the head was saved with it
    save_file({k: v for k, v in load_file(path).items() if not k.startswith("readout.")}, no_head)
    with pytest.raises(ValueError, match="old.safetensors has no pretext head.*--resume"):
        CNNEncoder(**cfg, weights=no_head, readout="relief")


def test_a_readout_model_loads_from_its_export_without_the_encoder_file(flow_dataset, tiny_dataset, tmp_path):
    from conftest import tiny_config
    from slotmatch.checkpoint import CheckpointError, export_safetensors, load_model
    from slotmatch.train import train

    path = pretrain_encoder(flow_dataset, str(tmp_path / "pt"), ENC, progress=False, steps=1, batch_size=2, size=32,
                            num_workers=0, targets="pixels_raw+relief")
    cfg = tiny_config(tiny_dataset, max_steps=1, val_every=1)
    cfg["model"]["encoder"] = {**ENC, "weights": path, "frozen": True, "readout": "pixels_raw"}
    cfg["model"]["target"] = "features"
    last = train(cfg, str(tmp_path / "run"), progress=False)
    model, _ = load_model(last)
    export = export_safetensors(last, str(tmp_path / "model.safetensors"))
    os.remove(path)
    with pytest.raises(CheckpointError, match="run/checkpoints/last.ckpt: its encoder is read through the pretext head"):
        load_model(last)
    again, _ = load_model(export)  # the export names the head's layout
    video = torch.rand(1, 2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(again(video, masks_only=True)["masks"], model(video, masks_only=True)["masks"], atol=1e-2)


def test_standardize_gives_each_channel_zero_mean_unit_variance_per_frame(flow_dataset, tmp_path):
    path = pretrain_encoder(flow_dataset, str(tmp_path / "pt"), ENC, progress=False, steps=1, batch_size=2, size=32,
                            num_workers=0, targets="relief")
    cfg = {k: v for k, v in ENC.items() if k != "name"}
    raw = CNNEncoder(**cfg, weights=path, readout="relief")
    std = CNNEncoder(**cfg, weights=path, readout="relief", standardize=True)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        x, y = raw(images), std(images)
    assert torch.allclose(y.mean(1), torch.zeros(3, 16), atol=1e-5)
    assert torch.allclose(y.std(1), torch.ones(3, 16), atol=1e-3)
    # an affine map of each channel per frame: the order of the tokens along each channel is kept
    assert torch.equal(x.argsort(1), y.argsort(1))


def test_an_encoder_with_context_sees_each_frame_with_its_neighbours(flow_dataset, tmp_path):
    from slotmatch.models.encoder import stack_context

    video = torch.arange(5.0).view(1, 5, 1, 1, 1).expand(2, 5, 3, 4, 4)
    stacked = stack_context(video, 1)
    assert stacked.shape == (2, 5, 9, 4, 4)
    # frame t holds frames t-1, t, t+1 in time order; the ends repeat the first and the last frame
    assert stacked[0, :, ::3, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]
    assert torch.equal(stack_context(video, 0), video)
    torch.manual_seed(0)
    enc = CNNEncoder(channels=8, num_layers=2, patch_size=4, context=1)
    clip = torch.rand(1, 6, 3, 32, 32)
    moved = clip.clone()
    moved[:, 3] = torch.rand(3, 32, 32)  # only frame 3 changes
    with torch.no_grad():
        a, b = enc.encode_video(clip), enc.encode_video(moved)
    changed = [(a[0, t] - b[0, t]).abs().max().item() > 1e-6 for t in range(6)]
    assert changed == [False, False, True, True, True, False]  # frame 3 and its two neighbours, nothing else
    with pytest.raises(ValueError, match="takes 9 input channels"):  # single frames need encode_video
        enc(clip[0])
    with pytest.raises(ValueError, match="context must be"):
        CNNEncoder(channels=8, num_layers=2, patch_size=4, context=-1)
    # pretrained with context, it loads with context only, and the slot model and its cache read the neighbours
    ctx = {**ENC, "context": 1}
    path = pretrain_encoder(flow_dataset, str(tmp_path / "pt"), ctx, progress=False, steps=2, batch_size=6, size=32,
                            num_workers=0, targets="surface+relief")
    with pytest.raises(ValueError, match="context=0"):
        CNNEncoder(**{k: v for k, v in ENC.items() if k != "name"}, weights=path)
    model = build_model({"encoder": {**ctx, "weights": path, "frozen": True}, "img_size": 32, "num_slots": 3,
                         "slot_dim": 8, "decoder_hidden": [16], "target": "features"})
    with torch.no_grad():
        features = model.encode(clip, with_target=False)["features"]
        assert torch.allclose(features, model.encoder.encode_video(clip))
        assert not torch.allclose(features[:, 1:], model.encoder.encode_video(clip[:, 1:]))  # frame 1 lost a neighbour


def test_an_unpacked_readout_gives_one_token_per_pixel_with_that_pixels_predictions():
    torch.manual_seed(0)
    kw = dict(channels=8, num_layers=2, patch_size=2, readout="surface+relief", pretext="surface+relief")
    packed, unpacked = CNNEncoder(**kw), CNNEncoder(**kw, unpack=True)
    unpacked.load_state_dict(packed.state_dict())
    assert (unpacked.patch_size, unpacked.cnn_patch_size, unpacked.feature_dim) == (1, 2, 4)
    assert unpacked.grid_size(32) == (32, 32)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = packed(images), unpacked(images)  # (2, 256, 16), (2, 1024, 4)
    assert a.shape == (2, 16 * 16, 16) and b.shape == (2, 32 * 32, 4)
    # pixel (y, x) lies in patch (y // 2, x // 2) at (y % 2, x % 2): its colours are the surface part's values there
    # (channel-major, then row, then column, as `surface_patch_target` lays them out), then the relief part's value
    for y, x in [(0, 0), (5, 8), (31, 30), (17, 3)]:
        token = a[:, (y // 2) * 16 + x // 2]
        at = (y % 2) * 2 + x % 2
        want = torch.stack([token[:, c * 4 + at] for c in range(3)] + [token[:, 12 + at]], -1)
        assert torch.allclose(b[:, y * 32 + x], want, atol=1e-6)
    with torch.no_grad():  # position is the pixel's; standardisation runs over all pixels of the frame
        pos = CNNEncoder(**{**kw, "readout": "relief+position"}, unpack=True, standardize=True)(images)
    assert pos.shape == (2, 1024, 1 + 4)
    assert torch.allclose(pos.mean(1), torch.zeros(2, 5), atol=1e-4)
    with pytest.raises(ValueError, match="give it a readout"):
        CNNEncoder(channels=8, num_layers=2, patch_size=2, unpack=True)
    model = build_model({"encoder": {"name": "cnn", **kw, "unpack": True, "frozen": True}, "img_size": 32,
                         "num_slots": 3, "slot_dim": 8, "decoder_hidden": [16], "target": "features"})
    out = model(torch.rand(1, 2, 3, 32, 32))
    assert model.grid == (32, 32) and out["masks"].shape == (1, 2, 3, 32 * 32)


def test_part_weights_scale_only_their_parts_channels_after_standardising():
    torch.manual_seed(0)
    kw = dict(channels=8, num_layers=2, patch_size=2, readout="surface+relief+position", pretext="surface+relief",
              standardize=True, unpack=True)
    plain, weighed = CNNEncoder(**kw), CNNEncoder(**kw, part_weights={"relief": 0.5})
    weighed.load_state_dict(plain.state_dict())  # no new parameters: old checkpoints load as they are
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        a, b = plain(images), weighed(images)  # (2, 256, 3 surface + 1 relief + 4 position)
    assert torch.equal(b[..., :3], a[..., :3]) and torch.equal(b[..., 4:], a[..., 4:])
    assert torch.allclose(b[..., 3], 0.5 * a[..., 3]) and float(a[..., 3].std()) > 0.5
    packed = CNNEncoder(**{**kw, "unpack": False, "readout": "relief+surface"}, part_weights={"relief": 2.0})
    assert packed.part_weights.tolist() == [2.0] * 4 + [1.0] * 12  # 2x2 pixels' relief, then their colours
    with pytest.raises(ValueError, match=r"part_weights name \['flow'\], not among the readout's parts"):
        CNNEncoder(**kw, part_weights={"flow": 2.0})
    with pytest.raises(ValueError, match="give the encoder a readout"):
        CNNEncoder(channels=8, num_layers=2, patch_size=2, part_weights={"relief": 2.0})


def test_pretraining_ignores_how_the_encoder_is_read_part_weights_included():
    # a model config's encoder (readout, part_weights ...) pretrains as the bare CNN: those keys read the result
    read = {**ENC, "readout": "surface+relief", "standardize": True, "part_weights": {"relief": 0.5}}
    model = PretextModel(read, "surface+relief")
    assert model.encoder.readout is None and model.encoder.part_weights is None
    assert _architecture(read) == _architecture(ENC)


def test_patch_size_one_adds_a_full_resolution_layer_under_the_deep_grid():
    enc = CNNEncoder(channels=8, num_layers=3, patch_size=1, deep_patch_size=4)
    strides = [m.stride[0] for m in enc.convs if isinstance(m, torch.nn.Conv2d)]
    assert strides == [1, 2, 2] and enc.fine_layer == 1
    x = torch.rand(2, 3, 16, 16)
    assert enc(x).shape == (2, 16 * 16, 8)
    y = x.clone()
    y[:, :, 5, 7] = 1 - y[:, :, 5, 7]  # one pixel: its token changes more than a far token's, through the lateral
    with torch.no_grad():
        d = (enc(x) - enc(y)).abs().sum(-1).reshape(2, 16, 16)
    assert d[:, 5, 7].min() > 0 and (d[:, 5, 7] > d[:, 15, 0]).all()
    with pytest.raises(ValueError, match="needs at least 3 layers"):
        CNNEncoder(channels=8, num_layers=2, patch_size=1, deep_patch_size=4)
    two = CNNEncoder(channels=8, num_layers=2, patch_size=2, deep_patch_size=4)  # unchanged below: stride 2 first
    assert [m.stride[0] for m in two.convs if isinstance(m, torch.nn.Conv2d)] == [2, 2] and two.fine_layer == 1


def test_refine_layers_combine_the_fine_and_deep_features_on_the_output_grid(flow_dataset, tmp_path, capsys):
    from slotmatch.cli import main

    torch.manual_seed(0)
    kw = dict(channels=8, num_layers=3, patch_size=2, deep_patch_size=4)
    plain, refined = CNNEncoder(**kw), CNNEncoder(**kw, refine_layers=2)
    assert not any(k.startswith("refine") for k in plain.state_dict())  # encoders without it are unchanged
    assert [tuple(refined.state_dict()[f"refine.{i}.weight"].shape) for i in (0, 2)] == [(8, 8, 3, 3)] * 2
    refined.load_state_dict({**refined.state_dict(), **plain.state_dict()})
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = plain(images), refined(images)
        assert a.shape == b.shape == (2, 16 * 16, 8)
        assert not torch.allclose(a, b)
        # refine convs that pass the merged features through (a centre tap of 1, no bias) keep their positive part
        for conv in (refined.refine[0], refined.refine[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[range(8), range(8), 1, 1] = 1.0
        pos = plain.pos(position_grid(16, 16))
        assert torch.allclose(refined(images) - pos, (a - pos).clamp(min=0), atol=1e-5)
    with pytest.raises(ValueError, match="refine_layers must be"):
        CNNEncoder(**kw, refine_layers=-1)
    # pretrained with refine layers, the weights load only into an encoder that has them; the hint names them
    code = main(["pretrain", "--config", "movi-c-like-frozen", "--data", flow_dataset, "--out", str(tmp_path / "pt"),
                 "--steps", "2", "--batch-size", "4", "--targets", "surface+relief", "--quiet",
                 "model.encoder.channels=8", "model.encoder.num_layers=3", "model.encoder.refine_layers=2",
                 "data.size=32"])
    assert code in (0, None)
    assert "model.encoder.refine_layers=2" in capsys.readouterr().out
    path = str(tmp_path / "pt" / "encoder.safetensors")
    with pytest.raises(ValueError, match="refine_layers=0"):
        CNNEncoder(**kw, weights=path)
    CNNEncoder(**kw, weights=path, refine_layers=2)


def test_a_guided_surface_is_the_frames_colour_filtered_under_the_predicted_relief():
    from slotmatch.models.encoder import pixel_patch_target, surface_colour

    torch.manual_seed(0)
    kw = dict(channels=8, num_layers=2, patch_size=2, readout="surface+relief", pretext="pixels_raw+surface+relief")
    plain, guided = CNNEncoder(**kw), CNNEncoder(**kw, guided_surface=True)
    guided.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = plain(images), guided(images)  # (2, 256, 12 + 4)
        relief = a[..., 12:].reshape(2, 16, 16, 2, 2).permute(0, 1, 3, 2, 4).reshape(2, 32, 32)
        want = pixel_patch_target(surface_colour(images, None, relief=relief), 2, normalize=False)
        assert torch.allclose(b[..., :12], want, atol=1e-6)
        assert torch.equal(a[..., 12:], b[..., 12:])  # the relief is the head's
        assert not torch.allclose(a[..., :12], b[..., :12])
        # one token per pixel: each pixel's surface is the filtered frame's colour there
        unpacked = CNNEncoder(**kw, guided_surface=True, unpack=True)
        unpacked.load_state_dict(plain.state_dict())
        per_pixel = unpacked(images)  # (2, 1024, 4)
        assert torch.allclose(per_pixel[..., :3], surface_colour(images, None, relief=relief).flatten(2).transpose(1, 2),
                              atol=1e-6)
    with pytest.raises(ValueError, match="guided_surface"):
        CNNEncoder(**{**kw, "readout": "relief"}, guided_surface=True)
    with pytest.raises(ValueError, match="guided_surface"):
        CNNEncoder(**{**kw, "pretext": "surface", "readout": "surface"}, guided_surface=True)


def test_a_student_encoder_pretrained_from_a_teacher_learns_the_teachers_predictions(flow_dataset, tiny_dataset,
                                                                                      tmp_path):
    """With a teacher, the pretext targets are the teacher encoder's head predictions (its tokens in the pretext's
    layout), not the simulator's: a student that is a copy of the teacher has zero loss, the teacher is neither
    trained nor saved, and no depth or flow is read (the tiny dataset has neither)."""
    teacher_path = pretrain_encoder(flow_dataset, str(tmp_path / "t"), ENC, progress=False, steps=2, batch_size=2,
                                    size=32, num_workers=0, targets="surface+relief")
    teacher = {**ENC, "weights": teacher_path, "readout": "surface", "unpack": True, "frozen": True}
    clip = open_dataset(flow_dataset, "train", with_depth=True)[0]
    video, depth = clip["video"][None], clip["depth"][None]

    copy = PretextModel(ENC, "surface+relief", teacher=teacher)
    sd = load_state_dict_file(teacher_path)
    copy.encoder.load_state_dict({k: v.float() for k, v in sd.items() if not k.startswith("readout.")})
    copy.head.load_state_dict({k[len("readout."):]: v.float() for k, v in sd.items() if k.startswith("readout.")})
    assert float(copy.loss(video)[0].detach()) < 1e-8
    assert float(PretextModel(ENC, "surface+relief").loss(video, depth)[0].detach()) > 0.01  # the simulator's targets
    assert not any(k.startswith("_teacher") for k in copy.state_dict())

    student = {**ENC, "channels": 4}
    out = str(tmp_path / "s")
    before = {k: v.clone() for k, v in sd.items()}
    pretrain_encoder(tiny_dataset, out, student, progress=False, steps=2, batch_size=2, size=32, num_workers=0,
                     targets="surface+relief", teacher=teacher)
    assert all(torch.equal(v, load_state_dict_file(teacher_path)[k]) for k, v in before.items())
    assert CNNEncoder(**{k: v for k, v in student.items() if k != "name"}, weights=os.path.join(out, "encoder.safetensors"),
                      readout="surface+relief").feature_dim > 0
    with pytest.raises(ValueError, match="was written with teacher encoder"):
        pretrain_encoder(flow_dataset, out, student, resume=True, progress=False, steps=3, batch_size=2, size=32,
                         num_workers=0, targets="surface+relief")


def test_a_teacher_encoder_for_other_targets_or_patches_is_a_clear_error(flow_dataset, tmp_path):
    teacher_path = pretrain_encoder(flow_dataset, str(tmp_path / "t"), ENC, progress=False, steps=1, batch_size=2,
                                    size=32, num_workers=0, targets="surface+relief")
    with pytest.raises(ValueError, match="pretrained on 'surface\\+relief'.*not 'pixels_raw'"):
        PretextModel(ENC, "pixels_raw", teacher={**ENC, "weights": teacher_path})
    with pytest.raises(ValueError, match="predicts 4x4-pixel patches.*2x2"):
        PretextModel({**ENC, "patch_size": 2}, "surface+relief", teacher={**ENC, "weights": teacher_path})
    with pytest.raises(FileNotFoundError, match="teacher encoder weights not found"):
        PretextModel(ENC, "surface+relief", teacher={**ENC, "weights": str(tmp_path / "none.safetensors")})
