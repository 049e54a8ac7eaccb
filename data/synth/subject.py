"""One synthetic person: everything that stays the same across their photos.

A subject is drawn from its own seed, so any worker can rebuild it for any of its views
and every view agrees on skin, hair, head shape, stage and conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scalpscan.data.vocab import HAIR_COLOURS, SKIN_TONES

__all__ = ["Patch", "Subject", "sample_subject", "SKIN_RGB", "HAIR_RGB"]

#: Typical skin albedo (linear-ish RGB, 0..1) per Fitzpatrick type.
SKIN_RGB: dict[str, tuple[float, float, float]] = {
    "I": (0.97, 0.80, 0.76),
    "II": (0.93, 0.72, 0.65),
    "III": (0.82, 0.60, 0.50),
    "IV": (0.64, 0.45, 0.31),
    "V": (0.45, 0.30, 0.20),
    "VI": (0.27, 0.18, 0.12),
}

#: Typical hair albedo per colour (grey is a dark base plus white strands).
HAIR_RGB: dict[str, tuple[float, float, float]] = {
    "black": (0.07, 0.06, 0.055),
    "brown": (0.24, 0.16, 0.10),
    "blond": (0.74, 0.60, 0.40),
    "red": (0.46, 0.23, 0.13),
    "grey": (0.30, 0.29, 0.28),
}

# Drawn to resemble clinic and phone photos: dark and grey hair most often, every
# combination still present (low-contrast blond on type I and black on type VI included).
_SKIN_WEIGHTS = (0.1, 0.22, 0.25, 0.2, 0.13, 0.1)
_HAIR_WEIGHTS = (0.33, 0.28, 0.06, 0.03, 0.3)

# Norwood stage -> (mid-frontal recession, temple recession, vertex radius, lateral limit),
# angles in radians on the unit cranium; see conditions.male_pattern_loss.
_NORWOOD: dict[int, tuple[float, float, float, float]] = {
    1: (0.0, 0.0, 0.0, 0.8),
    2: (0.04, 0.22, 0.0, 0.8),
    3: (0.1, 0.42, 0.0, 0.8),
    4: (0.32, 0.52, 0.36, 0.82),
    5: (0.52, 0.62, 0.52, 0.84),
    6: (1.6, 0.3, 0.7, 0.88),
    7: (1.85, 0.2, 0.92, 0.98),
}


@dataclass(frozen=True)
class Patch:
    """An alopecia areata patch: an ellipse on the unit cranium sphere."""

    centre: np.ndarray  # unit vector
    axis1: np.ndarray  # unit tangent along the first radius
    axis2: np.ndarray  # unit tangent along the second radius
    radius1: float  # radians
    radius2: float


@dataclass(frozen=True)
class Subject:
    """A synthetic person; see `sample_subject` for how each field is drawn."""

    index: int
    sex: str
    skin_tone: str
    skin_rgb: np.ndarray
    hair_colour: str
    hair_rgb: np.ndarray
    white_fraction: float  # share of white strands (grey hair)
    shape: tuple[float, float, float]  # cranium width, length, height factors
    stage: int | None  # Norwood stage for men, None for women
    pattern: tuple[float, float, float, float]  # male recession parameters (see _NORWOOD)
    crown_centre: tuple[float, float]  # (sagittal, lateral) angle of the vertex/whorl
    hairline: float  # sagittal angle of the natural frontal hairline
    female_severity: int  # Ludwig 0 (none) .. 3
    part: float | None  # lateral angle of the part line, None = no part
    density: float  # strands per pixel at full density (at 256 px)
    hair_length: float  # world units
    curl: float  # radians of turn per strand segment
    lift: float  # how much strands stand off the scalp
    patches: tuple[Patch, ...]
    strip_scar: float | None  # elevation of the strip scar centre line, None = none
    fue: bool
    plugs: bool
    beard: float  # 0 = clean shaven .. 1 = full beard
    fue_table: np.ndarray = field(repr=False)  # (32, 64, 3): dot offsets and presence


def _choice(rng: np.random.Generator, names: tuple[str, ...], weights) -> str:
    return names[int(rng.choice(len(names), p=np.asarray(weights) / np.sum(weights)))]


def _sample_patch(rng: np.random.Generator) -> Patch:
    # Anywhere on the hair-bearing scalp: top, sides or back.
    while True:
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        if v[2] > -0.35 and not (v[1] > 0.75 and v[2] < 0.45):
            break
    helper = np.array([0.0, 0.0, 1.0]) if abs(v[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    t1 = np.cross(v, helper)
    t1 /= np.linalg.norm(t1)
    t2 = np.cross(v, t1)
    angle = rng.uniform(0, np.pi)
    a1 = np.cos(angle) * t1 + np.sin(angle) * t2
    a2 = np.cross(v, a1)
    r1 = rng.uniform(0.1, 0.3)
    r2 = r1 * rng.uniform(0.6, 1.0)
    return Patch(centre=v, axis1=a1, axis2=a2, radius1=r1, radius2=r2)


def sample_subject(
    rng: np.random.Generator,
    index: int,
    *,
    male_fraction: float = 0.7,
    condition_rate: float = 1.0,
) -> Subject:
    """Draw one person.

    Args:
        rng: the subject's own generator.
        index: subject number within the data set.
        male_fraction: probability the subject is male.
        condition_rate: multiplies the probabilities of alopecia patches and transplant
            scarring (1 = defaults, 0 = never).
    """
    sex = "male" if rng.random() < male_fraction else "female"
    skin_tone = _choice(rng, SKIN_TONES, _SKIN_WEIGHTS)
    hair_colour = _choice(rng, HAIR_COLOURS, _HAIR_WEIGHTS)
    skin = np.array(SKIN_RGB[skin_tone]) * rng.uniform(0.92, 1.06, 3)
    hair = np.array(HAIR_RGB[hair_colour]) * rng.uniform(0.8, 1.2) * rng.uniform(0.93, 1.07, 3)
    white = rng.uniform(0.35, 0.85) if hair_colour == "grey" else 0.0
    shape = tuple(rng.uniform(0.93, 1.07, 3))
    hairline = rng.uniform(1.12, 1.26)
    crown = (rng.uniform(-0.5, -0.2), rng.normal(0.0, 0.08))

    if sex == "male":
        stage = 1 if rng.random() < 0.22 else int(rng.integers(2, 8))
        base = np.array(_NORWOOD[stage])
        jitter = rng.uniform(0.85, 1.15, 4)
        jitter[3] = rng.uniform(0.97, 1.03)
        pattern = tuple(base * jitter)
        if stage == 3 and rng.random() < 0.3:  # Norwood 3 vertex
            pattern = (pattern[0], pattern[1], rng.uniform(0.2, 0.3), pattern[3])
        severity = 0
        part = float(rng.uniform(0.2, 0.45) * rng.choice([-1, 1])) if rng.random() < 0.4 else None
        length = rng.uniform(0.05, 0.22)
        density = rng.uniform(0.12, 0.26)
        beard = float(rng.uniform(0.15, 0.75)) if rng.random() < 0.45 else 0.0
    else:
        stage = None
        pattern = (0.0, 0.0, 0.0, 0.8)
        severity = 0 if rng.random() < 0.45 else int(rng.integers(1, 4))
        part = float(rng.normal(0.0, 0.06)) if rng.random() < 0.9 else None
        length = rng.uniform(0.3, 0.7)
        density = rng.uniform(0.08, 0.14)
        beard = 0.0

    patches: tuple[Patch, ...] = ()
    if rng.random() < 0.22 * condition_rate:
        count = int(rng.choice([1, 1, 1, 2, 2, 3, 4]))
        patches = tuple(_sample_patch(rng) for _ in range(count))

    strip: float | None = None
    fue = plugs = False
    if rng.random() < (0.28 if sex == "male" else 0.06) * condition_rate:
        kinds = rng.random(3) < (0.55, 0.5, 0.4 if stage and stage >= 2 else 0.0)
        if not kinds.any():
            kinds[int(rng.integers(2))] = True
        strip = float(rng.uniform(-0.35, -0.15)) if kinds[0] else None
        fue, plugs = bool(kinds[1]), bool(kinds[2])
        length = min(length, rng.uniform(0.03, 0.08))  # scars show on short hair
    fue_table = rng.random((32, 64, 3))
    return Subject(
        index=index,
        sex=sex,
        skin_tone=skin_tone,
        skin_rgb=skin,
        hair_colour=hair_colour,
        hair_rgb=hair,
        white_fraction=white,
        shape=shape,
        stage=stage,
        pattern=pattern,
        crown_centre=crown,
        hairline=hairline,
        female_severity=severity,
        part=part,
        density=density,
        hair_length=length,
        curl=float(rng.uniform(0.0, 0.5) * rng.choice([-1, 1])),
        lift=float(rng.uniform(0.05, 0.35) if sex == "male" else rng.uniform(0.03, 0.15)),
        patches=patches,
        strip_scar=strip,
        fue=fue,
        plugs=plugs,
        beard=beard,
        fue_table=fue_table,
    )
