"""The label vocabulary: conditions, Norwood stages, views and zones, defined once.

Every other module (importers, renderer, network heads, metrics, rules, reports) takes
its names and orders from here, so a checkpoint's vocabulary and a manifest's columns
always agree.
"""

from __future__ import annotations

__all__ = [
    "CONDITIONS",
    "STAGES",
    "VIEWS",
    "ZONES",
    "VIEW_MIRROR",
    "ZONE_MIRROR",
    "TTA_MODES",
    "OUTPUTS",
    "MANIFEST_COLUMNS",
    "SKIN_TONES",
    "HAIR_COLOURS",
    "SEXES",
    "condition_bit",
    "zone_bit",
    "stage_to_index",
    "index_to_stage",
    "parse_view",
    "tta_mode",
]

#: Image-level, multi-label findings. None of them set means no visible loss.
#: The order is also the bit order of `loss_mask` PNGs (bit 0 = thinning).
CONDITIONS: tuple[str, ...] = ("thinning", "alopecia_patch", "transplant_scar")

#: Norwood-Hamilton stages, ordinal. Networks predict index ``stage - 1``.
STAGES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)

#: Camera views of the head.
VIEWS: tuple[str, ...] = ("front", "top", "back", "left", "right")

#: Scalp zones. The order is the bit order of `zone_mask` PNGs (bit 0 = hairline).
ZONES: tuple[str, ...] = ("hairline", "crown", "temple_left", "temple_right", "part", "donor")

#: Under a horizontal flip the left and right views and temples trade places:
#: ``VIEW_MIRROR[i]`` is the index of the view that view ``i`` becomes (likewise zones).
VIEW_MIRROR: tuple[int, ...] = tuple(
    VIEWS.index({"left": "right", "right": "left"}.get(v, v)) for v in VIEWS)
ZONE_MIRROR: tuple[int, ...] = tuple(
    ZONES.index({"temple_left": "temple_right", "temple_right": "temple_left"}.get(z, z))
    for z in ZONES)

#: Test-time augmentation modes: the passes each one averages, as (counter-clockwise
#: quarter turns, mirrored first). A turn keeps views and temples as they are (a turned
#: left profile is still the left view); a mirror swaps them (`VIEW_MIRROR`). Both the
#: torch evaluation and the NumPy predictor build their passes from this table.
TTA_MODES: dict[str, tuple[tuple[int, bool], ...]] = {
    "flip": ((0, False), (0, True)),
    "rot": ((0, False), (1, False), (2, False), (3, False)),
    "d4": tuple((turns, mirror) for mirror in (False, True) for turns in range(4)),
}

#: The outputs a result row reports, each of which a model may not assess (a head that no
#: label trained): rows list those under "not_assessed" and give them null, never a guess.
#: ``hairloss`` is the loss fraction of each zone (from the hair-loss map).
OUTPUTS: tuple[str, ...] = (*CONDITIONS, "stage", "view", "zones", "hairloss")

#: Columns every manifest has, in this order; further columns are allowed and kept.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image",
    "subject",
    "view",
    *CONDITIONS,
    "stage",
    "zone_mask",
    "loss_mask",
)

#: Fitzpatrick skin types, as the renderer writes them in the `skin_tone` column.
SKIN_TONES: tuple[str, ...] = ("I", "II", "III", "IV", "V", "VI")

#: Hair colours the renderer draws (`hair_colour` column).
HAIR_COLOURS: tuple[str, ...] = ("black", "brown", "blond", "red", "grey")

#: Values of the `sex` column and of the intake sheet.
SEXES: tuple[str, ...] = ("male", "female")

# Spellings found in real file names and exports, mapped to the canonical view.
_VIEW_ALIASES: dict[str, str] = {
    "front": "front",
    "frontal": "front",
    "top": "top",
    "top-down": "top",
    "topdown": "top",
    "top_down": "top",
    "vertex": "top",
    "crown": "top",
    "back": "back",
    "rear": "back",
    "occipital": "back",
    "left": "left",
    "right": "right",
}


def condition_bit(name: str) -> int:
    """Bit value of a condition in a `loss_mask` PNG (``1 << index``)."""
    return 1 << CONDITIONS.index(name)


def zone_bit(name: str) -> int:
    """Bit value of a zone in a `zone_mask` PNG (``1 << index``)."""
    return 1 << ZONES.index(name)


def stage_to_index(stage: int) -> int:
    """Norwood stage 1-7 to class index 0-6.

    Raises:
        ValueError: if the stage is outside 1-7.
    """
    if stage not in STAGES:
        raise ValueError(f"Norwood stage must be one of {STAGES}, got {stage!r}")
    return stage - 1


def index_to_stage(index: int) -> int:
    """Class index 0-6 back to Norwood stage 1-7."""
    if not 0 <= index < len(STAGES):
        raise ValueError(f"stage index must be in 0..{len(STAGES) - 1}, got {index!r}")
    return STAGES[index]


def parse_view(text: str) -> str | None:
    """Canonical view name for a spelling such as ``Top-Down`` or ``frontal``.

    Returns None when the text names no known view.
    """
    key = text.strip().lower().replace(" ", "-")
    return _VIEW_ALIASES.get(key)


def tta_mode(value: bool | str | None) -> str | None:
    """Canonical test-time augmentation mode: None (off) or a key of `TTA_MODES`.

    ``False`` and ``None`` mean off; ``True`` means ``"flip"`` (what ``tta=True`` always
    meant).

    Raises:
        ValueError: for any other value, naming it and the allowed ones.
    """
    if value is None or value is False:
        return None
    if value is True:
        return "flip"
    if isinstance(value, str) and value in TTA_MODES:
        return value
    raise ValueError(f"tta={value!r} is not a test-time augmentation mode; use one of "
                     f"{', '.join(repr(m) for m in TTA_MODES)}, True (= 'flip') or False/None (off)")
