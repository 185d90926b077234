"""The `slotmatch` command: one entry point, one subcommand per job. Parses, then calls library functions."""

from __future__ import annotations

import argparse
import os
import sys


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def cmd_generate(a: argparse.Namespace) -> None:
    from slotmatch.data.generate import GenerateArgs, generate_dataset

    args = GenerateArgs(preset=a.preset, num_train=a.num_train, num_val=a.num_val, frames=a.frames,
                        size=a.size, seed=a.seed, videos_per_shard=a.videos_per_shard, with_depth=a.with_depth,
                        with_flow=a.with_flow)
    workers = a.workers if a.workers is not None else min(os.cpu_count() or 1, 8)
    m = generate_dataset(a.out, args, workers=workers, progress=not a.quiet)
    print(f"{a.out}: {m['splits']['train']['num_videos']} train and {m['splits']['validation']['num_videos']} "
          f"validation videos ({a.preset}, {a.frames} frames at {a.size}x{a.size})")


def cmd_pack(a: argparse.Namespace) -> None:
    from slotmatch.data.packed import pack_dataset

    limits = {k: v for k, v in (("train", a.num_train), ("validation", a.num_val)) if v is not None}
    m = pack_dataset(a.dataset, a.out, size=a.size, num_videos=limits, quality=a.quality, progress=not a.quiet)
    mb = sum(os.path.getsize(os.path.join(a.out, s["file"])) for s in m["splits"].values()) / 2 ** 20
    print(f"{a.out}: " + ", ".join(f"{s['num_videos']} {k}" for k, s in m["splits"].items())
          + f" videos at {a.size}x{a.size}, {mb:.1f} MiB")


def cmd_show(a: argparse.Namespace) -> None:
    from slotmatch.show import show_dataset

    print(show_dataset(a.dataset, a.out, split=a.split, num_videos=a.videos, num_frames=a.frames, raw=a.raw))


def _run_dir(a: argparse.Namespace, kind: str) -> str:
    if a.out:
        return a.out
    name = os.path.splitext(os.path.basename(a.config))[0]
    return os.path.join("runs", f"{name}-{kind}")


def cmd_train(a: argparse.Namespace) -> None:
    from slotmatch.config import load_config
    from slotmatch.train import train

    cfg = load_config(a.config, a.overrides)
    last = train(cfg, _run_dir(a, "teacher"), resume=a.resume, progress=not a.quiet)
    print(f"checkpoint: {last}")


def cmd_pretrain(a: argparse.Namespace) -> None:
    from slotmatch.config import load_config
    from slotmatch.pretrain import pretrain_encoder

    cfg = load_config(a.config, a.overrides)
    enc = {**cfg["model"]["encoder"], **(cfg.get("student", {}).get("encoder", {}) if a.student else {})}
    settings = {k: v for k, v in (("steps", a.steps), ("max_minutes", a.minutes), ("targets", a.targets),
                                  ("batch_size", a.batch_size), ("object_weight", a.object_weight),
                                  ("edge_weight", a.edge_weight)) if v is not None}
    settings["size"] = cfg["data"].get("size", 64)
    if a.from_teacher:
        if not a.student:
            raise SystemExit("--from-teacher distils the config's teacher encoder (model.encoder) into its student "
                             "encoder: add --student")
        settings["teacher"] = dict(cfg["model"]["encoder"])
    path = pretrain_encoder(a.data or [cfg["data"]["path"]], a.out, enc, resume=a.resume, progress=not a.quiet,
                            **settings)
    # the same network when it is used: the architecture keys set away from their defaults
    key = "student.encoder" if a.student else "model.encoder"
    same = "".join(f" {key}.{k}={enc[k]}" for k in ("context", "refine_layers") if enc.get(k))
    print(f"encoder weights: {path}\nuse them frozen with: {key}.weights={path} {key}.frozen=true{same}")


def cmd_export(a: argparse.Namespace) -> None:
    import torch

    from slotmatch.checkpoint import export_safetensors

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    out = export_safetensors(a.checkpoint, a.out, dtype=dtype, include_encoder=not a.no_encoder, which=a.which)
    print(f"{out}: {os.path.getsize(out) / 2 ** 20:.2f} MiB ({a.which}, {a.dtype}"
          f"{', without the frozen encoder' if a.no_encoder else ''}); use it as --checkpoint {out}")


def cmd_distill(a: argparse.Namespace) -> None:
    from slotmatch.config import load_config
    from slotmatch.distill import distill

    cfg = load_config(a.config, a.overrides)
    last = distill(cfg, a.teacher, _run_dir(a, "student"), resume=a.resume, progress=not a.quiet)
    print(f"checkpoint: {last}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from slotmatch.evaluate import evaluate_main

    evaluate_main(a)


def cmd_benchmark(a: argparse.Namespace) -> None:
    from slotmatch.benchmark import benchmark_main

    benchmark_main(a)


def cmd_segment(a: argparse.Namespace) -> None:
    from slotmatch.infer import segment_main

    segment_main(a)


def cmd_plot(a: argparse.Namespace) -> None:
    from slotmatch.plots import plot_main

    plot_main(a)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slotmatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="render a MOVi-style dataset with PyBullet into webdataset shards")
    g.add_argument("--preset", required=True, help="movi-a-like, movi-c-like or movi-e-like")
    g.add_argument("--out", required=True, help="dataset directory (a rerun with the same arguments resumes)")
    g.add_argument("--num-train", type=int, default=1000)
    g.add_argument("--num-val", type=int, default=100)
    g.add_argument("--frames", type=int, default=24)
    g.add_argument("--size", type=int, default=128)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    g.add_argument("--videos-per-shard", type=int, default=25)
    g.add_argument("--with-depth", action="store_true", help="also store per-pixel depth")
    g.add_argument("--with-flow", action="store_true", help="also store per-pixel optical flow (from the simulator)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    pk = sub.add_parser("pack", help="a compact in-memory copy of a dataset (JPEG frames) to train from or to move")
    pk.add_argument("dataset", help="a dataset from `slotmatch generate`")
    pk.add_argument("--out", required=True, help="directory of the packed dataset")
    pk.add_argument("--size", type=int, default=64, help="frame size of the packed copy (default 64)")
    pk.add_argument("--num-train", type=int, default=None, help="keep only the first N training videos")
    pk.add_argument("--num-val", type=int, default=None, help="keep only the first N validation videos")
    pk.add_argument("--quality", type=int, default=92, help="JPEG quality of the frames (default 92)")
    pk.add_argument("--quiet", action="store_true", help="no progress bar")
    pk.set_defaults(func=cmd_pack)
    s = sub.add_parser("show", help="write a preview (PNG grid or GIF) of a dataset with its masks")
    s.add_argument("dataset")
    s.add_argument("--out", required=True, help="preview.png, preview.gif or clip.mp4")
    s.add_argument("--raw", action="store_true", help="frames only, no masks (GIF/mp4)")
    s.add_argument("--split", default="train")
    s.add_argument("--videos", type=int, default=4)
    s.add_argument("--frames", type=int, default=6, help="frames per row in a PNG")
    s.set_defaults(func=cmd_show)
    t = sub.add_parser("train", help="train the SlotContrast teacher (Lightning; checkpoints, logs, overlays)")
    t.add_argument("--config", required=True, help="a YAML file or a bundled config name (e.g. movi-c-like)")
    t.add_argument("--out", default=None, help="run directory (default runs/CONFIG-teacher)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_steps=100 data.batch_size=8")
    t.set_defaults(func=cmd_train)

    pt = sub.add_parser("pretrain", help="pretrain the offline CNN encoder on the generator's frames, to use frozen "
                        "(the stand-in for DINOv2): pretext = colours, relief above the floor, optical flow")
    pt.add_argument("--config", required=True, help="the config whose model.encoder (or student.encoder) to train")
    pt.add_argument("--out", required=True, help="folder for encoder.safetensors and pretrain.json")
    pt.add_argument("--student", action="store_true", help="train the config's student encoder instead")
    pt.add_argument("--data", nargs="+", default=None, help="datasets, used together (default: the config's "
                    "data.path); they need depth and flow for the default pretext (generate --with-depth --with-flow)")
    pt.add_argument("--steps", type=int, default=None, help="optimiser steps (default 4000)")
    pt.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    pt.add_argument("--targets", default=None, help="pretext targets, '+'-joined (default pixels_raw+relief+flow)")
    pt.add_argument("--batch-size", type=int, default=None, help="frames per step (default 32)")
    pt.add_argument("--object-weight", type=float, default=None, help="weigh each token's pretext loss by 1 + this "
                    "x its share of pixels standing out of the floor (from depth; default 0: every token alike)")
    pt.add_argument("--edge-weight", type=float, default=None, help="add this x each token's share of pixels on an "
                    "object's edge (from depth) to its pretext-loss weight (default 0)")
    pt.add_argument("--from-teacher", action="store_true", help="with --student: the targets are the predictions of "
                    "the config's pretrained teacher encoder (model.encoder.weights) instead of the simulator's, as "
                    "DINOv2's ViT-S was distilled from its ViT-g")
    pt.add_argument("--resume", action="store_true", help="continue from OUT/pretrain-state.pt")
    pt.add_argument("--quiet", action="store_true", help="no progress bar")
    pt.add_argument("overrides", nargs="*", help="config overrides, e.g. model.encoder.channels=64")
    pt.set_defaults(func=cmd_pretrain)

    d = sub.add_parser("distill", help="SlotMatch: distil a trained teacher into the config's lightweight student")
    d.add_argument("--config", required=True, help="a YAML file or a bundled config name; its `student` and "
                                                    "`distill` sections set the student and the loss weights")
    d.add_argument("--teacher", required=True, help="the teacher's checkpoint (from slotmatch train)")
    d.add_argument("--out", default=None, help="run directory (default runs/CONFIG-student)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.add_argument("overrides", nargs="*", help="config overrides, e.g. distill.beta=0 distill.mask_kd=1")
    d.set_defaults(func=cmd_distill)

    x = sub.add_parser("export", help="write a checkpoint's model as small safetensors weights (fp16), config inside")
    x.add_argument("checkpoint", help=".ckpt of a train or distill run")
    x.add_argument("--out", required=True, help="the .safetensors file to write")
    x.add_argument("--which", default="model", choices=["model", "teacher"],
                   help="in a distillation checkpoint: the student (model) or the teacher")
    x.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    x.add_argument("--no-encoder", action="store_true",
                   help="leave out a pretrained encoder's weights (read again from its file or the hub when loaded)")
    x.set_defaults(func=cmd_export)

    e = sub.add_parser("evaluate", help="video FG-ARI and mBO of a checkpoint, beside the reference rows; HTML report")
    e.add_argument("--checkpoint", required=True, help=".ckpt of a train/distill run, or exported .safetensors")
    e.add_argument("--data", required=True, help="dataset directory")
    e.add_argument("--split", default="validation")
    e.add_argument("--out", default=None, help="report directory (default: next to the checkpoint's run)")
    e.add_argument("--which", default="model", choices=["model", "teacher"],
                   help="in a distillation checkpoint: the student (model) or the teacher")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--max-videos", type=int, default=None)
    e.add_argument("--device", default="cpu")
    e.add_argument("--masks", default="decoder", choices=["decoder", "attention"],
                   help="score the decoder's alpha masks (default, as the papers) or slot attention's masks")
    e.add_argument("--track", default=None, choices=["none", "masks"],
                   help="override the model's slot tracking (model.track): 'masks' re-orders each frame's slots to "
                        "follow the frame before's masks (default: as the checkpoint was trained)")
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("benchmark", help="parameters, throughput, latency and memory: teacher vs student, one run")
    b.add_argument("--teacher", required=True, help="checkpoint, or config name/path (random weights)")
    b.add_argument("--student", required=True, help="checkpoint, or config name/path; a config's `student` section "
                                                     "is used when the same config is given for both")
    b.add_argument("--out", default=None, help="bench.json")
    b.add_argument("--device", default="cpu")
    b.add_argument("--batch-size", type=int, default=8, help="the evaluation batch (videos)")
    b.add_argument("--frames", type=int, default=4, help="clip length per video")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--masks-only", action=argparse.BooleanOptionalAction, default=True,
                   help="time the inference path that computes only the masks (default) or the full decoder")
    b.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA, or a CPU with bf16 support)")
    b.set_defaults(func=cmd_benchmark)

    g2 = sub.add_parser("segment", help="segment a video file, a folder of frames or a folder of videos")
    g2.add_argument("input")
    g2.add_argument("--checkpoint", required=True)
    g2.add_argument("--out", required=True)
    g2.add_argument("--size", type=int, default=None, help="model input size (default: the checkpoint's)")
    g2.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    g2.add_argument("--chunk", type=int, default=16, help="frames per chunk (memory stays constant)")
    g2.add_argument("--gif", action="store_true", help="also write overlay.gif")
    g2.add_argument("--which", default="model", choices=["model", "teacher"],
                    help="in a distillation checkpoint: the student (model) or the teacher")
    g2.add_argument("--track", default=None, choices=["none", "masks"],
                    help="override the model's slot tracking (model.track; default: as the checkpoint was trained)")
    g2.set_defaults(func=cmd_segment)

    pl = sub.add_parser("plot", help="training curves (loss terms, FG-ARI, mBO) of a run directory as PNGs")
    pl.add_argument("run_dir")
    pl.add_argument("--out", default=None, help="folder for the PNGs (default RUN_DIR/plots)")
    pl.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    from slotmatch.data.shards import DatasetError

    args = build_parser().parse_args(argv)
    errors: tuple = (UserError, DatasetError, ValueError, FileNotFoundError)
    if args.command not in ("generate", "show"):
        from slotmatch.checkpoint import CheckpointError

        errors += (CheckpointError,)
    try:
        args.func(args)
    except errors as e:
        print(f"slotmatch {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slotmatch {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
