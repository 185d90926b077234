"""Generator speed: render a movi-*-like dataset and print videos per second.

Usage: python benchmarks/bench_generate.py [--preset movi-c-like] [--videos 1000] [--frames 24] [--size 128] [--workers 2]
The issue's target: 1,000 movi-c-like videos of 24 frames at 128x128 in under 5 minutes on 2 cores.
"""

import argparse
import os
import shutil
import tempfile
import time

from slotmatch.data.generate import GenerateArgs, generate_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="movi-c-like")
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench_generate_")
    try:
        args = GenerateArgs(preset=a.preset, num_train=a.videos, num_val=0, frames=a.frames, size=a.size)
        t = time.time()
        generate_dataset(root, args, workers=a.workers, progress=False)
        dt = time.time() - t
        mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs) / 2**20
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"| preset | videos | frames | size | workers | seconds | videos/s | MiB on disk |")
    print(f"|---|---|---|---|---|---|---|---|")
    print(f"| {a.preset} | {a.videos} | {a.frames} | {a.size} | {a.workers} | {dt:.1f} | {a.videos / dt:.2f} | {mb:.0f} |")
    print(f"target (1,000 videos in 300 s): {'met' if dt * 1000 / a.videos < 300 else 'NOT met'} "
          f"({dt * 1000 / a.videos:.0f} s per 1,000 videos)")


if __name__ == "__main__":
    main()
