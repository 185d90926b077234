"""`slotmatch evaluate`: video FG-ARI and mBO of a checkpoint on whole videos, beside model-free references.

The model runs on whole videos (all frames), resized to its input size; its decoder masks are upsampled
to the ground truth's resolution (`metrics.masks_to_ids`, as SlotContrast does) and scored with the
SlotContrast metrics (`metrics.py`). The reference segmenters of `references.py` (`grid`,
`kmeans-colour`, `kmeans-colour-position`, `one-segment`) run on the same videos at the ground truth's
resolution with as many segments as the model has slots, and are scored by the same function, so
every table shows at once whether the model beats a grid (FG-ARI) and colour clustering (mBO)
(design brief, "Honest references").

Aggregates are means over videos (a video without foreground has no score and is left out), with a
95% confidence interval over videos: Student's t-interval, mean ± t(0.975, n-1) · s / sqrt(n), s the
sample standard deviation (ddof=1), clipped to the range the metric can take (FG-ARI <= 1, mBO in
[0, 1]). With one video there is no interval (null bounds).

`reference_table` and `format_table` are reusable by other commands that print model rows beside the
references; `evaluate` writes metrics.json, metrics.md, overlays and a self-contained index.html
(report.py).
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from slotmatch import metrics
from slotmatch.references import reference_ids

__all__ = [
    "METRICS",
    "REFERENCE_NAMES",
    "CI_METHOD",
    "t_quantile_975",
    "confidence_interval",
    "paired_difference",
    "comparison_lines",
    "model_label",
    "resize_video",
    "score_segmenters",
    "summarize",
    "reference_segmenters",
    "reference_table",
    "format_table",
    "predict_ids",
    "default_out_dir",
    "evaluate",
    "evaluate_main",
]

METRICS = ("video_fg_ari", "video_mbo", "image_fg_ari", "image_mbo")
METRIC_LABELS = {"video_fg_ari": "video FG-ARI", "video_mbo": "video mBO",
                 "image_fg_ari": "image FG-ARI", "image_mbo": "image mBO"}
REFERENCE_NAMES = ("grid", "kmeans-colour", "kmeans-colour-position", "one-segment")
CI_METHOD = ("Student's t-interval over videos: mean ± t(0.975, n-1) · s / sqrt(n), "
             "s the sample standard deviation (ddof=1), clipped to the metric's range (FG-ARI <= 1, mBO in [0, 1])")
METRIC_RANGE = {"video_fg_ari": (-1.0, 1.0), "image_fg_ari": (-1.0, 1.0), "video_mbo": (0.0, 1.0),
                "image_mbo": (0.0, 1.0)}
# The references a model has to beat, per metric (design brief): a grid on FG-ARI, colour on mBO.
HEADLINE = (("video_fg_ari", "grid"), ("video_mbo", "kmeans-colour"))

Segmenter = Callable[[torch.Tensor, tuple], torch.Tensor]  # video (B, T, 3, H, W), (H, W) -> ids (B, T, H, W)

# t(0.975, df) for df = 1..30; above 30 the Cornish-Fisher expansion is exact to 1e-4.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t distribution with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def confidence_interval(values: Iterable[float | None], bounds: tuple[float, float] | None = None) -> dict:
    """{"mean", "ci95": [lo, hi], "n"} over the finite values (None/NaN dropped); NaN/None where undefined.

    The t-interval of the mean, clipped to `bounds` (the range the metric can take) when given.
    """
    x = np.array([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return {"mean": math.nan, "ci95": [None, None], "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "ci95": [None, None], "n": 1}
    half = t_quantile_975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "ci95": [lo, hi], "n": n}


# ---- iterating over whole videos ----
def _video_batches(data, batch_size: int, max_videos: int | None) -> Iterator[dict]:
    """Batches {"video" (B, T, 3, H, W), "segmentations" (B, T, H, W), "key": [B], "index": [B]}.

    `data` is a DataLoader (its batches are used as they come) or a dataset of samples (grouped
    `batch_size` at a time; videos of different lengths or sizes go in separate batches).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if max_videos is not None and max_videos < 1:
        raise ValueError(f"max_videos must be >= 1, got {max_videos}")
    if isinstance(data, DataLoader) or not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        seen = 0
        for batch in data:
            b = batch["video"].shape[0]
            if max_videos is not None:
                b = min(b, max_videos - seen)
            keys = batch.get("key", [str(seen + i) for i in range(b)])
            yield {"video": batch["video"][:b], "segmentations": batch["segmentations"][:b],
                   "key": [str(k) for k in list(keys)[:b]], "index": list(range(seen, seen + b))}
            seen += b
            if max_videos is not None and seen >= max_videos:
                return
        return
    n = len(data) if max_videos is None else min(len(data), max_videos)
    for start in range(0, n, batch_size):
        groups: dict[tuple, list] = {}
        for i in range(start, min(start + batch_size, n)):
            s = data[i]
            groups.setdefault((tuple(s["video"].shape), tuple(s["segmentations"].shape)), []).append((i, s))
        for items in groups.values():
            yield {"video": torch.stack([s["video"] for _, s in items]),
                   "segmentations": torch.stack([s["segmentations"] for _, s in items]),
                   "key": [str(s.get("key", i)) for i, s in items], "index": [i for i, _ in items]}


def score_segmenters(data, segmenters: dict[str, Segmenter], batch_size: int = 8,
                     max_videos: int | None = None, device: str | torch.device = "cpu") -> dict[str, list[dict]]:
    """Run every segmenter on the same videos and score it: {name: [per-video dict, ...]} in video order.

    A per-video dict holds index, key, num_frames, num_objects and the four metrics (None where a
    video has no foreground). Every segmenter gets the video (B, T, 3, H, W) float in [0, 1] on
    `device` and the ground truth's (H, W), and returns ids (B, T, H, W) at that size.
    """
    out: dict[str, list[dict]] = {name: [] for name in segmenters}
    for batch in _video_batches(data, batch_size, max_videos):
        video = batch["video"].to(device).float()  # (B, T, 3, H, W)
        true = batch["segmentations"].to(device).long()  # (B, T, H, W)
        size = tuple(true.shape[-2:])
        info = [{"index": int(i), "key": k, "num_frames": int(true.shape[1]),
                 "num_objects": int(torch.unique(true[b]).gt(0).sum())}
                for b, (i, k) in enumerate(zip(batch["index"], batch["key"]))]
        for name, segment in segmenters.items():
            with torch.no_grad():
                pred = segment(video, size)
            scores = {m: getattr(metrics, m)(pred, true).cpu().numpy() for m in METRICS}
            for b, row in enumerate(info):
                out[name].append({**row, **{m: _finite(scores[m][b]) for m in METRICS}})
    for rows in out.values():
        rows.sort(key=lambda v: v["index"])  # batches group videos by shape
    return out


def _finite(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def summarize(name: str, per_video: list[dict]) -> dict:
    """A table row: {"name", "num_videos", "aggregate": {metric: mean}, "ci95": {metric: [lo, hi]},
    "n": {metric: videos scored}, "per_video": [...]}."""
    row = {"name": name, "num_videos": len(per_video), "aggregate": {}, "ci95": {}, "n": {},
           "per_video": per_video}
    for m in METRICS:
        ci = confidence_interval((v.get(m) for v in per_video), METRIC_RANGE[m])
        row["aggregate"][m], row["ci95"][m], row["n"][m] = ci["mean"], ci["ci95"], ci["n"]
    return row


# ---- references ----
def reference_segmenters(num_segments: int, names: Iterable[str] = REFERENCE_NAMES,
                         seed: int = 0) -> dict[str, Segmenter]:
    """{name: segmenter} for the reference segmentations of references.py with `num_segments` segments.

    Each video is segmented alone: the k-means of references.py draws its random numbers for the
    whole batch, so a video's segmentation would otherwise depend on which videos share its batch.
    """
    def make(name: str) -> Segmenter:
        def segment(video: torch.Tensor, size: tuple) -> torch.Tensor:
            frames = video.permute(0, 1, 3, 4, 2)  # (B, T, H, W, 3)
            return torch.cat([reference_ids(name, frames[i : i + 1], num_segments, seed=seed)
                              for i in range(frames.shape[0])])  # (B, T, H, W)
        return segment
    return {name: make(name) for name in names}


def reference_table(dataset_or_loader, num_segments: int, names: Iterable[str] = REFERENCE_NAMES,
                    batch_size: int = 8, max_videos: int | None = None, seed: int = 0,
                    device: str | torch.device = "cpu") -> list[dict]:
    """Rows (see `summarize`) of the reference segmenters on a dataset (samples) or a DataLoader (batches).

    Use the same data and `num_segments` = the model's number of slots, then print the model's rows
    beside these with `format_table`.
    """
    scores = score_segmenters(dataset_or_loader, reference_segmenters(num_segments, names, seed),
                              batch_size, max_videos, device)
    return [summarize(name, per_video) for name, per_video in scores.items()]


def _cell(mean, ci) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if ci and ci[0] is not None and ci[1] is not None:
        return f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{mean:.3f}"


def format_table(rows: list[dict], metrics_: Iterable[str] = METRICS) -> str:
    """A Markdown table: one line per row (`{"name", "aggregate": {metric: mean}, optional "ci95",
    "num_videos"}`), cells "mean [95% CI]"."""
    cols = [m for m in metrics_ if any(m in r.get("aggregate", {}) for r in rows)]
    head = ["method"] + [METRIC_LABELS.get(m, m) for m in cols] + ["videos"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        agg, ci = r.get("aggregate", {}), r.get("ci95", {})
        cells = [str(r["name"])] + [_cell(agg.get(m), ci.get(m)) for m in cols] + [str(r.get("num_videos", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- the model ----
def resize_video(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B, T, 3, *size), bilinear with antialiasing (as the dataset resizes for training)."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    b, t = video.shape[:2]
    frames = F.interpolate(video.flatten(0, 1), size=tuple(size), mode="bilinear", antialias=True,
                           align_corners=False).clamp(0, 1)
    return frames.unflatten(0, (b, t))


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


MASK_KINDS = {"decoder": "masks", "attention": "attn"}  # the decoder's alpha masks (reported) or slot attention's


@torch.no_grad()
def predict_ids(model, video: torch.Tensor, size: tuple[int, int],
                segmentations: torch.Tensor | None = None, masks: str = "decoder", with_slots: bool = False):
    """Segment ids (B, T, *size) of a model for whole videos (B, T, 3, H, W) in [0, 1].

    The video is resized to the model's input size (`model.cfg.img_size`), the decoder masks are
    upsampled bilinearly to `size` (the ground truth's) and the argmax over slots is the id.
    with_slots: return (ids, slots (B, T, K, D)) from the same pass.
    """
    size_in = _pair(model.cfg.img_size)
    extra = {}
    if model.encoder.needs_segmentations:  # the oracle diagnostic reads the ground truth
        if segmentations is None:
            raise ValueError("this model's encoder is the oracle diagnostic: it needs the ground-truth masks")
        from slotmatch.data.dataset import resize_maps

        extra["segmentations"] = resize_maps(segmentations.flatten(0, 1), size_in).unflatten(0, segmentations.shape[:2])
    if masks not in MASK_KINDS:
        raise ValueError(f"masks must be one of {', '.join(MASK_KINDS)}, got {masks!r}")
    out = model(resize_video(video, size_in), masks_only=True, **extra)
    m = out[MASK_KINDS[masks]].unflatten(-1, tuple(out["mask_grid"]))  # (B, T, K, h, w)
    ids = metrics.masks_to_ids(m, tuple(size))
    return (ids, out["slots"]) if with_slots else ids


def default_out_dir(checkpoint: str, split: str = "validation", which: str = "model") -> str:
    """RUN/eval-SPLIT for RUN/checkpoints/x.ckpt, else eval-SPLIT next to the checkpoint
    (eval-SPLIT-teacher for the teacher of a distillation checkpoint)."""
    parent = os.path.dirname(os.path.abspath(checkpoint))
    base = os.path.dirname(parent) if os.path.basename(parent) == "checkpoints" else parent
    return os.path.join(base, f"eval-{split}" + ("" if which == "model" else f"-{which}"))


def paired_difference(model_rows: list[dict], ref_rows: list[dict], metric: str) -> dict:
    """Model minus reference per video (videos both score), with its t-interval."""
    ref = {v["index"]: v.get(metric) for v in ref_rows}
    diffs = [v[metric] - ref[v["index"]] for v in model_rows
             if v.get(metric) is not None and ref.get(v["index"]) is not None]
    ci = confidence_interval(diffs)
    wins = sum(d > 0 for d in diffs)
    return {"difference": ci["mean"], "ci95": ci["ci95"], "n": ci["n"], "model_better_videos": wins}


def _comparisons(model_row: dict, refs: dict[str, dict]) -> list[dict]:
    out = []
    for metric, name in HEADLINE:
        if name not in refs:
            continue
        d = paired_difference(model_row["per_video"], refs[name]["per_video"], metric)
        out.append({"metric": metric, "reference": name, "model": model_row["aggregate"][metric],
                    "reference_value": refs[name]["aggregate"][metric], **d})
    return out


def comparison_lines(comparisons: list[dict], name: str = "model") -> list[str]:
    """One sentence per headline comparison, e.g. 'video mBO: model 0.21 vs kmeans-colour 0.40 ...'."""
    lines = []
    for c in comparisons:
        lo, hi = c["ci95"]
        if lo is not None and lo > 0:
            verdict = f"the {name} is better"
        elif hi is not None and hi < 0:
            verdict = f"the {name} is worse"
        else:
            verdict = "no clear difference"
        ci = f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else ""
        lines.append(f"{METRIC_LABELS[c['metric']]}: {name} {c['model']:.3f} vs {c['reference']} "
                     f"{c['reference_value']:.3f}, difference {c['difference']:+.3f}{ci} (95% CI, paired over "
                     f"{c['n']} videos; {name} better on {c['model_better_videos']}): {verdict}")
    return lines


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _pick_overlay_videos(per_video: list[dict], count: int = 2) -> list[tuple[str, int, dict]]:
    """[(rank label, rank, per-video dict)]: the `count` worst and best videos by video mBO."""
    scored = sorted((v for v in per_video if v.get("video_mbo") is not None), key=lambda v: v["video_mbo"])
    n_best = min(count, (len(scored) + 1) // 2)
    n_worst = min(count, len(scored) - n_best)
    picks = [("worst", i + 1, v) for i, v in enumerate(scored[:n_worst])]
    picks += [("best", i + 1, v) for i, v in enumerate(scored[::-1][:n_best])]
    return picks


def _safe_name(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)[:60]


def _write_overlays(model, dataset, picks, out: str, device, masks: str = "decoder") -> list[dict]:
    """For each picked video: a GIF (frame | ground truth | model, side by side) and a PNG strip."""
    from slotmatch.visualize import overlay, save_gif, save_image, upscale, video_grid

    os.makedirs(os.path.join(out, "overlays"), exist_ok=True)
    written = []
    for label, rank, v in picks:
        s = dataset[v["index"]]
        true = s["segmentations"]  # (T, H, W)
        pred = predict_ids(model, s["video"][None].to(device).float(), tuple(true.shape[-2:]), masks=masks)[0].cpu()
        frames = (s["video"].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (T, H, W, 3)
        factor = max(1, 128 // frames.shape[1])
        rows = [upscale(frames, factor), upscale(overlay(frames, true.numpy()), factor),
                upscale(overlay(frames, pred.numpy() + 1, skip_background=False), factor)]
        stem = f"{label}_{rank}_{_safe_name(v['key'])}"
        gif, png = f"overlays/{stem}.gif", f"overlays/{stem}.png"
        pad = np.full((rows[0].shape[0], rows[0].shape[1], 4, 3), 255, np.uint8)
        save_gif(np.concatenate([rows[0], pad, rows[1], pad, rows[2]], axis=2), os.path.join(out, gif))
        T = frames.shape[0]
        idx = sorted(set(np.linspace(0, T - 1, min(T, 8)).round().astype(int).tolist()))
        save_image(video_grid(rows, idx), os.path.join(out, png))
        written.append({"rank": label, "position": rank, "index": v["index"], "key": v["key"],
                        "video_mbo": v["video_mbo"], "video_fg_ari": v["video_fg_ari"], "gif": gif, "png": png})
    return written


def evaluate(checkpoint: str, data: str, split: str = "validation", out: str | None = None, which: str = "model",
             batch_size: int = 8, max_videos: int | None = None, device: str = "cpu", masks: str = "decoder",
             track: str | None = None) -> dict:
    """Evaluate a checkpoint on whole videos of a dataset split beside the reference rows; write a report.

    masks: "decoder" (the decoder's alpha masks, what DINOSAUR and SlotContrast report) or "attention"
    (slot attention's own masks of the last iteration).
    track: None (as the checkpoint's config says) or "none" / "masks", overriding `model.track`.

    Writes into `out` (default `default_out_dir`): metrics.json, metrics.md, overlays/ (worst and best
    videos by video mBO), plots (scores.png, per_video.png, training/ curves when the run has logs) and
    index.html (one self-contained page). Returns the metrics.json content: aggregate, ci95, n and
    per_video of the model, the same for every reference under "references", the paired headline
    comparisons, and what was run.
    """
    from slotmatch.checkpoint import load_model
    from slotmatch.data.dataset import open_dataset

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    model, _ = load_model(checkpoint, which=which, device=device)
    from slotmatch.models.tracking import set_track

    set_track(model, track)
    dataset = open_dataset(data, split)  # native resolution: the ground truth is scored as stored
    if len(dataset) == 0:
        raise ValueError(f"{data}: split {split} holds no videos")
    num_segments = int(model.cfg.num_slots)
    input_size = _pair(model.cfg.img_size)
    out = out or default_out_dir(checkpoint, split, which)
    os.makedirs(out, exist_ok=True)

    segmenters: dict[str, Segmenter] = {"model": lambda video, size: predict_ids(model, video, size, masks=masks)}
    segmenters.update(reference_segmenters(num_segments))
    scores = score_segmenters(dataset, segmenters, batch_size, max_videos, device)
    model_row = summarize("model", scores.pop("model"))
    refs = {name: summarize(name, per_video) for name, per_video in scores.items()}

    result = {
        "checkpoint": os.path.abspath(checkpoint), "which": which, "masks": masks, "track": model.cfg.track,
        "data": os.path.abspath(data), "split": split,
        "num_videos": model_row["num_videos"], "num_segments": num_segments, "input_size": list(input_size),
        "ci_method": CI_METHOD,
        "aggregate": model_row["aggregate"], "ci95": model_row["ci95"], "n": model_row["n"],
        "per_video": model_row["per_video"],
        "references": {name: {k: r[k] for k in ("aggregate", "ci95", "n", "per_video")} for name, r in refs.items()},
        "comparisons": _comparisons(model_row, refs),
    }
    result["overlays"] = _write_overlays(model, dataset, _pick_overlay_videos(model_row["per_video"]), out, device,
                                         masks)
    rows = [{**model_row, "name": model_label(which)}] + list(refs.values())
    result["table"] = format_table(rows)
    result = _jsonable(result)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, "metrics.md"), "w") as f:
        f.write(markdown_report(result))

    from slotmatch import report

    result["report"] = report.write_report(result, out, run_dir=_run_dir_of(checkpoint))
    return result


def model_label(which: str) -> str:
    """The model's row name: "model", or "model (teacher)" for the teacher of a distillation checkpoint."""
    return "model" if which == "model" else f"model ({which})"


def _run_dir_of(checkpoint: str) -> str | None:
    parent = os.path.dirname(os.path.abspath(checkpoint))
    return os.path.dirname(parent) if os.path.basename(parent) == "checkpoints" else None


def markdown_report(result: dict) -> str:
    """metrics.md: what was evaluated, the table, and the headline comparisons."""
    lines = [f"# Evaluation: {os.path.basename(result['checkpoint'])} ({result['which']})", "",
             f"- data: `{result['data']}`, split `{result['split']}`, {result['num_videos']} videos (whole videos)",
             f"- model input {result['input_size'][0]}x{result['input_size'][1]}, {result['num_segments']} slots; "
             f"references with {result['num_segments']} segments at the ground truth's resolution",
             f"- cells: mean [95% CI]; {result['ci_method']}", "", result["table"], ""]
    lines += [f"- {line}" for line in comparison_lines(result["comparisons"], model_label(result["which"]))]
    return "\n".join(lines) + "\n"


def evaluate_main(args) -> None:
    """`slotmatch evaluate`: run `evaluate` with the parsed arguments and print the table."""
    result = evaluate(args.checkpoint, args.data, split=args.split, out=args.out, which=args.which,
                      batch_size=args.batch_size, max_videos=args.max_videos, device=args.device,
                      masks=args.masks, track=args.track)
    print(result["table"])
    for line in comparison_lines(result["comparisons"], model_label(result["which"])):
        print(line)
    print(f"cells: mean [95% CI over videos, t-interval]; report: {result['report']}")
