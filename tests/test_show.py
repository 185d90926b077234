"""`slotmatch show`: PNG grid, GIF and mp4 previews of a dataset."""

import av
from PIL import Image

from slotmatch.cli import main


def test_show_png_gif_and_raw_mp4(tiny_dataset, tmp_path, capsys):
    png, gif, mp4 = tmp_path / "p.png", tmp_path / "p.gif", tmp_path / "clip.mp4"
    assert main(["show", tiny_dataset, "--out", str(png), "--videos", "2", "--frames", "3"]) == 0
    img = Image.open(png)
    assert img.size == (3 * 132, 4 * 132)  # 3 frames per row; frames and overlays of 2 videos; 128 px + 2x2 pad
    assert main(["show", tiny_dataset, "--out", str(gif), "--videos", "1"]) == 0
    assert Image.open(gif).n_frames == 6
    assert main(["show", tiny_dataset, "--out", str(mp4), "--videos", "2", "--raw", "--split", "validation"]) == 0
    with av.open(str(mp4)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 12 and frames[0].width == 128  # 32 px frames shown at least 128 px wide


def test_show_missing_dataset_exits_2(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    assert "nope" in capsys.readouterr().err
