"""Tests of slotmatch.models: shapes, equivariance, decoder fast paths, chunking, weight loading."""

import socket
import time

import pytest
import torch
import torch.nn.functional as F

from slotmatch import losses
from slotmatch.models import (
    CNNEncoder,
    FixedLearnedInit,
    MLPDecoder,
    SlotAttention,
    TimmViTEncoder,
    TransformerPredictor,
    WeightsNotFoundError,
    build_encoder,
    build_model,
    count_parameters,
    pixel_patch_target,
)

TINY_VIT = dict(depth=2, embed_dim=32, num_heads=2)
VIT_NAME = "vit_small_patch14_dinov2"


def tiny_cnn_cfg(**kw):
    cfg = dict(img_size=32, num_slots=4, slot_dim=16, decoder_hidden=(32, 32),
               encoder={"name": "cnn", "channels": 16, "num_layers": 2, "patch_size": 4})
    cfg.update(kw)
    return cfg


def tiny_vit_cfg(**kw):
    cfg = dict(img_size=28, num_slots=4, slot_dim=16, decoder_hidden=(32,),
               encoder={"name": VIT_NAME, "frozen": True, "model_kwargs": TINY_VIT})
    cfg.update(kw)
    return cfg


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------------------------
# shapes


def test_module_shapes():
    B, K, D, N = 2, 4, 16, 64
    enc = CNNEncoder(channels=16, num_layers=2, patch_size=4)
    x = enc(torch.rand(B, 3, 32, 32))
    assert x.shape == (B, N, 16) and enc.grid_size(32) == (8, 8) and enc.feature_dim == 16
    assert pixel_patch_target(torch.rand(B, 3, 32, 32), 4).shape == (B, N, 48)

    vit = TimmViTEncoder(VIT_NAME, img_size=28, model_kwargs=TINY_VIT)
    f = vit(torch.rand(B, 3, 28, 28))
    assert f.shape == (B, 4, 32) and vit.grid_size(28) == (2, 2) and vit.patch_size == 14

    init = FixedLearnedInit(K, D)(B)
    assert init.shape == (B, K, D)
    slots, attn = SlotAttention(D, D, iters=2)(init, torch.randn(B, N, D))
    assert slots.shape == (B, K, D) and attn.shape == (B, K, N)
    assert TransformerPredictor(D, blocks=1, heads=4)(slots).shape == (B, K, D)
    out = MLPDecoder(D, 48, (32, 32), grid=(8, 8))(slots)
    assert out["masks"].shape == (B, K, N) and out["reconstruction"].shape == (B, N, 48)


@pytest.mark.parametrize("cfg", [tiny_cnn_cfg(), tiny_vit_cfg()], ids=["cnn", "vit"])
def test_model_shapes(cfg):
    model = build_model(cfg)
    B, T = 2, 3
    video = torch.rand(B, T, 3, cfg["img_size"], cfg["img_size"])
    out = model(video)
    h, w = out["mask_grid"]
    N, K, D, Fd = h * w, cfg["num_slots"], cfg["slot_dim"], model.target_dim
    assert out["slots"].shape == (B, T, K, D)
    assert out["masks"].shape == (B, T, K, N) and out["attn"].shape == (B, T, K, N)
    assert out["reconstruction"].shape == (B, T, N, Fd) and out["target"].shape == (B, T, N, Fd)
    enc = model.encode(video)
    assert enc["features"].shape == (B, T, N, model.encoder.feature_dim)
    assert enc["target"].shape == (B, T, N, Fd)
    torch.testing.assert_close(out["masks"].sum(dim=2), torch.ones(B, T, N))
    torch.testing.assert_close(out["attn"].sum(dim=2), torch.ones(B, T, N))
    # masks_only inference path gives the same masks and no reconstruction
    fast = model(video, masks_only=True)
    assert "reconstruction" not in fast
    torch.testing.assert_close(fast["masks"], out["masks"], rtol=1e-5, atol=1e-6)
    # parameter counts
    counts = count_parameters(model)
    assert counts["total"] == sum(counts["per_module"].values())
    assert model.num_parameters() == counts


def test_target_types():
    assert build_model(tiny_cnn_cfg()).target_type == "pixels"  # trainable encoder default
    assert build_model(tiny_vit_cfg()).target_type == "features"  # frozen encoder default
    with pytest.raises(ValueError, match="frozen"):
        build_model(tiny_cnn_cfg(target="features"))
    model = build_model(tiny_vit_cfg())
    video = torch.rand(1, 2, 3, 28, 28)
    out = model(video)
    enc = model.encode(video)
    torch.testing.assert_close(out["target"], enc["features"])  # SlotContrast: target = features


# ---------------------------------------------------------------------------------------------
# slot attention, predictor, decoder


@pytest.mark.parametrize("logits", ["dot", "distance"])
def test_slot_attention_permutation_equivariant(logits):
    B, K, D, N = 2, 5, 16, 30
    sa = SlotAttention(D, D, iters=3, logits=logits)
    slots, inputs = torch.randn(B, K, D), torch.randn(B, N, D)
    perm = torch.randperm(K)
    s1, a1 = sa(slots, inputs)
    s2, a2 = sa(slots[:, perm], inputs)
    torch.testing.assert_close(s2, s1[:, perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a2, a1[:, perm], rtol=1e-5, atol=1e-6)
    pred = TransformerPredictor(D, blocks=2, heads=4)
    torch.testing.assert_close(pred(slots[:, perm]), pred(slots)[:, perm], rtol=1e-5, atol=1e-5)


def test_slot_attention_distance_logits_pick_the_nearest_query():
    # queries (3, 0) and (1, 0), one input with key (1, 0): the dot product gives it to the longer query,
    # the distance to the equal one
    sa = SlotAttention(2, 2, iters=1)
    sa.norm_slots = torch.nn.Identity()
    with torch.no_grad():
        sa.to_q.weight.copy_(torch.eye(2))
    slots = torch.tensor([[[3.0, 0.0], [1.0, 0.0]]])
    k = v = torch.tensor([[[1.0, 0.0]]])
    _, attn_dot = sa.step(slots, k, v)
    sa.logits = "distance"
    _, attn_dist = sa.step(slots, k, v)
    assert attn_dot[0, :, 0].argmax() == 0 and attn_dist[0, :, 0].argmax() == 1
    # -|q - k|^2 / 2 scaled: logits 2 * 2^-0.5 apart
    torch.testing.assert_close(attn_dist[0, :, 0], torch.tensor([2.0, 0.0]).mul(-(2 ** -0.5)).softmax(0))
    with pytest.raises(ValueError, match="logits"):
        SlotAttention(2, 2, logits="cosine")
    assert build_model(tiny_cnn_cfg(sa_logits="distance")).slot_attention.logits == "distance"  # the config's key
    with pytest.raises(ValueError, match="logits"):
        build_model(tiny_cnn_cfg(sa_logits="cosine"))


def test_slot_attention_implicit_same_forward():
    B, K, D, N = 2, 3, 8, 10
    sa = SlotAttention(D, D, iters=3)
    slots, inputs = torch.randn(B, K, D), torch.randn(B, N, D)
    s1, _ = sa(slots, inputs)
    sa.implicit = True
    s2, _ = sa(slots, inputs)
    torch.testing.assert_close(s1, s2)


def test_decoder_matches_naive_mlp_and_fast_path():
    B, K, D, Fd = 2, 4, 16, 12
    dec = MLPDecoder(D, Fd, (32, 24), grid=(3, 5))
    with torch.no_grad():
        for layer in dec.layers:
            layer.bias.normal_()
    slots = torch.randn(B, K, D)
    out = dec(slots)
    # naive reference: broadcast slot + pos to every patch, run the MLP, split, softmax over slots
    x = slots[:, :, None, :] + dec.pos_emb[None, None]  # (B, K, N, D)
    for i, layer in enumerate(dec.layers):
        x = layer(x if i == 0 else F.relu(x))
    feats, alpha = x[..., :Fd], x[..., Fd]
    masks = alpha.softmax(dim=1)
    recon = (feats * masks[..., None]).sum(dim=1)
    torch.testing.assert_close(out["masks"], masks, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["reconstruction"], recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["masks"].sum(dim=1), torch.ones(B, 15))
    torch.testing.assert_close(dec(slots, masks_only=True)["masks"], out["masks"])
    # another grid resamples the position embedding
    assert dec(slots, grid=(6, 10))["masks"].shape == (B, K, 60)


def test_decoder_coarse_position_grid():
    # positions learned on a 2x2 grid, resampled to the 4x4 token grid: 4 position vectors, not 16
    D = 8
    dec = MLPDecoder(D, 5, (16,), grid=(4, 4), pos_grid=(2, 2))
    assert dec.pos_emb.shape == (4, D)
    pos = dec.position_embedding()
    assert pos.shape == (16, D)
    # bicubic resampling of a constant grid is the constant; of a varying one, varies across the tokens
    with torch.no_grad():
        dec.pos_emb.copy_(torch.arange(4.0)[:, None].expand(4, D))
    pos = dec.position_embedding()
    assert not torch.allclose(pos[0], pos[-1])
    with torch.no_grad():
        dec.pos_emb.fill_(0.5)
    torch.testing.assert_close(dec.position_embedding(), torch.full((16, D), 0.5))
    out = dec(torch.randn(2, 3, D), token_index=torch.tensor([0, 5, 15]))
    assert out["masks"].shape == (2, 3, 3) and out["reconstruction"].shape == (2, 3, 5)
    # in the model: fewer parameters, same outputs' shapes
    fine, coarse = build_model(tiny_cnn_cfg()), build_model(tiny_cnn_cfg(decoder_pos_grid=2))
    n_tokens = fine.grid[0] * fine.grid[1]
    assert n_tokens > 4
    assert count_parameters(fine)["total"] - count_parameters(coarse)["total"] == (n_tokens - 4) * 16
    video = torch.rand(1, 2, 3, 32, 32)
    assert coarse(video)["masks"].shape == fine(video)["masks"].shape
    with pytest.raises(ValueError, match="position grid"):
        MLPDecoder(D, 5, (16,), grid=(4, 4), pos_grid=(0, 0))


# ---------------------------------------------------------------------------------------------
# SlotContrast model


def test_chunked_forward_equals_one_pass():
    model = build_model(tiny_cnn_cfg()).eval()
    video = torch.rand(2, 5, 3, 32, 32)
    with torch.no_grad():
        full = model(video)
        a = model(video[:, :2])
        b = model(video[:, 2:], prev_slots=a["slots"][:, -1])
    for key in ("slots", "masks", "attn", "reconstruction"):
        joined = torch.cat([a[key], b[key]], dim=1)
        torch.testing.assert_close(joined, full[key], rtol=1e-4, atol=1e-5)


def test_cached_features_equal_encoder_path():
    model = build_model(tiny_vit_cfg()).eval()
    video = torch.rand(2, 3, 3, 28, 28)
    with torch.no_grad():
        out = model(video)
        enc = model.encode(video)
        cached = model(features=enc["features"], target=enc["target"])
        cached_no_target = model(features=enc["features"])
    for key in ("slots", "masks", "reconstruction", "target"):
        torch.testing.assert_close(cached[key], out[key])
        torch.testing.assert_close(cached_no_target[key], out[key])


def _loss(model, video):
    out = model(video)
    return (losses.reconstruction_loss(out["reconstruction"], out["target"])
            + 0.5 * losses.slot_contrast_loss(out["slots"], temperature=0.1))


def test_optimizer_steps_lower_loss():
    model = build_model(tiny_cnn_cfg())
    video = torch.rand(2, 3, 3, 32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = _loss(model, video).item()
    for _ in range(8):
        opt.zero_grad()
        loss = _loss(model, video)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = _loss(model, video).item()
    assert after < before


def test_frozen_encoder_gets_no_gradient():
    model = build_model(tiny_vit_cfg())
    model.train()
    assert not model.encoder.vit.training  # frozen backbone stays in eval mode
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=1e-2)
    loss = _loss(model, torch.rand(2, 3, 3, 28, 28))
    loss.backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k
    assert model.decoder.layers[0].weight.grad is not None
    counts = count_parameters(model)
    assert counts["trainable"] == counts["total"] - counts["per_module"]["encoder"]


# ---------------------------------------------------------------------------------------------
# timm ViT weights from local files, never the network


def _manual_last_block(vit_encoder, images):
    """Reference: run the timm ViT by hand; last block output, no final norm, prefix dropped."""
    vit = vit_encoder.vit
    x = (images - vit_encoder.mean) / vit_encoder.std
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    for blk in vit.blocks:
        x = blk(x)
    return x[:, vit.num_prefix_tokens:]


def test_timm_weights_from_local_safetensors(tmp_path, no_network):
    from safetensors.torch import save_file

    src = TimmViTEncoder(VIT_NAME, img_size=28, model_kwargs=TINY_VIT)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in src.vit.state_dict().items()}, str(path))
    enc = build_encoder({"name": VIT_NAME, "weights": str(path), "frozen": True,
                         "model_kwargs": TINY_VIT}, img_size=28)
    images = torch.rand(2, 3, 28, 28)
    torch.testing.assert_close(enc(images), src(images), rtol=0, atol=0)
    torch.testing.assert_close(enc(images), _manual_last_block(src, images))


def test_official_dinov2_checkpoint_keys_and_pos_embed_resample(tmp_path, no_network):
    # an official-DINOv2-style .pth: mask_token present, pos_embed for a bigger (3x3) grid
    src = TimmViTEncoder(VIT_NAME, img_size=42, model_kwargs=TINY_VIT)
    sd = {k: v.clone() for k, v in src.vit.state_dict().items()}
    sd["mask_token"] = torch.zeros(1, 32)
    path = tmp_path / "dinov2_tiny_pretrain.pth"
    torch.save(sd, path)
    enc = TimmViTEncoder(VIT_NAME, weights=str(path), img_size=28, model_kwargs=TINY_VIT)
    assert enc.vit.pos_embed.shape == (1, 1 + 4, 32)
    torch.testing.assert_close(enc.vit.blocks[1].mlp.fc2.weight, src.vit.blocks[1].mlp.fc2.weight)
    assert enc(torch.rand(1, 3, 28, 28)).shape == (1, 4, 32)


def test_missing_weights_fail_fast_and_clearly(tmp_path, no_network, monkeypatch):
    missing = tmp_path / "nope" / "dinov2_vitb14_pretrain.pth"
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="dinov2_vitb14_pretrain.pth") as err:
        TimmViTEncoder(VIT_NAME, weights=str(missing), img_size=28, model_kwargs=TINY_VIT)
    assert time.perf_counter() - t0 < 10.0  # fails fast: no minute of hub retries (tiny model, generous bound)
    assert "weights=" in str(err.value)
    # weights="timm" with an empty HF cache: no download, a clear error
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="timm/vit_small_patch14_dinov2"):
        TimmViTEncoder(VIT_NAME, weights="timm", img_size=28, model_kwargs=TINY_VIT)
    assert time.perf_counter() - t0 < 10.0  # fails fast: no minute of hub retries (tiny model, generous bound)


def test_timm_weights_from_hf_cache(tmp_path, no_network, monkeypatch):
    """weights="timm" finds a file laid out as the Hugging Face cache keeps it."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    src = TimmViTEncoder(VIT_NAME, img_size=28, model_kwargs=TINY_VIT)
    repo = tmp_path / "hub" / "models--timm--vit_small_patch14_dinov2.lvd142m"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in src.vit.state_dict().items()},
              str(snap / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = TimmViTEncoder(VIT_NAME, weights="timm", img_size=28, model_kwargs=TINY_VIT)
    images = torch.rand(1, 3, 28, 28)
    torch.testing.assert_close(enc(images), src(images), rtol=0, atol=0)


def test_masks_from_slot_attention_combine_the_decoded_features():
    from slotmatch.models import build_model

    cfg = dict(encoder={"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 4}, img_size=16, num_slots=3,
               slot_dim=8, mlp_hidden=8, decoder_hidden=[16], target="pixels_raw", mask_source="attention")
    model = build_model(cfg)
    out = model(torch.rand(2, 2, 3, 16, 16))
    assert torch.equal(out["masks"], out["attn"])
    slots, attn = out["slots"].flatten(0, 1), out["attn"].flatten(0, 1)  # (B*T, K, D), (B*T, K, N)
    # each slot's decoded features: the reconstruction when that slot owns every patch
    feats = torch.stack([model.decoder(slots, masks=torch.nn.functional.one_hot(torch.full(attn.shape[::2], k), 3)
                                       .transpose(1, 2).float())["reconstruction"] for k in range(3)], 1)
    want = torch.einsum("bknf,bkn->bnf", feats, attn).unflatten(0, (2, 2))
    assert torch.allclose(out["reconstruction"], want, atol=1e-6)
    with pytest.raises(ValueError, match="mask_source"):
        build_model(dict(cfg, mask_source="alpha"))


@pytest.mark.parametrize("mask_source", ["decoder", "attention"])
def test_decoding_a_subset_of_patches_gives_those_patches_of_the_full_decoding(mask_source):
    torch.manual_seed(0)
    model = build_model({"encoder": {"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 4}, "img_size": 32,
                         "num_slots": 3, "slot_dim": 8, "decoder_hidden": [16], "target": "pixels",
                         "mask_source": mask_source})
    video = torch.rand(2, 3, 3, 32, 32)
    full = model(video)
    torch.manual_seed(1)
    part = model(video, decoded_tokens=20)
    idx = part["token_index"]
    assert idx.shape == (20,) and len(set(idx.tolist())) == 20
    assert part["reconstruction"].shape == (2, 3, 20, 48) and part["target"].shape == (2, 3, 20, 48)
    assert torch.allclose(part["reconstruction"], full["reconstruction"][:, :, idx], atol=1e-6)
    assert torch.allclose(part["target"], full["target"][:, :, idx])
    assert torch.allclose(part["masks"], full["masks"][..., idx], atol=1e-6)
    assert "token_index" not in model(video, decoded_tokens=64)  # all of them: nothing to pick
    # an explicit list of patches, in its own order, on the training path and on the masks-only path
    chosen = torch.tensor([7, 2, 40])
    given = model(video, token_index=chosen)
    assert torch.allclose(given["reconstruction"], full["reconstruction"][:, :, chosen], atol=1e-6)
    masks_only = model(video, masks_only=True, token_index=chosen)
    assert torch.equal(masks_only["token_index"], chosen)
    assert torch.allclose(masks_only["masks"], full["masks"][..., chosen], atol=1e-6)


def test_input_norm_switch_keeps_what_the_layernorm_erases():
    """The paper's LayerNorm on the encoder MLP's input maps a token and the token shifted and scaled over
    its channels to the same input; model.input_norm=false keeps them apart (and old checkpoints' layout)."""
    on, off = build_model(tiny_cnn_cfg()), build_model(tiny_cnn_cfg(input_norm=False))
    assert isinstance(on.encoder_mlp[0], torch.nn.LayerNorm) and isinstance(off.encoder_mlp[0], torch.nn.Identity)
    assert set(on.state_dict()) - set(off.state_dict()) == {"encoder_mlp.0.weight", "encoder_mlp.0.bias"}
    D = on.encoder.feature_dim
    x = torch.randn(5, D)
    y = 3.0 * x + 2.0  # the same token pattern, brighter and with more contrast
    assert torch.allclose(on.encoder_mlp(x), on.encoder_mlp(y), atol=1e-4)
    assert not torch.allclose(off.encoder_mlp(x), off.encoder_mlp(y), atol=1e-2)
    out = off(torch.rand(1, 2, 3, 32, 32))
    assert out["slots"].shape == (1, 2, 4, 16)


# ---------------------------------------------------------------------------------------------
# Slot tracking (model.track: masks)


def test_match_slots_recovers_a_permutation():
    from slotmatch.models.tracking import match_slots, permute_slots

    g = torch.Generator().manual_seed(0)
    prev = torch.softmax(3 * torch.randn(3, 6, 50, generator=g), dim=1)  # (B, K, N)
    shuffle = torch.stack([torch.randperm(6, generator=g) for _ in range(3)])
    cur = permute_slots(torch.softmax(3 * torch.randn(3, 6, 50, generator=g) * 0.1 + prev.log(), dim=1), shuffle)
    perm = match_slots(prev, cur)
    assert not torch.equal(shuffle, torch.arange(6).expand(3, 6))
    assert torch.equal(permute_slots(shuffle, perm), torch.arange(6).expand(3, 6))  # perm undoes the shuffle
    with pytest.raises(ValueError, match="masks must both be"):
        match_slots(prev, cur[:, :5])


class _Scramble(torch.nn.Module):
    """Slot attention whose output slots come out in a new random order at every call (a relabelling only)."""

    def __init__(self, sa):
        super().__init__()
        self.sa, self.g = sa, torch.Generator().manual_seed(1)

    def forward(self, slots, inputs, iters):
        from slotmatch.models.tracking import permute_slots

        slots, attn = self.sa(slots, inputs, iters)
        perm = torch.stack([torch.randperm(slots.shape[1], generator=self.g) for _ in range(slots.shape[0])])
        return permute_slots(slots, perm), permute_slots(attn, perm)


def _diag_iou(attn):
    from slotmatch.models.tracking import soft_iou

    return torch.stack([soft_iou(attn[:, t - 1], attn[:, t]).diagonal(dim1=1, dim2=2).sum(-1)
                        for t in range(1, attn.shape[1])], 1)  # (B, T - 1)


def test_tracking_relabels_slots_to_follow_the_masks():
    from slotmatch.models.tracking import permute_slots

    torch.manual_seed(0)
    model = build_model(tiny_cnn_cfg(mask_source="attention")).eval()
    model.slot_attention.scale *= 30  # sharper masks than a random model's near-uniform ones
    video = torch.rand(2, 1, 3, 32, 32).expand(-1, 5, -1, -1, -1)
    with torch.no_grad():
        model.cfg.track = "masks"
        plain_tracked = model(video, masks_only=True)
        model.cfg.track = "none"
        model.slot_attention = _Scramble(model.slot_attention)
        scrambled = model(video, masks_only=True)
        model.slot_attention.g.manual_seed(1)
        model.cfg.track = "masks"
        tracked = model(video, masks_only=True)
    # Tracking changes which slot holds a mask, never the masks: each frame's masks are the same set.
    for t in range(5):
        for b in range(2):
            a, s = tracked["attn"][b, t], scrambled["attn"][b, t]
            order = torch.cdist(a, s).argmin(1)
            torch.testing.assert_close(a, s[order], rtol=1e-4, atol=1e-5)
            assert sorted(order.tolist()) == list(range(4))
    # Each frame's order is the one that overlaps the frame before best, which the scrambled order is not.
    assert (_diag_iou(tracked["attn"]) >= _diag_iou(scrambled["attn"]) - 1e-5).all()
    assert (_diag_iou(tracked["attn"]) > _diag_iou(scrambled["attn"]) + 0.1).any()
    # Up to frame 0's order (nothing to match there), scrambling slot attention's output order every frame
    # changes nothing once the slots are tracked.
    order = torch.cdist(tracked["attn"][:, 0], plain_tracked["attn"][:, 0]).argmin(-1)  # (B, K)
    for t in range(5):
        torch.testing.assert_close(tracked["attn"][:, t], permute_slots(plain_tracked["attn"][:, t], order),
                                   rtol=1e-4, atol=1e-5)


def test_tracked_chunked_forward_equals_one_pass():
    torch.manual_seed(0)
    model = build_model(tiny_cnn_cfg(track="masks")).eval()
    model.slot_attention = _Scramble(model.slot_attention)
    video = torch.rand(2, 5, 3, 32, 32)
    with torch.no_grad():
        full = model(video)
        model.slot_attention.g.manual_seed(1)
        a = model(video[:, :2])
        b = model(video[:, 2:], prev_slots=a["slots"][:, -1], prev_attn=a["attn"][:, -1])
    for key in ("slots", "masks", "attn", "reconstruction"):
        torch.testing.assert_close(torch.cat([a[key], b[key]], dim=1), full[key], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="track must be"):
        build_model(tiny_cnn_cfg(track="hungarian"))
