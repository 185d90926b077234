"""MLP decoder: what each inference step buys, at the MOVi-E decoder size (DESIGN.md, "Where the time goes").

The decoder runs for every slot and every patch: K = 15 slots x N = 576 patches (24 x 24, 336 px with
/14 patches) through 128 -> 1024 -> 1024 -> 1024 -> 769 (768 features + 1 alpha). Rows, each adding one
step to the row above:
  naive        every (slot, patch) pair broadcast to (B, K, N, D) and run through all layers
  split        first layer split exactly: W1 s + (W1 p + b1), a (B, K) and an (N) product (the full path
               of models/decoder.py: masks and reconstruction, what training needs)
  masks_only   only the alpha column of the last layer (inference: masks only)
  bf16         the same under bf16 autocast (CUDA; on the CPU only with --cpu-bf16)
All rows are checked against `naive` (same masks) before they are timed.

Usage: python benchmarks/bench_decoder.py [--frames 8] [--repeats 5] [--device cpu|cuda] [--cpu-bf16]
       [--slots 15] [--slot-dim 128] [--out-dim 768] [--grid 24]
"""

import argparse
import os
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from slotmatch.benchmark import median_seconds
from slotmatch.models.decoder import MLPDecoder


def naive_forward(dec: MLPDecoder, slots: torch.Tensor) -> dict:
    """Reference: slots (B, K, D) broadcast over the N patches, then the whole MLP on B * K * N rows."""
    x = slots.unsqueeze(2) + dec.pos_emb  # (B, K, N, D)
    for i, layer in enumerate(dec.layers):
        x = layer(F.relu(x) if i > 0 else x)  # (B, K, N, H_i)
    features, alpha = x[..., :-1], x[..., -1]
    masks = alpha.softmax(dim=1)  # (B, K, N)
    return {"masks": masks, "reconstruction": torch.einsum("bknf,bkn->bnf", features, masks)}


def gmac_per_frame(K: int, N: int, dims: list, split: bool, masks_only: bool) -> float:
    """Multiply-accumulates per frame of the decoder (the weighted sum of the reconstruction included)."""
    D, F_out = dims[0], dims[-1] - 1
    first = (K + N) * D * dims[1] if split else K * N * D * dims[1]
    mid = K * N * sum(a * b for a, b in zip(dims[1:-2], dims[2:-1]))
    last = K * N * dims[-2] * (1 if masks_only else dims[-1])
    return (first + mid + last + (0 if masks_only else K * N * F_out)) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8, help="frames decoded per call (the batch of slot sets)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cpu-bf16", action="store_true", help="also time bf16 autocast on the CPU")
    ap.add_argument("--slots", type=int, default=15)
    ap.add_argument("--slot-dim", type=int, default=128)
    ap.add_argument("--out-dim", type=int, default=768)
    ap.add_argument("--grid", type=int, default=24)
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024, 1024])
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    K, N = a.slots, a.grid * a.grid
    dec = MLPDecoder(a.slot_dim, a.out_dim, a.hidden, (a.grid, a.grid)).to(device).eval()
    for layer in dec.layers:  # the zero-initialised biases would hide a bias bug in the checks
        torch.nn.init.normal_(layer.bias, std=0.02)
    slots = torch.randn(a.frames, K, a.slot_dim, device=device)  # (B, K, D): B frames
    dims = [a.slot_dim, *a.hidden, a.out_dim + 1]

    def bf16():
        return torch.autocast(device.type, dtype=torch.bfloat16)

    # (name, call, context, first layer split, masks only, the row this step is compared with)
    rows = [("1. naive (broadcast, full MLP)", lambda: naive_forward(dec, slots), nullcontext, False, False, 0),
            ("2. split first layer (full: masks + reconstruction)", lambda: dec(slots), nullcontext, True, False, 0),
            ("3. masks_only (alpha column only)", lambda: dec(slots, masks_only=True), nullcontext, True, True, 1)]
    if device.type == "cuda" or a.cpu_bf16:
        rows += [("4. as 2, bf16 autocast", lambda: dec(slots), bf16, True, False, 1),
                 ("5. as 3, bf16 autocast", lambda: dec(slots, masks_only=True), bf16, True, True, 2)]

    with torch.inference_mode():
        ref = naive_forward(dec, slots)
        for name, fn, ctx, _, masks_only, _ in rows[1:]:
            with ctx():
                out = fn()
            tol = 2e-2 if ctx is bf16 else 1e-4
            assert torch.allclose(out["masks"].float(), ref["masks"], atol=tol), name
            if not masks_only:
                assert torch.allclose(out["reconstruction"].float(), ref["reconstruction"],
                                      atol=tol * 10, rtol=tol), name

        results = []
        for name, fn, ctx, split, masks_only, _ in rows:
            def call(fn=fn, ctx=ctx):
                with ctx():
                    fn()
            sec = median_seconds(call, a.repeats, device)
            results.append((name, 1000 * sec / a.frames, gmac_per_frame(K, N, dims, split, masks_only)))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"MLP decoder {'-'.join(map(str, dims))}, K={K} slots x N={N} patches, {a.frames} frames per call, "
          f"median of {a.repeats}; {where}; load average {load:.2f}")
    print()
    print("| path | ms per frame | GMAC per frame | GMAC/s | speedup vs 1 | this step buys |")
    print("|---|---|---|---|---|---|")
    for i, ((name, ms, gmac), row) in enumerate(zip(results, rows)):
        j = row[-1]
        step = f"{results[j][1] / ms:.2f}x vs {j + 1}" if j != i else ""
        print(f"| {name} | {ms:.1f} | {gmac:.2f} | {gmac / ms * 1000:.0f} | {results[0][1] / ms:.2f}x | {step} |")


if __name__ == "__main__":
    main()
