"""Render one labelled photo of a subject from one view.

The photo is composed in a few vectorised passes: a close-up camera framed on the head's
outline (with the face, neck or collar that real photos of each view show around it),
ray-cast head, scalp maps (density, loss, zones), skin and face albedo, a hair underlayer
for dense hair, soft shading with a light from above, contact shadows and skin shine,
strands, then the camera's faults (blur, noise, colour cast, 90-degree rotation); JPEG
artefacts come from saving as JPEG.

The loss mask says what the photo shows: a lost or scarred scalp pixel counts only when
it is visible (not hidden by the ear, the face or other hair), and a condition's bit is
dropped altogether when fewer than `min_loss_pixels` pixels show it. The image-level
conditions are read back from the mask, so labels and masks cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from scalpscan.data.synth import head as H
from scalpscan.data.synth.conditions import scalp_maps
from scalpscan.data.synth.hair import hair_directions, paint_strands, strand_polylines
from scalpscan.data.synth.subject import Subject
from scalpscan.data.vocab import CONDITIONS, VIEWS, condition_bit

__all__ = ["Photo", "render_photo", "sample_camera", "min_loss_pixels"]

_COVERED = 0.7  # hair coverage (5x5 mean) above which a scalp pixel's loss is hidden


@dataclass
class Photo:
    """One rendered photo and its labels."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    zones: np.ndarray  # (S, S) uint8, OR of zone bits
    loss: np.ndarray  # (S, S) uint8, OR of condition bits
    view: str
    conditions: dict[str, int]
    rotation: int  # degrees counter-clockwise applied to the picture (0, 90, 180, 270)


def min_loss_pixels(size: int) -> int:
    """Fewest mask pixels for a condition to count as visible in a ``size`` px photo."""
    return max(4, int(round(0.0008 * size * size)))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, low: float, high: float) -> np.ndarray:
    grid = rng.uniform(low, high, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


# Per view: camera angles and the parts whose outline the photo is framed on. Real clinic
# and phone photos are close-ups: the head fills most of the frame and is sometimes cut off
# at an edge, so the frame is sized from the projected outline of those parts. What shows
# around the scalp tells the views apart in real photos: the forehead, brows and eyes at the
# bottom of a front view, the neck and collar under a back view, the whole face in profile.
_FRAMED_PARTS: dict[str, tuple[int, ...]] = {
    "front": (H.CRANIUM, H.FACE),
    "top": (H.CRANIUM,),
    "back": (H.CRANIUM, H.EAR_LEFT, H.EAR_RIGHT),
    "left": (H.CRANIUM, H.FACE, H.NOSE),
    "right": (H.CRANIUM, H.FACE, H.NOSE),
}


def _outline_box(
    shape: H.HeadShape, camera: H.Camera, parts: tuple[int, ...]
) -> tuple[float, float, float, float]:
    """Image-plane box (right0, right1, up0, up1), world units, of the ellipsoids ``parts``."""
    boxes = []
    for part in parts:
        centre, axes = shape.centres[part - 1], shape.axes[part - 1]
        rel = centre - camera.target
        # Orthographic silhouette of an axis-aligned ellipsoid along a unit direction u
        # spans centre.u +/- |axes * u|.
        half_r = float(np.linalg.norm(axes * camera.right))
        half_u = float(np.linalg.norm(axes * camera.up))
        r, u = rel @ camera.right, rel @ camera.up
        boxes.append((r - half_r, r + half_r, u - half_u, u + half_u))
    b = np.array(boxes)
    return float(b[:, 0].min()), float(b[:, 1].max()), float(b[:, 2].min()), float(b[:, 3].max())


def sample_camera(view: str, rng: np.random.Generator, size: int, shape: H.HeadShape) -> H.Camera:
    """The camera of one photo: angles, roll and stretch drawn for ``view``, framed on the
    head's outline plus some room below it for the body (a close-up, now and then cut off
    at an edge).

    Args:
        view: one of `data.vocab.VIEWS`.
        rng: the photo's generator.
        size: picture side in pixels.
        shape: the subject's head, whose outline the frame is sized on.
    """
    # fill: outline size / picture size; below: room added under the outline, as a share
    # of its height (neck, collar and shoulders); shift: slide of the frame (right, up) as
    # a share of its half side; tilt: roll of the picture on top of a small random one.
    tilt = 0.0
    if view == "front":  # looking down at the forehead; brows and eyes at the bottom
        az, el = rng.normal(0, 0.15), rng.uniform(0.3, 0.9)
        fill, below, shift = rng.uniform(0.95, 1.3), 0.0, (0.0, rng.uniform(-0.05, 0.15))
    elif view == "top":  # the crown from above, shoulders around it
        az, el = rng.uniform(-0.4, 0.4), rng.uniform(1.1, 1.5)
        fill, below, shift = rng.uniform(0.85, 1.2), 0.0, (0.0, rng.uniform(-0.1, 0.1))
    elif view == "back":  # the nape, the neck and the collar fill the bottom third
        # Level with the nape or from above it (crown and nape both in the picture).
        az, el = np.pi + rng.normal(0, 0.2), rng.uniform(-0.1, 1.0)
        fill, below, shift = rng.uniform(1.05, 1.35), rng.uniform(0.1, 0.45), (0.0, rng.uniform(-0.1, 0.05))
    elif view in ("left", "right"):  # the whole profile, face and chin included
        sign = 1.0 if view == "left" else -1.0
        # Turned a little towards the face more often than away: the eye and cheek show.
        az, el = sign * (np.pi / 2 + rng.normal(-0.12, 0.22)), rng.uniform(-0.1, 0.4)
        # People look down (at the floor, into the phone): seen from the side, a head
        # bowed forward is the picture turned, nose down.
        tilt = -sign * rng.uniform(-0.1, 0.45)
        fill, below, shift = rng.uniform(0.95, 1.25), rng.uniform(0.0, 0.2), (rng.uniform(-0.06, 0.06), 0.0)
    else:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    roll = tilt + rng.normal(0, 0.12)
    # Phones shoot 3:4 or 9:16 and exports stretch to a square: squash or stretch a third.
    aspect = float(np.exp(rng.uniform(-0.28, 0.28))) if rng.random() < 0.35 else 1.0
    probe = H.make_camera(az, el, roll, np.zeros(3), 1.0, size, aspect)
    r0, r1, u0, u1 = _outline_box(shape, probe, _FRAMED_PARTS[view])
    u0 -= below * (u1 - u0)
    half = max((r1 - r0) * aspect, u1 - u0) / 2
    extent = half / fill
    # Centre on the outline, then slide the frame a little (heads are rarely centred).
    offset = rng.normal(0.0, 0.06, 2) * extent + np.array(shift) * extent
    target = probe.right * ((r0 + r1) / 2 + offset[0]) + probe.up * ((u0 + u1) / 2 + offset[1])
    return H.make_camera(az, el, roll, target, extent, size, aspect)


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A household colour: a random colour pulled towards its grey, now and then vivid."""
    colour = rng.uniform(0.05, 1.0, 3)
    grey = colour.mean()
    return grey + (colour - grey) * (1.0 if rng.random() < 0.15 else rng.uniform(0.15, 0.5))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A room or wall behind the head: soft gradient, a few out-of-focus objects."""
    small = 12
    # Walls, doors and ceilings are mostly white, beige, grey or wood; a few are coloured.
    wall = rng.uniform(0.35, 0.95) * np.array([1.0, 0.96, 0.9]) * (1 + rng.normal(0, 0.05, 3))
    grad = np.linspace(rng.uniform(0.75, 1.15), rng.uniform(0.75, 1.15), small)[:, None, None]
    img = np.ones((small, small, 3)) * wall * grad
    for _ in range(int(rng.integers(0, 5))):
        x0, y0 = rng.integers(0, small, 2)
        w, h = rng.integers(1, small // 2 + 1, 2)
        img[y0 : y0 + h, x0 : x0 + w] = _muted(rng)
    img = cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:  # wallpaper, tiles or a patterned sofa
        period = rng.uniform(0.03, 0.12) * size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period))
        img *= (1 + rng.uniform(0.05, 0.25) * np.sign(wave))[..., None]
    for _ in range(int(rng.integers(0, 3))):  # sharp edges: door frames, shelves, furniture
        colour = tuple(float(v) for v in _muted(rng))
        x0, y0 = (int(v) for v in rng.integers(-size // 4, size, 2))
        w, h = (int(v) for v in rng.integers(size // 16, size // 2, 2))
        thickness = -1 if rng.random() < 0.5 else max(1, size // 50)
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), colour, thickness)
    img *= _smooth_noise(rng, size, 32, 0.95, 1.05)[..., None]  # plaster, fabric, wood grain
    return np.clip(img, 0, 1)


def _soft_step(x: np.ndarray) -> np.ndarray:
    """0 below -1, 1 above 1, smooth in between."""
    return np.clip(0.5 + 0.5 * x, 0.0, 1.0)


def _contact_shadow(scene: H.Scene, body: np.ndarray) -> np.ndarray:
    """Darkening (S, S), 1 = none, where a surface lies behind its neighbourhood.

    Ellipsoids that merely meet read as pasted-on balls; real folds and contacts (under
    the jaw, behind the ear, the collar, the nape over the neck) are in shadow. Points
    further from the camera than the mean of their body neighbours get darker.
    """
    camera = scene.camera
    depth = (scene.point @ camera.back.astype(np.float32)) * body
    weight = body.astype(np.float32)
    sigma = 0.04 * camera.size
    mean = cv2.GaussianBlur(depth, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-3)
    behind = np.clip((mean - depth) / 0.15, 0.0, 1.0)  # world units: about 1.5 cm
    return (1.0 - 0.45 * behind * body).astype(np.float32)


def _face_features(alb: np.ndarray, scene: H.Scene, subject: Subject, rng: np.random.Generator) -> None:
    """Eyebrows, eyes, mouth and beard painted onto the face albedo, in place.

    The brows and eyes sit where the cranium ellipsoid, not the face ellipsoid, bulges
    forward (the forehead and brow ridge), so the low front of the cranium is painted too:
    without it no photo would show the eyes that real front and side photos show.
    """
    point = scene.point
    brow_ridge = (scene.part == H.CRANIUM) & (point[..., 1] > 0.3) & (point[..., 2] < 0.1)
    mask = (scene.part == H.FACE) | brow_ridge
    if not mask.any():
        return
    p = scene.point[mask]
    ax, z, y = np.abs(p[:, 0]), p[:, 2], p[:, 1]
    colours = alb[mask]
    hair = subject.hair_rgb.astype(np.float32)
    brow_rgb = hair * (0.6 if subject.hair_colour in ("blond", "grey", "red") else 1.0)
    front = y > 0.55
    brow = front & (np.abs(z - (-0.04 - 0.6 * (ax - 0.25) ** 2)) < 0.03) & (ax > 0.07) & (ax < 0.45)
    colours[brow] = colours[brow] * 0.2 + brow_rgb * 0.8
    # Eye sockets in shadow, lids half closed (people look down for these photos): a dark
    # lash line over a muted eye, no cartoon white and pupil.
    depth = 1 - (((ax - 0.24) / 0.17) ** 2 + ((z + 0.18) / 0.1) ** 2)
    socket = front & (depth > 0)
    colours[socket] *= (1 - 0.35 * np.sqrt(depth[socket]))[:, None]
    eye = front & (((ax - 0.24) / 0.09) ** 2 + ((z + 0.2) / 0.03) ** 2 < 1)
    colours[eye] = colours[eye] * 0.5 + 0.12
    iris = eye & (np.abs(ax - 0.24) < 0.025)
    colours[iris] *= 0.35
    lash = front & (((ax - 0.24) / 0.1) ** 2 + ((z + 0.175) / 0.012) ** 2 < 1)
    colours[lash] *= 0.3
    mouth = front & (ax < 0.17) & (np.abs(z + 0.88) < 0.02)
    colours[mouth] = colours[mouth] * np.array([0.85, 0.62, 0.6], dtype=np.float32)
    if subject.beard > 0:
        # Stubble fading in over the jaw, chin and upper lip (a soft edge, not a mask).
        chin = _soft_step((-0.62 - z) / 0.05)
        jaw = np.maximum(chin, _soft_step((ax - 0.4) / 0.04) * _soft_step((-0.36 - 0.25 * y - z) / 0.05))
        lip = front * _soft_step((0.2 - ax) / 0.03) * _soft_step((0.045 - np.abs(z + 0.8)) / 0.015)
        beard = np.maximum(jaw, lip) * ~mouth
        amount = (subject.beard * beard * rng.uniform(0.3, 1.0, len(beard))).astype(np.float32)
        colours[:] = colours * (1 - amount[:, None]) + hair * amount[:, None]
    alb[mask] = colours


def render_photo(
    subject: Subject,
    view: str,
    rng: np.random.Generator,
    size: int,
    *,
    rotate_prob: float = 0.5,
) -> Photo:
    """Render ``subject`` from ``view`` at ``size`` x ``size`` pixels.

    Args:
        subject: the person (same for all their views).
        view: one of `data.vocab.VIEWS`.
        rng: the photo's own generator (camera, light, background, strands).
        size: picture side in pixels.
        rotate_prob: probability of a 90/180/270-degree rotation (phone photos and the
            real data set's augmentation have them).
    """
    shape = H.head_shape(*subject.shape)
    camera = sample_camera(view, rng, size, shape)
    scene = H.cast(shape, camera)
    part, normal = scene.part, scene.normal
    body = part != H.BACKGROUND

    # Albedo per part.
    skin = subject.skin_rgb.astype(np.float32)
    ruddy = skin * np.array([1.02, 0.93, 0.92], dtype=np.float32)
    cloth = (_muted(rng) * rng.uniform(0.3, 1.0)).astype(np.float32)
    table = np.stack([np.zeros(3, np.float32), skin, skin, ruddy, ruddy, ruddy, skin * 0.96, cloth])
    alb = table[part]
    # Blotchy tone and fine skin texture (pores, stubble shadow).
    texture = cv2.resize(rng.uniform(0.95, 1.05, (size // 2, size // 2)).astype(np.float32), (size, size))
    alb *= (_smooth_noise(rng, size, 6, 0.92, 1.08) * texture)[..., None]
    if rng.random() < 0.4:  # striped or checked shirt
        shirt = part == H.SHOULDERS
        stripes = np.sin(scene.point[..., 0][shirt] * rng.uniform(15, 40)) > 0
        alb[shirt] *= np.where(stripes, rng.uniform(0.5, 0.85), 1.0).astype(np.float32)[:, None]
    _face_features(alb, scene, subject, rng)
    for ear in (H.EAR_LEFT, H.EAR_RIGHT):
        mask = part == ear
        if mask.any():
            local = (scene.point[mask] - shape.centres[ear - 1]) / shape.axes[ear - 1]
            # Shell of the ear: a lit rim (helix) around a shadowed hollow (concha).
            r = np.sqrt((local[:, 1] / 0.7) ** 2 + ((local[:, 2] + 0.1) / 0.8) ** 2)
            hollow = np.clip(1.0 - r, 0.0, 1.0) * 1.6
            rim = np.clip((r - 0.8) * 5.0, 0.0, 1.0) * np.clip((1.05 - r) * 5.0, 0.0, 1.0)
            alb[mask] *= np.clip(1.0 - 0.45 * hollow + 0.12 * rim, 0.4, 1.2)[:, None]

    # Scalp maps on the cranium pixels.
    cranium = np.flatnonzero(part.ravel() == H.CRANIUM)
    centre, axes = shape.cranium_centre.astype(np.float32), shape.cranium_axes.astype(np.float32)
    q = (scene.point.reshape(-1, 3)[cranium] - centre) / axes
    q /= np.sqrt(np.maximum(np.einsum("ij,ij->i", q, q), 1e-12))[:, None]
    maps = scalp_maps(q, subject)
    flat_alb = alb.reshape(-1, 3)
    scar_rgb = skin * 0.55 + np.array([0.95, 0.82, 0.8], dtype=np.float32) * 0.45
    flat_alb[cranium[maps.scar_skin]] = scar_rgb

    density = np.zeros(size * size, dtype=np.float32)
    density[cranium] = maps.density
    density = density.reshape(size, size) * _smooth_noise(rng, size, 10, 0.75, 1.25)
    long_hair = subject.sex == "female"
    under_k = 0.95 if long_hair else 0.5 + 0.45 * min(subject.hair_length / 0.15, 1.0)
    cover = np.clip(cv2.GaussianBlur(density * under_k, (0, 0), 1.0), 0, 1)
    bare = np.zeros(size * size, dtype=bool)
    bare[cranium] = maps.bare_skin
    cover[bare.reshape(size, size)] = 0.0  # scars and patches keep their sharp border
    hair_rgb = subject.hair_rgb.astype(np.float32)
    # The hair mass has the mean colour of its strands (grey hair is a salt-and-pepper
    # mix, not a grey sheet) and a fine grain, so it reads as hair rather than paint.
    white = 0.8 * subject.white_fraction
    mean_rgb = hair_rgb * (1 - white) + np.float32(0.8 * white)
    grain = (1 + 4.0 * (texture - 1))[..., None]
    mass_rgb = mean_rgb * 0.65 * grain
    alb = alb * (1 - cover[..., None]) + mass_rgb * cover[..., None]

    # Light from above (ceiling), sometimes from the camera (flash). Shading uses normals
    # smoothed across the seams where the ellipsoids meet (a chin or an ear glued onto a
    # sphere reads as a cartoon), wrap-around diffuse light, shadows that turn warm (light
    # scattered under the skin) and a broad plus a sharp highlight where the scalp is bare.
    up = np.array([0.0, 0.0, 1.0])
    light = up * rng.uniform(0.5, 1.0) + camera.back * rng.uniform(0.0, 0.9)
    light = light + camera.right * rng.normal(0, 0.4)
    light = (light / np.linalg.norm(light)).astype(np.float32)
    half = light + camera.back.astype(np.float32)
    half /= np.linalg.norm(half)
    k = 2 * int(0.02 * size) + 1
    soft = cv2.blur(normal, (k, k))
    soft /= np.sqrt(np.maximum(np.einsum("ijk,ijk->ij", soft, soft), 1e-12))[..., None]
    tint = np.array([1.0, rng.uniform(0.94, 1.0), rng.uniform(0.84, 1.04)], dtype=np.float32)
    ambient = rng.uniform(0.25, 0.5)
    wrap = rng.uniform(0.15, 0.5)
    diffuse = np.clip((soft @ light + wrap) / (1 + wrap), 0, 1)
    facing_cam = np.clip(soft @ camera.back.astype(np.float32), 0, 1)
    shade = ((ambient + (1 - ambient) * diffuse) * (0.75 + 0.25 * np.sqrt(facing_cam))).astype(np.float32)
    shade *= _contact_shadow(scene, body)
    warm = np.array([0.2, 0.0, -0.1], dtype=np.float32)
    shade_rgb = shade[..., None] * (1 + (1 - shade)[..., None] * warm)
    oily = _smooth_noise(rng, size, 5, 0.5, 1.4)
    sheen = rng.uniform(0.04, 0.14)  # hair reflects too, less sharply than skin
    scalp_shine = rng.uniform(0.2, 0.7) * (1 - cover) * oily + sheen * cover
    shine = np.where(part == H.CRANIUM, scalp_shine, 0.1 * oily)
    shine = np.where((part == H.FACE) | (part == H.NOSE), 0.2 * oily, shine)
    n_half = np.clip(soft @ half, 0, 1)
    broad = n_half ** np.float32(rng.uniform(5, 12))
    sharp = broad * broad  # three squarings: the sharp lobe's exponent is 8x the broad one's
    sharp *= sharp
    sharp *= sharp
    lobes = 0.35 * broad + sharp
    spec = (lobes * shine).astype(np.float32)
    lit = (alb * shade_rgb + spec[..., None]) * tint
    image = np.where(body[..., None], lit, _background(rng, size) * rng.uniform(0.8, 1.1))

    # Strands.
    facing = np.clip(normal.reshape(-1, 3)[cranium] @ camera.back.astype(np.float32), 0.4, 1.0)
    # Thinning scalp keeps many fine, faint vellus hairs, not a few dark ones.
    prob = subject.density * density.ravel()[cranium] / facing * (1 + 1.5 * maps.fine)
    if long_hair:
        prob *= 0.6
    # Below 256 px one pixel holds several strands, each fainter: draw as many strands per
    # unit of scalp, as fine, as a 256 px photo shrunk to this size shows (hair is a fine
    # texture in a close-up, not a few thick lines).
    supersample = min(max(256.0 / size, 1.0), 2.0)
    reps = int(round(supersample**2))
    candidates = np.tile(np.arange(len(cranium)), reps) if reps > 1 else np.arange(len(cranium))
    pick = candidates[rng.random(len(candidates)) < np.minimum(prob[candidates], 1.0)]
    roots_idx = cranium[pick]
    qs = q[pick]
    direction = hair_directions(qs, subject)
    lift = subject.lift
    world = (direction * (1 - lift) + qs * lift) * shape.cranium_axes
    world /= np.linalg.norm(world, axis=1, keepdims=True)
    image_dir = camera.vector_to_pixels(world) / camera.scale
    foreshort = np.maximum(np.linalg.norm(image_dir, axis=1), 1e-3)
    image_dir /= foreshort[:, None]
    n = len(roots_idx)
    fine = rng.random(n) < maps.fine[pick]
    lengths = subject.hair_length * camera.scale * foreshort * rng.uniform(0.6, 1.25, n)
    lengths[fine] *= 0.45
    if not long_hair:  # men's hair is cut shorter at the sides and the nape
        lengths *= 0.4 + 0.6 * np.clip((qs[:, 2] + 0.1) / 0.7, 0.0, 1.0)
    roots = np.stack([roots_idx % size, roots_idx // size], axis=1) + rng.random((n, 2))
    segments = 6 if long_hair else 3
    droop = camera.vector_to_pixels(np.array([0.0, 0.0, -1.0]))
    droop = droop / max(np.linalg.norm(droop), 1e-6)
    droop = droop * (subject.hair_length * camera.scale / segments) * (0.35 if long_hair else 0.08)
    curl = subject.curl * rng.uniform(0.5, 1.5, n)
    polylines = strand_polylines(roots, image_dir, lengths, segments=segments, curl=curl, gravity=droop)
    calibre = rng.uniform(0.4, 0.8) * 255 / supersample
    alpha = np.zeros((size, size), dtype=np.uint8)
    paint_strands(alpha, polylines[~fine], calibre)
    paint_strands(alpha, polylines[fine], calibre * 0.22)
    highlight = np.zeros((size, size), dtype=np.uint8)
    share = subject.white_fraction if subject.white_fraction else 0.3
    paint_strands(highlight, polylines[rng.random(n) < share], 255)
    a = alpha.astype(np.float32) / 255
    h = highlight.astype(np.float32)[..., None] / 255
    if subject.white_fraction:
        strand_rgb = hair_rgb * (1 - h) + np.float32(0.75) * h
    else:
        strand_rgb = hair_rgb * (1 + 0.7 * h) + np.float32(sheen) * h
    strand_shade = np.where(body, shade, 0.85).astype(np.float32)[..., None]
    # Where strands crowd, hair is opaque (a mass, not single lines over skin).
    mass = np.clip(cv2.GaussianBlur(a, (0, 0), 1.2) * 1.5, 0, 1)[..., None]
    light_rgb = strand_shade * tint
    image = image.astype(np.float32)
    image += (light_rgb * (mean_rgb * np.float32(0.65)) - image) * mass
    image += (strand_rgb * light_rgb - image) * a[..., None]

    # Labels: zones where the scalp is visible; loss where it is visible and not hidden.
    zones = np.zeros(size * size, dtype=np.uint8)
    zones[cranium] = maps.zone_bits
    zones = zones.reshape(size, size)
    hidden = cv2.blur(np.maximum(np.maximum(a, cover), mass[..., 0]), (5, 5)) > _COVERED
    loss = np.zeros(size * size, dtype=np.uint8)
    loss[cranium] = maps.loss_bits
    loss = loss.reshape(size, size)
    loss[hidden] = 0
    conditions = {}
    for name in CONDITIONS:
        bit = condition_bit(name)
        present = int(np.count_nonzero(loss & bit) >= min_loss_pixels(size))
        if not present:
            loss &= ~np.uint8(bit)
        conditions[name] = present

    # The camera: exposure, colour cast, blur, sensor noise.
    gain = (rng.uniform(1.0, 1.45) * 255) * rng.uniform(0.94, 1.06, 3).astype(np.float32)
    sigma = rng.uniform(0.45, 1.4) * size / 256
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma) * gain
    grain = rng.standard_normal((size, size, 1), dtype=np.float32)
    image += grain * np.float32(rng.uniform(1.0, 7.0))
    image = np.clip(image, 0, 255).astype(np.uint8)

    rotation = 0
    if rng.random() < rotate_prob:
        turns = int(rng.integers(1, 4))
        rotation = 90 * turns
        image, zones, loss = (np.ascontiguousarray(np.rot90(x, turns)) for x in (image, zones, loss))
    return Photo(image=image, zones=zones, loss=loss, view=view, conditions=conditions, rotation=rotation)
