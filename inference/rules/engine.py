"""The candidacy rules engine: a patient's photo-level result rows to one assessment.

Pure functions over dataclasses, no torch. The thresholds live in a rules file
(`default.yaml` beside this module, or a clinic's own, see `load_rules`); this module holds
only the logic. Every decision lists the rules that fired, each with its evidence.

    >>> rules = load_rules()
    >>> assessment = assess(rows, Intake(sex="male"), rules=rules)
    >>> assessment.decision, assessment.recommendations
    ('candidate', ['density_smp'])
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scalpscan.data.vocab import CONDITIONS, SEXES, STAGES, VIEWS, ZONES
from scalpscan.inference.intake import Intake

__all__ = [
    "DECISIONS",
    "RECOMMENDATIONS",
    "CAUTIONS",
    "DEFAULT_RULES_PATH",
    "RulesError",
    "Rules",
    "Reason",
    "Assessment",
    "load_rules",
    "rules_from_dict",
    "assess",
]

#: Every decision the engine makes, from the most to the least favourable.
DECISIONS: tuple[str, ...] = ("candidate", "caution", "not_indicated", "review")
#: Every recommendation, in the order an assessment lists them.
RECOMMENDATIONS: tuple[str, ...] = ("full_coverage", "density_smp", "scar_camouflage", "patch_camouflage")
#: Every caution, in the order an assessment lists them.
CAUTIONS: tuple[str, ...] = ("keloid_history", "eczema_active", "psoriasis_active", "progressing_loss")
#: The rules used when no file is given.
DEFAULT_RULES_PATH: Path = Path(__file__).with_name("default.yaml")

_SEX_KEYS: tuple[str, ...] = (*SEXES, "unknown")


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the key and the problem."""


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rules:
    """Validated candidacy rules (one field per key of the rules file; see default.yaml)."""

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
    progression_keywords: tuple[str, ...]
    progression_negations: tuple[str, ...]
    negation_window: int
    stage_spread: int
    finding_high: float
    finding_low: float
    disclaimers: tuple[str, ...]
    labels: dict[str, dict[str, str]]
    source: str = "default"

    def label(self, kind: str, code: str) -> str:
        """Human label of a decision, recommendation or caution code (the code if unlabelled)."""
        return self.labels.get(kind, {}).get(code, code.replace("_", " "))


# A schema leaf: (kind, extra). Kinds: str, int, float, prob, weight, stage, zones, zone_order,
# strs, map (fixed keys -> leaf kind), labels. Nested dicts are sections.
_SCHEMA: dict[str, Any] = {
    "version": ("str", None),
    "name": ("str", None),
    "photos": {
        "min_usable": ("int", (1, 1000)),
        "view_weights": ("map", (VIEWS, "weight")),
        "unknown_view_weight": ("weight", None),
    },
    "findings": {"thresholds": ("map", (CONDITIONS, "prob"))},
    "stage": {"pattern_loss_min": ("stage", None), "full_coverage_min": ("stage", None)},
    "loss": {
        "zone_min": ("prob", None),
        "full_coverage_min": ("prob", None),
        "full_coverage_zones": ("zones", None),
    },
    "focus": {
        "order": ("map", (_SEX_KEYS, "zone_order")),
        "primary": ("map", (_SEX_KEYS, "zones")),
    },
    "progression": {
        "keywords": ("strs", None),
        "negations": ("strs", None),
        "negation_window": ("int", (0, 20)),
    },
    "review": {
        "stage_spread": ("int", (1, len(STAGES))),
        "finding_high": ("prob", None),
        "finding_low": ("prob", None),
    },
    "disclaimers": ("strs", None),
    "labels": {
        "decisions": ("map", (DECISIONS, "str")),
        "recommendations": ("map", (RECOMMENDATIONS, "str")),
        "cautions": ("map", (CAUTIONS, "str")),
    },
}


def _check_leaf(kind: str, extra: Any, value: Any, key: str) -> list[str]:
    """Problems with one value of the rules file (empty when it is fine)."""

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            return [f"{key}: expected a non-empty text, got {value!r}"]
    elif kind == "int":
        lo, hi = extra
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{key}: expected a whole number, got {value!r}"]
        if not lo <= value <= hi:
            return [f"{key}: {value} is out of range, expected {lo} to {hi}"]
    elif kind in ("prob", "weight"):
        if not is_number(value):
            return [f"{key}: expected a number, got {value!r}"]
        if kind == "prob" and not 0.0 <= value <= 1.0:
            return [f"{key}: {value} is out of range, expected 0 to 1"]
        if kind == "weight" and value < 0:
            return [f"{key}: {value} is out of range, expected 0 or more"]
    elif kind == "stage":
        if not isinstance(value, int) or isinstance(value, bool) or value not in STAGES:
            return [f"{key}: expected a Norwood stage {STAGES[0]} to {STAGES[-1]}, got {value!r}"]
    elif kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            return [f"{key}: expected a list of non-empty texts, got {value!r}"]
    elif kind in ("zones", "zone_order"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return [f"{key}: expected a list of zones {list(ZONES)}, got {value!r}"]
        unknown = [v for v in value if v not in ZONES]
        if unknown:
            return [f"{key}: unknown zone(s) {unknown}, known zones are {list(ZONES)}"]
        if len(set(value)) != len(value):
            return [f"{key}: a zone is listed twice in {value}"]
        if kind == "zone_order" and set(value) != set(ZONES):
            missing = [z for z in ZONES if z not in value]
            return [f"{key}: must list each zone once, missing {missing}"]
        if kind == "zones" and not value:
            return [f"{key}: expected at least one zone"]
    elif kind == "map":
        names, leaf = extra
        if not isinstance(value, dict):
            return [f"{key}: expected a mapping with keys {list(names)}, got {value!r}"]
        problems = [
            f"{key}.{k}: unknown key, expected one of {list(names)}" for k in value if k not in names
        ]
        problems += [f"{key}.{k}: missing" for k in names if k not in value]
        for k in names:
            if k in value:
                problems += _check_leaf(leaf, None, value[k], f"{key}.{k}")
        return problems
    else:  # pragma: no cover - a schema typo, not a user error
        raise AssertionError(f"unknown schema kind {kind!r}")
    return []


def _check_section(schema: Mapping[str, Any], data: Any, prefix: str) -> list[str]:
    """Problems of a (merged) rules mapping against the schema, every key named in full."""
    where = prefix.rstrip(".") or "the file"
    if not isinstance(data, dict):
        return [f"{where}: expected a mapping of keys, got {data!r}"]
    problems = [
        f"{prefix}{k}: unknown key, expected one of {list(schema)}" for k in data if k not in schema
    ]
    for key, spec in schema.items():
        if key not in data:
            problems.append(f"{prefix}{key}: missing")
        elif isinstance(spec, dict):
            problems += _check_section(spec, data[key], f"{prefix}{key}.")
        else:
            problems += _check_leaf(spec[0], spec[1], data[key], f"{prefix}{key}")
    return problems


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``: mappings merge key by key, anything else replaces."""
    merged = copy.deepcopy(base)
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
        defaults: a complete rules mapping that ``data`` is laid over (None: use ``data`` alone).

    Raises:
        RulesError: listing every problem, each naming its key.
    """
    if not isinstance(data, dict):
        raise RulesError(f"rules file {source}: expected a mapping of keys at the top, got {type(data).__name__}")
    if "version" not in data:
        raise RulesError(f"rules file {source}: version: missing (add e.g. version: \"clinic-1.0\")")
    if not isinstance(data["version"], (str, int, float)) or isinstance(data["version"], bool):
        raise RulesError(f"rules file {source}: version: expected a text, got {data['version']!r}")
    data = dict(data, version=str(data["version"]))
    if defaults is None:
        problems = _check_section(_SCHEMA, data, "")
    else:
        # The file itself is checked first, so that no default can hide a typo in it.
        problems = [p for p in _check_section(_SCHEMA, data, "") if not p.endswith(": missing")]
        data = _merge(dict(defaults), data)
        problems += [p for p in _check_section(_SCHEMA, data, "") if p not in problems]
    if not problems:
        problems = _cross_checks(data)
    if problems:
        raise RulesError(f"rules file {source} is refused:\n  " + "\n  ".join(problems))
    photos, stage, loss, focus = data["photos"], data["stage"], data["loss"], data["focus"]
    progression, review = data["progression"], data["review"]
    return Rules(
        version=data["version"],
        name=data["name"],
        min_usable_photos=photos["min_usable"],
        view_weights={v: float(photos["view_weights"][v]) for v in VIEWS},
        unknown_view_weight=float(photos["unknown_view_weight"]),
        finding_thresholds={c: float(data["findings"]["thresholds"][c]) for c in CONDITIONS},
        pattern_loss_stage_min=stage["pattern_loss_min"],
        full_coverage_stage_min=stage["full_coverage_min"],
        zone_loss_min=float(loss["zone_min"]),
        full_coverage_loss_min=float(loss["full_coverage_min"]),
        full_coverage_zones=tuple(loss["full_coverage_zones"]),
        focus_order={s: tuple(focus["order"][s]) for s in _SEX_KEYS},
        primary_zones={s: tuple(focus["primary"][s]) for s in _SEX_KEYS},
        progression_keywords=tuple(k.strip().lower() for k in progression["keywords"]),
        progression_negations=tuple(k.strip().lower() for k in progression["negations"]),
        negation_window=progression["negation_window"],
        stage_spread=review["stage_spread"],
        finding_high=float(review["finding_high"]),
        finding_low=float(review["finding_low"]),
        disclaimers=tuple(data["disclaimers"]),
        labels={k: dict(v) for k, v in data["labels"].items()},
        source=source,
    )


def _cross_checks(data: Mapping[str, Any]) -> list[str]:
    """Problems between keys that are each valid alone."""
    problems = []
    if data["stage"]["pattern_loss_min"] > data["stage"]["full_coverage_min"]:
        problems.append(
            "stage.pattern_loss_min: must not be above stage.full_coverage_min "
            f"({data['stage']['pattern_loss_min']} > {data['stage']['full_coverage_min']})"
        )
    if data["review"]["finding_low"] >= data["review"]["finding_high"]:
        problems.append(
            "review.finding_low: must be below review.finding_high "
            f"({data['review']['finding_low']} >= {data['review']['finding_high']})"
        )
    if not data["disclaimers"]:
        problems.append("disclaimers: must not be empty (every report says what SMP is and is not)")
    return problems


_DEFAULT_CACHE: dict[str, Any] = {}


def _default_data() -> dict[str, Any]:
    if "data" not in _DEFAULT_CACHE:
        _DEFAULT_CACHE["data"] = _read_yaml(DEFAULT_RULES_PATH)
    return copy.deepcopy(_DEFAULT_CACHE["data"])


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
        return rules_from_dict(_default_data(), source=f"built-in {DEFAULT_RULES_PATH.name}")
    path = Path(path)
    return rules_from_dict(_read_yaml(path), source=str(path), defaults=_default_data())


# --------------------------------------------------------------------------- assessment


@dataclass(frozen=True)
class Reason:
    """One rule that fired: its id, a sentence for the reader, and the evidence it used."""

    rule: str
    text: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``{"rule", "text", "evidence"}``)."""
        return {"rule": self.rule, "text": self.text, "evidence": copy.deepcopy(self.evidence)}


@dataclass(frozen=True)
class Assessment:
    """A patient-level SMP candidacy assessment over all of the patient's photos.

    Attributes:
        decision: one of `DECISIONS`.
        recommendations: codes from `RECOMMENDATIONS` (empty unless candidate or caution).
        focus_zones: zones to treat first, in the rules' priority order for the patient's sex.
        cautions: codes from `CAUTIONS` that apply (listed whatever the decision).
        reasons: every rule that fired, in the order the engine applied them.
        stage: the patient's Norwood stage, or None when no usable photo gives one.
        stage_probabilities: the view-weighted distribution over stages 1-7, or None.
        findings: conditions found in at least one usable photo.
        conditions: per condition, the highest probability over usable photos (None: no photo says).
        zones: per zone seen in a usable photo, ``{"visible", "loss_fraction", "image"}``.
        subject: the patient id (None when the rows had none).
        sex: the sex used for the zone priority (None: unknown).
        photos_used: images of the usable photos.
        photos_excluded: ``{"image", "status", "reason"}`` for each photo left out.
        rules_version: the rules file's version.
        rules_name: the rules file's name.
        disclaimers: the sentences every report shows.
        models: model ids of the usable photos' rows.
    """

    decision: str
    recommendations: list[str]
    focus_zones: list[str]
    cautions: list[str]
    reasons: list[Reason]
    stage: int | None
    stage_probabilities: list[float] | None
    findings: list[str]
    conditions: dict[str, float | None]
    zones: dict[str, dict[str, Any]]
    subject: str | None
    sex: str | None
    photos_used: list[str]
    photos_excluded: list[dict[str, Any]]
    rules_version: str
    rules_name: str
    disclaimers: list[str]
    models: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: DESIGN's "assessment" fields first, then the rest."""
        data = asdict(self)
        data["reasons"] = [r.to_dict() for r in self.reasons]
        ordered = {k: data.pop(k) for k in ("decision", "recommendations", "focus_zones", "cautions", "reasons")}
        ordered.update(data)
        return ordered


def _as_row(prediction: Any) -> dict[str, Any]:
    if isinstance(prediction, Mapping):
        return dict(prediction)
    to_row = getattr(prediction, "to_row", None)
    if callable(to_row):
        return dict(to_row())
    raise TypeError(f"assess() takes result-row dicts or objects with .to_row(), got {type(prediction).__name__}")


def _prob(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _row_stage_distribution(row: Mapping[str, Any]) -> list[float] | None:
    """The row's distribution over stages 1-7: its probabilities, else one-hot on its stage."""
    probs = row.get("stage_probabilities")
    if isinstance(probs, list) and len(probs) == len(STAGES):
        values = [_prob(p) for p in probs]
        if all(v is not None and v >= 0 for v in values) and sum(values) > 0:  # type: ignore[operator]
            total = sum(values)  # type: ignore[arg-type]
            return [v / total for v in values]  # type: ignore[operator]
    stage = row.get("stage")
    if isinstance(stage, int) and not isinstance(stage, bool) and stage in STAGES:
        return [1.0 if s == stage else 0.0 for s in STAGES]
    return None


def _row_findings(row: Mapping[str, Any], rules: Rules) -> set[str]:
    listed = row.get("findings")
    if isinstance(listed, list):
        return {f for f in listed if f in CONDITIONS}
    conditions = row.get("conditions") or {}
    found = set()
    for name in CONDITIONS:
        p = _prob(conditions.get(name)) if isinstance(conditions, Mapping) else None
        if p is not None and p >= rules.finding_thresholds[name]:
            found.add(name)
    return found


def _visible_zones(row: Mapping[str, Any]) -> set[str]:
    zones = row.get("zones") or {}
    if not isinstance(zones, Mapping):
        return set()
    return {z for z, info in zones.items() if z in ZONES and isinstance(info, Mapping) and info.get("visible")}


def _notes_progression(notes: str, rules: Rules) -> list[str]:
    """Progression keywords in the notes that no nearby negation cancels.

    A negation counts only within its own clause: "not progressing, but shedding" still hits.
    """
    clauses = [re.findall(r"[a-z0-9']+", c) for c in re.split(r"[.,;:!?\n]+|\bbut\b", notes.lower())]
    hits = []
    for keyword in rules.progression_keywords:
        kw = re.findall(r"[a-z0-9']+", keyword)
        if kw and any(_unnegated(words, kw, rules) for words in clauses):
            hits.append(keyword)
    return hits


def _unnegated(words: list[str], keyword: list[str], rules: Rules) -> bool:
    for i in range(len(words) - len(keyword) + 1):
        if words[i : i + len(keyword)] == keyword:
            before = words[max(0, i - rules.negation_window) : i]
            if not any(w in rules.progression_negations for w in before):
                return True
    return False


def _weighted_median_stage(distribution: list[float]) -> int:
    cumulative = 0.0
    for stage, p in zip(STAGES, distribution):
        cumulative += p
        if cumulative >= 0.5 - 1e-9:
            return stage
    return STAGES[-1]


def assess(predictions: Iterable[Any], intake: Intake | None = None, *, rules: Rules | None = None) -> Assessment:
    """Assess one patient from all of their photos.

    Args:
        predictions: the patient's result rows (dicts as in DESIGN "Result rows"), or objects
            with ``.to_row()``. Rows with status other than "ok" are left out, and said so.
        intake: the patient's intake answers (None: nothing known, sex unknown).
        rules: the rules to apply (None: the defaults).

    Returns:
        The assessment; ``to_dict()`` gives DESIGN's "assessment" object plus the extra fields.
    """
    rules = rules or load_rules()
    intake = intake or Intake()
    rows = [_as_row(p) for p in predictions]
    reasons: list[Reason] = []
    sex_key = intake.sex if intake.sex in SEXES else "unknown"

    # ---- photos: which ones count
    usable: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for row in rows:
        status = row.get("status", "ok")
        if status == "ok":
            usable.append(row)
        else:
            why = row.get("error") or ("photo too dark, blurred or small to judge" if status == "recapture" else "")
            excluded.append({"image": str(row.get("image", "")), "status": str(status), "reason": str(why or status)})
    if excluded:
        recapture = [e["image"] for e in excluded if e["status"] == "recapture"]
        errors = [e["image"] for e in excluded if e["status"] != "recapture"]
        parts = []
        if recapture:
            parts.append(f"{len(recapture)} to retake (too dark, blurred or small)")
        if errors:
            parts.append(f"{len(errors)} unreadable")
        reasons.append(Reason(
            "photos.excluded",
            f"{len(excluded)} photo(s) left out of the assessment: " + ", ".join(parts) + ".",
            {"excluded": excluded},
        ))
    subject = next((str(r["subject"]) for r in rows if r.get("subject") not in (None, "")), intake.subject)
    models = sorted({str(m["id"]) for r in usable if isinstance(m := r.get("model"), Mapping) and m.get("id")})

    # ---- findings merged across views
    conditions: dict[str, float | None] = {}
    finding_photos: dict[str, list[dict[str, Any]]] = {c: [] for c in CONDITIONS}
    for name in CONDITIONS:
        probs = [p for r in usable if (p := _prob((r.get("conditions") or {}).get(name))) is not None]
        conditions[name] = max(probs) if probs else None
    for row in usable:
        for name in sorted(_row_findings(row, rules)):
            finding_photos[name].append({
                "image": str(row.get("image", "")),
                "view": row.get("view"),
                "probability": _prob((row.get("conditions") or {}).get(name)),
            })
    findings = [c for c in CONDITIONS if finding_photos[c]]
    for name in findings:
        reasons.append(Reason(
            f"finding.{name}",
            f"{name.replace('_', ' ').capitalize()} found in {len(finding_photos[name])} of {len(usable)} usable photo(s).",
            {"photos": finding_photos[name], "threshold": rules.finding_thresholds[name],
             "max_probability": conditions[name]},
        ))

    # ---- stage: one per patient, views weighted
    stage, stage_probs, stage_rows = None, None, []
    total_weight = 0.0
    combined = [0.0] * len(STAGES)
    for row in usable:
        dist = _row_stage_distribution(row)
        view = row.get("view")
        weight = rules.view_weights.get(view, rules.unknown_view_weight) if view in VIEWS else rules.unknown_view_weight
        if dist is None or weight <= 0:
            continue
        total_weight += weight
        combined = [c + weight * p for c, p in zip(combined, dist)]
        row_stage = STAGES[max(range(len(STAGES)), key=lambda i: dist[i])]
        stage_rows.append({"image": str(row.get("image", "")), "view": view, "stage": row_stage, "weight": weight})
    if total_weight > 0:
        stage_probs = [round(c / total_weight, 6) for c in combined]
        stage = _weighted_median_stage(stage_probs)
        reasons.append(Reason(
            "stage.combined",
            f"Norwood stage {stage} from {len(stage_rows)} photo(s), front and top views weighing more.",
            {"stage": stage, "photos": stage_rows, "stage_probabilities": stage_probs},
        ))

    # ---- zones merged across views: visible anywhere, the largest measured loss
    zones: dict[str, dict[str, Any]] = {}
    for row in usable:
        row_zones = row.get("zones") or {}
        if not isinstance(row_zones, Mapping):
            continue
        for name, info in row_zones.items():
            if name not in ZONES or not isinstance(info, Mapping) or not info.get("visible"):
                continue
            entry = zones.setdefault(name, {"visible": True, "loss_fraction": None, "image": None})
            loss = _prob(info.get("loss_fraction"))
            if loss is not None and (entry["loss_fraction"] is None or loss > entry["loss_fraction"]):
                entry["loss_fraction"] = loss
                entry["image"] = str(row.get("image", ""))
    zones = {z: zones[z] for z in ZONES if z in zones}
    loss_zones = [z for z in rules.focus_order[sex_key]
                  if z in zones and zones[z]["loss_fraction"] is not None and zones[z]["loss_fraction"] >= rules.zone_loss_min]

    # ---- extensive loss
    measured = [zones[z]["loss_fraction"] for z in rules.full_coverage_zones
                if z in zones and zones[z]["loss_fraction"] is not None]
    mean_loss = sum(measured) / len(measured) if measured else None
    extensive_by_stage = stage is not None and stage >= rules.full_coverage_stage_min
    extensive_by_loss = mean_loss is not None and mean_loss >= rules.full_coverage_loss_min
    extensive = extensive_by_stage or extensive_by_loss
    pattern_loss = stage is not None and stage >= rules.pattern_loss_stage_min

    # ---- cautions (listed whatever the decision)
    cautions: list[str] = []
    for flag, rule_text in (
        ("keloid_history", "Keloid history on the intake sheet (even from small scars such as acne): SMP needles can raise keloids."),
        ("eczema_active", "Active eczema on the intake sheet: it can flare in areas of trauma."),
        ("psoriasis_active", "Active psoriasis on the intake sheet: it can flare in areas of trauma."),
    ):
        if getattr(intake, flag):
            cautions.append(flag)
            reasons.append(Reason(f"caution.{flag}", rule_text + " Consult a dermatologist first.", {"intake": {flag: True}}))
    progression = _notes_progression(intake.notes or "", rules)
    if progression:
        cautions.append("progressing_loss")
        reasons.append(Reason(
            "caution.progressing_loss",
            "The intake notes describe very active, progressing loss; consult a dermatologist first and "
            "treat once the loss is stable.",
            {"notes_keywords": progression, "notes": intake.notes},
        ))

    # ---- contradictions
    contradictions: list[Reason] = []
    if len(stage_rows) >= 2:
        lo = min(stage_rows, key=lambda r: r["stage"])
        hi = max(stage_rows, key=lambda r: r["stage"])
        if hi["stage"] - lo["stage"] >= rules.stage_spread:
            contradictions.append(Reason(
                "review.stage_disagreement",
                f"Photos disagree on the Norwood stage ({lo['stage']} in {lo['view'] or 'an unknown view'}, "
                f"{hi['stage']} in {hi['view'] or 'an unknown view'}), {hi['stage'] - lo['stage']} stages apart "
                f"(limit {rules.stage_spread}).",
                {"low": lo, "high": hi, "stage_spread": rules.stage_spread},
            ))
    for name in CONDITIONS:
        pair = _contradicting_pair(usable, name, rules)
        if pair:
            high, low, shared = pair
            contradictions.append(Reason(
                "review.finding_contradiction",
                f"{name.replace('_', ' ').capitalize()} is clear in one photo (p={high[1]:.2f}) and ruled out in another "
                f"(p={low[1]:.2f}) that shows the same area.",
                {"condition": name, "high": {"image": high[0], "probability": high[1]},
                 "low": {"image": low[0], "probability": low[1]}, "shared": shared,
                 "finding_high": rules.finding_high, "finding_low": rules.finding_low},
            ))

    # ---- decision
    recommendations: list[str] = []
    focus: list[str] = []
    indicated = bool(findings) or pattern_loss or extensive
    if len(usable) < rules.min_usable_photos:
        decision = "review"
        reasons.append(Reason(
            "review.too_few_photos",
            f"{len(usable)} usable photo(s), at least {rules.min_usable_photos} needed: retake the photos.",
            {"usable": len(usable), "min_usable": rules.min_usable_photos},
        ))
    elif contradictions:
        decision = "review"
        reasons.extend(contradictions)
    elif not indicated:
        decision = "not_indicated"
        reasons.append(Reason(
            "not_indicated.no_loss",
            "No thinning, alopecia patch or scarring found, and no pattern loss at or above Norwood "
            f"{rules.pattern_loss_stage_min}.",
            {"conditions": conditions, "stage": stage, "pattern_loss_min": rules.pattern_loss_stage_min},
        ))
    else:
        decision = "caution" if cautions else "candidate"
        if extensive:
            recommendations.append("full_coverage")
            reasons.append(Reason(
                "recommend.full_coverage",
                "Extensive loss, little hair left: full coverage SMP"
                + (f" (Norwood {stage}, at or above {rules.full_coverage_stage_min})" if extensive_by_stage else "")
                + (f" (mean loss {mean_loss:.0%} over {', '.join(rules.full_coverage_zones)}, at or above "
                   f"{rules.full_coverage_loss_min:.0%})" if extensive_by_loss else "")
                + ".",
                {"stage": stage, "full_coverage_stage_min": rules.full_coverage_stage_min,
                 "mean_loss_fraction": mean_loss, "full_coverage_loss_min": rules.full_coverage_loss_min,
                 "zones": list(rules.full_coverage_zones)},
            ))
        elif "thinning" in findings or pattern_loss:
            recommendations.append("density_smp")
            why = []
            if "thinning" in findings:
                why.append("thinning found")
            if pattern_loss:
                why.append(f"Norwood {stage}, at or above {rules.pattern_loss_stage_min}")
            reasons.append(Reason(
                "recommend.density_smp",
                "Hair still present with thinning (" + "; ".join(why) + "): density SMP, pigment between existing hairs.",
                {"thinning": "thinning" in findings, "stage": stage,
                 "pattern_loss_min": rules.pattern_loss_stage_min,
                 "full_coverage_stage_min": rules.full_coverage_stage_min, "mean_loss_fraction": mean_loss},
            ))
        if "transplant_scar" in findings:
            recommendations.append("scar_camouflage")
            reasons.append(Reason("recommend.scar_camouflage",
                                  "Transplant or surgical scarring found: scar camouflage.",
                                  {"photos": finding_photos["transplant_scar"]}))
        if "alopecia_patch" in findings:
            recommendations.append("patch_camouflage")
            stable = "progressing_loss" not in cautions
            reasons.append(Reason(
                "recommend.patch_camouflage",
                "Alopecia patches found: patch camouflage"
                + (" once the patches are stable." if not stable else " (the intake notes describe no active spreading)."),
                {"photos": finding_photos["alopecia_patch"], "stable": stable},
            ))
        if loss_zones:
            focus = loss_zones
            reasons.append(Reason(
                "focus.loss_zones",
                f"Focus zones are the zones with loss (at least {rules.zone_loss_min:.0%}), in the priority order "
                f"for {'men' if sex_key == 'male' else 'women' if sex_key == 'female' else 'an unknown sex'}: "
                + ", ".join(z.replace("_", " ") for z in loss_zones) + ".",
                {"zones": {z: zones[z]["loss_fraction"] for z in loss_zones}, "zone_min": rules.zone_loss_min,
                 "order": list(rules.focus_order[sex_key]), "sex": intake.sex},
            ))
        else:
            focus = list(rules.primary_zones[sex_key])
            reasons.append(Reason(
                "focus.primary_zones",
                "No zone shows measurable loss at or above "
                f"{rules.zone_loss_min:.0%}: focus on the main areas of concern"
                f" for {'men' if sex_key == 'male' else 'women' if sex_key == 'female' else 'an unknown sex'}: "
                + ", ".join(z.replace("_", " ") for z in focus) + ".",
                {"zones_measured": {z: zones[z]["loss_fraction"] for z in zones}, "sex": intake.sex},
            ))
    reasons.append(Reason(
        f"decision.{decision}",
        rules.label("decisions", decision) + ".",
        {"decision": decision, "recommendations": list(recommendations), "cautions": list(cautions)},
    ))
    return Assessment(
        decision=decision,
        recommendations=recommendations,
        focus_zones=focus,
        cautions=cautions,
        reasons=reasons,
        stage=stage,
        stage_probabilities=stage_probs,
        findings=findings,
        conditions=conditions,
        zones=zones,
        subject=subject,
        sex=intake.sex,
        photos_used=[str(r.get("image", "")) for r in usable],
        photos_excluded=excluded,
        rules_version=rules.version,
        rules_name=rules.name,
        disclaimers=list(rules.disclaimers),
        models=models,
    )


def _contradicting_pair(
    rows: list[dict[str, Any]], name: str, rules: Rules
) -> tuple[tuple[str, float], tuple[str, float], list[str]] | None:
    """Two photos of the same area, one sure of ``name`` and one ruling it out (None if none).

    Photos show the same area when they have the same view or share a visible zone.
    """
    scored = []
    for row in rows:
        p = _prob((row.get("conditions") or {}).get(name)) if isinstance(row.get("conditions"), Mapping) else None
        if p is not None:
            scored.append((row, p))
    for high_row, p_high in scored:
        if p_high < rules.finding_high:
            continue
        for low_row, p_low in scored:
            if low_row is high_row or p_low > rules.finding_low:
                continue
            shared = sorted(_visible_zones(high_row) & _visible_zones(low_row))
            same_view = high_row.get("view") is not None and high_row.get("view") == low_row.get("view")
            if shared or same_view:
                area = shared or [f"view {high_row.get('view')}"]
                return (str(high_row.get("image", "")), p_high), (str(low_row.get("image", "")), p_low), area
    return None
