"""The evaluation report: plots of an `evaluate` result and one self-contained index.html.

Every image of the page is embedded as a base64 data URI, so index.html is one file a person opens
(or mails) without its folder; the PNGs and GIFs are also written beside it.
"""

from __future__ import annotations

import base64
import html
import math
import os

import numpy as np

from slotmatch.evaluate import HEADLINE, METRIC_LABELS, METRICS, comparison_lines, model_label
from slotmatch.plots import NoLogsError, new_figure, plot_run

__all__ = ["plot_scores", "plot_per_video", "write_report"]

MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _rows(result: dict) -> list[tuple[str, dict]]:
    """[(name, {"aggregate", "ci95", "per_video"})]: the model first, then the references."""
    return [(model_label(result["which"]), result)] + list(result["references"].items())


def plot_scores(result: dict, path: str) -> str:
    """Horizontal bars of video FG-ARI and video mBO per method, with the 95% CI as error bars."""
    rows = _rows(result)
    fig, axes = new_figure(2, panel=(5.0, 0.45 * len(rows) + 1.3))
    for ax, metric in zip(axes, ("video_fg_ari", "video_mbo")):
        names = [n for n, _ in rows][::-1]
        means = np.array([r["aggregate"][metric] if r["aggregate"][metric] is not None else np.nan
                          for _, r in rows][::-1])
        err = np.zeros((2, len(rows)))
        for i, (_, r) in enumerate(rows[::-1]):
            lo, hi = r["ci95"][metric]
            if lo is not None and hi is not None:
                err[:, i] = [means[i] - lo, hi - means[i]]
        colours = ["C0" if n.startswith("model") else "0.65" for n in names]
        y = np.arange(len(names))
        ax.barh(y, np.nan_to_num(means), xerr=err, color=colours, capsize=3, error_kw={"linewidth": 1})
        ax.set_yticks(y, [f"{n}  {m:.3f}" if math.isfinite(m) else f"{n}  n/a" for n, m in zip(names, means)])
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_xlim(min(0.0, float(np.nanmin(means - err[0], initial=0))) - 0.02, 1.0)
        ax.set_title(f"{METRIC_LABELS[metric]} (95% CI over videos)")
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=100)
    return path


def plot_per_video(result: dict, path: str) -> str | None:
    """Per video: the model's score against the reference it has to beat (above the diagonal: model better)."""
    pairs = [(m, r) for m, r in HEADLINE if r in result["references"]]
    if not pairs:
        return None
    fig, axes = new_figure(len(pairs), panel=(4.2, 4.0))
    for ax, (metric, ref) in zip(axes, pairs):
        ref_rows = {v["index"]: v[metric] for v in result["references"][ref]["per_video"]}
        pts = np.array([(ref_rows[v["index"]], v[metric]) for v in result["per_video"]
                        if v[metric] is not None and ref_rows.get(v["index"]) is not None]).reshape(-1, 2)
        lo = min(0.0, float(pts.min(initial=0))) - 0.02
        ax.plot([lo, 1], [lo, 1], color="0.6", linestyle="--", linewidth=1, label="equal")
        ax.scatter(pts[:, 0], pts[:, 1], s=22, color="C0", alpha=0.8, label="one video")
        wins = int((pts[:, 1] > pts[:, 0]).sum())
        ax.set_xlim(lo, 1.02)
        ax.set_ylim(lo, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{ref}: {METRIC_LABELS[metric]}")
        ax.set_ylabel(f"model: {METRIC_LABELS[metric]}")
        ax.set_title(f"model better on {wins} of {len(pts)} videos", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.savefig(path, dpi=100)
    return path


def _data_uri(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f"data:{MIME[os.path.splitext(path)[1].lower()]};base64,{data}"


def _img(path: str, alt: str) -> str:
    return f'<img src="{_data_uri(path)}" alt="{html.escape(alt)}" title="{html.escape(os.path.basename(path))}">'


def _fmt(v, ci=None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    s = f"{v:.3f}"
    if ci and ci[0] is not None and ci[1] is not None:
        s += f' <span class="ci">[{ci[0]:.3f}, {ci[1]:.3f}]</span>'
    return s


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.model td { font-weight: 600; background: #eef4fb; }
.ci { color: #777; font-weight: normal; font-size: 0.85em; }
.meta { color: #555; font-size: 0.92em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #333; margin-bottom: 0.3em; }
.pair { display: flex; gap: 1em; align-items: flex-start; flex-wrap: wrap; }
.labels { font-size: 0.8em; color: #666; }
"""


def write_report(result: dict, out: str, run_dir: str | None = None) -> str:
    """Write scores.png, per_video.png, training/*.png (when `run_dir` has logs) and index.html into `out`."""
    plots = [("scores", plot_scores(result, os.path.join(out, "scores.png")))]
    per_video = plot_per_video(result, os.path.join(out, "per_video.png"))
    if per_video:
        plots.append(("per-video comparison", per_video))
    curves = []
    if run_dir is not None:
        try:
            curves = plot_run(run_dir, os.path.join(out, "training"))
        except NoLogsError:
            pass

    e = html.escape
    name = os.path.basename(result["checkpoint"])
    h, w = result["input_size"]
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>slotmatch evaluation: {e(name)} ({e(result['which'])})</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>slotmatch evaluation: {e(name)} ({e(result['which'])})</h1>",
        f'<p class="meta">checkpoint <code>{e(result["checkpoint"])}</code><br>'
        f'data <code>{e(result["data"])}</code>, split <code>{e(result["split"])}</code>: '
        f'{result["num_videos"]} whole videos; model input {h}x{w}, {result["num_segments"]} slots, ids upsampled '
        f'to the ground truth\'s resolution; references with {result["num_segments"]} segments on the same '
        f'videos.<br>Cells: mean over videos [95% CI]; {e(result["ci_method"])}.</p>',
        "<h2>Scores</h2>", _html_table(result),
        "<ul>" + "".join(f"<li>{e(line)}</li>"
                         for line in comparison_lines(result["comparisons"], model_label(result["which"]))) + "</ul>",
        '<p class="meta">FG-ARI ignores the background, so a grid that never looks at the image scores well on '
        "scenes of small objects; colour clustering nearly solves plain-coloured scenes. A model discovers "
        "objects where its FG-ARI beats the grid and its mBO beats k-means on colour.</p>",
        "<h2>Plots</h2>", '<div class="pair">',
    ]
    parts += [f"<figure><figcaption>{e(label)}</figcaption>{_img(p, label)}</figure>" for label, p in plots]
    parts.append("</div>")
    if curves:
        parts += ["<h2>Training curves</h2>", '<div class="pair">']
        parts += [f"<figure><figcaption>{e(os.path.basename(p))}</figcaption>{_img(p, os.path.basename(p))}</figure>"
                  for p in curves]
        parts.append("</div>")
    parts.append("<h2>Worst and best videos by video mBO</h2>")
    parts.append('<p class="meta">Animation: frame | ground truth | model. Strip: rows frame, ground truth, '
                 "model; columns evenly spaced frames. Model colours are arbitrary per slot.</p>")
    for o in result["overlays"]:
        caption = (f"{o['rank']} #{o['position']}: video {o['index']} ({o['key']}), video mBO {_fmt(o['video_mbo'])}, "
                   f"video FG-ARI {_fmt(o['video_fg_ari'])}")
        parts.append(f'<div class="pair"><figure><figcaption>{e(caption)}</figcaption>'
                     f'{_img(os.path.join(out, o["gif"]), caption + " (animation)")}'
                     '<div class="labels">frame | ground truth | model</div></figure>'
                     f'<figure><figcaption>&nbsp;</figcaption>{_img(os.path.join(out, o["png"]), caption + " (strip)")}'
                     "</figure></div>")
    parts += ["<h2>Per-video scores</h2>", "<details><summary>all videos</summary>", _html_per_video(result),
              "</details>", "</body></html>"]
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return path


def _html_table(result: dict) -> str:
    head = "".join(f"<th>{html.escape(METRIC_LABELS[m])}</th>" for m in METRICS)
    lines = [f"<table><tr><th>method</th>{head}<th>videos</th></tr>"]
    for name, r in _rows(result):
        cls = ' class="model"' if name.startswith("model") else ""
        cells = "".join(f"<td>{_fmt(r['aggregate'][m], r['ci95'][m])}</td>" for m in METRICS)
        lines.append(f"<tr{cls}><td>{html.escape(name)}</td>{cells}<td>{len(r['per_video'])}</td></tr>")
    return "\n".join(lines) + "</table>"


def _html_per_video(result: dict) -> str:
    refs = {(m, r): {v["index"]: v[m] for v in result["references"][r]["per_video"]}
            for m, r in HEADLINE if r in result["references"]}
    head = "".join(f"<th>model {html.escape(METRIC_LABELS[m])}</th>" for m in METRICS)
    head += "".join(f"<th>{html.escape(r)} {html.escape(METRIC_LABELS[m])}</th>" for m, r in refs)
    lines = [f"<table><tr><th>video</th><th>key</th><th>frames</th><th>objects</th>{head}</tr>"]
    for v in result["per_video"]:
        cells = "".join(f"<td>{_fmt(v[m])}</td>" for m in METRICS)
        cells += "".join(f"<td>{_fmt(table.get(v['index']))}</td>" for table in refs.values())
        lines.append(f"<tr><td>{v['index']}</td><td>{html.escape(str(v['key']))}</td><td>{v['num_frames']}</td>"
                     f"<td>{v['num_objects']}</td>{cells}</tr>")
    return "\n".join(lines) + "</table>"
