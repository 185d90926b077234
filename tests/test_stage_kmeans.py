"""benchmarks/stage_kmeans.py: k-means on each stage of a slot model's pipeline, beside the model."""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from stage_kmeans import PLUS_PIXELS, STAGES, stage_tokens, token_pixels, video_kmeans_ids  # noqa: E402

from slotmatch import metrics  # noqa: E402


def test_video_kmeans_ids_finds_separated_groups_over_all_frames():
    T, grid = 3, (4, 4)
    labels = torch.zeros(2, T, *grid, dtype=torch.long)
    labels[0, :, :, 2:] = 1  # video 0: left / right halves; video 1: top / bottom
    labels[1, :, 2:, :] = 1
    tokens = torch.where(labels[..., None].bool(), 5.0, -5.0).expand(-1, -1, -1, -1, 3)
    tokens = tokens + 0.1 * torch.randn(tokens.shape, generator=torch.Generator().manual_seed(0))
    ids = video_kmeans_ids(tokens.flatten(2, 3), 2, grid, (8, 8))
    true = F.interpolate(labels.float(), size=(8, 8), mode="nearest").long()
    assert ids.shape == (2, T, 8, 8)
    # one clustering per video, over all its frames: the same id for a group in every frame
    assert metrics.video_fg_ari(ids, true + 1).tolist() == [1.0, 1.0]


def test_token_pixels_are_each_tokens_colours_standardised_per_frame():
    video = torch.rand(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = token_pixels(video, 2)
    assert x.shape == (2, 3, 16, 12)
    torch.testing.assert_close(x.mean(2), torch.zeros(2, 3, 12), atol=1e-5, rtol=0)
    raw = video[1, 2, :, 2:4, 4:6].reshape(-1)  # token (1, 2) of frame 2 of video 1: channel-major, as F.unfold
    col = video[1, 2].unfold(1, 2, 2).unfold(2, 2, 2).reshape(3, 16, 4).permute(1, 0, 2).reshape(16, 12)
    torch.testing.assert_close(x[1, 2, 6], (raw - col.mean(0)) / (col.std(0) + 1e-5))


def test_stage_tokens_and_the_printed_table(tiny_teacher_run, tiny_dataset, monkeypatch, capsys):
    import stage_kmeans

    from slotmatch.checkpoint import load_model
    from slotmatch.data.dataset import open_dataset

    _, _, last = tiny_teacher_run
    model = load_model(last)[0].eval()
    video = torch.stack([open_dataset(tiny_dataset, "validation")[0]["video"]])
    stages = stage_tokens(model, video)
    assert tuple(stages) == STAGES
    n = model.grid[0] * model.grid[1]
    for name, tokens in stages.items():
        assert tokens.shape[:3] == (1, video.shape[1], n), name
    p = model.encoder.patch_size
    torch.testing.assert_close(stages[STAGES[0]][0, 0, 0], video[0, 0, :, :p, :p].mean((1, 2)))  # the first token's colour
    monkeypatch.setattr(sys, "argv", ["stage_kmeans.py", last, tiny_dataset, "--videos", "2", "--plus-pixels"])
    capsys.readouterr()
    stage_kmeans.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0][2:] for r in rows] == [f"k-means on the {s}" for s in (*STAGES, PLUS_PIXELS)] + ["the model"]
    for r in rows:
        values = [float(x) for x in r.strip("| ").split(" | ")[1:]]
        assert len(values) == 5 and all(np.isnan(v) or -1 <= v <= 1 for v in values)
