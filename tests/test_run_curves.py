"""benchmarks/run_curves.py: a run's validation curves and entropy means, from logs resumed across files."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import run_curves  # noqa: E402


def test_curves_merge_resumed_logs_and_average_entropy_per_block(tmp_path):
    os.makedirs(tmp_path / "logs")
    os.makedirs(tmp_path / "logs_1")
    (tmp_path / "logs" / "metrics.csv").write_text(
        "step,train/mask_entropy,train/kd,val/video_mbo,select/video_mbo\n"
        "0,2.0,0.5,,\n1,1.0,0.25,,\n1,,,0.25,0.5\n")
    (tmp_path / "logs_1" / "metrics.csv").write_text(
        "step,train/mask_entropy,train/kd,val/video_mbo,select/video_mbo\n"
        "2,0.5,1.0,,\n3,0.25,0.5,,\n3,,,0.125,\n")
    lines = run_curves.curve_lines(str(tmp_path), block=2)
    assert lines[0].endswith("select/video_mbo  val/video_mbo")
    assert lines[1:3] == ["  1 0.500 0.250", "  3 - 0.125"]  # a missing score prints as "-"
    assert lines[3] == "  mask entropy by 2 steps: 1.500 0.375"
    kd = run_curves.curve_lines(str(tmp_path), block=2, means=("train/kd", "train/absent"))
    assert kd[3:] == ["  train/kd by 2 steps: 0.375 0.750"]  # a column the run did not log is left out


def test_curves_show_the_segments_per_frame_where_the_run_logged_them(tmp_path):
    os.makedirs(tmp_path / "logs")
    (tmp_path / "logs" / "metrics.csv").write_text(
        "step,train/mask_entropy,val/video_mbo,val/segments_per_frame\n0,2.0,,\n1,,0.25,1.75\n")
    lines = run_curves.curve_lines(str(tmp_path), block=2)
    assert lines[0].endswith("val/video_mbo  val/segments_per_frame")
    assert lines[1] == "  1 0.250 1.750"


def test_a_run_without_logs_is_named_and_the_others_still_print(tmp_path, capsys):
    import pytest

    os.makedirs(tmp_path / "ok" / "logs")
    (tmp_path / "ok" / "logs" / "metrics.csv").write_text("step,val/video_mbo\n1,0.25\n")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SystemExit, match="no training logs in 1 of 2 runs"):
        run_curves.main([str(tmp_path / "empty"), str(tmp_path / "ok")])
    out = capsys.readouterr().out
    assert "no training logs" in out and "  1 0.250" in out
