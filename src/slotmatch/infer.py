"""`slotmatch segment`: the objects of a video, frame by frame, from a trained slotmatch checkpoint.

Input (`input_path`):
- a video file: anything FFmpeg decodes (mp4, webm, avi, mov, mkv, ...), read with PyAV, or with
  imageio-ffmpeg's FFmpeg binary where PyAV is not installed;
- a folder of frames (png, jpg, jpeg, bmp, webp; in natural name order, frame2 before frame10): one video;
- a folder of videos (files with a video extension): each is segmented in turn into `DIR/<name>/`.

Inference is the SlotContrast recurrence (Manasyan et al. 2024, Sec. 3): the slots of frame t, through the
predictor, initialise frame t+1. Frames are resized (bilinear, antialiased) to the model's square input
(its `img_size`, or `size`), whatever the input's aspect ratio; the decoder masks (K, h, w) are upsampled
back to the input's resolution and the argmax over slots is each pixel's slot id
(`metrics.masks_to_ids`). Frames stream through `chunk` at a time: the slots of a chunk's last frame
initialise the next chunk (`prev_slots`, and its masks `prev_attn` for `model.track: masks`), so the ids
equal those of one pass over the whole video while memory stays constant (only `objects.json`'s per-frame
numbers grow with the video).

Output for one video, in DIR:
    masks/000000.png ...  one PNG per frame at the input's resolution, mode "P" (indexed) with
                          `visualize.PALETTE`; pixel value = slot id + 1 (index 0, black, is never used),
                          so a viewer shows the slot colours and `np.asarray(Image.open(p)) - 1` is the id.
    overlay.mp4           the frames with each slot's colour blended over them and white slot borders
                          (H.264, else MPEG-4 part 2; yuv420p, so an odd width or height gets one
                          repeated last column or row).
    overlay.gif           the same, with `gif=True` (`--gif`).
    objects.json          {"format": "slotmatch-segment-v1", "video": name, "source": input path,
                           "checkpoint": path, "which": "model" | "teacher", "num_frames": T,
                           "fps": frame rate, "size": [H, W] of the input, "model_size": [S, S],
                           "num_slots": K, "masks": "masks/{frame:06d}.png",
                           "bbox_format": "[x0, y0, x1, y1], pixels, x1 and y1 exclusive",
                           "slots": [{"slot": k, "palette_index": k + 1, "colour": [r, g, b],
                                      "frames": [t, ...],   0-based frames where slot k has a pixel
                                      "area": [n, ...],     its pixel count in each of those frames
                                      "bbox": [[x0, y0, x1, y1], ...]}   its box in each of them
                                     for every slot k = 0 .. K-1 (empty lists if never present)],
                           "speed": {"device": ..., "model_fps": ..., "fps": ...}}
                          `area[i]` and `bbox[i]` belong to frame `frames[i]`.

Nothing half-written looks complete: a video's output is written into `DIR.tmp-XXXXXX` beside DIR and
renamed to DIR when complete; on any error it is removed. An existing DIR is replaced only if it is empty
or a previous segment output (it holds objects.json); anything else is refused. A file that does not
decode, or a truncated one (a decode error, or fewer frames than the container declares), fails: the
video is not segmented in part. In a folder of videos a failing video is reported and skipped, the
others are written, and the summary lists the failures (the CLI then exits with code 2).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from slotmatch.checkpoint import CheckpointError, current_umask, load_model
from slotmatch.cli import UserError
from slotmatch.metrics import masks_to_ids
from slotmatch.visualize import PALETTE, overlay

FORMAT = "slotmatch-segment-v1"
DEFAULT_FPS = 12.0  # frame rate of a folder of frames (MOVi's)
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".ogv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_IDS_ELEMENTS = 1 << 25  # floats upsampled at once by masks_to_ids (~128 MB)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def video_backend() -> str:
    """"pyav" when PyAV is installed, else "imageio-ffmpeg"."""
    try:
        import av  # noqa: F401
    except ImportError:
        return "imageio-ffmpeg"
    return "pyav"


# ----------------------------------------------------------------------------------------------
# Inputs: lazily decoded frames, (H, W, 3) uint8 each


@dataclass
class Source:
    """One video to segment: a video file, or a folder of frames (`frames` lists its files)."""

    name: str
    path: str
    frames: list[str] | None = None

    def open(self, fps: float | None = None) -> tuple[float, int | None, Iterator[np.ndarray]]:
        """(frame rate, number of frames or None if unknown, frame iterator); decodes nothing yet."""
        if self.frames is not None:
            return fps or DEFAULT_FPS, len(self.frames), _read_frame_files(self.frames)
        return read_video(self.path)


def find_sources(input_path: str) -> tuple[list[Source], bool]:
    """The videos of `input_path` and whether it is a folder of videos (one output folder each)."""
    if not os.path.exists(input_path):
        raise UserError(f"{input_path}: no such file or folder")
    if os.path.isfile(input_path):
        return [Source(_stem(input_path), input_path)], False
    names = sorted((n for n in os.listdir(input_path) if os.path.isfile(os.path.join(input_path, n))),
                   key=_natural_key)
    videos = [n for n in names if n.lower().endswith(VIDEO_EXTENSIONS)]
    images = [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    if videos and images:
        raise UserError(f"{input_path}: holds both videos and images; give a folder of frames or a folder of videos")
    if images:
        folder = os.path.basename(os.path.normpath(input_path))
        return [Source(folder, input_path, [os.path.join(input_path, n) for n in images])], False
    if not videos:
        raise UserError(f"{input_path}: no videos ({', '.join(VIDEO_EXTENSIONS)}) or frames "
                        f"({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    stems = [_stem(n) for n in videos]
    return [Source(s if stems.count(s) == 1 else n.replace(".", "_"), os.path.join(input_path, n))
            for s, n in zip(stems, videos)], True


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def _read_frame_files(paths: list[str]) -> Iterator[np.ndarray]:
    for p in paths:
        try:
            with Image.open(p) as im:
                yield np.asarray(im.convert("RGB"))
        except OSError as e:  # PIL.UnidentifiedImageError is an OSError
            raise UserError(f"{p}: not a readable image ({_one_line(e)})") from e


def read_video(path: str) -> tuple[float, int | None, Iterator[np.ndarray]]:
    """(frame rate, declared frame count or None, lazy RGB frame iterator) of a video file.

    Opening checks that the file is a video; decode errors, and ending with fewer frames than the
    container declares, raise UserError naming the file when the iterator reaches them.
    """
    if video_backend() == "imageio-ffmpeg":
        return _read_video_ffmpeg(path)
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a video file, or truncated or corrupt ({_one_line(e)})") from e
    if not container.streams.video:
        container.close()
        raise UserError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    declared = stream.frames or None

    def frames() -> Iterator[np.ndarray]:
        n = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                n += 1
        except av.error.FFmpegError as e:
            raise UserError(f"{path}: cannot decode frame {n}, the file is truncated or corrupt "
                            f"({_one_line(e)})") from e
        finally:
            container.close()
        _check_count(path, n, declared)

    return float(rate) if rate else DEFAULT_FPS, declared, frames()


def _read_video_ffmpeg(path: str) -> tuple[float, int | None, Iterator[np.ndarray]]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    try:
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as e:
        reader.close()
        raise UserError(f"{path}: not a video file, or truncated or corrupt ({_one_line(e)})") from e
    w, h = meta["size"]
    declared = None  # FFmpeg's frame count here is an estimate: decode errors are the only truncation check

    def frames() -> Iterator[np.ndarray]:
        n = 0
        try:
            for buf in reader:
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
                n += 1
        except (RuntimeError, OSError) as e:
            raise UserError(f"{path}: cannot decode frame {n}, the file is truncated or corrupt "
                            f"({_one_line(e)})") from e
        finally:
            reader.close()
        _check_count(path, n, declared)

    return float(meta.get("fps") or DEFAULT_FPS), declared, frames()


def _check_count(path: str, n: int, declared: int | None) -> None:
    if n == 0:
        raise UserError(f"{path}: no frame could be decoded")
    if declared and n < declared:
        raise UserError(f"{path}: truncated: {n} of the {declared} frames it declares could be decoded")


def _chunks(frames: Iterator[np.ndarray], n: int, path: str,
            context: int = 0) -> Iterator[tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]]:
    """(before, part, after): parts of up to n frames, each with up to `context` frames before and after it (what an
    encoder with context sees around the part; fewer at the video's ends); every frame must have frame 0's size."""

    def checked():
        shape = None
        for t, f in enumerate(frames):
            if shape is None:
                shape = f.shape
            elif f.shape != shape:
                raise UserError(f"{path}: frame {t} is {f.shape[1]}x{f.shape[0]}, frame 0 is {shape[1]}x{shape[0]}")
            yield f

    it = checked()
    buf, history = list(itertools.islice(it, n + context)), []
    while buf:
        part, after = buf[:n], buf[n:n + context]
        yield history, part, after
        history = (history + part)[-context:] if context else []
        buf = buf[n:]
        buf += list(itertools.islice(it, n + context - len(buf)))


# ----------------------------------------------------------------------------------------------
# Outputs


def save_mask(ids: np.ndarray, path: str) -> None:
    """Slot ids (H, W) as an indexed PNG: value id + 1, palette PALETTE."""
    im = Image.fromarray((ids + 1).astype(np.uint8))  # mode "L"
    im.putpalette(PALETTE.tobytes())  # -> mode "P"
    im.save(path)


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


class Mp4Writer:
    """Streams (H, W, 3) uint8 frames into an mp4 (H.264 if this FFmpeg has an encoder, else MPEG-4)."""

    def __init__(self, path: str, fps: float, size: tuple[int, int]):
        h, w = size
        self.size = (h + h % 2, w + w % 2)
        rate = Fraction(fps).limit_denominator(1001)
        if video_backend() == "imageio-ffmpeg":
            import imageio_ffmpeg

            self.container = None
            self.writer = imageio_ffmpeg.write_frames(path, (self.size[1], self.size[0]), fps=float(rate),
                                                      codec="libx264", pix_fmt_out="yuv420p",
                                                      macro_block_size=2, ffmpeg_log_level="error")
            self.writer.send(None)
            return
        import av

        self.container = av.open(path, "w")
        codec = _mp4_codec()
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.height, self.stream.width = self.size
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "20"}

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(_pad_even(frame))
        if self.container is None:
            self.writer.send(frame.tobytes())
            return
        import av

        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is None:
            self.writer.close()
            return
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def _mp4_codec() -> str:
    import av

    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av raises UnknownCodecError (a ValueError) or FFmpegError
            continue
    raise UserError("this FFmpeg has neither an H.264 nor an MPEG-4 encoder: cannot write overlay.mp4")


class GifWriter:
    """Streams frames into a looping GIF, one adaptive 256-colour palette per frame, constant memory."""

    def __init__(self, path: str, fps: float):
        self.fp = open(path, "wb")
        self.duration = int(round(1000 / fps))
        self.started = False

    def write(self, frame: np.ndarray) -> None:
        from PIL import GifImagePlugin

        im = Image.fromarray(frame).quantize(256)
        if not self.started:
            for part in GifImagePlugin.getheader(im, info={"loop": 0})[0]:
                self.fp.write(part)
            self.started = True
        for part in GifImagePlugin.getdata(im, duration=self.duration, include_color_table=True):
            self.fp.write(part)

    def close(self) -> None:
        self.fp.write(b";")  # GIF trailer
        self.fp.close()


class ObjectStats:
    """Per slot: the frames where it is present, its area and bounding box in each (objects.json)."""

    def __init__(self, num_slots: int):
        self.slots = [{"slot": k, "palette_index": k + 1, "colour": PALETTE[k + 1].tolist(),
                       "frames": [], "area": [], "bbox": []} for k in range(num_slots)]

    def add(self, t: int, ids: np.ndarray) -> None:
        """ids (H, W) of frame t."""
        area = np.bincount(ids.reshape(-1), minlength=len(self.slots))
        for k in np.flatnonzero(area):
            m = ids == k
            ys, xs = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            s = self.slots[k]
            s["frames"].append(t)
            s["area"].append(int(area[k]))
            s["bbox"].append([int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1])


# ----------------------------------------------------------------------------------------------
# Segmentation


def _model_size(model, size: int | None) -> tuple[int, int]:
    enc = model.encoder
    if size is None:
        s = model.cfg.img_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))
    patch = getattr(enc, "cnn_patch_size", enc.patch_size)  # an unpacked CNN readout has one token per pixel
    if size < patch or size % patch:
        raise ValueError(f"--size {size}: must be a multiple of the encoder's patch size {patch}")
    fixed = getattr(enc, "img_size", None)  # a ViT's position embedding fixes its input size
    if fixed is not None and tuple(fixed) != (size, size):
        raise ValueError(f"--size {size}: this checkpoint's ViT encoder takes {fixed[0]}x{fixed[1]} inputs only")
    return (size, size)


@torch.inference_mode()
def segment_frames(model, frames: list[np.ndarray], model_size: tuple[int, int],
                   carry: dict | None = None, before: list[np.ndarray] = (),
                   after: list[np.ndarray] = ()) -> tuple[np.ndarray, dict]:
    """Slot ids of consecutive frames (each (H, W, 3) uint8) -> ids (T, H, W) uint8, carry.

    carry: what the last call returned, the state of the frame before the first ({"prev_slots": (1, K, D),
    "prev_attn": (1, K, N)}, for `SlotContrast.forward`); None: the video starts here.
    before, after: the video's frames just before and after these, which an encoder with context
    (`encoder.context`) sees beside the first and last of them; none at the video's ends.
    """
    device = next(model.parameters()).device
    T = len(frames)
    x = torch.from_numpy(np.stack([*before, *frames, *after])).to(device)  # (T', H, W, 3) uint8
    x = x.permute(0, 3, 1, 2).float().div_(255)  # (T, 3, H, W)
    H, W = x.shape[-2:]
    if (H, W) != tuple(model_size):
        x = F.interpolate(x, size=model_size, mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    features = model.encoder.encode_video(x.unsqueeze(0))[:, len(before):len(before) + T]  # neighbours: encoder only
    out = model(x[None, len(before):len(before) + T], features=features, masks_only=True, **(carry or {}))
    K = out["masks"].shape[2]
    masks = out["masks"].unflatten(-1, out["mask_grid"])  # (1, T, K, h, w)
    ids = masks_to_ids(masks, (H, W), chunk=max(1, MAX_IDS_ELEMENTS // (K * H * W)))[0]  # (T, H, W)
    carry = {"prev_slots": out["slots"][:, -1], "prev_attn": out["attn"][:, -1]}  # (1, K, D), (1, K, N)
    return ids.to(torch.uint8).cpu().numpy(), carry


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def segment_video(model, source: Source, out_dir: str, model_size: tuple[int, int], chunk: int = 16,
                  gif: bool = False, fps: float | None = None, progress: bool = True,
                  meta: dict | None = None) -> dict:
    """Segment one video into out_dir (which must exist and be empty); returns objects.json's content."""
    rate, declared, frames = source.open(fps)
    device = next(model.parameters()).device
    num_slots = model.cfg.num_slots
    if num_slots > 255:
        raise ValueError(f"{num_slots} slots do not fit an 8-bit indexed PNG (at most 255)")
    os.makedirs(os.path.join(out_dir, "masks"))
    stats = ObjectStats(num_slots)
    writers: list = []
    carry, t, size, model_time, start = None, 0, None, 0.0, time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=declared, desc=source.name, unit="frame", disable=not progress, leave=False, file=sys.stderr)
    complete = False
    try:
        for before, part, after in _chunks(frames, chunk, source.path, model.encoder.context):
            if not writers:
                size = part[0].shape[:2]
                writers.append(Mp4Writer(os.path.join(out_dir, "overlay.mp4"), rate, size))
                if gif:
                    writers.append(GifWriter(os.path.join(out_dir, "overlay.gif"), rate))
            tic = time.perf_counter()
            ids, carry = segment_frames(model, part, model_size, carry, before, after)  # (T, H, W)
            _sync(device)
            model_time += time.perf_counter() - tic
            for frame_ids, frame in zip(ids, part):
                save_mask(frame_ids, os.path.join(out_dir, "masks", f"{t:06d}.png"))
                stats.add(t, frame_ids)
                blended = overlay(frame, frame_ids.astype(np.int64) + 1)  # (H, W, 3) uint8
                for w in writers:
                    w.write(blended)
                t += 1
            bar.update(len(part))
        complete = True
    finally:
        bar.close()
        for w in writers:
            if complete:
                w.close()
            else:  # the error in flight is the one to report
                try:
                    w.close()
                except Exception:
                    pass
    elapsed = time.perf_counter() - start
    objects = {"format": FORMAT, "video": source.name, "source": source.path, **(meta or {}),
               "num_frames": t, "fps": rate, "size": list(size), "model_size": list(model_size),
               "num_slots": num_slots, "masks": "masks/{frame:06d}.png",
               "bbox_format": "[x0, y0, x1, y1], pixels, x1 and y1 exclusive", "slots": stats.slots,
               "speed": {"device": str(device), "model_fps": t / max(model_time, 1e-9),
                         "fps": t / max(elapsed, 1e-9), "model_seconds": model_time, "seconds": elapsed}}
    with open(os.path.join(out_dir, "objects.json"), "w") as f:
        json.dump(objects, f, indent=1)
    return objects


def _check_target(path: str) -> None:
    """Refuse an existing output path that is not empty and not a previous segment output."""
    if os.path.isfile(path):
        raise UserError(f"{path}: is a file, the output must be a folder")
    if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, "objects.json")):
        raise UserError(f"{path}: exists and is not a segment output; remove it or choose another --out")


def _write_atomically(final: str, write) -> dict:
    """Run write(tmp_dir) in DIR.tmp-XXXXXX beside `final`, then rename it to `final` (replacing an old output)."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(os.path.normpath(final)) + ".tmp-", dir=parent)
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would stay on the renamed output
    try:
        result = write(tmp)
        if os.path.isdir(final):
            old = tempfile.mkdtemp(prefix=os.path.basename(os.path.normpath(final)) + ".old-", dir=parent)
            os.rename(final, os.path.join(old, "x"))
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def segment(input_path: str, checkpoint: str, out_dir: str, size: int | None = None, device: str = "cpu",
            chunk: int = 16, gif: bool = False, progress: bool = True, which: str = "model",
            fps: float | None = None, track: str | None = None) -> dict:
    """Segment a video file, a folder of frames or a folder of videos (see the module docstring).

    size: the model's square input size (default: the checkpoint's `img_size`); frames of any aspect
        ratio are resized to it, masks come back at the input's resolution.
    chunk: frames per forward pass; the result does not depend on it, memory does.
    which: "model" (the trained model: a train run's teacher, a distill run's student) or "teacher"
        (the teacher inside a distillation checkpoint).
    fps: frame rate of a folder of frames (default 12); a video keeps its own.
    track: None (the checkpoint's `model.track`), or "none" / "masks" to override it.
    Returns {"videos": segmented, "frames": total, "fps": end-to-end frames/s, "model_fps": frames/s of
    resizing, the model and the ids alone, "device", "outputs": [folders], "failed": [{"video", "error"}]}.
    Raises UserError (bad input), CheckpointError, FileNotFoundError (missing encoder weights),
    ValueError; failures of single videos in a folder of videos are reported in "failed" instead.
    """
    if chunk < 1:
        raise ValueError(f"--chunk {chunk}: must be at least 1")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available on this machine")
    sources, batch = find_sources(input_path)
    targets = [os.path.join(out_dir, s.name) for s in sources] if batch else [out_dir]
    if batch:
        _check_target_folder(out_dir)
    for target in targets:
        _check_target(target)
    from slotmatch.models.tracking import set_track

    model, _ = _load(checkpoint, which, device)
    set_track(model, track)
    model_size = _model_size(model, size)
    meta = {"checkpoint": checkpoint, "which": which, "track": model.cfg.track}

    from tqdm import tqdm

    done, failed, frames, seconds, model_seconds = [], [], 0, 0.0, 0.0
    for source, target in zip(tqdm(sources, desc="videos", unit="video", disable=not (progress and batch),
                                   file=sys.stderr), targets):
        try:
            objects = _write_atomically(target, lambda tmp: segment_video(
                model, source, tmp, model_size, chunk, gif, fps, progress, meta))
        except (UserError, ValueError, OSError) as e:
            if not batch:
                raise
            failed.append({"video": source.path, "error": _one_line(e)})
            print(f"slotmatch segment: skipped {_one_line(e)}", file=sys.stderr)
            continue
        done.append(target)
        frames += objects["num_frames"]
        seconds += objects["speed"]["seconds"]
        model_seconds += objects["speed"]["model_seconds"]
    return {"videos": len(done), "frames": frames, "fps": frames / max(seconds, 1e-9),
            "model_fps": frames / max(model_seconds, 1e-9), "device": str(next(model.parameters()).device),
            "outputs": done, "failed": failed}


def _check_target_folder(path: str) -> None:
    if os.path.isfile(path):
        raise UserError(f"{path}: is a file, the output must be a folder")


def _load(checkpoint: str, which: str, device: str):
    from slotmatch.models.encoder import WeightsNotFoundError

    try:
        return load_model(checkpoint, which=which, device=device)
    except WeightsNotFoundError as e:
        first, *rest = str(e).strip().splitlines() or [""]
        hint = f" ({' '.join(' '.join(rest).split())})" if rest else ""
        raise UserError(f"{checkpoint}: {first}{hint}") from e
    except CheckpointError as e:
        raise CheckpointError(_one_line(e)) from e


def segment_main(args) -> None:
    """The `slotmatch segment` command: segment, print where the outputs are and the frames per second."""
    which = getattr(args, "which", "model")
    try:
        summary = segment(args.input, args.checkpoint, args.out, size=args.size, device=args.device,
                          chunk=args.chunk, gif=args.gif, progress=not getattr(args, "quiet", False), which=which,
                          track=getattr(args, "track", None))
    except CheckpointError as e:
        raise CheckpointError(_one_line(e)) from e
    except (UserError, ValueError, FileNotFoundError) as e:
        raise UserError(_one_line(e)) from e
    n = summary["videos"]
    print(f"{args.out}: {summary['frames']} frames of {n} video{'s' if n != 1 else ''} segmented with "
          f"{args.checkpoint} ({which}) on {summary['device']}: {summary['model_fps']:.1f} frames/s for the "
          f"model, {summary['fps']:.1f} frames/s end to end")
    if summary["failed"]:
        first = summary["failed"][0]
        raise UserError(f"{len(summary['failed'])} of {n + len(summary['failed'])} videos could not be "
                        f"segmented, e.g. {first['error']}")
