"""benchmarks/feature_kmeans.py: k-means on a target averaged to a coarser grid, and on unpacked encoder tokens."""

import importlib.util
import os

import torch

from slotmatch.data.dataset import open_dataset
from slotmatch.pretrain import pretrain_encoder

spec = importlib.util.spec_from_file_location(
    "feature_kmeans", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "feature_kmeans.py"))
feature_kmeans = importlib.util.module_from_spec(spec)
spec.loader.exec_module(feature_kmeans)


def test_a_pooled_target_gives_one_id_per_block(flow_dataset):
    sample = open_dataset(flow_dataset, "validation", with_depth=True)[0]
    T, _, H, W = sample["video"].shape
    fine = feature_kmeans.target_ids(sample, "surface+relief", 4)
    coarse = feature_kmeans.target_ids(sample, "surface+relief", 4, pool=4)
    assert fine.shape == coarse.shape == (T, H, W)
    blocks = coarse.reshape(T, H // 4, 4, W // 4, 4)
    assert (blocks == blocks[:, :, :1, :, :1]).all()  # constant on every 4x4 block
    assert not (fine.reshape(T, H // 4, 4, W // 4, 4) == fine.reshape(T, H // 4, 4, W // 4, 4)[:, :, :1, :, :1]).all()


def test_unpacked_tokens_cover_every_pixel(flow_dataset, tmp_path):
    out = str(tmp_path / "pt")
    pretrain_encoder(flow_dataset, out, {"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 2},
                     progress=False, steps=1, batch_size=2, size=32, num_workers=0, targets="surface+relief")
    video = open_dataset(flow_dataset, "validation")[0]["video"]
    packed = feature_kmeans.load_encoder(out, "surface+relief", standardize=True)
    unpacked = feature_kmeans.load_encoder(out, "surface+relief", standardize=True, unpack=True)
    assert feature_kmeans.feature_tokens(packed, video, "frame").shape == (4, 16, 16, 16)
    tokens = feature_kmeans.feature_tokens(unpacked, video, "frame")
    assert tokens.shape == (4, 32, 32, 4)
    assert feature_kmeans.token_ids(tokens, 3, 32).shape == (4, 32, 32)
    assert torch.allclose(tokens.mean((1, 2)), torch.zeros(4, 4), atol=1e-4)  # standardised over each frame's pixels
    for scale in ("frame", "video"):  # a part weight survives either scaling: relief is the last channel
        base = feature_kmeans.feature_tokens(feature_kmeans.load_encoder(out, "surface+relief", unpack=True,
                                                                         standardize=scale == "frame"), video, scale)
        half = feature_kmeans.feature_tokens(feature_kmeans.load_encoder(
            out, "surface+relief", unpack=True, standardize=scale == "frame", part_weights={"relief": 0.5}),
            video, scale)
        assert torch.allclose(half[..., 3], 0.5 * base[..., 3], atol=1e-5)
        assert torch.allclose(half[..., :3], base[..., :3], atol=1e-6)



def test_position_weight_moves_token_kmeans_from_the_tokens_to_the_grid():
    # one colour on the top-left and bottom-right quarters, another on the rest; 2 frames of 8x8 tokens, 2 segments
    tokens = torch.zeros(2, 8, 8, 1)
    tokens[:, :4, :4] = tokens[:, 4:, 4:] = 1.0
    for weight in (0.0, 0.1):  # no or a weak position: the colours decide, opposite corners share a segment
        ids = feature_kmeans.token_ids(tokens, 2, 8, position_weight=weight)
        assert ids[0, 0, 0] == ids[1, 7, 7] and ids[0, 0, 0] != ids[0, 0, 7]
    ids = feature_kmeans.token_ids(tokens, 2, 8, position_weight=10.0)  # a strong one: two halves of the frame
    assert ids[0, 0, 0] != ids[0, 7, 7] and ids[0, 0, 0] == ids[1, 0, 0]
    assert feature_kmeans.token_ids(tokens, 2, 16, position_weight=10.0).shape == (2, 16, 16)  # drawn at any size
