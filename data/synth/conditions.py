"""Where hair grows and where it is lost, as functions of the point on the scalp.

Everything here works on unit vectors ``q`` of the cranium (the scalp point relative to the
cranium's centre, divided by its semi-axes), so a subject's zones and conditions sit at the
same place on the head in every view. Angles used below:

- ``sagittal``: from the top of the head, + towards the face, - towards the nape;
- ``lateral``: asin(x), + on the person's LEFT, - on their right;
- ``azimuth``: around the vertical axis, 0 = face, +/-pi = back of the head;
- ``elevation``: above the ear-level horizontal plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit as _sigmoid

from scalpscan.data.synth.subject import Subject
from scalpscan.data.vocab import condition_bit, zone_bit

__all__ = ["ScalpMaps", "scalp_maps", "THINNING_THRESHOLD"]

#: Pattern-loss fraction (1 - density / natural density) from which a pixel counts as thinning.
THINNING_THRESHOLD = 0.4

_THIN = condition_bit("thinning")
_PATCH = condition_bit("alopecia_patch")
_SCAR = condition_bit("transplant_scar")

# Lower edge of the hair-bearing scalp (elevation) by |azimuth|: temple corner, sideburn,
# above the ear, behind the ear, nape. The frontal hairline is set by the subject instead.
_LOW_AZ = np.array([0.0, 0.7, 0.95, 1.2, 1.35, 1.6, 1.9, 2.3, np.pi])
_LOW_EL = np.array([-1.0, -1.0, 0.12, -0.1, -0.45, -0.2, -0.45, -0.75, -0.8])

# Female (Ludwig) severity -> (part half-width, part loss, crown radius, crown loss).
_LUDWIG = {
    0: (0.0, 0.0, 0.0, 0.0),
    1: (0.1, 0.55, 0.3, 0.45),
    2: (0.2, 0.7, 0.45, 0.55),
    3: (0.32, 0.85, 0.6, 0.7),
}


def _unit(lateral: float, sagittal: float) -> np.ndarray:
    rest = np.cos(lateral)
    return np.array([np.sin(lateral), rest * np.sin(sagittal), rest * np.cos(sagittal)])


@dataclass
class ScalpMaps:
    """Per-scalp-pixel maps (1-D arrays aligned with the ``q`` they were computed from)."""

    density: np.ndarray  # strands per unit of the subject's full density
    fine: np.ndarray  # share of miniaturised (vellus) strands 0..1
    loss_bits: np.ndarray  # uint8 OR of condition bits (before the visibility check)
    zone_bits: np.ndarray  # uint8 OR of zone bits
    scar_skin: np.ndarray  # bool: scar tissue (strip scar, FUE dots)
    bare_skin: np.ndarray  # bool: smooth bare skin (patches, plug gaps, scars)


def scalp_maps(q: np.ndarray, subject: Subject) -> ScalpMaps:
    """Density, loss and zones at cranium unit vectors ``q`` (n, 3)."""
    qx, qy, qz = q[:, 0], q[:, 1], q[:, 2]
    sagittal = np.arctan2(qy, qz)
    lateral = np.arcsin(np.clip(qx, -1.0, 1.0))
    azimuth = np.abs(np.arctan2(qx, qy))
    elevation = np.arcsin(np.clip(qz, -1.0, 1.0))
    abs_lat = np.abs(lateral)

    # Natural hair-bearing scalp: frontal hairline (curving back at the temples) and the
    # lower edge around the ears and nape.
    hairline = subject.hairline - 0.12 * (lateral / 0.6) ** 2
    front = np.maximum(
        _sigmoid((hairline - sagittal) / 0.03), _sigmoid((abs_lat - 0.85) / 0.05)
    )
    low = np.interp(azimuth, _LOW_AZ, _LOW_EL)
    natural = front * _sigmoid((elevation - low) / 0.04)
    hair_bearing = natural > 0.5

    crown = _unit(subject.crown_centre[1], subject.crown_centre[0])
    crown_dist = np.arccos(np.clip(q @ crown, -1.0, 1.0))

    # Pattern loss.
    loss = np.zeros(len(q))
    if subject.sex == "male":
        mid, temple, vertex, lat_limit = subject.pattern
        if mid > 0 or temple > 0:
            recession = hairline - mid - temple * np.exp(-(((abs_lat - 0.5) / 0.18) ** 2))
            # Soft borders: real recession fades over a few centimetres of ever finer,
            # sparser hair rather than stopping at a line.
            loss = _sigmoid((sagittal - recession) / 0.1) * _sigmoid((lat_limit - abs_lat) / 0.08)
        if vertex > 0:
            loss = np.maximum(loss, _sigmoid((vertex - crown_dist) / 0.1))
    elif subject.female_severity:
        half, part_loss, radius, crown_loss = _LUDWIG[subject.female_severity]
        part = subject.part or 0.0
        along = _sigmoid((hairline - 0.12 - sagittal) / 0.05) * _sigmoid((sagittal + 0.5) / 0.1)
        loss = part_loss * _sigmoid((half - np.abs(lateral - part)) / 0.05) * along
        loss = np.maximum(loss, crown_loss * _sigmoid((radius - crown_dist) / 0.12))

    density = natural * (1.0 - 0.96 * loss)
    fine = np.clip(loss * 1.2, 0.0, 0.97)
    loss_bits = np.where(hair_bearing & (loss >= THINNING_THRESHOLD), _THIN, 0).astype(np.uint8)
    scar_skin = np.zeros(len(q), dtype=bool)
    bare = np.zeros(len(q), dtype=bool)

    # Alopecia areata: sharply bordered, smooth, completely bare ellipses.
    for patch in subject.patches:
        u1 = (q @ patch.axis1) / patch.radius1
        u2 = (q @ patch.axis2) / patch.radius2
        inside = (u1 * u1 + u2 * u2 < 1.0) & (q @ patch.centre > 0) & hair_bearing
        bare |= inside
        loss_bits[inside] |= _PATCH

    # Transplant scarring.
    if subject.strip_scar is not None:
        line = subject.strip_scar + 0.03 * np.sin(3.0 * azimuth)
        strip = (np.abs(elevation - line) < 0.03) & (azimuth > 1.75) & hair_bearing
        scar_skin |= strip
        loss_bits[strip] |= _SCAR
    donor = (azimuth > 1.5) & (elevation > -0.65) & (elevation < 0.15)
    if subject.fue:
        table = subject.fue_table
        az_signed = np.arctan2(qx, qy)
        fa = (az_signed + np.pi) / (2 * np.pi) * table.shape[1]
        fe = (elevation + np.pi / 2) / np.pi * table.shape[0]
        ia = np.clip(fa.astype(int), 0, table.shape[1] - 1)
        ie = np.clip(fe.astype(int), 0, table.shape[0] - 1)
        cell = table[ie, ia]
        da = (fa - ia - (0.2 + 0.6 * cell[:, 0])) * (2 * np.pi / table.shape[1]) * np.cos(elevation)
        de = (fe - ie - (0.2 + 0.6 * cell[:, 1])) * (np.pi / table.shape[0])
        dots = (da * da + de * de < 0.017**2) & (cell[:, 2] < 0.6) & donor & hair_bearing
        density = np.where(donor, density * 0.7, density)
        scar_skin |= dots
        loss_bits[dots] |= _SCAR
    if subject.plugs:
        band = (sagittal > hairline - 0.32) & (sagittal < hairline + 0.01) & (abs_lat < 0.6)
        band &= natural > 0.4
        rows = (hairline - sagittal) / 0.075
        cols = lateral / 0.075 + 0.5 * (np.floor(rows) % 2)
        dr = rows - np.floor(rows) - 0.5
        dc = cols - np.floor(cols) - 0.5
        plug = (dr * dr + dc * dc) < 0.09
        density = np.where(band, np.where(plug, 1.6, 0.0), density)
        fine = np.where(band, 0.0, fine)
        loss_bits[band] = (loss_bits[band] & np.uint8(0xFF ^ _THIN)) | _SCAR
        bare |= band & ~plug

    bare |= scar_skin
    density = np.where(bare, 0.0, density)

    # Anatomical zones (independent of loss).
    zones = np.zeros(len(q), dtype=np.uint8)
    zones[(sagittal > subject.hairline - 0.3) & (sagittal < subject.hairline + 0.06) & (abs_lat < 0.45) & (qy > 0)] |= zone_bit("hairline")
    zones[crown_dist < 0.5] |= zone_bit("crown")
    temple = (sagittal > subject.hairline - 0.5) & (sagittal < subject.hairline + 0.4) & (qy > 0)
    zones[temple & (lateral > 0.42) & (lateral < 0.88)] |= zone_bit("temple_left")
    zones[temple & (lateral < -0.42) & (lateral > -0.88)] |= zone_bit("temple_right")
    if subject.part is not None:
        part_line = (np.abs(lateral - subject.part) < 0.045) & (sagittal > -0.25) & (sagittal < subject.hairline)
        zones[part_line] |= zone_bit("part")
    zones[(azimuth > 1.85) & (elevation > -0.62) & (elevation < 0.12)] |= zone_bit("donor")

    return ScalpMaps(
        density=density,
        fine=fine,
        loss_bits=loss_bits,
        zone_bits=zones,
        scar_skin=scar_skin,
        bare_skin=bare,
    )
