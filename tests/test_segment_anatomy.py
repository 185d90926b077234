"""benchmarks/segment_anatomy.py: the breakdown of a segmentation's foreground pixels, on hand-made cases."""

import importlib.util
import os

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location(
    "segment_anatomy", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "segment_anatomy.py"))
segment_anatomy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(segment_anatomy)
anatomy = segment_anatomy.anatomy


def scene(frames=3):
    """Two 4x4 objects (ids 1 and 2) on a 16x16 background."""
    true = np.zeros((frames, 16, 16), dtype=np.int64)
    true[:, 2:6, 2:6], true[:, 10:14, 10:14] = 1, 2
    return true


def test_a_perfect_segmentation_is_all_own_one_segment_kept():
    true = scene()
    r = anatomy(true + 5, true)  # other ids, same segments
    assert (r["own"], r["background"], r["other"], r["split"], r["kept"], r["used"], r["used_first"]) == (1, 0, 0, 1, 1, 3, 3)


def test_objects_swallowed_by_the_background_or_merged():
    true = scene()
    assert anatomy(np.zeros_like(true), true)["background"] == 1  # one segment, mostly background
    merged = true.copy()
    merged[:, 10:14, 10:14] = 1  # object 2 in object 1's segment
    merged[:, 2:6, 2:4] = 3  # object 1's segment is now smaller than object 2's part of it
    r = anatomy(merged, true)
    assert r["other"] == pytest.approx(8 / 32) and r["own"] == pytest.approx(24 / 32)  # object 2 owns segment 1
    assert r["split"] == pytest.approx(1.5)  # object 1 in two segments, object 2 in one


def test_an_object_that_changes_segment_is_not_kept():
    true = scene()
    pred = true.copy()
    pred[2][true[2] == 1] = 7  # object 1 moves to a new segment in the last frame
    r = anatomy(pred, true)
    assert r["kept"] == pytest.approx((2 / 3 + 1) / 2) and r["own"] == 1
