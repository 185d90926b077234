
import pytest
import torch

from slotmatch.metrics import video_fg_ari, video_mbo
from slotmatch.references import REFERENCES, grid, kmeans_colour, reference_ids


def random_video(b=2, t=3, h=16, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, h, w, 3), generator=g, dtype=torch.uint8)


def flat_colour_video():
    """Two objects of flat colours on a flat background, moving over 4 frames."""
    b, t, h, w = 2, 4, 24, 24
    video = torch.zeros(b, t, h, w, 3)
    video[...] = torch.tensor([0.2, 0.3, 0.4])
    true = torch.zeros(b, t, h, w, dtype=torch.long)
    for f in range(t):
        true[:, f, 2 + f : 10 + f, 2:10] = 1
        true[:, f, 12:20, 8 + f : 18 + f] = 2
    video[true == 1] = torch.tensor([0.9, 0.1, 0.1])
    video[true == 2] = torch.tensor([0.1, 0.8, 0.2])
    return video, true


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_shapes_dtypes_determinism(name):
    video = random_video()
    ids = reference_ids(name, video, 5, seed=3)
    assert ids.shape == (2, 3, 16, 12) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < 5
    assert torch.equal(ids, reference_ids(name, video, 5, seed=3))
    assert torch.equal(ids, reference_ids(name, video.float() / 255, 5, seed=3))


def test_grid_ignores_content():
    a, b = random_video(seed=1), random_video(seed=2)
    ids = grid(a, 6)
    assert torch.equal(ids, grid(b, 6))
    assert torch.equal(ids[0, 0], ids[1, 2])  # same tiling in every frame and video
    assert len(ids.unique()) == 6


def test_kmeans_colour_separates_flat_colours():
    video, true = flat_colour_video()
    ids = kmeans_colour(video, 3)
    assert torch.allclose(video_fg_ari(ids, true), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(video_mbo(ids, true), torch.ones(2, dtype=torch.float64))
    ids = reference_ids("kmeans-colour-position", video, 3)
    assert video_fg_ari(ids, true).min() > 0.5


def test_one_segment():
    ids = reference_ids("one-segment", random_video(), 7)
    assert (ids == 0).all()


def test_unknown_name_and_bad_shape():
    with pytest.raises(ValueError, match="kmeans-colour"):
        reference_ids("nope", random_video(), 3)
    with pytest.raises(ValueError, match="B, T, H, W, 3"):
        reference_ids("grid", random_video().permute(0, 1, 4, 2, 3), 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_cuda(name):
    ids = reference_ids(name, random_video().cuda(), 4)
    assert ids.is_cuda and ids.shape == (2, 3, 16, 12)


def test_a_videos_ids_do_not_depend_on_its_batch():
    from slotmatch.references import reference_ids

    g = torch.Generator().manual_seed(1)
    video = torch.rand(3, 2, 8, 8, 3, generator=g)
    for name in ("kmeans-colour", "kmeans-colour-position"):
        together = reference_ids(name, video, 4)
        alone = torch.cat([reference_ids(name, video[i : i + 1], 4) for i in range(3)])
        assert torch.equal(together, alone)


def test_the_grid_bound_is_exact_for_patch_aligned_objects_and_loses_small_ones():
    import numpy as np
    import torch
    from sklearn.metrics import adjusted_rand_score

    from slotmatch.references import ideal_on_grid

    true = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    true[..., 0:8, 0:8] = 3  # aligned with a 2x2 grid: kept, but for the bilinear upsampling's blurred edge
    assert float((ideal_on_grid(true, 2) == true).float().mean()) > 0.9
    assert torch.equal(ideal_on_grid(true, 16), true)
    true[..., 12, 12] = 5  # one pixel: under half of any patch of a 4x4 grid, it vanishes
    ids = ideal_on_grid(true, 4)
    assert 5 not in ids.unique().tolist() and float((ids == 3).float().mean()) > 0.2
    fg = (true > 0).flatten()
    assert adjusted_rand_score(true.flatten()[fg].numpy(), ids.flatten()[fg].numpy()) < 1.0
    assert np.isclose(adjusted_rand_score(true.flatten().numpy(), ideal_on_grid(true, 16).flatten().numpy()), 1.0)
