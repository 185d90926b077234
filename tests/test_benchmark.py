"""The teacher-vs-student benchmark: result schema, ratios, parameter counts, the CLI, the paper configs.

No timing assertions: speed targets live in benchmarks/, never in tests.
"""

import json

import pytest
import torch
import yaml

from slotmatch.benchmark import _cpu_peak_bytes, benchmark, format_table, model_config, random_weights
from slotmatch.cli import main
from slotmatch.config import load_config, merge
from slotmatch.models import build_model
from slotmatch.models.slotcontrast import PAPER_PRESETS, config_to_dict, count_parameters

TINY = {
    "model": {"encoder": {"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 4}, "img_size": 16,
              "num_slots": 3, "slot_dim": 8, "mlp_hidden": 8, "decoder_hidden": [16, 16]},
    "student": {"encoder": {"channels": 4}, "decoder_hidden": [8]},
}
MODEL_KEYS = {"params", "params_trainable", "params_per_module", "fps", "fps_batch1", "latency_ms",
              "latency_ms_batch", "peak_mem_mb", "peak_mem_source", "times_s_batch", "times_s_batch1",
              "img_size", "source", "weights", "model"}


def check_result(result: dict, cfg: dict, repeats: int) -> None:
    assert set(result) == {"teacher", "student", "ratios", "device", "settings"}
    t, s, r = result["teacher"], result["student"], result["ratios"]
    for role in ("teacher", "student"):
        entry = result[role]
        assert MODEL_KEYS <= set(entry)
        assert len(entry["times_s_batch"]) == len(entry["times_s_batch1"]) == repeats
        assert entry["fps"] > 0 and entry["fps_batch1"] > 0 and entry["peak_mem_mb"] > 0
        assert entry["latency_ms"] == pytest.approx(1000.0 / entry["fps_batch1"])
        expected = count_parameters(build_model(model_config(cfg, role)))
        assert entry["params"] == expected["total"]
        assert entry["params_trainable"] == expected["trainable"]
        assert entry["params_per_module"] == expected["per_module"]
    assert t["params"] > s["params"]  # the student's encoder and decoder are smaller
    assert r["params"] == pytest.approx(t["params"] / s["params"])
    assert r["fps"] == pytest.approx(s["fps"] / t["fps"])
    assert r["fps_batch1"] == pytest.approx(s["fps_batch1"] / t["fps_batch1"])
    assert r["peak_mem_mb"] == pytest.approx(t["peak_mem_mb"] / s["peak_mem_mb"])


def test_benchmark_schema_ratios_and_params():
    result = benchmark(TINY, TINY, batch_size=2, frames=2, repeats=2)
    check_result(result, TINY, repeats=2)
    assert result["settings"]["batch_size"] == 2 and result["settings"]["masks_only"] is True
    assert result["teacher"]["model"]["decoder_hidden"] == [16, 16]
    assert result["student"]["model"]["decoder_hidden"] == [8]
    assert result["student"]["model"]["encoder"] == {"name": "cnn", "channels": 4, "num_layers": 2, "patch_size": 4}
    table = format_table(result)
    assert "| parameters |" in table and f"{result['ratios']['params']:.2f}x fewer" in table
    json.dumps(result)  # serialisable as it is


def test_cli_writes_json(tmp_path, capsys):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "bench" / "bench.json"
    rc = main(["benchmark", "--teacher", str(cfg_path), "--student", str(cfg_path), "--out", str(out),
               "--batch-size", "2", "--frames", "2", "--repeats", "1", "--no-masks-only"])
    assert rc == 0
    result = json.loads(out.read_text())
    check_result(result, TINY, repeats=1)
    assert result["settings"]["masks_only"] is False
    assert "| frames/s, batch 2 x 2 frames |" in capsys.readouterr().out


def test_bf16_on_cpu():
    result = benchmark(TINY, TINY, batch_size=1, frames=2, repeats=1, bf16=True)
    assert result["settings"]["bf16"] is True and result["student"]["fps"] > 0


def test_cli_bad_config_exits_2(tmp_path, capsys):
    rc = main(["benchmark", "--teacher", str(tmp_path / "nope.yaml"), "--student", "movi-c-like",
               "--repeats", "1"])
    assert rc == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_checkpoint_as_student(tmp_path):
    """A .safetensors export is loaded with its weights; its params are those of the stored model."""
    from safetensors.torch import save_file

    from slotmatch.checkpoint import FORMAT

    student_cfg = model_config(TINY, "student")
    model = build_model(student_cfg)
    path = str(tmp_path / "student.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path,
              metadata={"format": FORMAT, "config": json.dumps({"model": config_to_dict(model.cfg)})})
    result = benchmark(TINY, path, batch_size=1, frames=2, repeats=1)
    assert result["student"]["weights"].startswith("checkpoint")
    assert result["student"]["params"] == count_parameters(model)["total"]
    assert result["ratios"]["params"] == pytest.approx(result["teacher"]["params"] / result["student"]["params"])


def test_cpu_peak_memory_sees_an_allocation():
    def run():
        x = torch.ones(1_000_000)  # 4,000,000 bytes
        y = x * 2  # another 4,000,000 while x lives
        del x, y

    peak = _cpu_peak_bytes(run)
    if peak is None:
        pytest.skip("this torch's profiler gives no allocation events")
    assert 8_000_000 <= peak < 9_000_000


@pytest.mark.parametrize("name", ["movi_c", "movi_e", "ytvis"])
def test_paper_configs(name):
    """The paper configs hold PAPER_PRESETS' values; the student keeps the slot dim (no model is built)."""
    cfg = load_config(name)
    preset = {k: list(v) if isinstance(v, tuple) else v for k, v in PAPER_PRESETS[name].items()}
    assert cfg["model"] == preset
    student = model_config(cfg, "student")
    assert student["encoder"]["name"] == "vit_small_patch14_dinov2"
    assert student["slot_dim"] == cfg["model"]["slot_dim"] and student["num_slots"] == cfg["model"]["num_slots"]
    assert student["mlp_hidden"] == 2 * 384  # follows the ViT-S feature dim
    assert student == merge(cfg["model"], cfg["student"])
    assert random_weights(student)["encoder"]["weights"] is None
    assert cfg["distill"] == {"alpha": 0.5, "beta": 1.0, "feature_kd": 0.0, "mask_kd": 0.0}
    assert cfg["train"]["lr"] == (8e-4 if name == "ytvis" else 4e-4)
    assert cfg["train"]["max_steps"] == (300_000 if name == "movi_e" else 100_000)


@pytest.mark.parametrize("name, grids", [("movi-c-like-pixel", ((64, 64), (32, 32))),
                                         ("movi-e-like-frozen", ((32, 32), (32, 32)))])
def test_presets_read_through_a_pretext_head_benchmark_with_random_weights_of_the_trained_sizes(name, grids):
    from slotmatch.benchmark import resolve_model
    from slotmatch.models.encoder import safetensors_metadata

    for role, grid in zip(("teacher", "student"), grids):
        model, info = resolve_model(name, role)
        assert info["weights"] == "random" and tuple(model.grid) == grid
        # the head's layout comes from the shipped file, the weights do not
        weights = model_config(load_config(name), role)["encoder"]["weights"]
        assert random_weights(model_config(load_config(name), role))["encoder"]["pretext"] == \
            safetensors_metadata(weights)["pretext"]
        shipped = build_model(model_config(load_config(name), role))
        assert not torch.equal(model.encoder.readout.weight, shipped.encoder.readout.weight)
