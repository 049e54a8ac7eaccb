"""What every importer shares: label names, the folder/class mapping, views and subjects
read from file names, and the result type."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scalpscan.data.decode import IMAGE_EXTENSIONS
from scalpscan.data.manifest import ManifestRow
from scalpscan.data.vocab import CONDITIONS, STAGES, ZONES, parse_view

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImportFormatError",
    "ImportResult",
    "LabelSet",
    "parse_labels",
    "parse_mapping",
    "labels_for_name",
    "normalise_name",
    "zone_for_name",
    "view_from_name",
    "subject_from_name",
    "DEFAULT_SUBJECT_PATTERN",
]


#: Default subject id: the file name's leading number ("17-Left.jpg" -> "17").
DEFAULT_SUBJECT_PATTERN = r"^(\d+)"

# Spellings of conditions met in folder and class names.
_CONDITION_ALIASES: dict[str, str] = {
    "thinning": "thinning",
    "thin": "thinning",
    "diffuse_thinning": "thinning",
    "diffuse": "thinning",
    "alopecia_patch": "alopecia_patch",
    "alopecia_patches": "alopecia_patch",
    "alopecia": "alopecia_patch",
    "alopecia_areata": "alopecia_patch",
    "patch": "alopecia_patch",
    "patches": "alopecia_patch",
    "bald_patch": "alopecia_patch",
    "transplant_scar": "transplant_scar",
    "transplant_scars": "transplant_scar",
    "transplant": "transplant_scar",
    "scar": "transplant_scar",
    "scars": "transplant_scar",
    "surgical_scar": "transplant_scar",
    "fue_scar": "transplant_scar",
    "fut_scar": "transplant_scar",
}
# Spellings of zones met in annotation tools' category names.
_ZONE_ALIASES: dict[str, str] = {
    **{z: z for z in ZONES},
    "frontal_hairline": "hairline",
    "front_hairline": "hairline",
    "vertex": "crown",
    "left_temple": "temple_left",
    "right_temple": "temple_right",
    "part_line": "part",
    "parting": "part",
    "donor_area": "donor",
    "donor_region": "donor",
}
_NONE_NAMES = frozenset({"none", "normal", "healthy", "no_loss", "negative", "clean"})
_SKIP_NAMES = frozenset({"ignore", "skip"})
_STAGE_PATTERN = re.compile(r"^(?:norwood|level|stage|nw|n|hamilton)[_:=]?([1-7])$")


class ImportFormatError(ValueError):
    """The source does not have the expected layout; the message names the file and the fix."""


@dataclass(frozen=True)
class LabelSet:
    """Labels a folder or class name stands for.

    Attributes:
        conditions: Condition name -> 1 (present) or 0 (absent); unnamed ones stay unknown.
        stage: Norwood stage, or None.
        view: View name, or None.
        zones: Zones the name's polygons draw (COCO categories), e.g. ``("crown",)``.
        skip: True when photos under this name are left out of the import.
    """

    conditions: dict[str, int] = field(default_factory=dict)
    stage: int | None = None
    view: str | None = None
    zones: tuple[str, ...] = ()
    skip: bool = False

    def merge(self, other: LabelSet, *, where: str) -> LabelSet:
        """Both label sets at once (multi-label); a conflict raises ImportFormatError."""
        conditions = dict(self.conditions)
        for name, value in other.conditions.items():
            conditions[name] = max(conditions.get(name, 0), value)
        for attr in ("stage", "view"):
            a, b = getattr(self, attr), getattr(other, attr)
            if a is not None and b is not None and a != b:
                raise ImportFormatError(f"{where}: two different {attr}s, {a!r} and {b!r}; expected one")
        return LabelSet(
            conditions=conditions,
            stage=self.stage if self.stage is not None else other.stage,
            view=self.view if self.view is not None else other.view,
            zones=tuple(dict.fromkeys(self.zones + other.zones)),
            skip=self.skip or other.skip,
        )


def normalise_name(text: str) -> str:
    """Lower case, runs of spaces and hyphens as one underscore (``Left Temple`` -> ``left_temple``)."""
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


def _parse_token(token: str) -> LabelSet | None:
    key = normalise_name(token)
    if key in _CONDITION_ALIASES:
        return LabelSet(conditions={_CONDITION_ALIASES[key]: 1})
    if key in _NONE_NAMES:
        return LabelSet(conditions=dict.fromkeys(CONDITIONS, 0))
    if key in _SKIP_NAMES:
        return LabelSet(skip=True)
    if key.startswith("zone") and key[4:5] in (":", "="):
        zone = _ZONE_ALIASES.get(key[5:])
        return LabelSet(zones=(zone,)) if zone else None
    match = _STAGE_PATTERN.match(key)
    if match:
        return LabelSet(stage=int(match.group(1)))
    if key.startswith("view") and key[4:5] in (":", "=", "_"):
        key = key[5:]
    view = parse_view(key.replace("_", "-")) or parse_view(key)
    if view is not None:
        return LabelSet(view=view)
    return None


def parse_labels(text: str, *, where: str = "label") -> LabelSet:
    """Parse a comma-separated label list such as ``thinning,stage:3`` or ``none``.

    Known words: condition names (and spellings like ``alopecia``, ``scar``), ``none``
    (no condition), ``stage:N`` / ``norwood_N`` / ``level_N`` (N in 1-7), view names
    (``front``, ``top-down``, ...), ``zone:NAME`` (COCO polygons of that zone), ``skip``.

    Raises:
        ImportFormatError: naming the word that is not understood and the known words.
    """
    result = LabelSet()
    tokens = [t for t in text.split(",") if t.strip()]
    if not tokens:
        raise ImportFormatError(f"{where}: empty label list; expected e.g. 'thinning' or 'stage:3'")
    for token in tokens:
        parsed = _parse_token(token)
        if parsed is None:
            raise ImportFormatError(
                f"{where}: unknown label {token.strip()!r}; expected one of {', '.join(CONDITIONS)}, "
                f"none, stage:N (N in {STAGES[0]}-{STAGES[-1]}), a view name, zone:NAME "
                f"(NAME in {', '.join(ZONES)}), or skip"
            )
        result = result.merge(parsed, where=where)
    return result


def labels_for_name(name: str, mapping: dict[str, LabelSet]) -> LabelSet | None:
    """Labels of a folder/class name: the user's mapping first, then the default spellings."""
    for key in (name, name.strip(), normalise_name(name)):
        if key in mapping:
            return mapping[key]
    return _parse_token(name)


def zone_for_name(name: str) -> str | None:
    """The zone a category name spells (``left temple`` -> ``temple_left``), or None."""
    return _ZONE_ALIASES.get(normalise_name(name))


def parse_mapping(items: list[str] | None) -> dict[str, LabelSet]:
    """Build a name -> labels mapping from ``--map`` arguments.

    Each item is ``NAME=LABEL[,LABEL...]`` or the path of a YAML/JSON file holding
    ``{NAME: "label,label"}`` or ``{NAME: [label, ...]}``.

    Raises:
        ImportFormatError: for a malformed item or an unknown label.
    """
    mapping: dict[str, LabelSet] = {}
    for item in items or []:
        if "=" in item:
            name, _, labels = item.partition("=")
            if not name.strip():
                raise ImportFormatError(f"--map {item!r}: missing the name before '='")
            mapping[normalise_name(name)] = parse_labels(labels, where=f"--map {item!r}")
            continue
        path = Path(item)
        if not path.is_file():
            raise ImportFormatError(
                f"--map {item!r}: neither NAME=LABEL[,LABEL] nor an existing YAML/JSON mapping file"
            )
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ImportFormatError(f"{path}: cannot parse the mapping file: {exc}") from exc
        if not isinstance(data, dict):
            raise ImportFormatError(f"{path}: expected a mapping of NAME: labels, got {type(data).__name__}")
        for name, labels in data.items():
            if isinstance(labels, (list, tuple)):
                labels = ",".join(str(x) for x in labels)
            mapping[normalise_name(str(name))] = parse_labels(str(labels), where=f"{path}: {name!r}")
    return mapping


def view_from_name(name: str) -> tuple[str | None, str | None]:
    """The view a file name spells, e.g. ``17-Top-Down_jpg.rf.x.jpg`` -> ``top``.

    Returns:
        (view, problem): problem is None when exactly one view is named, else says why
        the view is unknown (none named, or two different ones).
    """
    stem = name.lower()
    found: set[str] = set()
    for token in re.split(r"[^a-z\-]+", stem):
        token = token.strip("-")
        if not token:
            continue
        view = parse_view(token)
        if view is None and "-" in token:
            parts = [parse_view(p) for p in token.split("-")]
            found.update(p for p in parts if p)
        elif view is not None:
            found.add(view)
    if len(found) == 1:
        return found.pop(), None
    if not found:
        return None, f"no view (front, top, back, left, right) in the file name {name!r}"
    return None, f"the file name {name!r} names several views ({', '.join(sorted(found))})"


def subject_from_name(stem: str, *, pattern: str | None, prefix: str = "") -> str:
    """Subject id from a file name: ``prefix:ID`` where ID is the pattern's first group.

    Without a pattern, or when it does not match, the whole stem is the id (each photo its
    own subject).
    """
    ident = stem
    if pattern:
        match = re.search(pattern, stem)
        if match:
            ident = match.groupdict().get("subject") or (match.group(1) if match.groups() else match.group(0))
    return f"{prefix}:{ident}" if prefix else ident


@dataclass
class ImportResult:
    """Rows an importer produced and what it noticed on the way.

    Attributes:
        rows: One manifest row per imported photo (absolute paths).
        warnings: Things the user should look at (unparsed view, skipped file, ...).
        written: Files the import wrote (mask PNGs), removed by :meth:`discard`.
    """

    rows: list[ManifestRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def discard(self) -> None:
        """Remove the files this import wrote (masks), so a failed import leaves nothing behind."""
        folders = {path.parent for path in self.written}
        for path in self.written:
            path.unlink(missing_ok=True)
        for folder in folders:
            try:
                folder.rmdir()  # only when empty: never a folder that held files before
            except OSError:
                pass
        self.written.clear()
