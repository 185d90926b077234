"""Tests of slotmatch.losses against independent references."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slotmatch.losses import (
    feature_distillation_loss,
    mask_distillation_loss,
    mask_entropy,
    reconstruction_loss,
    slot_contrast_loss,
    slot_distillation_loss,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_reconstruction_loss_is_mse():
    a, b = torch.randn(2, 3, 10, 7), torch.randn(2, 3, 10, 7)
    torch.testing.assert_close(reconstruction_loss(a, b), F.mse_loss(a, b))


def test_slot_distillation_identical_and_opposite():
    s = torch.randn(2, 3, 4, 8)
    assert slot_distillation_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert slot_distillation_loss(s, -s).item() == pytest.approx(2.0, abs=1e-6)
    # scale-invariant (cosine)
    assert slot_distillation_loss(3 * s, s).item() == pytest.approx(0.0, abs=1e-6)


def test_slot_distillation_gradient_reaches_only_student():
    student = torch.randn(2, 3, 4, 8, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 8, requires_grad=True)
    slot_distillation_loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_slot_distillation_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="project"):
        slot_distillation_loss(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 16))


def _slotcontrast_reference(slots, temperature=0.1, batch_contrast=True):
    """A transcription of SlotContrast's Slot_Slot_Contrastive_Loss.forward."""
    criterion = nn.CrossEntropyLoss()
    slots = F.normalize(slots, p=2.0, dim=-1)
    if batch_contrast:
        slots = torch.cat(slots.split(1), dim=-2)  # 1 x T x B*K x D
    s1, s2 = slots[:, :-1], slots[:, 1:]
    ss = torch.matmul(s1, s2.transpose(-2, -1)) / temperature
    B, T, S, _ = ss.shape
    ss = ss.reshape(B * T, S, S)
    target = torch.eye(S).expand(B * T, S, S)
    return criterion(ss, target)


@pytest.mark.parametrize("batch_contrast", [True, False])
def test_slot_contrast_matches_slotcontrast_code(batch_contrast):
    slots = torch.randn(3, 4, 5, 8)
    ours = slot_contrast_loss(slots, 0.1, batch_contrast=batch_contrast)
    ref = _slotcontrast_reference(slots, 0.1, batch_contrast=batch_contrast)
    torch.testing.assert_close(ours, ref)


def test_slot_contrast_prefers_temporally_consistent_slots():
    B, T, K, D = 2, 4, 5, 32
    base = torch.randn(B, 1, K, D)
    consistent = base + 0.05 * torch.randn(B, T, K, D)  # slot k stays the same object over time
    shuffled = torch.stack([consistent[:, t, torch.randperm(K)] for t in range(T)], dim=1)
    good = slot_contrast_loss(consistent)
    bad = slot_contrast_loss(shuffled)
    assert good < bad
    assert good < 0.1  # nearly solved: positives far above all negatives at temperature 0.1


def test_slot_contrast_single_frame_is_zero_with_gradient():
    slots = torch.randn(2, 1, 3, 4, requires_grad=True)
    loss = slot_contrast_loss(slots)
    assert loss.item() == 0.0
    loss.backward()


def test_feature_distillation():
    s, t = torch.randn(2, 3, 6, 5), torch.randn(2, 3, 6, 5, requires_grad=True)
    assert feature_distillation_loss(s, s.clone()).item() == 0.0
    loss = feature_distillation_loss(s.requires_grad_(), t)
    assert loss.item() > 0
    torch.testing.assert_close(loss, F.mse_loss(s, t))
    loss.backward()
    assert t.grad is None and s.grad is not None
    with pytest.raises(ValueError):
        feature_distillation_loss(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 8))


def test_mask_distillation():
    logits_s = torch.randn(2, 3, 4, 10, requires_grad=True)
    logits_t = torch.randn(2, 3, 4, 10, requires_grad=True)
    ms, mt = logits_s.softmax(dim=2), logits_t.softmax(dim=2)
    assert mask_distillation_loss(ms, ms.detach().clone()).item() == pytest.approx(0.0, abs=1e-6)
    loss = mask_distillation_loss(ms, mt)
    assert loss.item() > 0
    # reference: torch's KL with the slot axis last, summed over slots, mean over the rest
    ref = F.kl_div(ms.transpose(2, 3).log(), mt.transpose(2, 3), reduction="none").sum(-1).mean()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert logits_t.grad is None and logits_s.grad is not None


def test_contrast_max_gap_penalises_slow_drift():
    from slotmatch.losses import slot_contrast_loss

    K, T, D = 4, 4, 8
    base = torch.eye(D)[:K]  # orthogonal slots
    still = base.expand(1, T, K, D).clone()
    assert torch.allclose(slot_contrast_loss(still, max_gap=3), slot_contrast_loss(still, max_gap=1))
    # every slot turns a little each frame towards the next slot's direction: steps are small, gaps add up
    angle = torch.arange(T).float().view(1, T, 1, 1) * 0.35
    drift = torch.cos(angle) * base + torch.sin(angle) * base.roll(1, dims=0)
    assert slot_contrast_loss(drift, max_gap=3) > slot_contrast_loss(drift, max_gap=1) + 0.1
    assert torch.equal(slot_contrast_loss(drift), slot_contrast_loss(drift, max_gap=1))  # the paper's default


def test_mask_entropy_is_zero_for_hard_masks_and_log_k_for_shared_ones():
    hard = F.one_hot(torch.randint(0, 5, (2, 3, 40)), 5).permute(0, 1, 3, 2).float()  # (B, T, K, N)
    assert float(mask_entropy(hard)) == pytest.approx(0, abs=1e-6)
    assert float(mask_entropy(torch.full((2, 3, 5, 40), 0.2))) == pytest.approx(math.log(5), rel=1e-5)


def test_the_mask_entropy_weight_adds_the_entropy_to_the_loss(tiny_dataset):
    from conftest import tiny_config
    from slotmatch.train import SlotContrastModule

    batch = {"video": torch.rand(2, 2, 3, 32, 32)}
    terms = {}
    for w in (0.0, 0.5):
        torch.manual_seed(0)
        m = SlotContrastModule(tiny_config(tiny_dataset, mask_entropy=w))
        terms[w] = m.compute_losses(batch)
    ent = terms[0.0]["mask_entropy"]
    assert 0 < ent.item() < math.log(4)  # logged at any weight
    assert terms[0.5]["loss"].item() == pytest.approx((terms[0.0]["loss"] + 0.5 * ent).item(), rel=1e-5)
    terms[0.5]["loss"].backward()  # the penalty reaches the model
    torch.manual_seed(0)
    late = SlotContrastModule(tiny_config(tiny_dataset, mask_entropy=0.5, mask_entropy_from=10))
    assert late.compute_losses(batch)["loss"].item() == pytest.approx(terms[0.0]["loss"].item(), rel=1e-5)  # step 0


def test_the_mask_entropy_weight_ramps_up_from_its_first_step(tiny_dataset, monkeypatch):
    from conftest import tiny_config
    from slotmatch.train import SlotContrastModule

    m = SlotContrastModule(tiny_config(tiny_dataset, mask_entropy=0.4, mask_entropy_from=10, mask_entropy_ramp=4))
    weights = {}
    for step in (0, 9, 10, 11, 13, 14, 100):
        monkeypatch.setattr(SlotContrastModule, "global_step", property(lambda self, s=step: s))
        weights[step] = m.mask_entropy_weight()
    assert weights == pytest.approx({0: 0, 9: 0, 10: 0.1, 11: 0.2, 13: 0.4, 14: 0.4, 100: 0.4})
    batch = {"video": torch.rand(2, 2, 3, 32, 32)}
    monkeypatch.setattr(SlotContrastModule, "global_step", property(lambda self: 11))
    terms = m.compute_losses(batch)
    rec_con = terms["rec"] + m.ts["contrast_weight"] * terms["contrast"]
    assert terms["loss"].item() == pytest.approx((rec_con + 0.2 * terms["mask_entropy"]).item(), rel=1e-5)


def _moving_masks(K=3, h=8, w=8, dy=1, dx=2, seed=0):
    """Hard masks of frame 0 and the same masks moved (dy, dx) tokens in frame 1: (1, 2, K, h * w)."""
    g = torch.Generator().manual_seed(seed)
    m0 = F.one_hot(torch.randint(0, K, (h, w), generator=g), K).permute(2, 0, 1).float()
    m1 = torch.roll(m0, shifts=(dy, dx), dims=(1, 2))
    return torch.stack([m0, m1]).flatten(2)[None]


def test_mask_flow_loss_is_zero_when_the_masks_follow_the_flow_and_not_otherwise():
    from slotmatch.losses import mask_flow_loss

    masks = _moving_masks(dy=1, dx=2)
    flow = torch.zeros(1, 2, 16, 16, 2)  # 2 pixels per token
    flow[..., 0], flow[..., 1] = 4.0, 2.0  # (dx, dy) in pixels: 2 tokens right, 1 down
    assert float(mask_flow_loss(masks, flow, (8, 8))) == pytest.approx(0.0, abs=1e-6)
    still = float(mask_flow_loss(masks, torch.zeros_like(flow), (8, 8)))  # the masks moved, the flow says not
    wrong = flow.clone()
    wrong[..., 0] = -4.0
    assert still > 0.3 and float(mask_flow_loss(masks, wrong, (8, 8))) > 0.3
    assert float(mask_flow_loss(masks[:, :1], flow[:, :1], (8, 8))) == 0.0  # one frame: nothing to follow
    soft = masks.clone().requires_grad_()
    mask_flow_loss(soft, torch.zeros_like(flow), (8, 8)).backward()
    assert soft.grad[:, 0].abs().sum() > 0 and soft.grad[:, 1].abs().sum() > 0  # both frames get a gradient
    with pytest.raises(ValueError, match="tokens"):
        mask_flow_loss(masks, flow, (4, 4))
    with pytest.raises(ValueError, match="flow must be"):
        mask_flow_loss(masks, flow[0], (8, 8))


def test_the_mask_flow_weight_adds_the_loss_and_reads_the_cached_flow(flow_dataset, tiny_dataset, tmp_path):
    import numpy as np

    from conftest import tiny_config
    from slotmatch.data.dataset import open_dataset
    from slotmatch.train import SlotContrastModule, make_loaders

    def frozen(data, **train):
        cfg = tiny_config(data, feature_cache=True, **train)
        cfg["data"].update(clip_length=3, cache_dir=str(tmp_path / "cache"))
        cfg["model"].update(encoder={"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 4, "frozen": True},
                            target="features")
        return cfg

    module = SlotContrastModule(frozen(flow_dataset, mask_flow=0.5))
    loader, _ = make_loaders(module.cfg, module.model, progress=False)
    batch = next(iter(loader))
    assert batch["flow"].shape == (2, 3, 32, 32, 2) and batch["features"].shape[:2] == (2, 3)
    flows = torch.stack([s["flow"] for s in open_dataset(flow_dataset, "train", size=32, with_flow=True)])
    cached = np.load(next(str(p) for p in (tmp_path / "cache").iterdir() if p.name.startswith("flow-")))
    assert torch.allclose(torch.from_numpy(cached.astype(np.float32)), flows.half().float())  # the videos' own flow
    torch.manual_seed(0)
    terms = module.compute_losses(batch)
    base = terms["rec"] + module.ts["contrast_weight"] * terms["contrast"] + 0 * terms["mask_entropy"]
    assert 0 <= terms["mask_flow"].item() <= 1
    assert terms["loss"].item() == pytest.approx((base + 0.5 * terms["mask_flow"]).item(), rel=1e-5)
    late = SlotContrastModule(frozen(flow_dataset, mask_flow=0.5, mask_flow_from=10))
    assert "mask_flow" not in late.compute_losses(batch)  # step 0 is before mask_flow_from
    off = SlotContrastModule(frozen(flow_dataset))
    assert "mask_flow" not in off.compute_losses(batch) and "flow" not in next(iter(make_loaders(off.cfg, off.model, progress=False)[0]))
    no_flow = SlotContrastModule(frozen(tiny_dataset, mask_flow=0.5))
    with pytest.raises(Exception, match="flow"):  # data rendered without flow: a clear error, before training
        make_loaders(no_flow.cfg, no_flow.model, progress=False)


def test_anchor_contrast_rewards_slots_that_keep_their_burn_in_objects():
    from slotmatch.losses import slot_anchor_contrast_loss

    B, K, D = 2, 5, 16
    base = torch.randn(B, 1, K, D)
    anchors = base.expand(B, 3, K, D) + 0.05 * torch.randn(B, 3, K, D)  # the burn-in: slot k holds object k
    kept = base.expand(B, 4, K, D) + 0.05 * torch.randn(B, 4, K, D)
    handed_on = kept[:, :, torch.roll(torch.arange(K), 1)]  # every slot now holds another slot's object
    good, bad = slot_anchor_contrast_loss(kept, anchors), slot_anchor_contrast_loss(handed_on, anchors)
    assert good < 0.1 < bad
    # each (clip frame, anchor frame) pair is the pairwise InfoNCE of slot_contrast_loss over those two frames
    pairs = [slot_contrast_loss(torch.stack([anchors[:, a], kept[:, t]], dim=1)) for t in range(4) for a in range(3)]
    torch.testing.assert_close(good, torch.stack(pairs).mean())
    # no burn-in: zero, with a gradient; the gradient reaches the clip's slots only
    empty = slot_anchor_contrast_loss(kept.requires_grad_(), anchors[:, :0])
    assert empty.item() == 0.0
    anchors = anchors.clone().requires_grad_()
    slot_anchor_contrast_loss(kept, anchors).backward()
    assert kept.grad is not None and kept.grad.abs().sum() > 0 and anchors.grad is None
    with pytest.raises(ValueError, match="do not match"):
        slot_anchor_contrast_loss(kept, torch.randn(B, 2, K + 1, D))


def test_the_anchor_contrast_weight_adds_the_loss_against_the_burn_in_slots(tiny_dataset):
    from conftest import tiny_config
    from slotmatch.train import SlotContrastModule

    batch = {"video": torch.rand(2, 5, 3, 32, 32)}  # 3 burn-in frames before the 2-frame clip
    terms = {}
    for w in (0.0, 0.5):
        torch.manual_seed(0)
        m = SlotContrastModule(tiny_config(tiny_dataset, burn_in=3, contrast_anchor=w))
        m.draw_burn_in = lambda b: ({"video": b["video"][:, :3]}, {"video": b["video"][:, 3:]})
        terms[w] = m.compute_losses(batch)
    assert "anchor_contrast" not in terms[0.0]
    anchor = terms[0.5]["anchor_contrast"]
    assert anchor.item() > 0
    assert terms[0.5]["loss"].item() == pytest.approx((terms[0.0]["loss"] + 0.5 * anchor).item(), rel=1e-5)
    terms[0.5]["loss"].backward()
    with pytest.raises(ValueError, match="burn_in"):
        SlotContrastModule(tiny_config(tiny_dataset, contrast_anchor=0.5))
