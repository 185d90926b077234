import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from slotmatch.metrics import image_fg_ari, image_mbo, masks_to_ids, segments_per_frame, video_fg_ari, video_mbo


def sk_fg_ari(pred: np.ndarray, true: np.ndarray) -> float:
    fg = true != 0
    if not fg.any():
        return math.nan
    return adjusted_rand_score(true[fg], pred[fg])


def brute_mbo(pred: np.ndarray, true: np.ndarray) -> float:
    objects = [i for i in np.unique(true) if i != 0]
    if not objects:
        return math.nan
    best = []
    for i in objects:
        ious = []
        for j in np.unique(pred):
            inter = np.sum((true == i) & (pred == j))
            union = np.sum((true == i) | (pred == j))
            ious.append(inter / union)
        best.append(max(ious))
    return float(np.mean(best))


def per_frame_mean(fn, pred: np.ndarray, true: np.ndarray) -> float:
    vals = [fn(p, t) for p, t in zip(pred, true)]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def random_ids(b=3, t=4, h=9, w=7, k=5, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, k, (b, t, h, w), generator=g)
    # Mix random ids with blocky structure so ARI is not always near 0.
    true = torch.randint(0, c, (b, t, h, w), generator=g)
    true[..., : h // 2, :] = pred[..., : h // 2, :] % c
    return pred, true


def assert_close(a, b):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fg_ari_matches_sklearn(seed):
    pred, true = random_ids(seed=seed)
    p, t = pred.numpy(), true.numpy()
    assert_close(video_fg_ari(pred, true), [sk_fg_ari(p[i], t[i]) for i in range(len(p))])
    assert_close(
        image_fg_ari(pred, true), [per_frame_mean(sk_fg_ari, p[i], t[i]) for i in range(len(p))]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mbo_matches_brute_force(seed):
    pred, true = random_ids(seed=seed)
    p, t = pred.numpy(), true.numpy()
    assert_close(video_mbo(pred, true), [brute_mbo(p[i], t[i]) for i in range(len(p))])
    assert_close(
        image_mbo(pred, true), [per_frame_mean(brute_mbo, p[i], t[i]) for i in range(len(p))]
    )


def test_hand_made_video():
    # 1 video, 2 frames 2x4. Object 1 on the left, object 2 on the right, background bottom.
    true = torch.tensor([[[[1, 1, 2, 2], [0, 0, 0, 0]], [[1, 1, 2, 2], [0, 0, 0, 0]]]])
    # Pred: object 1 correct, object 2 merged with background in frame 1, split in frame 2.
    pred = torch.tensor([[[[5, 5, 7, 7], [7, 7, 7, 7]], [[5, 5, 7, 3], [7, 7, 7, 7]]]])
    p, t = pred.numpy()[0], true.numpy()[0]
    assert_close(video_fg_ari(pred, true), [sk_fg_ari(p, t)])
    # Object 1 best IoU 1; object 2 best is segment 7: inter 3, union 4 + 11 - 3 = 12.
    assert_close(video_mbo(pred, true), [(1.0 + 3 / 12) / 2])
    assert_close(video_mbo(pred, true), [brute_mbo(p, t)])
    # Frame 0: obj 2 vs seg 7: 2 / 6; frame 1: obj 2 vs seg 7: 1 / (2 + 5 - 1), vs seg 3: 1/2.
    assert_close(image_mbo(pred, true), [((1 + 2 / 6) / 2 + (1 + 1 / 2) / 2) / 2])


def test_no_foreground_is_nan():
    pred, true = random_ids(b=2, seed=3)
    true[1] = 0  # video 1 has no foreground at all
    true[0, 0] = 0  # frame 0 of video 0 has none
    p, t = pred.numpy(), true.numpy()
    for fn in (video_fg_ari, image_fg_ari, video_mbo, image_mbo):
        out = fn(pred, true)
        assert out.shape == (2,) and out.dtype == torch.float64
        assert torch.isnan(out[1]) and not torch.isnan(out[0])
    assert_close(image_fg_ari(pred, true)[0], per_frame_mean(sk_fg_ari, p[0], t[0]))
    assert_close(image_mbo(pred, true)[0], per_frame_mean(brute_mbo, p[0], t[0]))
    frames = image_fg_ari(pred, true, per_frame=True)
    assert frames.shape == (2, 4) and torch.isnan(frames[0, 0]) and torch.isnan(frames[1]).all()
    assert_close(frames[0].nanmean(), image_fg_ari(pred, true)[0])


def test_single_object():
    true = torch.zeros(1, 2, 6, 6, dtype=torch.long)
    true[..., 1:4, 1:4] = 1
    one = torch.zeros_like(true)
    assert video_fg_ari(one, true).item() == 1.0  # everything in one cluster
    split = one.clone()
    split[..., 1:4, 1] = 1  # object split in two: ARI 0 (sklearn agrees)
    assert_close(video_fg_ari(split, true), [sk_fg_ari(split.numpy()[0], true.numpy()[0])])
    assert_close(video_fg_ari(split, true), [0.0])
    # mBO of one segment covering everything: 18 / 72.
    assert_close(video_mbo(one, true), [18 / 72])


def test_more_segments_than_objects_and_empty_segments():
    pred, true = random_ids(k=12, c=3, seed=4)
    pred = pred * 10 + 3  # ids 3, 13, ..., 113: most ids in range never occur
    p, t = pred.numpy(), true.numpy()
    assert_close(video_fg_ari(pred, true), [sk_fg_ari(p[i], t[i]) for i in range(len(p))])
    assert_close(video_mbo(pred, true), [brute_mbo(p[i], t[i]) for i in range(len(p))])


def test_perfect_prediction_and_permutation():
    pred, true = random_ids(seed=5)
    # Perfect up to relabelling.
    relabelled = (true * 7 + 2) % 11
    for fn in (video_fg_ari, image_fg_ari, video_mbo, image_mbo):
        assert_close(fn(relabelled, true), np.ones(len(true)))
    perm = torch.tensor([4, 0, 3, 1, 2])
    for fn in (video_fg_ari, image_fg_ari, video_mbo, image_mbo):
        assert_close(fn(perm[pred], true), fn(pred, true))


def test_large_and_negative_ids():
    # Ids too large to index a table directly are compacted; scores do not change.
    pred, true = random_ids(seed=6)
    big_true = true * 1_000_003  # background stays 0
    big_pred = pred * 7_919_993 - 5
    for fn in (video_fg_ari, image_fg_ari, video_mbo, image_mbo):
        assert_close(fn(big_pred, big_true), fn(pred, true))
    assert_close(video_fg_ari(pred.to(torch.uint8), true.int()), video_fg_ari(pred, true))


def test_ari_can_be_negative():
    true = torch.tensor([1, 1, 2, 2]).view(1, 1, 1, 4)
    pred = torch.tensor([0, 1, 0, 1]).view(1, 1, 1, 4)
    ari = video_fg_ari(pred, true)
    assert ari.item() < 0
    assert_close(ari, [adjusted_rand_score([1, 1, 2, 2], [0, 1, 0, 1])])


def test_shape_and_dtype_errors():
    pred, true = random_ids()
    with pytest.raises(ValueError, match=r"\(3, 4, 9, 7\).*\(3, 4, 9, 6\)"):
        video_fg_ari(pred, true[..., :6])
    with pytest.raises(ValueError, match="B, T, H, W"):
        video_mbo(pred[0], true[0])
    with pytest.raises(ValueError, match="dtype"):
        image_mbo(pred.float(), true)


def test_masks_to_ids():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(2, 3, 4, 5, 5, generator=g).softmax(2)  # (B, T, K, h, w)
    ids = masks_to_ids(masks, (20, 20))
    assert ids.shape == (2, 3, 20, 20) and ids.dtype == torch.long
    up = torch.nn.functional.interpolate(masks.flatten(0, 1), size=(20, 20), mode="bilinear")
    assert torch.equal(ids, up.argmax(1).view(2, 3, 20, 20))
    # Same size: plain argmax over slots.
    assert torch.equal(masks_to_ids(masks, (5, 5)), masks.argmax(2))
    # Patch-shaped input (B, T, K, N) and chunking give the same ids.
    assert torch.equal(masks_to_ids(masks.flatten(-2), (20, 20), chunk=2), ids)
    # A slot that dominates everywhere wins everywhere.
    masks[:, :, 2] += 10
    assert (masks_to_ids(masks, (8, 12)) == 2).all()
    with pytest.raises(ValueError, match="B, T, K"):
        masks_to_ids(masks[0, 0], (8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pred, true = random_ids(seed=7)
    for fn in (video_fg_ari, image_fg_ari, video_mbo, image_mbo):
        out = fn(pred.cuda(), true.cuda())
        assert out.is_cuda
        assert_close(out.cpu(), fn(pred, true))
    masks = torch.rand(2, 3, 4, 5, 5).softmax(2)
    assert torch.equal(masks_to_ids(masks.cuda(), (10, 10)).cpu(), masks_to_ids(masks, (10, 10)))


def _stability_reference(pred, true):
    """Brute force: per object, per frame, the best-IoU segment by explicit set counting."""
    import numpy as np

    out = []
    for p, t in zip(pred, true):
        seqs = {}
        for pf, tf in zip(p, t):
            for obj in tf.unique().tolist():
                if obj == 0:
                    continue
                on = tf == obj
                segs = sorted(pf.unique().tolist())
                ious = [((pf == s) & on).sum().item() / ((pf == s) | on).sum().item() for s in segs]
                seqs.setdefault(obj, []).append(segs[int(np.argmax(ious))])
        out.append(np.mean([np.bincount(v).max() / len(v) for v in seqs.values()]) if seqs else float("nan"))
    return torch.tensor(out, dtype=torch.float64)


def test_slot_stability_counts_identity_switches():
    from slotmatch.metrics import slot_stability

    true = torch.zeros(1, 4, 8, 8, dtype=torch.long)
    true[:, :, :4, :4] = 1
    true[:, :, 4:, 4:] = 2
    same = true.clone()
    assert slot_stability(same, true).item() == 1.0
    swapped = true.clone()
    swapped[:, 2:][true[:, 2:] == 1] = 5  # object 1 changes segment half-way: 0.5; object 2 stays: 1.0
    assert abs(slot_stability(swapped, true).item() - 0.75) < 1e-12
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (3, 5, 8, 8), generator=g)
    rand_true = torch.randint(0, 3, (3, 5, 8, 8), generator=g)
    assert torch.allclose(slot_stability(pred, rand_true), _stability_reference(pred, rand_true))
    assert torch.isnan(slot_stability(pred, torch.zeros_like(rand_true))).all()


def test_segments_per_frame_counts_the_distinct_ids_of_each_frame():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 6, size=(3, 4, 5, 5))
    pred[1] = 2  # a collapsed video: one segment in every frame
    pred[2, :, :, :] = rng.integers(0, 2, size=(4, 5, 5)) * 7 + 3  # sparse ids (3 and 10)
    expected = [np.mean([len(np.unique(frame)) for frame in video]) for video in pred]
    got = segments_per_frame(torch.from_numpy(pred)).numpy()
    assert np.allclose(got, expected) and got[1] == 1.0
    with pytest.raises(ValueError, match="B, T, H, W"):
        segments_per_frame(torch.zeros(4, 5, 5, dtype=torch.long))
