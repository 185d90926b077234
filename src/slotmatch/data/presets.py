"""Scene presets of the built-in generator, approximating the three MOVi levels (Greff et al., 2022).

MOVi-A: 3-10 plain-coloured primitives on a grey floor, static camera.
MOVi-C: 3-10 textured everyday objects (here: pybullet_data meshes and primitives) over a textured
        floor, static camera.
MOVi-E: up to 20 objects, most of them static, a few thrown, camera moving on a straight line.
Sizes are in scene units; the camera distance is chosen so objects cover a MOVi-like share of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScenePreset:
    name: str
    num_objects: tuple[int, int]  # inclusive range of objects per video
    num_dynamic: tuple[int, int] | None  # thrown objects; None: all objects are dropped and dynamic
    use_meshes: bool  # pybullet_data meshes as well as primitives
    textured_objects: bool
    textured_floor: bool
    camera_motion: bool  # linear camera motion over the video (MOVi-E)
    object_size: tuple[float, float] = (0.6, 1.3)  # largest extent of an object, scene units
    spawn_radius: float = 2.6  # objects start within this half-width square around the origin
    camera_distance: tuple[float, float] = (8.0, 10.0)
    camera_elevation_deg: tuple[float, float] = (35.0, 60.0)


PRESETS: dict[str, ScenePreset] = {
    "movi-a-like": ScenePreset(
        name="movi-a-like", num_objects=(3, 10), num_dynamic=None, use_meshes=False,
        textured_objects=False, textured_floor=False, camera_motion=False,
    ),
    "movi-c-like": ScenePreset(
        name="movi-c-like", num_objects=(3, 10), num_dynamic=None, use_meshes=True,
        textured_objects=True, textured_floor=True, camera_motion=False,
    ),
    "movi-e-like": ScenePreset(
        name="movi-e-like", num_objects=(11, 20), num_dynamic=(1, 3), use_meshes=True,
        textured_objects=True, textured_floor=True, camera_motion=True,
        object_size=(0.5, 1.1), spawn_radius=3.2, camera_distance=(9.0, 11.0),
    ),
}


def get_preset(name: str) -> ScenePreset:
    """Return the preset called `name`, or raise a ValueError listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
