"""Teacher vs student in one run: parameters, inference throughput, latency and peak memory.

The numbers SlotMatch (Grigore et al. 2025) reports beside the segmentation metrics: the student has
fewer parameters and runs faster than its SlotContrast teacher. `benchmark()` measures both models
in one run, under the same settings, on the same input:

- params: `count_parameters` (total, trainable, per top-level module);
- fps: frames per second at the evaluation batch (`batch_size` videos of `frames` frames) and at
  batch 1 (one video), under `torch.inference_mode`, median over `repeats` timed runs;
- latency_ms: milliseconds per frame at batch 1 (median), i.e. 1000 / fps_batch1;
- peak_mem_mb: the most memory held during one forward at the evaluation batch, weights and input
  included. CUDA: `torch.cuda.max_memory_allocated`. CPU: the weights' and input's bytes plus the peak
  of the bytes torch's CPU allocator holds above its level at the start of the forward, from the
  allocation events of `torch.profiler(profile_memory=True)` (the process RSS would mostly show the
  allocator's caching and everything measured before). Not counted: the Python interpreter, the
  libraries, allocator caches and fragmentation.
- bf16: optional `torch.autocast(dtype=bfloat16)` (CUDA; on a CPU too, where it pays off only with
  native bf16 instructions such as AVX512-BF16 or AMX).

The first, untimed, run of each input shape is the warmup; at the evaluation batch it is also the run
whose memory is measured. The timed runs of teacher and student alternate, so that a change of the
machine's load (recorded in `settings`) slows both alike.
Models come from a checkpoint (`load_model`) or from a config with random weights: for a config the
teacher is its `model` section and the student `merge(model, student)`. Timings on a CPU depend on
the thread count (reported in `settings`); compare numbers from one run or one machine only.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from slotmatch.models.slotcontrast import PAPER_PRESETS, SlotContrast, build_model, config_to_dict, count_parameters

ModelSpec = Union[str, dict, nn.Module]
ROLES = ("teacher", "student")


# ----------------------------------------------------------------------------------------------
# Building the two models


def _expand_preset(model_cfg: dict) -> dict:
    """{"preset": name, ...overrides} -> the full model config (so `student` overrides merge onto it)."""
    model_cfg = copy.deepcopy(model_cfg)
    preset = model_cfg.pop("preset", None)
    if preset is None:
        return model_cfg
    return {**copy.deepcopy(PAPER_PRESETS[preset]), **model_cfg}


def model_config(cfg: dict, role: str) -> dict:
    """The model config of `role` in a full config: teacher = `model`, student = merge(model, student)."""
    from slotmatch.config import merge

    if "model" not in cfg:
        raise ValueError("a config for the benchmark needs a `model` section")
    model_cfg = _expand_preset(cfg["model"])
    if role == "student" and cfg.get("student"):
        model_cfg = merge(model_cfg, cfg["student"])
    return model_cfg


def random_weights(model_cfg: dict) -> dict:
    """A copy of a model config whose encoder loads no pretrained weights (random init, no file). An encoder read
    through a pretrained pretext head (`encoder.readout`) keeps the head's layout, read from its weights file's
    metadata, so the random model has the trained one's token sizes."""
    model_cfg = copy.deepcopy(model_cfg)
    enc = model_cfg.get("encoder")
    if isinstance(enc, dict) and "weights" in enc:
        if enc.get("weights"):  # a readout's head layout from the file; other encoders are returned as they are
            from slotmatch.checkpoint import self_contained_encoder

            enc = model_cfg["encoder"] = self_contained_encoder(enc, "the benchmarked config")
        enc["weights"] = None
    return model_cfg


def _is_checkpoint(spec: str) -> bool:
    return spec.endswith((".ckpt", ".safetensors"))


def _checkpoint_has_teacher(path: str) -> bool:
    from slotmatch.checkpoint import read_checkpoint

    return read_checkpoint(path)["hyper_parameters"].get("teacher_cfg") is not None


def resolve_model(spec: ModelSpec, role: str, seed: int = 0) -> Tuple[nn.Module, dict]:
    """A model in eval mode on the CPU, and a description of where it came from.

    spec: a checkpoint path (.ckpt / .safetensors); a config name or path, or a config dict (random
    weights; `role` picks `model` or merge(model, student)); a model config dict (no `model` key);
    or an nn.Module. A distillation checkpoint given as the teacher yields its frozen teacher.
    """
    from slotmatch.checkpoint import load_model
    from slotmatch.config import load_config

    if isinstance(spec, nn.Module):
        return spec.eval(), {"source": type(spec).__name__, "weights": "given"}
    if isinstance(spec, str) and _is_checkpoint(spec):
        which = "teacher" if role == "teacher" and spec.endswith(".ckpt") and _checkpoint_has_teacher(spec) \
            else "model"
        model, _ = load_model(spec, which=which)
        return model.eval(), {"source": spec, "weights": f"checkpoint ({which})"}
    if isinstance(spec, str):
        cfg, source = load_config(spec), spec
    elif isinstance(spec, dict):
        cfg, source = spec, "config dict"
    else:
        raise TypeError(f"model spec must be a path, a config name or dict, or a module, not {type(spec).__name__}")
    model_cfg = model_config(cfg, role) if "model" in cfg else _expand_preset(cfg)
    torch.manual_seed(seed)
    model = build_model(random_weights(model_cfg))
    return model.eval(), {"source": source, "weights": "random"}


# ----------------------------------------------------------------------------------------------
# Measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, repeats: int = 5, device: Union[str, torch.device] = "cpu", warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` calls after `warmup` untimed calls (CUDA synchronised)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


@contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: the profiler's C++ side logs start/stop lines (and, without a GPU, a
    CUDA device-count error) straight to it."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(run) -> Optional[int]:
    """Peak bytes held by torch's CPU allocator during run(), above its level at the start.

    Replays the allocation events (+size at malloc, -size at free) of torch.profiler in time order.
    Returns None where this torch build's profiler does not expose them (a private API).
    """
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events: List[Tuple[int, int]] = []
    try:
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
                events.append((node.start_time_ns, node.extra_fields.alloc_size))
            stack.extend(node.children)
    except AttributeError:
        return None
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def _img_size(model: nn.Module) -> Tuple[int, int]:
    img = model.cfg.img_size if isinstance(model, SlotContrast) else 224
    return (img, img) if isinstance(img, int) else (int(img[0]), int(img[1]))


def _peak_mem_mb(model: nn.Module, run, video: torch.Tensor, device: torch.device) -> Tuple[Optional[float], str]:
    """Peak memory of one forward: weights + input + the most allocated on top of them during run()."""
    base = _tensor_bytes(model) + video.numel() * video.element_size()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        _sync(device)
        extra = torch.cuda.max_memory_allocated(device) - before
        return (base + extra) / 2**20, "weights + input + peak of torch.cuda.max_memory_allocated during the forward"
    extra = _cpu_peak_bytes(run)
    if extra is None:
        return None, "not measured (this torch's profiler gives no allocation events)"
    return (base + extra) / 2**20, ("weights + input + peak of torch's CPU allocator during the forward "
                                    "(torch.profiler allocation events)")


def measure(models: Dict[str, nn.Module], device: Union[str, torch.device] = "cpu", batch_size: int = 8,
            frames: int = 4, repeats: int = 5, masks_only: bool = True, bf16: bool = False,
            seed: int = 0) -> Dict[str, dict]:
    """Throughput, latency and peak memory of each model (definitions: the module docstring).

    The models are moved to `device` and left there. Per input shape, each model first runs once
    untimed (warmup; at the evaluation batch also the memory measurement); then the timed runs of the
    models alternate (a, b, b, a, a, b, ...), so that a machine whose load changes slows all alike.
    """
    device = torch.device(device)
    if repeats < 1 or batch_size < 1 or frames < 1:
        raise ValueError("batch_size, frames and repeats must be at least 1")

    def autocast():
        if bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    names = list(models)
    out: Dict[str, dict] = {}
    for name, model in models.items():
        models[name] = model.to(device).eval()
        out[name] = {"img_size": list(_img_size(model))}
    for key, b in (("batch", batch_size), ("batch1", 1)):
        runs = {}
        for name, model in models.items():
            H, W = _img_size(model)
            gen = torch.Generator().manual_seed(seed)
            video = torch.rand(b, frames, 3, H, W, generator=gen).to(device)  # (B, T, 3, H, W) in [0, 1]

            def run(model=model, video=video):
                with torch.inference_mode(), autocast():
                    model(video, masks_only=masks_only)

            runs[name] = run
            if key == "batch":  # warmup + memory
                out[name]["peak_mem_mb"], out[name]["peak_mem_source"] = _peak_mem_mb(model, run, video, device)
            else:
                run()
            _sync(device)
        times: Dict[str, List[float]] = {name: [] for name in names}
        for r in range(repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                _sync(device)
                t = time.perf_counter()
                runs[name]()
                _sync(device)
                times[name].append(time.perf_counter() - t)
        for name in names:
            median = statistics.median(times[name])
            o = out[name]
            o[f"times_s_{key}"] = times[name]
            if key == "batch":
                o["fps"] = b * frames / median
                o["latency_ms_batch"] = 1000.0 * median / (b * frames)
            else:
                o["fps_batch1"] = frames / median
                o["latency_ms"] = 1000.0 * median / frames
        del runs
    return out


def measure_model(model: nn.Module, device: Union[str, torch.device] = "cpu", batch_size: int = 8,
                  frames: int = 4, repeats: int = 5, masks_only: bool = True, bf16: bool = False,
                  seed: int = 0) -> dict:
    """`measure` for one model."""
    return measure({"model": model}, device, batch_size, frames, repeats, masks_only, bf16, seed)["model"]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"


def _load() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None or b == 0 else a / b


def benchmark(teacher: ModelSpec, student: ModelSpec, device: str = "cpu", batch_size: int = 8,
              frames: int = 4, repeats: int = 5, masks_only: bool = True, bf16: bool = False,
              out: Optional[str] = None, seed: int = 0) -> dict:
    """Measure teacher and student with the same settings; return (and write to `out` as JSON) the result.

    teacher, student: checkpoint path, config name/path or dict (random weights), or nn.Module (see
    `resolve_model`). batch_size: videos in the evaluation batch; frames: frames per video; repeats:
    timed runs per shape after one warmup; masks_only: time the inference path (masks only) or the full
    decoder; bf16: bf16 autocast (see the module docstring).
    Returns {"teacher": {...}, "student": {...}, "ratios": {...}, "device": str, "settings": {...}}:
    per model params (total), params_trainable, params_per_module, fps (evaluation batch), fps_batch1,
    latency_ms (per frame at batch 1), latency_ms_batch, peak_mem_mb (evaluation batch), times_s_*;
    ratios: params = teacher / student, fps and fps_batch1 = student / teacher,
    peak_mem_mb = teacher / student.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine")
    # build both first, so that a bad second argument fails before minutes of timing
    built = {role: resolve_model(spec, role, seed) for role, spec in zip(ROLES, (teacher, student))}
    result: dict = {}
    for role, (model, info) in built.items():
        counts = count_parameters(model)
        result[role] = {**info, "params": counts["total"], "params_trainable": counts["trainable"],
                        "params_per_module": counts["per_module"]}
        if isinstance(model, SlotContrast):
            result[role]["model"] = config_to_dict(model.cfg)
    load_before = _load()
    measured = measure({role: built[role][0] for role in ROLES}, dev, batch_size, frames, repeats,
                       masks_only, bf16, seed)
    for role in ROLES:
        result[role].update(measured[role])
        built[role][0].to("cpu")
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    t, s = result["teacher"], result["student"]
    result["ratios"] = {"params": _ratio(t["params"], s["params"]), "fps": _ratio(s["fps"], t["fps"]),
                        "fps_batch1": _ratio(s["fps_batch1"], t["fps_batch1"]),
                        "peak_mem_mb": _ratio(t["peak_mem_mb"], s["peak_mem_mb"])}
    result["device"] = _device_name(dev)
    result["settings"] = {"device": str(dev), "batch_size": batch_size, "frames": frames, "repeats": repeats,
                          "masks_only": masks_only, "bf16": bool(bf16),
                          "torch": torch.__version__, "threads": torch.get_num_threads(), "seed": seed,
                          "load_avg_1min": [load_before, _load()]}  # machine load before / after
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    return result


# ----------------------------------------------------------------------------------------------
# Reporting


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _num(x: Optional[float], fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def format_table(result: dict) -> str:
    """Markdown table of a `benchmark` result, teacher | student | ratio."""
    t, s, r, st = result["teacher"], result["student"], result["ratios"], result["settings"]
    b, f = st["batch_size"], st["frames"]
    rows = [
        ("parameters", _millions(t["params"]), _millions(s["params"]), f"{_num(r['params'], '.2f')}x fewer"),
        ("trainable parameters", _millions(t["params_trainable"]), _millions(s["params_trainable"]), ""),
    ]
    for name in t["params_per_module"]:
        if name in s["params_per_module"]:
            rows.append((f"  {name}", _millions(t["params_per_module"][name]),
                         _millions(s["params_per_module"][name]), ""))
    rows += [
        (f"frames/s, batch {b} x {f} frames", _num(t["fps"], ".2f"), _num(s["fps"], ".2f"),
         f"{_num(r['fps'], '.2f')}x faster"),
        (f"frames/s, batch 1 x {f} frames", _num(t["fps_batch1"], ".2f"), _num(s["fps_batch1"], ".2f"),
         f"{_num(r['fps_batch1'], '.2f')}x faster"),
        ("ms per frame, batch 1", _num(t["latency_ms"], ".1f"), _num(s["latency_ms"], ".1f"), ""),
        (f"peak memory MiB, batch {b}", _num(t["peak_mem_mb"], ".0f"), _num(s["peak_mem_mb"], ".0f"),
         f"{_num(r['peak_mem_mb'], '.2f')}x less"),
    ]
    lines = [f"device: {result['device']}; input {t['img_size'][0]}x{t['img_size'][1]} (teacher), "
             f"{s['img_size'][0]}x{s['img_size'][1]} (student); "
             f"{'masks only' if st['masks_only'] else 'full decoder'}; {'bf16' if st['bf16'] else 'fp32'}; "
             f"median of {st['repeats']} runs, teacher and student alternating; "
             f"load average {st.get('load_avg_1min')} (before, after)",
             "",
             "| | teacher | student | ratio |",
             "|---|---|---|---|"]
    lines += [f"| {a} | {b_} | {c} | {d} |" for a, b_, c, d in rows]
    lines.append("")
    lines.append(f"memory: {t['peak_mem_source']}")
    return "\n".join(lines)


def benchmark_main(args) -> dict:
    """`slotmatch benchmark`: measure, print the table, write --out JSON."""
    result = benchmark(args.teacher, args.student, device=args.device, batch_size=args.batch_size,
                       frames=args.frames, repeats=args.repeats, masks_only=args.masks_only,
                       bf16=getattr(args, "bf16", False), out=args.out)
    print(format_table(result))
    if args.out:
        print(f"wrote {args.out}")
    return result
