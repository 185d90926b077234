"""Procedural textures and UV-mapped mesh copies for the generator.

MOVi-C/E objects and backgrounds are textured; pybullet_data's meshes mostly carry no texture
coordinates, so `uv_mapped_mesh` writes a copy of a mesh with spherical UVs that TinyRenderer can
texture. Everything here is a pure function of its random generator, so videos stay deterministic.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated random RGB colour in [0, 1], as Kubric samples object colours (HSV, high S and V)."""
    h = rng.uniform(0, 1)
    s = rng.uniform(0.6, 1.0)
    v = rng.uniform(0.6, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p_, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p_), (q, v, p_), (p_, v, t), (p_, q, v), (t, p_, v), (v, p_, q)][i]
    return np.array(rgb, dtype=np.float64)


def procedural_texture(rng: np.random.Generator, size: int = 64, muted: bool = False) -> np.ndarray:
    """A (size, size, 3) uint8 texture: checker, stripes, dots, noise or marble-like bands in two colours.

    `muted` mixes the colours towards grey, for floors that should not outshine the objects."""
    c1, c2 = random_colour(rng), random_colour(rng) * rng.uniform(0.3, 1.0)
    if muted:
        c1, c2 = 0.5 * c1 + 0.2, 0.5 * c2 + 0.15
    y, x = np.mgrid[0:size, 0:size] / size
    kind = rng.integers(0, 5)
    freq = rng.integers(2, 7)
    if kind == 0:  # checker
        m = ((np.floor(x * freq) + np.floor(y * freq)) % 2).astype(np.float64)
    elif kind == 1:  # stripes at a random angle
        a = rng.uniform(0, np.pi)
        m = (np.sin((x * np.cos(a) + y * np.sin(a)) * freq * 2 * np.pi) > 0).astype(np.float64)
    elif kind == 2:  # dots
        cx, cy = (x * freq) % 1 - 0.5, (y * freq) % 1 - 0.5
        m = (cx**2 + cy**2 < rng.uniform(0.04, 0.16)).astype(np.float64)
    elif kind == 3:  # smooth value noise
        coarse = rng.uniform(0, 1, size=(freq + 1, freq + 1))
        img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        m = np.asarray(img, dtype=np.float64) / 255
    else:  # wavy bands
        m = 0.5 + 0.5 * np.sin((x + 0.15 * np.sin(y * freq * 2 * np.pi)) * freq * 2 * np.pi)
    tex = m[..., None] * c1 + (1 - m[..., None]) * c2
    return (np.clip(tex, 0, 1) * 255).astype(np.uint8)


def save_texture(tex: np.ndarray, path: str) -> str:
    """Write a texture as PNG and return its path."""
    Image.fromarray(tex).save(path)
    return path


@lru_cache(maxsize=None)
def mesh_vertices(path: str) -> np.ndarray:
    """The (V, 3) vertex positions of an OBJ file."""
    verts = []
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                verts.append([float(v) for v in line.split()[1:4]])
    if not verts:
        raise ValueError(f"{path}: OBJ file has no vertices")
    return np.asarray(verts)


def mesh_extent(path: str) -> tuple[np.ndarray, float]:
    """Centre of the bounding box and its largest side, in the OBJ file's units."""
    v = mesh_vertices(path)
    lo, hi = v.min(0), v.max(0)
    return (lo + hi) / 2, float((hi - lo).max())


def uv_mapped_mesh(path: str, cache_dir: str) -> str:
    """Return the path of a copy of OBJ `path` with spherical texture coordinates (written once per cache)."""
    out = os.path.join(cache_dir, "uv_" + path.replace(os.sep, "_").lstrip("_"))
    if os.path.exists(out):
        return out
    v = mesh_vertices(path)
    centre, _ = mesh_extent(path)
    d = v - centre
    r = np.linalg.norm(d, axis=1) + 1e-9
    u = 0.5 + np.arctan2(d[:, 1], d[:, 0]) / (2 * np.pi)
    w = 0.5 + np.arcsin(np.clip(d[:, 2] / r, -1, 1)) / np.pi
    lines = [f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in v]
    lines += [f"vt {a * 2:.6f} {b * 2:.6f}\n" for a, b in zip(u, w)]  # tile twice around the object
    with open(path) as f:
        for line in f:
            if line.startswith("f "):
                idx = [tok.split("/")[0] for tok in line.split()[1:]]
                lines.append("f " + " ".join(f"{i}/{i}" for i in idx) + "\n")
    tmp = out + f".{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, out)
    return out
