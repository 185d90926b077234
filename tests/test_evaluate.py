"""`slotmatch evaluate`: metrics.json schema, reference rows, confidence intervals, the HTML report in Chromium."""

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess

import pytest
import torch
from PIL import Image

from slotmatch.cli import main
from slotmatch.data.dataset import open_dataset
from slotmatch.evaluate import (METRICS, REFERENCE_NAMES, confidence_interval, default_out_dir, evaluate,
                                format_table, reference_table, t_quantile_975)

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def evaluated(tiny_teacher_run):
    """The API on the tiny run, with the default output folder (RUN/eval-validation)."""
    cfg, run, last = tiny_teacher_run
    return run, last, evaluate(last, cfg["data"]["path"], batch_size=2)


def _mean(values):
    v = [x for x in values if x is not None]
    return sum(v) / len(v)


def test_metrics_json_schema_and_aggregate_is_the_mean_over_videos(evaluated):
    run, last, result = evaluated
    out = os.path.join(run, "eval-validation")  # default: the checkpoint's run dir
    for name in ("metrics.json", "metrics.md", "index.html", "scores.png", "per_video.png"):
        assert os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert saved == {k: v for k, v in result.items() if k != "report"}
    assert set(saved["aggregate"]) == set(METRICS)
    assert saved["num_videos"] == len(saved["per_video"]) == 3  # all validation videos, whole
    assert saved["num_segments"] == 4 and saved["input_size"] == [32, 32]
    for v in saved["per_video"]:
        assert {"index", "key", "num_frames", "num_objects", *METRICS} <= set(v)
        assert v["num_frames"] == 6
    for m in METRICS:
        assert saved["aggregate"][m] == pytest.approx(_mean(v[m] for v in saved["per_video"]), abs=1e-12)
        for name, ref in saved["references"].items():
            assert ref["aggregate"][m] == pytest.approx(_mean(v[m] for v in ref["per_video"]), abs=1e-12)


def test_reference_rows_and_one_segment(evaluated):
    run, last, result = evaluated
    assert list(result["references"]) == list(REFERENCE_NAMES)
    assert all(v["num_objects"] >= 2 for v in result["per_video"])  # the data has >= 2 objects per video
    one = result["references"]["one-segment"]
    assert one["aggregate"]["video_fg_ari"] == 0.0
    assert all(v["video_fg_ari"] == pytest.approx(0.0, abs=1e-12) for v in one["per_video"])
    assert one["aggregate"]["video_mbo"] < 1
    for table in (result["table"], open(os.path.join(run, "eval-validation", "metrics.md")).read()):
        for name in ("model", *REFERENCE_NAMES):
            assert re.search(rf"^\| {re.escape(name)} \|", table, re.M), name
    # the headline comparisons: FG-ARI against the grid, mBO against colour clustering
    assert [(c["metric"], c["reference"]) for c in result["comparisons"]] == \
        [("video_fg_ari", "grid"), ("video_mbo", "kmeans-colour")]


def test_confidence_intervals_contain_the_mean(evaluated):
    run, last, result = evaluated
    rows = [result] + list(result["references"].values())
    for row in rows:
        for m in METRICS:
            lo, hi = row["ci95"][m]
            assert lo <= row["aggregate"][m] <= hi
    ci = confidence_interval([0.2, 0.4, None, float("nan"), 0.6])
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(0.4)
    assert ci["ci95"] == pytest.approx([0.4 - 4.3027 * 0.2 / math.sqrt(3), 0.4 + 4.3027 * 0.2 / math.sqrt(3)])
    assert confidence_interval([0.5])["ci95"] == [None, None]  # one video: no interval
    assert confidence_interval([0.9, 1.0, 0.95], bounds=(0, 1))["ci95"][1] == 1.0  # clipped to the range


def test_t_quantiles():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 30, 31, 50, 200):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4)


def test_reference_table_is_the_same_code_path(evaluated, tiny_teacher_run):
    run, last, result = evaluated
    ds = open_dataset(tiny_teacher_run[0]["data"]["path"], "validation")
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    for data in (ds, loader):
        rows = reference_table(data, 4, names=("grid", "kmeans-colour"))
        assert [r["name"] for r in rows] == ["grid", "kmeans-colour"]
        for r in rows:
            for m in METRICS:
                assert r["aggregate"][m] == pytest.approx(result["references"][r["name"]]["aggregate"][m])
    table = format_table([{"name": "student", "aggregate": {"video_fg_ari": 0.5, "video_mbo": 0.25}}] + rows)
    assert table.splitlines()[0].startswith("| method | video FG-ARI | video mBO |")
    assert "| student | 0.500 | 0.250 |" in table


def _synthetic_videos():
    """Videos of different lengths with two flat-coloured objects; the last has no foreground at all."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i, t in enumerate((2, 3, 2, 2)):
        seg = torch.zeros(t, 16, 16, dtype=torch.long)
        if i < 3:
            seg[:, 2:7, 2:7], seg[:, 9:14, 8:15] = 1, 2
        video = 0.1 * torch.rand(t, 3, 16, 16, generator=g) + 0.2
        video[:, 0][seg == 1], video[:, 1][seg == 2] = 0.9, 0.9
        out.append({"video": video, "segmentations": seg, "key": f"v{i}"})
    return out


def test_reference_table_groups_shapes_keeps_order_and_skips_empty_videos():
    data = _synthetic_videos()
    rows = reference_table(data, 3, batch_size=4)
    again = reference_table(data, 3, batch_size=1)  # a video's segmentation does not depend on its batch
    assert [r["name"] for r in rows] == list(REFERENCE_NAMES)
    for r, r1 in zip(rows, again):
        assert [v["key"] for v in r["per_video"]] == ["v0", "v1", "v2", "v3"]
        assert [v["num_frames"] for v in r["per_video"]] == [2, 3, 2, 2]
        assert r["per_video"] == r1["per_video"]
        assert r["per_video"][3]["video_mbo"] is None and r["n"]["video_mbo"] == 3  # no foreground: no score
    colour = rows[1]
    assert colour["name"] == "kmeans-colour" and colour["aggregate"]["video_mbo"] == pytest.approx(1.0)
    assert reference_table(data, 3, max_videos=2)[0]["num_videos"] == 2


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)


def test_report_is_self_contained_and_names_decodable_images(evaluated):
    run, last, result = evaluated
    page = open(result["report"], encoding="utf-8").read()
    srcs = _img_sources(page)
    # scores + per-video plots, two training curves, a GIF and a PNG per overlay video
    assert len(srcs) == 2 + 2 + 2 * len(result["overlays"]) and len(result["overlays"]) == 3
    for src in srcs:
        m = re.fullmatch(r"data:image/(png|gif);base64,([A-Za-z0-9+/=]+)", src)
        assert m, src[:60]
        img = Image.open(io.BytesIO(base64.b64decode(m.group(2))))
        img.load()
        assert img.width > 0 and img.height > 0
    for o in result["overlays"]:
        assert os.path.exists(os.path.join(run, "eval-validation", o["gif"]))
    assert {o["rank"] for o in result["overlays"]} == {"worst", "best"}
    mbo = sorted(v["video_mbo"] for v in result["per_video"])
    assert [o["video_mbo"] for o in result["overlays"] if o["rank"] == "worst"] == mbo[:1]
    assert [o["video_mbo"] for o in result["overlays"] if o["rank"] == "best"] == mbo[::-1][:2]


CHECK_SCRIPT = """<script>window.addEventListener("load", () => {
  const r = [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));
  const p = document.createElement("pre"); p.id = "img-check"; p.textContent = JSON.stringify(r);
  document.body.appendChild(p);
});</script>"""


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent: install Debian's `chromium` "
                    "package to check that the report renders and its images load")
def test_report_renders_in_chromium_and_every_image_loads(evaluated, tmp_path):
    run, last, result = evaluated
    page = open(result["report"], encoding="utf-8").read()
    assert page.count("</body>") == 1
    checked = tmp_path / "index.html"  # a copy with a script that records every image's natural size on load
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--dump-dom", checked.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90).stdout
    m = re.search(r'<pre id="img-check">(.*?)</pre>', dom, re.S)
    assert m, "the page did not finish loading in Chromium"
    images = json.loads(m.group(1).replace("&quot;", '"'))
    assert len(images) == len(_img_sources(page)) > 0
    for img in images:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert "slotmatch evaluation" in dom and "kmeans-colour-position" in dom  # the table rendered


def test_cli_evaluate_exits_0_and_prints_the_table(tiny_teacher_run, tmp_path, capsys):
    cfg, run, last = tiny_teacher_run
    ckpt = shutil.copy(last, tmp_path / "model.ckpt")  # not in RUN/checkpoints: the report goes next to it
    code = main(["evaluate", "--checkpoint", str(ckpt), "--data", cfg["data"]["path"],
                 "--max-videos", "2", "--batch-size", "1"])
    assert code == 0
    out = tmp_path / "eval-validation"
    printed = capsys.readouterr().out
    assert "| model |" in printed and "| grid |" in printed and "| one-segment |" in printed
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["num_videos"] == 2 and (out / "index.html").exists()


def test_not_a_checkpoint_exits_2(tiny_dataset, tmp_path, capsys):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", "--checkpoint", str(bad), "--data", tiny_dataset, "--out", str(tmp_path / "e")]) == 2
    assert "x.ckpt" in capsys.readouterr().err


def test_teacher_of_a_teacher_checkpoint_is_a_clear_error(tiny_teacher_run, tmp_path, capsys):
    cfg, run, last = tiny_teacher_run
    assert main(["evaluate", "--checkpoint", last, "--data", cfg["data"]["path"], "--which", "teacher",
                 "--out", str(tmp_path / "e")]) == 2
    assert "holds no teacher model" in capsys.readouterr().err


def test_default_out_dir(tmp_path):
    assert default_out_dir("/r/checkpoints/last.ckpt") == "/r/eval-validation"
    assert default_out_dir("/r/checkpoints/last.ckpt", "train", "teacher") == "/r/eval-train-teacher"
    assert default_out_dir("/w/model.safetensors", "validation") == "/w/eval-validation"


def test_attention_masks_are_scored_from_slot_attention(tiny_teacher_run, tmp_path):
    from slotmatch.checkpoint import load_model
    from slotmatch.evaluate import predict_ids
    from slotmatch import metrics

    cfg, run, last = tiny_teacher_run
    model, _ = load_model(last)
    video = open_dataset(cfg["data"]["path"], "validation")[0]["video"][None]
    out = model(video, masks_only=True)
    want = metrics.masks_to_ids(out["attn"].unflatten(-1, tuple(out["mask_grid"])), (32, 32))
    assert torch.equal(predict_ids(model, video, (32, 32), masks="attention"), want)
    ids, slots = predict_ids(model, video, (32, 32), masks="attention", with_slots=True)  # the same single pass
    assert torch.equal(ids, want) and torch.equal(slots, out["slots"])
    with pytest.raises(ValueError, match="masks must be one of"):
        predict_ids(model, video, (32, 32), masks="alpha")
    r = evaluate(last, cfg["data"]["path"], out=str(tmp_path / "e"), batch_size=2, max_videos=2, masks="attention")
    assert r["masks"] == "attention" and r["num_videos"] == 2


def test_track_override_relabels_slots_only(tiny_teacher_run, tmp_path, capsys):
    cfg, run, last = tiny_teacher_run
    kw = dict(batch_size=2, max_videos=3, masks="attention")
    plain = evaluate(last, cfg["data"]["path"], out=str(tmp_path / "a"), track="none", **kw)
    tracked = evaluate(last, cfg["data"]["path"], out=str(tmp_path / "b"), track="masks", **kw)
    assert plain["track"] == "none" and tracked["track"] == "masks"
    for metric in ("image_fg_ari", "image_mbo"):  # a per-frame relabelling leaves every frame's segments as they were
        assert tracked["aggregate"][metric] == pytest.approx(plain["aggregate"][metric], abs=1e-6)
    with pytest.raises(ValueError, match="track must be"):
        evaluate(last, cfg["data"]["path"], out=str(tmp_path / "c"), track="hungarian", **kw)
    assert main(["evaluate", "--checkpoint", last, "--data", cfg["data"]["path"], "--max-videos", "1",
                 "--track", "masks", "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["track"] == "masks"
