"""benchmarks/compare_evals.py: paired differences between two evaluations' per-video scores."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import compare_evals  # noqa: E402


def write_eval(folder, scores, data="data/x", split="validation"):
    os.makedirs(folder)
    per_video = [{"index": i, "video_fg_ari": s, "video_mbo": s / 2} for i, s in enumerate(scores)]
    metrics = {"data": data, "split": split, "per_video": per_video,
               "aggregate": {"video_fg_ari": float(np.mean(scores)), "video_mbo": float(np.mean(scores)) / 2}}
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    return str(folder)


def test_the_difference_is_the_mean_of_per_video_differences(tmp_path, capsys):
    base = write_eval(tmp_path / "a", [0.2, 0.4, 0.6, 0.8])
    other = write_eval(tmp_path / "b", [0.3, 0.45, 0.5, 0.9])
    rows = compare_evals.compare([compare_evals.load_eval(base), compare_evals.load_eval(other)])
    ari = next(r for r in rows if r["metric"] == "video_fg_ari")
    diffs = np.array([0.1, 0.05, -0.1, 0.1])
    assert ari["difference"] == pytest.approx(diffs.mean())
    half = 3.182446 * diffs.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert ari["ci95"] == pytest.approx([diffs.mean() - half, diffs.mean() + half], rel=1e-4)
    assert ari["model_better_videos"] == 3 and ari["n"] == 4
    mbo = next(r for r in rows if r["metric"] == "video_mbo")
    assert mbo["difference"] == pytest.approx(diffs.mean() / 2)
    compare_evals.main([base, other])
    assert "+0.037" in capsys.readouterr().out


def test_evaluations_of_other_data_or_missing_files_are_refused(tmp_path):
    base = write_eval(tmp_path / "a", [0.2, 0.4])
    other = write_eval(tmp_path / "b", [0.2, 0.4], data="data/y")
    with pytest.raises(ValueError, match="not comparable"):
        compare_evals.compare([compare_evals.load_eval(base), compare_evals.load_eval(other)])
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        compare_evals.load_eval(str(tmp_path / "missing"))


def test_eval_subsets_splits_in_dataset_order():
    import eval_subsets

    # videos listed out of order: the first two by index are 0 and 1
    per_video = [{"index": i, "video_fg_ari": s, "video_mbo": 1 - s} for i, s in ((2, 0.9), (0, 0.1), (1, 0.3))]
    m = eval_subsets.subset_means(per_video, first=2)
    assert m["video_fg_ari"] == pytest.approx((0.2, 0.9, (0.1 + 0.3 + 0.9) / 3))
    assert m["video_mbo"] == pytest.approx((0.8, 0.1, (0.9 + 0.7 + 0.1) / 3))
