"""Webdataset-compatible tar shards, written deterministically and read with errors that name the file.

A sample `key` is stored as the members `key.video.npy`, `key.segmentations.npy`, `key.metadata.json`
(and `key.depth.npy` when rendered), the layout `webdataset.WebDataset(url).decode()` reads. Members get
fixed metadata (mtime 0, uid 0, mode 0644), so the same samples give byte-identical shards. A shard is
written to `NAME.tmp` and renamed only when complete: a file with the final name is always whole.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass

import numpy as np


class DatasetError(RuntimeError):
    """A dataset file is missing, incomplete or corrupt; the message names the file."""


def _encode(name: str, value) -> bytes:
    if name.endswith(".npy"):
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(value), allow_pickle=False)
        return buf.getvalue()
    if name.endswith(".json"):
        return json.dumps(value, sort_keys=True).encode()
    raise ValueError(f"no encoder for member {name!r}")


def write_shard(path: str, samples: list[tuple[str, dict]]) -> None:
    """Write `samples` [(key, {"video.npy": array, "metadata.json": dict, ...})] to the tar shard `path`."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, fields in samples:
                for name in sorted(fields):
                    data = _encode(name, fields[name])
                    info = tarfile.TarInfo(f"{key}.{name}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class Member:
    offset: int
    size: int


def index_shard(path: str) -> dict[str, dict[str, Member]]:
    """Map each sample key of a shard to its members' byte ranges, reading only the tar headers."""
    if not os.path.exists(path):
        raise DatasetError(f"{path}: shard file is missing")
    if os.path.getsize(path) == 0:
        raise DatasetError(f"{path}: shard file is empty")
    samples: dict[str, dict[str, Member]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, field = info.name.partition(".")
                samples.setdefault(key, {})[field] = Member(info.offset_data, info.size)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"{path}: not a readable tar shard ({e})") from e
    if not samples:
        raise DatasetError(f"{path}: shard holds no samples")
    return samples


def read_member(path: str, name: str, member: Member):
    """Decode one member (`.npy` -> array, `.json` -> object) of shard `path`."""
    with open(path, "rb") as f:
        f.seek(member.offset)
        data = f.read(member.size)
    if len(data) != member.size:
        raise DatasetError(f"{path}: member {name} is truncated ({len(data)} of {member.size} bytes)")
    try:
        if name.endswith(".npy"):
            return np.load(io.BytesIO(data), allow_pickle=False)
        if name.endswith(".json"):
            return json.loads(data)
    except Exception as e:  # numpy and json raise several types for corrupt bytes
        raise DatasetError(f"{path}: member {name} is corrupt ({e})") from e
    return data
