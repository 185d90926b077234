"""`slotmatch plot`: training curves from RUN/logs*/metrics.csv, merged by step."""

import os

import numpy as np
import pytest
from PIL import Image

from slotmatch.cli import main
from slotmatch.plots import NoLogsError, plot_run, read_run_logs


def test_plots_of_a_tiny_run(tiny_teacher_run, tmp_path):
    cfg, run, last = tiny_teacher_run
    paths = plot_run(run, str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in paths] == ["train_losses.png", "validation.png"]
    for p in paths:
        img = Image.open(p)
        assert img.format == "PNG" and img.width > 300 and img.height > 200
        assert np.asarray(img.convert("L")).std() > 5  # not a blank canvas


def test_cli_plot_default_out(tiny_teacher_run, capsys):
    cfg, run, last = tiny_teacher_run
    assert main(["plot", run]) == 0
    assert sorted(os.listdir(os.path.join(run, "plots"))) == ["train_losses.png", "validation.png"]
    assert "train_losses.png" in capsys.readouterr().out


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_resumed_logs_are_merged_by_step(tmp_path):
    run = str(tmp_path / "run")
    _write(f"{run}/logs/metrics.csv", "epoch,step,train/loss,val/video_mbo,ref_grid/video_mbo\n"
           "0,0,1.0,,\n0,1,0.9,,\n0,1,,0.1,0.05\n0,2,0.8,,\n")
    _write(f"{run}/logs_1/metrics.csv", "epoch,step,train/loss,train/kd,val/video_mbo\n"
           "1,2,0.7,0.3,\n1,3,0.6,0.2,\n1,3,,,0.2\n")
    series, starts = read_run_logs(run)
    steps, values = series["train/loss"]
    assert steps.tolist() == [0, 1, 2, 3] and values.tolist() == [1.0, 0.9, 0.7, 0.6]  # the later file wins
    assert series["train/kd"][0].tolist() == [2, 3]
    assert series["val/video_mbo"][1].tolist() == [0.1, 0.2] and starts == [2]
    paths = plot_run(run)
    assert [os.path.basename(p) for p in paths] == ["train_losses.png", "validation.png"]


def test_a_run_without_logs_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoLogsError, match="no training logs"):
        plot_run(str(empty))
    assert main(["plot", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "slotmatch plot: error" in err and "logs/metrics.csv" in err
    assert main(["plot", str(tmp_path / "missing")]) == 2
    _write(str(tmp_path / "header" / "logs" / "metrics.csv"), "epoch,step,train/loss\n")
    with pytest.raises(NoLogsError, match="no logged values"):
        plot_run(str(tmp_path / "header"))
