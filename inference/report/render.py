"""Patient report pages and the batch index, as self-contained HTML.

One page per patient (photos with zone and loss overlays, findings, stage, decision,
recommendations, focus zones, cautions, reasons, disclaimers, model and rules version, how
the photos were grouped, what the model does not assess), an ``index.html`` with counts
per decision and charts, ``patients.jsonl`` with one assessment per patient holding every
field its page shows (:func:`patient_record`), and on request a PDF per patient
(:mod:`scalpscan.inference.report.pdf`).

A photo whose patient is unknown (no subject in its row) is a patient of its own, flagged
on its page and on the index: photos are never pooled by a guess. An output the model does
not assess (listed in a row's ``not_assessed``) is shown as "not assessed", never as 0 %
or "absent"; the findings of outputs trained on renders only (a row's ``unvalidated``)
are marked as not validated on real photos. Pages load nothing from outside
themselves: styles are inline (allowed by hash in a Content-Security-Policy), pictures are
``data:`` URIs re-encoded without metadata, charts are inline SVG. Jinja2 escapes every text.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import BaseLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from scalpscan.data.files import write_text_atomic
from scalpscan.data.vocab import CONDITIONS, STAGES, ZONES
from scalpscan.inference.inputs import SUBJECT_SOURCES
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

__all__ = [
    "DECISION_COLOURS",
    "PATIENTS_FILE",
    "OUTPUT_NAMES",
    "template_environment",
    "write_reports",
    "render_patient",
    "render_index",
    "patient_filename",
    "patient_context",
    "patient_record",
    "group_patients",
]

#: Colour of each decision's badge and bar.
DECISION_COLOURS: dict[str, str] = {
    "candidate": "#1B7F3B",
    "caution": "#B25E00",
    "not_indicated": "#55606E",
    "review": "#5B3FB0",
}
#: The machine-readable assessments, one JSON object per patient, beside index.html.
PATIENTS_FILE = "patients.jsonl"
#: Outputs a model may not assess (``row["not_assessed"]``), in the words the pages use.
OUTPUT_NAMES: dict[str, str] = {
    "thinning": "thinning",
    "alopecia_patch": "alopecia patches",
    "transplant_scar": "transplant scars",
    "stage": "Norwood stage",
    "view": "camera view",
    "zones": "zones",
    "hairloss": "hair-loss map (loss per zone)",
}
_TEMPLATES = Path(__file__).with_name("templates")


def template_environment(loader: BaseLoader | None = None) -> Environment:
    """The Jinja2 environment of the report pages: autoescaping, strict undefined names and
    the filters the templates use (``pct``, ``prob``, ``words``; None shows as "–").

    Args:
        loader: where templates come from; the report's own folder when None (the web app
            puts its own folder first, to frame the report's templates).
    """
    env = Environment(
        loader=loader or FileSystemLoader(str(_TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.0%}"
    env.filters["prob"] = lambda v: "–" if v is None else f"{v:.2f}"
    env.filters["words"] = lambda v: str(v).replace("_", " ")
    return env


def _environment() -> tuple[Environment, Markup, str]:
    env = template_environment()
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


def group_patients(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped into patients, in first-seen order.

    Rows with a subject are grouped by it. A row without one is a patient of its own
    (``known`` False), named after its photo: two unknown photos are never pooled.

    Returns:
        ``{"key", "subject", "label", "known", "rows"}`` per patient; ``subject`` is None
        for an unknown patient and ``label`` is what the pages show.
    """
    patients: dict[str, dict[str, Any]] = {}
    for row in rows:
        subject = row.get("subject")
        if subject not in (None, ""):
            key = f"s:{subject}"
            entry = patients.setdefault(
                key, {"key": key, "subject": str(subject), "label": str(subject), "known": True, "rows": []}
            )
        else:
            image = str(row.get("image") or "photo")
            key = f"u:{image}"
            while key in patients:  # the same photo twice: still its own patient each time
                key += "+"
            entry = patients.setdefault(key, {
                "key": key, "subject": None, "label": f"Unknown patient · {Path(image).name}", "known": False, "rows": [],
            })
        entry["rows"].append(dict(row))
    return list(patients.values())


def _union(rows: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        value = row.get(key)
        if isinstance(value, list):
            names.update((str(v), None) for v in value)
    return list(names)


def _grouping(rows: Sequence[Mapping[str, Any]], known: bool) -> tuple[list[str], str]:
    """How the patient's photos were grouped: the sources (keys of SUBJECT_SOURCES) and words."""
    sources = list(dict.fromkeys(str(r.get("subject_source")) for r in rows if r.get("subject_source")))
    if not known:
        sources = ["unknown"]
    if not sources:
        return [], "by the subject recorded in the results"
    words = "; ".join(SUBJECT_SOURCES.get(src, src) for src in sources)
    if len(sources) > 1:
        words = "photos grouped by more than one source: " + words
    return sources, words


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
    known: bool = True,
) -> dict[str, Any]:
    photos = []
    for row in rows:
        figure = photo_figure(row, base=base)
        conditions = row.get("conditions") if isinstance(row.get("conditions"), Mapping) else {}
        photos.append({
            "image": row.get("image"),
            "figure": figure,
            "view": row.get("view") or "unknown view",
            "status": row.get("status", "ok"),
            "error": row.get("error"),
            "stage": row.get("stage"),
            "findings": [f for f in row.get("findings") or [] if f in CONDITIONS] if isinstance(row.get("findings"), list) else [],
            "conditions": [(c, conditions.get(c)) for c in CONDITIONS if isinstance(conditions.get(c), (int, float))],
        })
    not_assessed = list(dict.fromkeys([*_union(rows, "not_assessed"), *getattr(assessment, "not_assessed", [])]))
    unvalidated = [n for n in _union(rows, "unvalidated") if n not in not_assessed]
    findings = []
    for c in CONDITIONS:
        probability = assessment.conditions.get(c)
        assessed = c not in not_assessed and probability is not None
        findings.append({
            "name": c,
            # None: unknown (not assessed, or no usable photo says); never shown as "no".
            "present": (c in assessment.findings) if assessed else None,
            "probability": probability if assessed else None,
            "threshold": _decision_threshold(rows, c, rules.finding_thresholds[c]) if assessed else None,
            "not_assessed": c in not_assessed,
            "unvalidated": c in unvalidated,
        })
    zones = [{
        "name": z,
        "colour": ZONE_COLOURS[z],
        "loss": assessment.zones[z].get("loss_fraction"),
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
        "known": known,
        "grouping_sources": _grouping(rows, known)[0],
        "grouping": _grouping(rows, known)[1],
        "not_assessed": not_assessed,
        "not_assessed_words": [OUTPUT_NAMES.get(n, n.replace("_", " ")) for n in not_assessed],
        "unvalidated": unvalidated,
        "unvalidated_words": [OUTPUT_NAMES.get(n, n.replace("_", " ")) for n in unvalidated],
        "stage_assessed": "stage" not in not_assessed,
        "zones_assessed": "zones" not in not_assessed and "hairloss" not in not_assessed,
    }


def patient_context(
    rows: Sequence[Mapping[str, Any]],
    *,
    assessment: Assessment | None = None,
    intake: Intake | None = None,
    rules: Rules | None = None,
    base: Path | None = None,
    label: str | None = None,
    known: bool | None = None,
) -> dict[str, Any]:
    """What one patient's page shows: the values its template reads, and that
    :func:`patient_record` turns into the patient's machine-readable assessment.

    For a caller that shows the page in its own frame, or assesses the rows itself (the clinic
    app assesses a visit with the patient's earlier visits as ``prior``).

    Args:
        rows: all of the patient's result rows.
        assessment: the patient's assessment as the caller made it (None: the rows are
            assessed with ``intake`` and ``rules`` alone).
        intake: the patient's intake answers, if any.
        rules: candidacy rules (None: the defaults).
        base: folder that relative photo and mask paths are relative to.
        label: the patient's name on the page (default: the rows' subject).
        known: whether the patient is known (False flags the page: a photo of its own);
            None: known when the assessment has a subject.

    Returns:
        ``subject`` (the label shown), ``a`` (the `Assessment`), ``photos`` (each with its
        ``figure``), ``findings``, ``zones``, ``known``, ``grouping``, ``not_assessed``,
        ``unvalidated`` and the rest of what ``patient.html.j2`` shows.
    """
    rules = rules or load_rules()
    rows = [dict(r) for r in rows]
    if assessment is None:
        assessment = assess(rows, intake, rules=rules)
    if known is None:
        known = assessment.subject is not None
    subject = label or assessment.subject or "Unknown patient"
    return _patient_context(subject, rows, assessment, intake, rules, base, known)


def _patient_page(
    rows: Sequence[Mapping[str, Any]],
    *,
    intake: Intake | None,
    rules: Rules,
    base: Path | None,
    index_href: str | None,
    label: str | None,
    known: bool | None,
    assessment: Assessment | None = None,
) -> tuple[str, Assessment, dict[str, Any]]:
    context = patient_context(rows, assessment=assessment, intake=intake, rules=rules, base=base, label=label,
                              known=known)
    env, css, csp = _environment()
    html = env.get_template("patient.html.j2").render(css=css, csp=csp, index_href=index_href, **context)
    return html, context["a"], context


def render_patient(
    rows: Sequence[Mapping[str, Any]],
    *,
    intake: Intake | None = None,
    rules: Rules | None = None,
    base: Path | None = None,
    index_href: str | None = "index.html",
    label: str | None = None,
    known: bool | None = None,
    assessment: Assessment | None = None,
) -> tuple[str, Assessment]:
    """One patient's page (HTML text) and the assessment it shows.

    Args:
        rows: all of the patient's result rows.
        intake: the patient's intake answers, if any.
        rules: candidacy rules (None: the defaults).
        base: folder that relative photo and mask paths are relative to.
        index_href: link back to the index (None: no link).
        label: the patient's name on the page (default: the rows' subject).
        known: whether the patient is known (False flags the page: a photo of its own);
            None: known when the rows carry a subject.
        assessment: the assessment to show, made by the caller, e.g. with the patient's
            earlier visits as ``prior`` (None: the rows are assessed with ``intake`` alone).
    """
    html, assessment, _ = _patient_page(
        rows, intake=intake, rules=rules or load_rules(), base=base, index_href=index_href, label=label, known=known,
        assessment=assessment,
    )
    return html, assessment


def patient_record(context: Mapping[str, Any], *, page: str | None = None, pdf: str | None = None) -> dict[str, Any]:
    """The machine-readable assessment of one patient: every field the patient page shows.

    Args:
        context: the page's context (:func:`patient_context`).
        page: the page's file name; pdf: the PDF's file name, when written.

    Returns:
        A JSON-ready dict: ``subject`` (None when unknown), ``label``, ``patient_known``,
        ``grouping`` (sources and words), ``decision`` and its label, ``recommendations``,
        ``focus_zones``, ``cautions`` (codes and labels), ``stage`` and its probabilities,
        ``findings`` (probability, threshold, found: None when unknown), ``zones`` (loss,
        focus rank), ``not_assessed``, ``unvalidated``, ``photos`` (image, view, status,
        error, stage, findings, probabilities), ``reasons``, ``intake``, ``disclaimers``,
        ``models``, ``rules`` (name, version), and the ``assessment`` as the rules engine
        returns it.
    """
    a: Assessment = context["a"]
    intake = context.get("intake")
    return {
        "subject": a.subject if context.get("known", True) else None,
        "label": context["subject"],
        "patient_known": bool(context.get("known", True)),
        "grouping": {"sources": list(context.get("grouping_sources") or []), "text": context.get("grouping")},
        "decision": a.decision,
        "decision_label": context["decision_label"],
        "recommendations": [{"code": c, "label": label} for c, label in context["recommendations"]],
        "focus_zones": list(a.focus_zones),
        "cautions": [{"code": c, "label": label} for c, label in context["cautions"]],
        "stage": a.stage if context.get("stage_assessed", True) else None,
        "stage_probabilities": a.stage_probabilities if context.get("stage_assessed", True) else None,
        "findings": [
            {k: f[k] for k in ("name", "present", "probability", "threshold", "not_assessed", "unvalidated")}
            for f in context["findings"]
        ],
        "zones": [{"name": z["name"], "loss_fraction": z["loss"], "focus_rank": z["rank"]} for z in context["zones"]],
        "not_assessed": list(context.get("not_assessed") or []),
        "unvalidated": list(context.get("unvalidated") or []),
        "photos": [
            {
                "image": p["image"],
                "view": p["view"] if p["view"] != "unknown view" else None,
                "status": p["status"],
                "error": p["error"],
                "stage": p["stage"],
                "findings": p["findings"],
                "conditions": dict(p["conditions"]),
            }
            for p in context["photos"]
        ],
        "photos_used": len(a.photos_used),
        "photos_left_out": len(a.photos_excluded),
        "reasons": [{"rule": r.rule, "text": r.text, "evidence": r.evidence} for r in a.reasons],
        "intake": None if intake is None else {
            "sex": intake.sex,
            "keloid_history": intake.keloid_history,
            "eczema_active": intake.eczema_active,
            "psoriasis_active": intake.psoriasis_active,
            "notes": intake.notes,
        },
        "disclaimers": list(a.disclaimers),
        "models": list(context["models"]),
        "rules": {"name": context["rules"].name, "version": str(a.rules_version)},
        "page": page,
        "pdf": pdf,
        "assessment": a.to_dict(),
    }


def render_index(
    patients: Sequence[Mapping[str, Any]],
    *,
    rules: Rules,
    notices: Sequence[str] = (),
    models: Sequence[str] = (),
    not_assessed: Sequence[str] = (),
) -> str:
    """The batch index (HTML text).

    Args:
        patients: ``{"subject", "href", "assessment": Assessment, "photos": int}`` per patient
            (optionally ``"known": False`` for a patient of unknown identity, flagged).
        rules: the rules the assessments used.
        notices: lines to show under "Notes" (what was merged, warnings).
        models: model ids seen in the rows.
        not_assessed: outputs the model does not assess (said at the top of the page).
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
    charts = [decision_chart, rec_chart]
    if "stage" not in not_assessed:
        stage_counts = Counter(p["assessment"].stage for p in patients if p["assessment"].stage is not None)
        charts.append(bar_chart(
            "Norwood stage", [(f"stage {s}", stage_counts.get(s, 0), "#4C7A8C") for s in STAGES], bar_height=14, gap=5
        ))
    env, css, csp = _environment()
    return env.get_template("index.html.j2").render(
        css=css,
        csp=csp,
        patients=[dict(p, label=rules.label("decisions", p["assessment"].decision),
                       colour=DECISION_COLOURS[p["assessment"].decision],
                       name=p.get("name") or p["subject"], known=p.get("known", True)) for p in patients],
        counts=[(d, rules.label("decisions", d), counts.get(d, 0), DECISION_COLOURS[d]) for d in DECISIONS],
        total=len(patients),
        unknown=sum(1 for p in patients if not p.get("known", True)),
        charts=charts,
        notices=list(notices),
        rules=rules,
        models=list(models),
        labels=rules.labels,
        not_assessed_words=[OUTPUT_NAMES.get(n, n.replace("_", " ")) for n in not_assessed],
        stage_assessed="stage" not in not_assessed,
    )


def write_reports(
    rows: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    intake: Mapping[str, Intake] | None = None,
    rules: Rules | None = None,
    results_dir: str | Path | None = None,
    notices: Sequence[str] = (),
    pdf: bool = False,
) -> Path:
    """Write one page per patient, ``index.html`` and ``patients.jsonl`` into ``out_dir``.

    Every file is written atomically.

    Args:
        rows: result rows of any number of patients (grouped by "subject"; a row without
            one is a patient of its own, see :func:`group_patients`).
        out_dir: the report folder (created if needed).
        intake: intake answers by subject; subjects on one side only are listed on the index.
        rules: candidacy rules (None: the defaults).
        results_dir: folder that relative photo and mask paths in the rows are relative to
            (None: as given, i.e. relative to the working folder).
        notices: extra lines for the index's notes (e.g. what was merged).
        pdf: also write ``patient-<id>.pdf`` per patient (needs headless Chromium, see
            :mod:`scalpscan.inference.report.pdf`).

    Returns:
        The path of ``index.html``.

    Raises:
        scalpscan.inference.report.pdf.PdfError: with ``pdf``, when no PDF engine is
            installed (checked before anything is written) or one PDF fails.
    """
    from scalpscan.inference.report import pdf as pdf_engine

    engine = pdf_engine.find_engine() if pdf else None
    rules = rules or load_rules()
    out_dir = Path(out_dir)
    base = Path(results_dir) if results_dir is not None else None
    groups = group_patients(rows)
    notes = list(notices)
    if intake is not None:
        notes += join_intake([g["subject"] for g in groups if g["known"]], intake)
    unknown = [g for g in groups if not g["known"]]
    if unknown:
        notes.append(
            f"{len(unknown)} photo(s) have no known patient; each is assessed as a patient of its own "
            "(flagged below). Name patients by folder, intake sheet or --subject REGEX to group them."
        )
    taken: set[str] = {"index.html"}
    patients = []
    records = []
    models: set[str] = set()
    not_assessed: dict[str, None] = {}
    for group in groups:
        subject = group["subject"]
        patient_intake = intake.get(subject) if intake is not None and subject is not None else None
        html, assessment, context = _patient_page(
            group["rows"], intake=patient_intake, rules=rules, base=base, index_href="index.html",
            label=group["label"], known=group["known"],
        )
        href = patient_filename(subject if subject is not None else f"unknown-{Path(group['key'][2:]).stem}", taken)
        page = out_dir / href
        write_text_atomic(page, html)
        pdf_name = None
        if engine is not None:
            pdf_name = Path(href).with_suffix(".pdf").name
            pdf_engine.write_pdf(page, out_dir / pdf_name, engine=engine)
        records.append(patient_record(context, page=href, pdf=pdf_name))
        models.update(assessment.models)
        not_assessed.update(dict.fromkeys(context["not_assessed"]))
        patients.append({"subject": group["label"], "href": href, "assessment": assessment,
                         "photos": len(group["rows"]), "known": group["known"]})
    buffer = io.StringIO()
    for record in records:
        buffer.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    write_text_atomic(out_dir / PATIENTS_FILE, buffer.getvalue())
    index = out_dir / "index.html"
    write_text_atomic(index, render_index(patients, rules=rules, notices=notes, models=sorted(models),
                                          not_assessed=list(not_assessed)))
    return index
