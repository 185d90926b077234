"""One short GPU session: choose the teacher's recipe, train the teachers, distil the students, benchmark.

Made for a lent H100/H200 with about ten minutes to run: every run is a plain `slotmatch train` or
`slotmatch distill` with a wall-clock budget (train.max_time), and the runs of a phase share the GPU
as parallel processes (small models leave most of it idle when alone).

  phase 1  for each dataset, one teacher per recipe in RECIPES, in parallel, --seconds each;
           then each teacher's video mBO on the validation split picks the dataset's recipe
  phase 2  from each dataset's best teacher, in parallel, --seconds each: the SlotMatch student, the
           same student alone (distill.beta=0), + feature KD, + mask KD, beta = 0.1, and the teacher trained on
           for as long again (the "long" teacher)
  bench    `slotmatch benchmark` of teacher vs SlotMatch student (trained checkpoints) and
           benchmarks/bench_models.py at the paper's sizes, on the GPU

Data: `slotmatch pack` copies (the GPU machine has no PyBullet) of datasets generated with
--with-depth --with-flow, at data/gpu/movi-c-like and data/gpu/movi-e-like (the presets' paths).
Usage:
  python benchmarks/gpu_session.py --out OUT [--seconds 195] [--datasets c e]
      [--recipe NAME OVERRIDE... [--recipe ...]]   (your own recipes instead of RECIPES)
Writes OUT/summary.json, OUT/session.log, OUT/bench.txt and OUT/runs-<dataset>-{teachers,students}.tar
(each run's config, CSV logs, overlays and fp16 safetensors weights; the .ckpt files stay behind:
too large to move).
Every run's own output is in its run directory's stdout.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"c": "movi-c-like-gpu", "e": "movi-e-like-gpu"}


def frozen_preset_overrides() -> list[str]:
    """The `*-frozen` presets' model and training settings as overrides of the GPU preset, read from
    configs/offline-frozen.yaml so that the recipe follows the presets."""
    import yaml

    with open(os.path.join(ROOT, "src", "slotmatch", "configs", "offline-frozen.yaml")) as f:
        preset = yaml.safe_load(f)
    keys = {"data": ["clip_length"], "model": ["encoder", "target", "mask_source", "input_norm"], "student": ["encoder"],
            "train": ["feature_cache", "decoded_tokens", "burn_in", "contrast_max_gap", "mask_entropy", "mask_entropy_from",
                      "select_videos"]}
    return [f"{section}.{key}={json.dumps(preset[section][key])}" for section, names in keys.items() for key in names]


RECIPES = {  # overrides of the GPU preset; the preset itself is the first. Session 1 measured the first
    # two and raw pixels (+ disparity): none found objects. "-attn": slot attention's masks weigh the
    # decoded features (model.mask_source=attention), which lets ideal features group (RESULTS.md).
    "disparity": [],
    "disparity-lr4e-4": ["train.lr=4e-4"],
    "flow": ["model.target=flow"],
    "disparity+flow": ["model.target=disparity+flow"],
    "disparity-attn": ["model.mask_source=attention"],
    "flow-attn": ["model.target=flow", "model.mask_source=attention"],
    "disparity+flow-attn": ["model.target=disparity+flow", "model.mask_source=attention"],
    # the frozen pretrained CNNs of checkpoints/encoders/ (the offline stand-in for DINOv2, `movi-*-like-frozen`):
    # the best CPU recipe of session 3 (docs/RESULTS.md, "Frozen pretrained encoders")
    "frozen-attn": ["model.encoder={name: cnn, channels: 96, num_layers: 4, patch_size: 2, deep_patch_size: 4, "
                    "frozen: true, weights: checkpoints/encoders/teacher/encoder.safetensors}",
                    "student.encoder={name: cnn, channels: 24, num_layers: 4, patch_size: 2, deep_patch_size: 4, "
                    "frozen: true, weights: checkpoints/encoders/student/encoder.safetensors}",
                    "model.target=features", "model.mask_source=attention", "train.feature_cache=true",
                    "train.decoded_tokens=256"],
    # the `*-frozen` presets' recipe (configs/offline-frozen.yaml, the best on the CPU: docs/RESULTS.md, session 7
    # part 1): encoders read through their pretext head, 6-frame clips, the contrast over gaps up to 5, a burn-in
    "readout-clip6": frozen_preset_overrides(),
    # diagnostics that read the ground truth (never selected as a teacher): can these settings group
    # ideal features at all? (docs/RESULTS.md, "Diagnostic")
    "oracle": ["model.encoder={name: oracle, patch_size: 2}", "model.target=oracle"],
    "oracle-attn": ["model.encoder={name: oracle, patch_size: 2}", "model.target=oracle", "model.mask_source=attention"],
}
DEFAULT_RECIPES = ["readout-clip6", "frozen-attn", "flow-attn", "oracle-attn"]
STUDENTS = {
    "slotmatch": [],
    "alone": ["distill.beta=0"],
    "featurekd": ["distill.feature_kd=1"],
    "maskkd": ["distill.mask_kd=1"],
    "beta01": ["distill.beta=0.1"],  # a tenth of the KD weight: level with the student alone on the CPU (RESULTS session 11 part 4)
    # the teacher's slot attention and predictor copied into the student, with and without the KD term (session 12 part 3)
    "copymod": ["distill.copy_slot_modules=true"],
    "copymod-alone": ["distill.copy_slot_modules=true", "distill.beta=0", "distill.copy_slot_init=true"],
}
DEFAULT_STUDENTS = [s for s in STUDENTS if not s.startswith("copymod")]  # opt in: --students ... copymod copymod-alone
LOG = None


def log(msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if LOG:
        with open(LOG, "a") as f:
            f.write(line + "\n")


def max_time(seconds: float) -> str:
    s = int(seconds)
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def launch(args: list[str], run_dir: str, threads: int) -> subprocess.Popen:
    os.makedirs(run_dir, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with open(os.path.join(run_dir, "stdout.txt"), "a") as out:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-m", "slotmatch.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)


def run_phase(jobs: dict[str, tuple[list[str], str]], seconds: float, threads: int, fallback: list[str]) -> dict:
    """Run jobs {name: (cli args, run dir)} in parallel; a job that fails early is started once more
    with `fallback` overrides (fp32) in a fresh directory. Returns {name: (exit code, run dir)}."""
    start = time.time()
    procs = {name: (launch(a, d, threads), a, d, False) for name, (a, d) in jobs.items()}
    done: dict[str, tuple[int, str]] = {}
    while procs:
        time.sleep(2)
        for name, (p, a, d, retried) in list(procs.items()):
            rc = p.poll()
            if rc is None:
                if time.time() - start > seconds + 90:  # stuck past its budget: stop it
                    p.kill()
                continue
            del procs[name]
            left = seconds - (time.time() - start)
            if rc != 0 and not retried and left > 60 and "--resume" not in a:  # a resumed run needs its directory
                d2 = d + "-fp32"
                a2 = [x if not x.startswith("--out=") else f"--out={d2}" for x in a] + fallback
                a2 = [x for x in a2 if not x.startswith("train.max_time=")] + [f"train.max_time={max_time(left)}"]
                log(f"{name}: exit {rc}, retrying with {' '.join(fallback)} for {left:.0f} s in {d2}")
                procs[name] = (launch(a2, d2, threads), a2, d2, True)
                continue
            log(f"{name}: exit {rc} after {time.time() - start:.0f} s")
            done[name] = (rc, d)
    return done


def last_metrics(run_dir: str) -> dict:
    """Last logged step and validation scores of a run (from its CSV logs)."""
    import csv

    out: dict = {}
    for logs in sorted(d for d in os.listdir(run_dir) if d.startswith("logs")):
        path = os.path.join(run_dir, logs, "metrics.csv")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for row in csv.DictReader(f):
                for k, v in row.items():
                    if v not in ("", None):
                        out[k] = float(v)
    return out


def score(checkpoint: str, data: str, which: str = "model") -> dict:
    """Video FG-ARI and mBO of a checkpoint on the validation split, on the GPU."""
    import torch

    from slotmatch.checkpoint import load_model
    from slotmatch.data.dataset import open_dataset
    from slotmatch.evaluate import predict_ids, score_segmenters, summarize

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load_model(checkpoint, which=which, device=device)
    if model.encoder.needs_segmentations:  # the oracle diagnostic reads the ground truth
        import numpy as np

        from slotmatch import metrics

        ds, fg, mbo = open_dataset(data, "validation"), [], []
        for i in range(0, len(ds), 25):
            items = [ds[j] for j in range(i, min(i + 25, len(ds)))]
            video = torch.stack([x["video"] for x in items]).to(device)
            true = torch.stack([x["segmentations"] for x in items]).to(device)
            with torch.no_grad():
                pred = predict_ids(model, video, true.shape[-2:], segmentations=true)
            fg += metrics.video_fg_ari(pred, true).tolist()
            mbo += metrics.video_mbo(pred, true).tolist()
        return {"video_fg_ari": float(np.nanmean(fg)), "video_mbo": float(np.nanmean(mbo))}
    rows = score_segmenters(open_dataset(data, "validation"),
                            {"model": lambda v, s: predict_ids(model, v, s)}, batch_size=25, device=device)
    agg = summarize("model", rows["model"])["aggregate"]
    return {k: agg[k] for k in ("video_fg_ari", "video_mbo")}


def result_row(rc: int, run_dir: str, out: str) -> dict:
    """A run's exit code, directory, and (when it left a checkpoint) its scores and last step."""
    from slotmatch.config import load_config

    row = {"exit": rc, "run_dir": os.path.relpath(run_dir, out)}
    ckpt = os.path.join(run_dir, "checkpoints", "last.ckpt")
    if os.path.exists(ckpt):
        data = os.path.join(ROOT, load_config(os.path.join(run_dir, "config.yaml"))["data"]["path"])
        try:
            row.update(score(ckpt, data))
        except Exception as e:  # one broken run must not end the session
            row["error"] = f"{type(e).__name__}: {e}"
        row["step"] = last_metrics(run_dir).get("step")
    return row


def write_summary(summary: dict, out: str) -> None:
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


def export(run_dir: str, which: str = "model") -> str | None:
    """fp16 safetensors of the run's last checkpoint (the student of a distillation run)."""
    from slotmatch.checkpoint import export_safetensors

    ckpt = os.path.join(run_dir, "checkpoints", "last.ckpt")
    if not os.path.exists(ckpt):
        return None
    return export_safetensors(ckpt, os.path.join(run_dir, "model.safetensors"))


def pack_runs(runs: str, out: str, datasets, parts) -> None:
    """Export every run's weights (fp16 safetensors) and write OUT/runs-<dataset>-<part>s.tar (one file per
    dataset and part, as each returned file is at most 16 MiB), keeping the last two overlay pictures."""
    for ds in datasets:
        base = os.path.join(runs, ds)
        if not os.path.isdir(base):
            continue
        names = [n for n in sorted(os.listdir(base)) if os.path.isdir(os.path.join(base, n)) and n.startswith(parts)]
        for name in names:
            run_dir = os.path.join(base, name)
            overlays = os.path.join(run_dir, "overlays")
            for old in sorted(os.listdir(overlays))[:-2] if os.path.isdir(overlays) else []:
                os.remove(os.path.join(overlays, old))
            try:
                export(run_dir)
            except Exception as e:
                log(f"export {run_dir}: {type(e).__name__}: {e}")
        for part in parts:
            with tarfile.open(os.path.join(out, f"runs-{ds}-{part}s.tar"), "w") as tar:
                for name in names:
                    if name.startswith(part):
                        tar.add(os.path.join(base, name), arcname=f"{ds}/{name}", filter=_skip_bulky)


def _skip_bulky(ti: tarfile.TarInfo):
    """Leave out what is too large to bring back or a copy of something else (TensorBoard = CSV logs)."""
    return None if ti.name.endswith(".ckpt") or "/tensorboard" in ti.name else ti


def main() -> None:
    global LOG
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=195, help="wall-clock budget of every run in phase 1")
    ap.add_argument("--student-seconds", type=float, default=None,
                    help="budget of every run in phase 2 (default: --seconds, cut to fit --deadline)")
    ap.add_argument("--min-mbo", type=float, default=0.0,
                    help="distil only from a teacher whose video mBO reaches this; otherwise phase 2 just trains "
                         "the best teacher on (a student of a teacher that finds no objects measures nothing)")
    ap.add_argument("--datasets", nargs="+", default=["c", "e"], choices=sorted(CONFIGS))
    ap.add_argument("--recipes", nargs="+", default=None, help=f"which of {', '.join(RECIPES)} (default: {', '.join(DEFAULT_RECIPES)})")
    ap.add_argument("--recipe", nargs="+", action="append", default=[], metavar=("NAME", "OVERRIDE"),
                    help="a recipe of your own: a name and its config overrides (repeatable)")
    ap.add_argument("--students", nargs="+", default=DEFAULT_STUDENTS, choices=list(STUDENTS),
                    help=f"default: {' '.join(DEFAULT_STUDENTS)}; each one more run shares the device in phase 2")
    ap.add_argument("--extra", nargs="*", default=[], help="overrides for every run (e.g. a tiny CPU dry run)")
    ap.add_argument("--work", default=None, help="where the runs live (default OUT/runs; removed at the end)")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--deadline", type=float, default=560,
                    help="seconds after the start past which no benchmark is started (the call's limit is 600)")
    args = ap.parse_args()
    for name, *overrides in args.recipe:
        RECIPES[name] = overrides
    if args.recipes is None:
        args.recipes = [r[0] for r in args.recipe] or DEFAULT_RECIPES
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    sys.path.insert(0, os.path.join(ROOT, "src"))
    args.out = os.path.abspath(args.out)  # the runs start in ROOT: every path handed to them is absolute
    args.work = os.path.abspath(args.work) if args.work else None
    os.makedirs(args.out, exist_ok=True)
    LOG = os.path.join(args.out, "session.log")
    runs = args.work or os.path.join(args.out, "runs")
    import torch

    session_start = time.time()
    log(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}, {os.cpu_count()} CPUs")
    n1 = len(args.datasets) * len(args.recipes)
    threads = max(1, (os.cpu_count() or 2) // max(n1, 1))
    fallback = ["train.precision=32-true"]
    summary: dict = {"seconds": args.seconds, "datasets": {}, "extra": args.extra,
                     "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}

    # ---- phase 1: one teacher per recipe ----
    jobs = {}
    for ds in args.datasets:
        for r in args.recipes:
            d = os.path.join(runs, ds, f"teacher-{r}")
            jobs[f"{ds}/teacher-{r}"] = (["train", "--config", CONFIGS[ds], f"--out={d}", "--quiet", *RECIPES[r],
                                          f"train.max_time={max_time(args.seconds)}", *args.extra], d)
    log(f"phase 1: {len(jobs)} teachers, {args.seconds:.0f} s each, {threads} CPU threads each")
    t0 = time.time()
    done = run_phase(jobs, args.seconds, threads, fallback)
    log(f"phase 1 took {time.time() - t0:.0f} s")
    best: dict[str, tuple[str, str, dict]] = {}
    for ds in args.datasets:
        summary["datasets"][ds] = {"teachers": {}, "students": {}}
        for r in args.recipes:
            rc, d = done[f"{ds}/teacher-{r}"]
            row = {**result_row(rc, d, args.out), "overrides": RECIPES[r]}
            if "video_mbo" in row and not r.startswith("oracle") and (
                    ds not in best or row["video_mbo"] > best[ds][2]["video_mbo"]):
                best[ds] = (r, d, row)
            summary["datasets"][ds]["teachers"][r] = row
            log(f"{ds} teacher {r}: {row}")
        if ds in best:
            summary["datasets"][ds]["best_recipe"] = best[ds][0]
            log(f"{ds}: best recipe {best[ds][0]}")
    write_summary(summary, args.out)
    pack_runs(runs, args.out, args.datasets, ("teacher",))  # safe even if the call is cut short later

    # ---- phase 2: students from the best teacher, and the teacher trained on ----
    # what is left before the deadline, less start-up, scoring and packing (about 60 s)
    seconds2 = min(args.student_seconds or args.seconds, args.deadline - (time.time() - session_start) - 60)
    jobs = {}
    for ds, (r, d, _) in best.items():
        teacher = os.path.join(d, "checkpoints", "last.ckpt")
        frozen = os.path.join(runs, ds, "teacher.ckpt")
        shutil.copy(teacher, frozen)  # the long run below rewrites its own last.ckpt
        if best[ds][2]["video_mbo"] < args.min_mbo:
            log(f"{ds}: best teacher mBO {best[ds][2]['video_mbo']:.3f} < --min-mbo {args.min_mbo}: no students")
        for s in (args.students if best[ds][2]["video_mbo"] >= args.min_mbo else []):
            sd = os.path.join(runs, ds, f"student-{s}")
            jobs[f"{ds}/student-{s}"] = (["distill", "--config", CONFIGS[ds], "--teacher", frozen, f"--out={sd}",
                                          "--quiet", *RECIPES[r], *STUDENTS[s],
                                          f"train.max_time={max_time(seconds2)}", *args.extra], sd)
        long_dir = os.path.join(runs, ds, f"teacher-{r}-long")
        shutil.copytree(d, long_dir)
        jobs[f"{ds}/teacher-long"] = (["train", "--config", CONFIGS[ds], f"--out={long_dir}", "--resume", "--quiet",
                                       *RECIPES[r], f"train.max_time={max_time(args.seconds + seconds2)}",
                                       *args.extra], long_dir)
    threads = max(1, (os.cpu_count() or 2) // max(len(jobs), 1))
    log(f"phase 2: {len(jobs)} runs, {seconds2:.0f} s each" + ("" if seconds2 > 30 else ": skipped, too little time"))
    t0 = time.time()
    done = run_phase(jobs, seconds2, threads, fallback) if seconds2 > 30 else {}
    log(f"phase 2 took {time.time() - t0:.0f} s")
    for name, (rc, run_dir) in done.items():
        ds, run = name.split("/")
        row = result_row(rc, run_dir, args.out)
        summary["datasets"][ds]["students" if run.startswith("student") else "teachers"][run] = row
        log(f"{name}: {row}")
    write_summary(summary, args.out)

    pack_runs(runs, args.out, args.datasets, ("teacher", "student"))

    # ---- benchmarks on this device ----
    bench_txt = os.path.join(args.out, "bench.txt")
    if not args.skip_bench:
        env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        cmds, cmds_bf16 = [], []
        for ds in best:
            t = os.path.join(runs, ds, "teacher.ckpt")
            s = os.path.join(runs, ds, "student-slotmatch", "checkpoints", "last.ckpt")
            if os.path.exists(s):
                c = [sys.executable, "-m", "slotmatch.cli", "benchmark", "--teacher", t, "--student", s,
                     "--device", dev, "--batch-size", "25", "--frames", "24", "--repeats", "10"]
                cmds.append(c)
                cmds_bf16.append(c + ["--bf16"])
        cmds.append([sys.executable, os.path.join(ROOT, "benchmarks", "bench_models.py"), "--configs", "movi_e",
                     "movi_c", "--device", dev, "--paper-batch-size", "8", "--paper-repeats", "10", "--bf16"])
        cmds.append([sys.executable, os.path.join(ROOT, "benchmarks", "bench_models.py"), "--configs", "movi_e",
                     "--device", dev, "--paper-batch-size", "32", "--paper-repeats", "5", "--bf16", "--no-stages"])
        cmds += cmds_bf16
        with open(bench_txt, "w") as f:
            for c in cmds:
                left = args.deadline - (time.time() - session_start)
                if left < 20:
                    f.write("$ " + " ".join(c[2:]) + "\n(skipped: past the session's deadline)\n\n")
                    continue
                f.write("$ " + " ".join(os.path.relpath(x, ROOT) if x.startswith(ROOT) else x for x in c) + "\n")
                f.flush()
                t0 = time.time()
                try:
                    r = subprocess.run(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                       cwd=ROOT, timeout=min(120, left))
                    f.write(r.stdout + f"(exit {r.returncode}, {time.time() - t0:.0f} s)\n\n")
                except subprocess.TimeoutExpired:
                    f.write(f"(timed out after {min(120, left):.0f} s)\n\n")
                f.flush()
        log("benchmarks written to bench.txt")

    shutil.rmtree(runs)  # what comes back is the tar files
    log("done")


if __name__ == "__main__":
    main()
