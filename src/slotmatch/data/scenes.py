"""Render one MOVi-style video with PyBullet: physics, TinyRenderer images and instance masks.

A video is a pure function of (preset, seed sequence, frames, size): a fresh simulation is built for
it, so the same arguments give byte-identical frames on any worker. Objects fall or are thrown onto a
floor, collide and settle (240 physics steps per second, 12 frames per second as in MOVi); the renderer
returns the body id of every pixel, which becomes the instance id (0 = floor and sky).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from slotmatch.data.presets import ScenePreset
from slotmatch.data.textures import mesh_extent, procedural_texture, random_colour, save_texture, uv_mapped_mesh

PHYSICS_HZ = 240
FPS = 12
PRIMITIVES = ("box", "sphere", "cylinder", "capsule")
NAMED_MESHES = ("duck_vhacd.obj", "teddy2_VHACD_CHs.obj", "soccerball.obj", "bunny.obj", "torus/torus_textured.obj")


def _pybullet():
    import pybullet  # imported lazily: it prints its build time on import
    import pybullet_data

    return pybullet, pybullet_data.getDataPath()


@dataclass
class ObjectSpec:
    id: int
    shape: str  # a primitive name or a mesh path relative to pybullet_data
    size: float
    colour: list[float]
    textured: bool
    static: bool


def sample_objects(preset: ScenePreset, rng: np.random.Generator) -> list[ObjectSpec]:
    """Draw the objects of one video: shapes, sizes, colours, which are static."""
    n = int(rng.integers(preset.num_objects[0], preset.num_objects[1] + 1))
    n_dynamic = n if preset.num_dynamic is None else int(rng.integers(preset.num_dynamic[0], preset.num_dynamic[1] + 1))
    specs = []
    for i in range(n):
        if preset.use_meshes and rng.uniform() < 0.6:
            if rng.uniform() < 0.15:
                shape = NAMED_MESHES[int(rng.integers(len(NAMED_MESHES)))]
            else:
                k = int(rng.integers(1000))
                shape = f"random_urdfs/{k:03d}/{k:03d}.obj"
        else:
            shape = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
        specs.append(ObjectSpec(
            id=i + 1, shape=shape, size=float(rng.uniform(*preset.object_size)),
            colour=[round(c, 4) for c in random_colour(rng).tolist()],
            textured=preset.textured_objects, static=i >= n_dynamic,
        ))
    return specs


def _camera_path(preset: ScenePreset, rng: np.random.Generator, frames: int) -> np.ndarray:
    """(frames, 3) camera positions looking at the origin; a straight line for moving-camera presets."""
    def point() -> np.ndarray:
        d = rng.uniform(*preset.camera_distance)
        el = np.deg2rad(rng.uniform(*preset.camera_elevation_deg))
        az = rng.uniform(0, 2 * np.pi)
        return np.array([d * np.cos(el) * np.cos(az), d * np.cos(el) * np.sin(az), d * np.sin(el)])

    start = point()
    if not preset.camera_motion:
        return np.repeat(start[None], frames, 0)
    # MOVi-E: constant velocity along a straight line; we move up to 2.5 units over the clip
    direction = rng.normal(size=3)
    direction[2] *= 0.3
    direction /= np.linalg.norm(direction)
    end = start + direction * rng.uniform(1.0, 2.5)
    end[2] = max(end[2], 3.0)
    t = np.linspace(0, 1, frames)[:, None]
    return start[None] * (1 - t) + end[None] * t


def render_video(preset: ScenePreset, seed: np.random.SeedSequence | int, frames: int = 24, size: int = 128,
                 shadows: bool = True, hide_objects: bool = False, work_dir: str | None = None,
                 with_flow: bool = False) -> dict:
    """Simulate and render one video.

    Returns dict(video=(T, H, W, 3) uint8, segmentations=(T, H, W) uint8 with 0 = background,
    depth=(T, H, W) float32 z-depth in scene units, metadata=dict), and with `with_flow` also
    flow=(T, H, W, 2) float32: where each pixel's surface point is one frame later, in pixels (dx, dy),
    from the simulator's object poses and cameras (the last frame's from one more physics interval).
    `hide_objects` renders the same scene and camera with the objects moved out of view (used by tests
    to check the masks). The random draws do not depend on `with_flow`: the same seed gives the same video.
    """
    p, data_dir = _pybullet()
    rng = np.random.default_rng(seed)
    own_dir = work_dir is None
    work_dir = work_dir or tempfile.mkdtemp(prefix="slotmatch_gen_")
    cid = p.connect(p.DIRECT)
    try:
        return _simulate(p, cid, data_dir, work_dir, preset, rng, frames, size, shadows, hide_objects, with_flow)
    finally:
        p.disconnect(cid)
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


def _simulate(p, cid, data_dir, work_dir, preset, rng, frames, size, shadows, hide_objects, with_flow=False) -> dict:
    p.resetSimulation(physicsClientId=cid)
    p.setGravity(0, 0, -9.81, physicsClientId=cid)
    p.setTimeStep(1.0 / PHYSICS_HZ, physicsClientId=cid)
    tex_id = [0]

    def load_texture(tex: np.ndarray) -> int:
        tex_id[0] += 1
        path = save_texture(tex, os.path.join(work_dir, f"tex_{os.getpid()}_{tex_id[0]}.png"))
        return p.loadTexture(path, physicsClientId=cid)

    # floor: a 30x30 plane whose texture tiles every 2 units
    floor_vis = p.createVisualShape(p.GEOM_MESH, fileName=os.path.join(data_dir, "plane.obj"),
                                    rgbaColor=[1, 1, 1, 1], physicsClientId=cid)
    floor_col = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=cid)
    floor = p.createMultiBody(0, floor_col, floor_vis, physicsClientId=cid)
    p.changeDynamics(floor, -1, lateralFriction=0.8, restitution=0.3, physicsClientId=cid)
    floor_tex = procedural_texture(rng, 64, muted=True) if preset.textured_floor else np.full((4, 4, 3), 140, np.uint8)
    p.changeVisualShape(floor, -1, textureUniqueId=load_texture(floor_tex), physicsClientId=cid)

    specs = sample_objects(preset, rng)
    placed: list[tuple[float, float, float]] = []
    body_to_id: dict[int, int] = {}
    objects_meta = []
    for spec in specs:
        body, radius, height = _create_object(p, cid, data_dir, work_dir, spec, rng)
        # rejection-sample a start position that does not overlap earlier objects
        for _ in range(50):
            x, y = rng.uniform(-preset.spawn_radius, preset.spawn_radius, size=2)
            if all((x - px) ** 2 + (y - py) ** 2 > (radius + pr) ** 2 for px, py, pr in placed):
                break
        placed.append((x, y, radius))
        if spec.static:
            z = height / 2
            orn = p.getQuaternionFromEuler([0, 0, rng.uniform(0, 2 * np.pi)])
        else:
            z = height / 2 + rng.uniform(0.5, 2.5)
            orn = p.getQuaternionFromEuler(rng.uniform(0, 2 * np.pi, size=3).tolist())
        p.resetBasePositionAndOrientation(body, [x, y, z], orn, physicsClientId=cid)
        if not spec.static:  # thrown towards the centre, as in MOVi
            v = np.array([-x, -y, 0.0]) * rng.uniform(0.0, 0.6) + np.append(rng.normal(0, 0.5, 2), 0)
            p.resetBaseVelocity(body, v.tolist(), rng.normal(0, 2.0, 3).tolist(), physicsClientId=cid)
        if spec.textured:
            p.changeVisualShape(body, -1, rgbaColor=[1, 1, 1, 1],
                                textureUniqueId=load_texture(procedural_texture(rng, 64)), physicsClientId=cid)
        body_to_id[body] = spec.id
        objects_meta.append(dict(id=spec.id, shape=spec.shape, size=round(spec.size, 4), colour=spec.colour,
                                 textured=spec.textured, static=spec.static))

    cams = _camera_path(preset, rng, frames)
    light = rng.normal(size=3)
    light[2] = abs(light[2]) + 1.0
    proj = p.computeProjectionMatrixFOV(fov=40, aspect=1.0, nearVal=0.1, farVal=60, physicsClientId=cid)
    lut = np.zeros(max(body_to_id) + 2 if body_to_id else 2, dtype=np.uint8)
    for body, oid in body_to_id.items():
        lut[body + 1] = oid  # seg is -1 for sky, the floor's body id for floor: both map to 0
    lut[floor + 1] = 0

    video = np.empty((frames, size, size, 3), np.uint8)
    segs = np.empty((frames, size, size), np.uint8)
    depth = np.empty((frames, size, size), np.float32)
    steps = PHYSICS_HZ // FPS
    body_segs, views, poses = [], [], []  # for the flow
    for t in range(frames):
        if t > 0:
            for _ in range(steps):
                p.stepSimulation(physicsClientId=cid)
        if hide_objects:
            for body in body_to_id:
                p.resetBasePositionAndOrientation(body, [100 + body, 100, -50], [0, 0, 0, 1], physicsClientId=cid)
        view = p.computeViewMatrix(cams[t].tolist(), [0, 0, 0.5], [0, 0, 1], physicsClientId=cid)
        _, _, rgb, zbuf, seg = p.getCameraImage(
            size, size, view, proj, renderer=p.ER_TINY_RENDERER, shadow=int(shadows),
            lightDirection=light.tolist(), lightAmbientCoeff=0.55, lightDiffuseCoeff=0.5,
            lightSpecularCoeff=0.05, physicsClientId=cid)
        video[t] = np.asarray(rgb, np.uint8).reshape(size, size, 4)[..., :3]
        segs[t] = lut[np.asarray(seg, np.int64).reshape(size, size) + 1]
        zb = np.asarray(zbuf, np.float32).reshape(size, size)
        depth[t] = 60 * 0.1 / (60 - (60 - 0.1) * zb)  # OpenGL depth buffer -> eye distance
        if with_flow:
            body_segs.append(np.asarray(seg, np.int64).reshape(size, size))
            views.append(view)
            poses.append(_body_poses(p, cid, body_to_id))
    flow = None
    if with_flow:  # one more interval: the last frame's motion (the camera path is a straight line)
        for _ in range(steps):
            p.stepSimulation(physicsClientId=cid)
        cam_next = cams[-1] + (cams[-1] - cams[-2]) if frames > 1 else cams[-1]
        views.append(p.computeViewMatrix(cam_next.tolist(), [0, 0, 0.5], [0, 0, 1], physicsClientId=cid))
        poses.append(_body_poses(p, cid, body_to_id))
        flow = np.stack([scene_flow(depth[t], body_segs[t], views[t], views[t + 1], proj, poses[t], poses[t + 1])
                         for t in range(frames)])
    metadata = dict(preset=preset.name, num_objects=len(specs), objects=objects_meta,
                    camera_positions=np.round(cams, 4).tolist(), light_direction=np.round(light, 4).tolist(),
                    fps=FPS, physics_hz=PHYSICS_HZ)
    out = dict(video=video, segmentations=segs, depth=depth, metadata=metadata)
    if flow is not None:
        out["flow"] = flow
    return out


def _body_poses(p, cid, bodies) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{body: (position (3,), rotation matrix (3, 3))} now."""
    out = {}
    for body in bodies:
        pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=cid)
        out[body] = (np.asarray(pos, np.float64), np.asarray(p.getMatrixFromQuaternion(orn), np.float64).reshape(3, 3))
    return out


def _gl(m) -> np.ndarray:
    """A column-major OpenGL 4x4 matrix (PyBullet's 16 floats) as a row-major array acting on columns."""
    return np.asarray(m, np.float64).reshape(4, 4).T


def unproject(depth: np.ndarray, view, proj) -> np.ndarray:
    """World points (H, W, 4), homogeneous, of a frame's pixels from their z-depth and the camera.

    TinyRenderer's pixel (row v, column u) sits at x_ndc = 2u/W - 1, y_ndc = 1 - 2(v + 1)/H (measured:
    with it a rendered floor unprojects to z = 0 within 1e-4, with pixel centres (u + 0.5, v + 0.5) only
    within 0.1 scene units).
    """
    H, W = depth.shape
    P, V = _gl(proj), _gl(view)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    x_ndc, y_ndc = 2 * u / W - 1, 1 - 2 * (v + 1) / H
    z = depth.astype(np.float64)
    eye = np.stack([x_ndc * z / P[0, 0], y_ndc * z / P[1, 1], -z, np.ones_like(z)], -1)  # (H, W, 4)
    return eye @ np.linalg.inv(V).T


def scene_flow(depth: np.ndarray, body_seg: np.ndarray, view0, view1, proj, poses0: dict, poses1: dict) -> np.ndarray:
    """Forward optical flow (H, W, 2) in pixels (dx, dy) of a frame, from the simulator's state.

    Each pixel is lifted to its 3D point with its z-depth and the camera (view0, proj), moved with the
    rigid motion of the body it lies on (poses0 -> poses1; the floor and sky stay put), and projected
    with the next camera (view1). Occlusion is not handled: the flow of a point hidden in the next frame
    is where it would be.
    """
    H, W = depth.shape
    world = unproject(depth, view0, proj)
    moved = world.copy()
    for body, (p0, r0) in poses0.items():
        on = body_seg == body
        if on.any():
            p1, r1 = poses1[body]
            local = (world[on, :3] - p0) @ r0  # r0^T (x - p0), row vectors
            moved[on, :3] = local @ r1.T + p1
    clip = moved @ (_gl(proj) @ _gl(view1)).T
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    u1 = (clip[..., 0] / clip[..., 3] + 1) / 2 * W  # inverse of unproject's pixel convention
    v1 = (1 - clip[..., 1] / clip[..., 3]) / 2 * H - 1
    return np.stack([u1 - u, v1 - v], -1).astype(np.float32)


def _create_object(p, cid, data_dir, work_dir, spec: ObjectSpec, rng) -> tuple[int, float, float]:
    """Create one body; return (body id, footprint radius, height)."""
    s = spec.size
    rgba = list(spec.colour) + [1.0]
    if spec.shape == "box":
        half = (np.array([rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)]) * s / 2).tolist()
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=cid)
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba, physicsClientId=cid)
        radius, height = float(np.hypot(half[0], half[1])), 2 * half[2]
    elif spec.shape == "sphere":
        r = s / 2
        col = p.createCollisionShape(p.GEOM_SPHERE, radius=r, physicsClientId=cid)
        vis = p.createVisualShape(p.GEOM_SPHERE, radius=r, rgbaColor=rgba, physicsClientId=cid)
        radius, height = r, 2 * r
    elif spec.shape in ("cylinder", "capsule"):
        r, h = s / 2 * rng.uniform(0.5, 0.9), s * rng.uniform(0.5, 0.9)
        geom = p.GEOM_CYLINDER if spec.shape == "cylinder" else p.GEOM_CAPSULE
        if spec.shape == "capsule":
            h = max(h - 2 * r, 0.05)
        col = p.createCollisionShape(geom, radius=r, height=h, physicsClientId=cid)
        vis = p.createVisualShape(geom, radius=r, length=h, rgbaColor=rgba, physicsClientId=cid)
        radius, height = r, h + (2 * r if spec.shape == "capsule" else 0)
    else:
        path = os.path.join(data_dir, spec.shape)
        centre, extent = mesh_extent(path)
        scale = s / extent
        shift = (-centre * scale).tolist()
        vis_path = uv_mapped_mesh(path, work_dir) if spec.textured else path
        col = p.createCollisionShape(p.GEOM_MESH, fileName=path, meshScale=[scale] * 3,
                                     collisionFramePosition=shift, physicsClientId=cid)
        vis = p.createVisualShape(p.GEOM_MESH, fileName=vis_path, meshScale=[scale] * 3, rgbaColor=rgba,
                                  visualFramePosition=shift, physicsClientId=cid)
        radius, height = s / 2, s
    mass = 0.0 if spec.static else float(rng.uniform(0.5, 2.0))
    body = p.createMultiBody(mass, col, vis, physicsClientId=cid)
    p.changeDynamics(body, -1, lateralFriction=0.5, restitution=0.4, physicsClientId=cid)
    return body, radius, height
