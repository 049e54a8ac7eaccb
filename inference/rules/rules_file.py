"""The rules file: its keys, their validation, and the `Rules` the engine reads.

A rules file is YAML with a ``version``; `default.yaml` beside this module documents every
key. A clinic's file lists only what it changes: sections merge key by key over the
defaults, lists are replaced whole. The merged file is validated by pydantic models
(through `scalpscan.data.validation.validate`, as the training config is), so an unknown
key, a wrong type or an out-of-range value is refused with a message naming the file, the
key and what is expected, every problem at once.

    >>> rules = load_rules("clinic.yaml")
    >>> rules.full_coverage_stage_min
    6
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator, ValidationInfo, create_model, field_validator
from pydantic_core import PydanticCustomError

from scalpscan.data.validation import validate
from scalpscan.data.vocab import CONDITIONS, SEXES, STAGES, VIEWS, ZONES

__all__ = [
    "CAUTIONS",
    "DECISIONS",
    "DEFAULT_RULES_PATH",
    "LOSS_UNKNOWN_FOCUS",
    "RECOMMENDATIONS",
    "Rules",
    "RulesError",
    "RulesFile",
    "load_rules",
    "rules_from_dict",
]

#: Every decision the engine makes, from the most to the least favourable.
DECISIONS: tuple[str, ...] = ("candidate", "caution", "not_indicated", "review")
#: Every recommendation, in the order an assessment lists them.
RECOMMENDATIONS: tuple[str, ...] = ("full_coverage", "density_smp", "scar_camouflage", "patch_camouflage")
#: Every caution, in the order an assessment lists them.
CAUTIONS: tuple[str, ...] = ("keloid_history", "eczema_active", "psoriasis_active", "progressing_loss")
#: The rules used when no file is given.
DEFAULT_RULES_PATH: Path = Path(__file__).with_name("default.yaml")

#: What `focus.when_loss_unknown` may say: where to focus when the loss per zone is unknown.
LOSS_UNKNOWN_FOCUS: tuple[str, ...] = ("none", "primary", "visible")

#: Keys of the per-sex sections: the intake's sexes, and "unknown" when it says none.
SEX_KEYS: tuple[str, ...] = (*SEXES, "unknown")


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the key and the problem."""


# --------------------------------------------------------------------------- value types


def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("rules_value", message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, low: float | None, high: float | None) -> float:
    if not _is_number(value):
        raise _problem("expected a number")
    if (low is not None and value < low) or (high is not None and value > high):
        expected = f"{low:g} to {high:g}" if high is not None else f"{low:g} or more"
        raise _problem(f"out of range, expected {expected}")
    return float(value)


def _whole(low: int, high: int) -> PlainValidator:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _problem("expected a whole number")
        if not low <= value <= high:
            raise _problem(f"out of range, expected {low} to {high}")
        return value
    return PlainValidator(check)


def _stage(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value not in STAGES:
        raise _problem(f"expected a Norwood stage {STAGES[0]} to {STAGES[-1]}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _problem("expected a non-empty text")
    return value


def _choice(choices: tuple[str, ...]) -> PlainValidator:
    def check(value: Any) -> str:
        if value not in choices:
            raise _problem(f"expected one of {list(choices)}, got {value!r}")
        return value
    return PlainValidator(check)


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _problem("expected a list of non-empty texts")
    return tuple(value)


def _zones(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _problem(f"expected a list of zones {list(ZONES)}")
    unknown = [v for v in value if v not in ZONES]
    if unknown:
        raise _problem(f"unknown zone(s) {unknown}, known zones are {list(ZONES)}")
    if len(set(value)) != len(value):
        raise _problem("a zone is listed twice")
    if not value:
        raise _problem("expected at least one zone")
    return tuple(value)


def _zone_order(value: Any) -> tuple[str, ...]:
    zones = _zones(value)
    missing = [z for z in ZONES if z not in zones]
    if missing:
        raise _problem(f"must list each zone once, missing {missing}")
    return zones


Probability = Annotated[float, PlainValidator(lambda v: _number(v, 0.0, 1.0))]
Weight = Annotated[float, PlainValidator(lambda v: _number(v, 0.0, None))]
Stage = Annotated[int, PlainValidator(_stage)]
Text = Annotated[str, PlainValidator(_text)]
Texts = Annotated[tuple[str, ...], PlainValidator(_texts)]
Zones = Annotated[tuple[str, ...], PlainValidator(_zones)]
ZoneOrder = Annotated[tuple[str, ...], PlainValidator(_zone_order)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _keyed(name: str, keys: tuple[str, ...], value_type: Any) -> type[BaseModel]:
    """A section with exactly ``keys``, each holding a ``value_type`` (views, conditions, ...)."""
    return create_model(name, __base__=_Section, **{key: (value_type, ...) for key in keys})


ViewWeights = _keyed("ViewWeights", VIEWS, Weight)
FindingThresholds = _keyed("FindingThresholds", CONDITIONS, Probability)
FocusOrder = _keyed("FocusOrder", SEX_KEYS, ZoneOrder)
PrimaryZones = _keyed("PrimaryZones", SEX_KEYS, Zones)
DecisionLabels = _keyed("DecisionLabels", DECISIONS, Text)
RecommendationLabels = _keyed("RecommendationLabels", RECOMMENDATIONS, Text)
CautionLabels = _keyed("CautionLabels", CAUTIONS, Text)


# --------------------------------------------------------------------------- the file's sections


class PhotosSection(_Section):
    min_usable: Annotated[int, _whole(1, 1000)]
    view_weights: ViewWeights  # type: ignore[valid-type]
    unknown_view_weight: Weight


class FindingsSection(_Section):
    thresholds: FindingThresholds  # type: ignore[valid-type]


def _below(key: str, *, strictly: bool) -> AfterValidator:
    """A value that must stay below (``strictly``) or not above another key of its section,
    named in full (``"stage.full_coverage_min"``) and declared before it."""
    other = key.rsplit(".", 1)[-1]

    def check(value: float, info: ValidationInfo) -> float:
        bound = info.data.get(other)  # absent when that key was itself refused
        if bound is not None and (value >= bound if strictly else value > bound):
            relation = "be below" if strictly else "not be above"
            raise _problem(f"must {relation} {key} ({value} {'>=' if strictly else '>'} {bound})")
        return value
    return AfterValidator(check)


class StageSection(_Section):
    full_coverage_min: Stage
    pattern_loss_min: Annotated[Stage, _below("stage.full_coverage_min", strictly=False)]


class LossSection(_Section):
    zone_min: Probability
    full_coverage_min: Probability
    full_coverage_zones: Zones


class FocusSection(_Section):
    order: FocusOrder  # type: ignore[valid-type]
    primary: PrimaryZones  # type: ignore[valid-type]
    when_loss_unknown: Annotated[str, _choice(LOSS_UNKNOWN_FOCUS)]


class ProgressionSection(_Section):
    keywords: Texts
    negations: Texts
    negation_window: Annotated[int, _whole(0, 20)]
    min_points_per_year: Annotated[float, PlainValidator(lambda v: _number(v, 0.1, 100.0))]
    min_days: Annotated[int, _whole(1, 3650)]


class ReviewSection(_Section):
    stage_spread: Annotated[int, _whole(1, len(STAGES))]
    finding_high: Probability
    finding_low: Annotated[Probability, _below("review.finding_high", strictly=True)]


class LabelsSection(_Section):
    decisions: DecisionLabels  # type: ignore[valid-type]
    recommendations: RecommendationLabels  # type: ignore[valid-type]
    cautions: CautionLabels  # type: ignore[valid-type]


class RulesFile(_Section):
    """A whole rules file, as `default.yaml` lays it out (see there for each key)."""

    version: Text
    name: Text
    photos: PhotosSection
    findings: FindingsSection
    stage: StageSection
    loss: LossSection
    focus: FocusSection
    progression: ProgressionSection
    review: ReviewSection
    disclaimers: Texts
    labels: LabelsSection

    @field_validator("disclaimers")
    @classmethod
    def _some_disclaimers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise _problem("must not be empty (every report says what SMP is and is not)")
        return value


# --------------------------------------------------------------------------- what the engine reads


@dataclass(frozen=True)
class Rules:
    """Validated candidacy rules, one field per key of the rules file (see default.yaml)."""

    version: str
    name: str
    min_usable_photos: int
    view_weights: dict[str, float]
    unknown_view_weight: float
    finding_thresholds: dict[str, float]
    pattern_loss_stage_min: int
    full_coverage_stage_min: int
    zone_loss_min: float
    full_coverage_loss_min: float
    full_coverage_zones: tuple[str, ...]
    focus_order: dict[str, tuple[str, ...]]
    primary_zones: dict[str, tuple[str, ...]]
    focus_when_loss_unknown: str
    progression_keywords: tuple[str, ...]
    progression_negations: tuple[str, ...]
    negation_window: int
    progression_min_points_per_year: float
    progression_min_days: int
    stage_spread: int
    finding_high: float
    finding_low: float
    disclaimers: tuple[str, ...]
    labels: dict[str, dict[str, str]]
    source: str = "default"

    def label(self, kind: str, code: str) -> str:
        """Human label of a decision, recommendation or caution code (the code if unlabelled)."""
        return self.labels.get(kind, {}).get(code, code.replace("_", " "))

    @classmethod
    def from_file(cls, file: RulesFile, *, source: str) -> Rules:
        """The engine's view of a validated rules file."""
        photos, stage, loss, focus = file.photos, file.stage, file.loss, file.focus
        progression, review = file.progression, file.review
        return cls(
            version=file.version,
            name=file.name,
            min_usable_photos=photos.min_usable,
            view_weights={v: getattr(photos.view_weights, v) for v in VIEWS},
            unknown_view_weight=photos.unknown_view_weight,
            finding_thresholds={c: getattr(file.findings.thresholds, c) for c in CONDITIONS},
            pattern_loss_stage_min=stage.pattern_loss_min,
            full_coverage_stage_min=stage.full_coverage_min,
            zone_loss_min=loss.zone_min,
            full_coverage_loss_min=loss.full_coverage_min,
            full_coverage_zones=loss.full_coverage_zones,
            focus_order={s: getattr(focus.order, s) for s in SEX_KEYS},
            primary_zones={s: getattr(focus.primary, s) for s in SEX_KEYS},
            focus_when_loss_unknown=focus.when_loss_unknown,
            progression_keywords=tuple(k.strip().lower() for k in progression.keywords),
            progression_negations=tuple(k.strip().lower() for k in progression.negations),
            negation_window=progression.negation_window,
            progression_min_points_per_year=progression.min_points_per_year,
            progression_min_days=progression.min_days,
            stage_spread=review.stage_spread,
            finding_high=review.finding_high,
            finding_low=review.finding_low,
            disclaimers=file.disclaimers,
            labels={kind: dict(getattr(file.labels, kind)) for kind in ("decisions", "recommendations", "cautions")},
            source=source,
        )


# --------------------------------------------------------------------------- loading


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``: mappings merge key by key, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"rules file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"rules file {path} cannot be read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"rules file {path} is not valid YAML: {exc}") from None


def rules_from_dict(data: Any, *, source: str = "<dict>", defaults: Mapping[str, Any] | None = None) -> Rules:
    """Validated `Rules` from a mapping shaped like the rules file.

    Args:
        data: the parsed rules file. Must have ``version``.
        source: where it came from, for messages.
        defaults: a complete rules mapping that ``data`` is laid over (None: ``data`` alone).

    Raises:
        RulesError: listing every problem, each naming the file and its key.
    """
    where = f"rules file {source}"
    if not isinstance(data, dict):
        raise RulesError(f"{where}: expected a mapping of keys at the top, got {type(data).__name__}")
    if "version" not in data:
        raise RulesError(f'{where}: version: required key is missing (add e.g. version: "clinic-1.0")')
    if _is_number(data["version"]):  # version: 2 is as good a version as "2"
        data = dict(data, version=str(data["version"]))
    # Merged first: every key of the file is still in the merged mapping, so no default can
    # hide a typo or a bad value in it.
    merged = data if defaults is None else _merge(defaults, data)
    return Rules.from_file(validate(RulesFile, merged, source=where, error=RulesError), source=source)


@cache
def _default_data() -> dict[str, Any]:
    return _read_yaml(DEFAULT_RULES_PATH)


def load_rules(path: str | Path | None = None) -> Rules:
    """Load candidacy rules.

    Args:
        path: a clinic's rules file (YAML). It must have ``version``; keys it leaves out keep
            the defaults. None loads `DEFAULT_RULES_PATH`.

    Raises:
        RulesError: the file is missing, not YAML, or has an unknown key, a value of the
            wrong type or out of range, or no version. The message names each key.
    """
    if path is None:
        return rules_from_dict(copy.deepcopy(_default_data()), source=f"built-in {DEFAULT_RULES_PATH.name}")
    path = Path(path)
    return rules_from_dict(_read_yaml(path), source=str(path), defaults=_default_data())
