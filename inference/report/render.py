"""Patient report pages and the batch index, as self-contained HTML.

One page per patient (photos with zone and loss overlays, findings, stage, decision,
recommendations, focus zones, cautions, reasons, disclaimers, model and rules version) and
an ``index.html`` with counts per decision and charts. Pages load nothing from outside
themselves: styles are inline (allowed by hash in a Content-Security-Policy), pictures are
``data:`` URIs re-encoded without metadata, charts are inline SVG. Jinja2 escapes every text.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from scalpscan.data.files import write_text_atomic
from scalpscan.data.vocab import CONDITIONS, STAGES, ZONES
from scalpscan.inference.intake import Intake, join_intake
from scalpscan.inference.report.charts import bar_chart
from scalpscan.inference.report.images import ZONE_COLOURS, photo_figure
from scalpscan.inference.rules import (
    DECISIONS,
    RECOMMENDATIONS,
    Assessment,
    Rules,
    assess,
    load_rules,
)

__all__ = ["DECISION_COLOURS", "write_reports", "render_patient", "render_index", "patient_filename"]

#: Colour of each decision's badge and bar.
DECISION_COLOURS: dict[str, str] = {
    "candidate": "#1B7F3B",
    "caution": "#B25E00",
    "not_indicated": "#55606E",
    "review": "#5B3FB0",
}
_TEMPLATES = Path(__file__).with_name("templates")
_UNASSIGNED = "(no subject)"


def _environment() -> tuple[Environment, Markup, str]:
    env = Environment(
        loader=FileSystemLoader(str(_TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.0%}"
    env.filters["prob"] = lambda v: "–" if v is None else f"{v:.2f}"
    env.filters["words"] = lambda v: str(v).replace("_", " ")
    css = (_TEMPLATES / "report.css").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; img-src data:; "
        f"style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )
    # The stylesheet is our own file, not user text: it goes in verbatim so the hash matches.
    return env, Markup(css), csp


def patient_filename(subject: str, taken: set[str] | None = None) -> str:
    """A safe, unique file name for a patient's page (``patient-<id>.html``).

    Characters other than letters, digits, ``.``, ``_`` and ``-`` are replaced; a short hash of
    the id is added when anything was replaced or the name is taken (case-insensitively).
    """
    taken = taken if taken is not None else set()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", subject).strip("._")[:60] or "patient"
    name = f"patient-{safe}.html"
    if safe != subject or name.lower() in taken:
        digest = hashlib.sha1(subject.encode("utf-8")).hexdigest()[:8]
        name = f"patient-{safe}-{digest}.html"
    taken.add(name.lower())
    return name


def _group(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        subject = row.get("subject")
        key = str(subject) if subject not in (None, "") else _UNASSIGNED
        groups.setdefault(key, []).append(dict(row))
    return groups



def _decision_threshold(rows: list[Mapping[str, Any]], condition: str, fallback: float) -> float:
    """The threshold the photos' findings were made with: the model's calibrated one when
    the rows carry it (rows of one model share it), else the rules' fallback."""
    for row in rows:
        thresholds = row.get("thresholds")
        if row.get("status", "ok") == "ok" and isinstance(thresholds, Mapping):
            value = thresholds.get(condition)
            if isinstance(value, (int, float)):
                return float(value)
    return fallback


def _patient_context(
    subject: str,
    rows: list[dict[str, Any]],
    assessment: Assessment,
    intake: Intake | None,
    rules: Rules,
    base: Path | None,
) -> dict[str, Any]:
    photos = []
    for row in rows:
        figure = photo_figure(row, base=base)
        conditions = row.get("conditions") if isinstance(row.get("conditions"), Mapping) else {}
        photos.append({
            "figure": figure,
            "view": row.get("view") or "unknown view",
            "status": row.get("status", "ok"),
            "error": row.get("error"),
            "stage": row.get("stage"),
            "findings": [f for f in row.get("findings") or [] if f in CONDITIONS] if isinstance(row.get("findings"), list) else [],
            "conditions": [(c, conditions.get(c)) for c in CONDITIONS if isinstance(conditions.get(c), (int, float))],
        })
    findings = [{
        "name": c,
        "present": c in assessment.findings,
        "probability": assessment.conditions.get(c),
        "threshold": _decision_threshold(rows, c, rules.finding_thresholds[c]),
    } for c in CONDITIONS]
    zones = [{
        "name": z,
        "colour": ZONE_COLOURS[z],
        "loss": assessment.zones[z]["loss_fraction"],
        "focus": z in assessment.focus_zones,
        "rank": assessment.focus_zones.index(z) + 1 if z in assessment.focus_zones else None,
    } for z in ZONES if z in assessment.zones]
    stage_bars = None
    if assessment.stage_probabilities:
        stage_bars = [{"stage": s, "p": p, "height": round(60 * p, 1), "x": 8 + i * 40,
                       "chosen": s == assessment.stage}
                      for i, (s, p) in enumerate(zip(STAGES, assessment.stage_probabilities))]
    models = sorted({str(m.get("id")) for r in rows if isinstance(m := r.get("model"), Mapping) and m.get("id")})
    return {
        "subject": subject,
        "a": assessment,
        "decision_label": rules.label("decisions", assessment.decision),
        "decision_colour": DECISION_COLOURS[assessment.decision],
        "recommendations": [(r, rules.label("recommendations", r)) for r in assessment.recommendations],
        "cautions": [(c, rules.label("cautions", c)) for c in assessment.cautions],
        "photos": photos,
        "findings": findings,
        "zones": zones,
        "stage_bars": stage_bars,
        "intake": intake,
        "models": models,
        "rules": rules,
    }


def render_patient(
    rows: Sequence[Mapping[str, Any]],
    *,
    intake: Intake | None = None,
    rules: Rules | None = None,
    base: Path | None = None,
    index_href: str | None = "index.html",
) -> tuple[str, Assessment]:
    """One patient's page (HTML text) and the assessment it shows.

    Args:
        rows: all of the patient's result rows.
        intake: the patient's intake answers, if any.
        rules: candidacy rules (None: the defaults).
        base: folder that relative photo and mask paths are relative to.
        index_href: link back to the index (None: no link).
    """
    rules = rules or load_rules()
    rows = [dict(r) for r in rows]
    assessment = assess(rows, intake, rules=rules)
    subject = assessment.subject or _UNASSIGNED
    env, css, csp = _environment()
    context = _patient_context(subject, rows, assessment, intake, rules, base)
    html = env.get_template("patient.html.j2").render(css=css, csp=csp, index_href=index_href, **context)
    return html, assessment


def render_index(
    patients: Sequence[Mapping[str, Any]],
    *,
    rules: Rules,
    notices: Sequence[str] = (),
    models: Sequence[str] = (),
) -> str:
    """The batch index (HTML text).

    Args:
        patients: ``{"subject", "href", "assessment": Assessment, "photos": int}`` per patient.
        rules: the rules the assessments used.
        notices: lines to show under "Notes" (what was merged, warnings).
        models: model ids seen in the rows.
    """
    counts = Counter(p["assessment"].decision for p in patients)
    decision_chart = bar_chart(
        "Patients per decision",
        [(d.replace("_", " "), counts.get(d, 0), DECISION_COLOURS[d]) for d in DECISIONS],
    )
    rec_counts = Counter(r for p in patients for r in p["assessment"].recommendations)
    rec_chart = bar_chart(
        "Recommendations",
        [(r.replace("_", " ").replace("smp", "SMP"), rec_counts.get(r, 0), "#2F6EA5") for r in RECOMMENDATIONS],
    )
    stage_counts = Counter(p["assessment"].stage for p in patients if p["assessment"].stage is not None)
    stage_chart = bar_chart(
        "Norwood stage", [(f"stage {s}", stage_counts.get(s, 0), "#4C7A8C") for s in STAGES], bar_height=14, gap=5
    )
    env, css, csp = _environment()
    return env.get_template("index.html.j2").render(
        css=css,
        csp=csp,
        patients=[dict(p, label=rules.label("decisions", p["assessment"].decision),
                       colour=DECISION_COLOURS[p["assessment"].decision]) for p in patients],
        counts=[(d, rules.label("decisions", d), counts.get(d, 0), DECISION_COLOURS[d]) for d in DECISIONS],
        total=len(patients),
        charts=[decision_chart, rec_chart, stage_chart],
        notices=list(notices),
        rules=rules,
        models=list(models),
        labels=rules.labels,
    )


def write_reports(
    rows: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    intake: Mapping[str, Intake] | None = None,
    rules: Rules | None = None,
    results_dir: str | Path | None = None,
    notices: Sequence[str] = (),
) -> Path:
    """Write one page per patient and ``index.html`` into ``out_dir`` (atomically, file by file).

    Args:
        rows: result rows of any number of patients (grouped by "subject"; rows without one
            are gathered under "(no subject)").
        out_dir: the report folder (created if needed).
        intake: intake answers by subject; subjects on one side only are listed on the index.
        rules: candidacy rules (None: the defaults).
        results_dir: folder that relative photo and mask paths in the rows are relative to
            (None: as given, i.e. relative to the working folder).
        notices: extra lines for the index's notes (e.g. what was merged).

    Returns:
        The path of ``index.html``.
    """
    rules = rules or load_rules()
    out_dir = Path(out_dir)
    base = Path(results_dir) if results_dir is not None else None
    groups = _group(rows)
    notes = list(notices)
    if intake is not None:
        notes += join_intake([s for s in groups if s != _UNASSIGNED], intake)
    if _UNASSIGNED in groups:
        notes.append(f"{len(groups[_UNASSIGNED])} photo(s) have no subject; they are assessed together as {_UNASSIGNED!r}")
    taken: set[str] = {"index.html"}
    patients = []
    models: set[str] = set()
    for subject, patient_rows in groups.items():
        patient_intake = intake.get(subject) if intake is not None else None
        html, assessment = render_patient(patient_rows, intake=patient_intake, rules=rules, base=base)
        href = patient_filename(subject, taken)
        write_text_atomic(out_dir / href, html)
        models.update(assessment.models)
        patients.append({"subject": subject, "href": href, "assessment": assessment, "photos": len(patient_rows)})
    index = out_dir / "index.html"
    write_text_atomic(index, render_index(patients, rules=rules, notices=notes, models=sorted(models)))
    return index
