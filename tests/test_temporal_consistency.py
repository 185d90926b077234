"""benchmarks/temporal_consistency.py: where an object goes when its usual slot lets it go."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from temporal_consistency import (  # noqa: E402
    SHARING_KINDS, SWITCH_KINDS, lost_near, reorder_share, slot_sharing, switch_kinds)

from slotmatch.metrics import slot_stability  # noqa: E402


def test_switch_kinds_names_what_the_usual_slot_covers_instead():
    true = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    true[0, :, 0, :2] = 1  # object 1: two pixels in the top row, every frame
    true[0, :, 3, 2:] = 2  # object 2: two pixels in the bottom row
    pred = torch.full_like(true, 5)  # background: slot 5
    pred[0, :, 0, :2] = 0  # slot 0 holds object 1 ...
    pred[0, :, 3, 2:] = 1  # ... and slot 1 object 2
    pred[0, 3, 0, :2] = 2  # frame 3: object 1 on slot 2, its usual slot 0 on the background
    pred[0, 3, 1, :] = 0
    kinds = switch_kinds(pred, true)
    assert kinds["frames"] == 8  # 2 objects x 4 frames
    assert kinds["switched"] == pytest.approx(1 / 8)
    assert kinds["the background"] == pytest.approx(1 / 8)
    assert kinds["another object"] == kinds["nothing"] == kinds["this object (split)"] == 0
    # objects seen in equally many frames: the pooled share is 1 - slot stability (a mean over objects)
    assert 1 - kinds["switched"] == pytest.approx(float(slot_stability(pred, true).item()))
    swap = pred.clone()
    swap[0, 3, 1, :] = 5
    swap[0, 3, 3, 2:] = 0  # frame 3: slot 0 takes object 2 instead
    kinds = switch_kinds(swap, true)
    assert kinds["switched"] == pytest.approx(2 / 8)  # both objects leave their usual slot in frame 3
    assert kinds["another object"] == pytest.approx(1 / 8)  # object 1's usual slot 0 holds object 2
    assert kinds["nothing"] == pytest.approx(1 / 8)  # object 2's usual slot 1 holds no pixel in frame 3
    assert sum(kinds[k] for k in SWITCH_KINDS) == pytest.approx(kinds["switched"])


def test_slot_sharing_tells_merged_and_lost_objects_from_their_own_slots():
    true = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    true[0, :, 0, :2] = 1  # object 1: two pixels in the top row
    true[0, :, 3, 2:] = 2  # object 2: two pixels in the bottom row
    true[0, :, 2, 0] = 3  # object 3: one pixel
    pred = torch.full_like(true, 5)  # background: slot 5
    pred[0, :, 0, :2] = 0
    pred[0, :, 3, 2:] = 1
    pred[0, :, 2, 0] = 2  # frame 0: every object on its own slot
    pred[0, 1, 3, 2:] = 0  # frame 1: object 2 joins object 1 on slot 0
    pred[0, 1, 2, 0] = 5  # ... and object 3 is on the background's slot
    s = slot_sharing(pred, true)
    assert s["frames"] == 6
    assert s["its own slot"] == pytest.approx(3 / 6)
    assert s["a slot shared with another object"] == pytest.approx(2 / 6)
    assert s["a mostly-background slot"] == pytest.approx(1 / 6)
    assert sum(s[k] for k in SHARING_KINDS) == pytest.approx(1.0)


def test_lost_near_tells_a_rim_from_a_floor_slot():
    true = torch.zeros(1, 3, 8, 8, dtype=torch.long)
    true[0, :, 3:5, 3:5] = 7  # one 2x2 object (any id value)
    pred = torch.full_like(true, 9)  # the floor's slot
    pred[0, 0, 2:6, 2:6] = 4  # frame 0: the object's slot spills one pixel around it: 12 background pixels, 4 object
    pred[0, 2, 3:5, 3:5] = 4  # frame 2: its own slot exactly; frame 1: on the floor's slot
    assert slot_sharing(pred, true)["a mostly-background slot"] == pytest.approx(2 / 3)
    assert lost_near(pred, true, near=1) == {"lost": 2, "near": 0.5}  # frame 0 is a rim, frame 1 the floor
    assert lost_near(pred, true, near=0)["near"] == 0.0  # no neighbourhood: the ring is background beyond it
    assert lost_near(pred + 1, true, near=1) == {"lost": 2, "near": 0.5}  # slot ids do not matter


def test_reorder_share_counts_the_slots_tracking_would_move():
    attn = torch.softmax(5 * torch.randn(2, 1, 4, 30, generator=torch.Generator().manual_seed(0)), dim=2)
    still = attn.expand(-1, 3, -1, -1)
    assert reorder_share(still) == 0.0
    swapped = still.clone()
    swapped[0, 1:] = swapped[0, 1:, [1, 0, 2, 3]]  # video 0: slots 0 and 1 trade masks from frame 1 on
    assert reorder_share(swapped) == pytest.approx(0.5 * (2 / 8))  # frame 1 of video 0 moves 2 of 8 slot-frames
    assert reorder_share(still[:, :1]) == 0.0


def test_mask_flow_distance_and_reference_run_on_a_checkpoint_and_data_with_flow(flow_dataset, tmp_path, monkeypatch,
                                                                                capsys):
    from conftest import tiny_config
    from temporal_consistency import mask_flow_distance

    from slotmatch.checkpoint import load_model
    from slotmatch.train import train

    last = train(tiny_config(flow_dataset, max_steps=1, val_every=1, checkpoint_every=1, num_val_videos=1),
                 str(tmp_path / "run"), progress=False)
    model, _ = load_model(last)
    d = mask_flow_distance(model, flow_dataset, 1)
    assert 0 <= d <= 1
    # --reference scores a reference segmenter with the checkpoint's slot count, through the same lines
    import numpy as np
    import temporal_consistency

    from slotmatch import metrics
    from slotmatch.data.dataset import open_dataset
    from slotmatch.evaluate import reference_segmenters

    ds = open_dataset(flow_dataset, "validation")
    monkeypatch.setattr(sys, "argv", ["temporal_consistency.py", last, flow_dataset, "--videos", "1", "--reorder"])
    capsys.readouterr()
    temporal_consistency.main()
    assert "slot-frames that tracking by mask overlap would re-order: " in capsys.readouterr().out
    argv = ["temporal_consistency.py", last, flow_dataset, "--videos", str(len(ds)), "--reference", "grid"]
    monkeypatch.setattr(sys, "argv", argv)
    capsys.readouterr()
    temporal_consistency.main()
    printed = capsys.readouterr().out
    assert printed.startswith(f"reference grid, {model.cfg.num_slots} segments")
    assert "slot drift" not in printed and "per frame, the object's best slot" in printed
    items = [ds[i] for i in range(len(ds))]
    true = torch.stack([x["segmentations"] for x in items])
    ids = reference_segmenters(model.cfg.num_slots, ["grid"])["grid"](torch.stack([x["video"] for x in items]),
                                                                      true.shape[-2:])
    whole = [line for line in printed.splitlines() if line.startswith(f"| {true.shape[1]} |")][0]
    assert float(whole.split("|")[3]) == pytest.approx(np.nanmean(metrics.video_mbo(ids, true).numpy()), abs=5e-4)
    monkeypatch.setattr(sys, "argv", argv + ["--mask-flow"])
    with pytest.raises(SystemExit):
        temporal_consistency.main()
