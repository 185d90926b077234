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
                        size=a.size, seed=a.seed, videos_per_shard=a.videos_per_shard, with_depth=a.with_depth)
    workers = a.workers if a.workers is not None else min(os.cpu_count() or 1, 8)
    m = generate_dataset(a.out, args, workers=workers, progress=not a.quiet)
    print(f"{a.out}: {m['splits']['train']['num_videos']} train and {m['splits']['validation']['num_videos']} "
          f"validation videos ({a.preset}, {a.frames} frames at {a.size}x{a.size})")


def cmd_show(a: argparse.Namespace) -> None:
    from slotmatch.show import show_dataset

    print(show_dataset(a.dataset, a.out, split=a.split, num_videos=a.videos, num_frames=a.frames))


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
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("show", help="write a preview (PNG grid or GIF) of a dataset with its masks")
    s.add_argument("dataset")
    s.add_argument("--out", required=True, help="preview.png or preview.gif")
    s.add_argument("--split", default="train")
    s.add_argument("--videos", type=int, default=4)
    s.add_argument("--frames", type=int, default=6, help="frames per row in a PNG")
    s.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    from slotmatch.data.shards import DatasetError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, DatasetError, ValueError, FileNotFoundError) as e:
        print(f"slotmatch {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slotmatch {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
