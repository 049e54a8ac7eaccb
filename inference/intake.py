"""The intake sheet: what the patient told the clinic, one CSV row per patient.

Columns: ``subject, sex, keloid_history, eczema_active, psoriasis_active, notes``. Only
``subject`` is required; a missing yes/no column reads as "no" for everyone (with a warning),
other columns are kept out with a warning. Yes/no cells accept the usual spellings
(yes/no, y/n, true/false, 1/0, x or a tick for yes, blank for no).

    >>> intake, warnings = read_intake("intake.csv")
    >>> intake["P001"].keloid_history
    False
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from scalpscan.data.vocab import SEXES

__all__ = [
    "INTAKE_COLUMNS",
    "Intake",
    "IntakeProblem",
    "IntakeError",
    "parse_yes_no",
    "parse_sex",
    "read_intake",
    "join_intake",
]

#: The intake sheet's columns, in the order a template sheet lists them.
INTAKE_COLUMNS: tuple[str, ...] = ("subject", "sex", "keloid_history", "eczema_active", "psoriasis_active", "notes")
_FLAGS: tuple[str, ...] = ("keloid_history", "eczema_active", "psoriasis_active")

_YES = {"yes", "y", "true", "t", "1", "x", "✓", "✔", "ja", "oui", "si", "sí"}
_NO = {"no", "n", "false", "f", "0", "", "-", "none"}
_SEX_SPELLINGS = {
    "male": "male", "m": "male", "man": "male", "men": "male",
    "female": "female", "f": "female", "woman": "female", "women": "female", "w": "female",
}


@dataclass(frozen=True)
class Intake:
    """One patient's intake answers.

    Attributes:
        sex: "male", "female" or None (unknown); sets the priority of the focus zones.
        keloid_history: the patient has had keloid scars (even from small scars such as acne).
        eczema_active: eczema is active now.
        psoriasis_active: psoriasis is active now.
        notes: free text; the rules read it for signs of very active, progressing loss.
        subject: the patient id the row joins on.
    """

    sex: str | None = None
    keloid_history: bool = False
    eczema_active: bool = False
    psoriasis_active: bool = False
    notes: str = ""
    subject: str | None = None

    def __post_init__(self) -> None:
        if self.sex is not None and self.sex not in SEXES:
            raise ValueError(f"Intake.sex must be one of {SEXES} or None, got {self.sex!r}")


class IntakeProblem(NamedTuple):
    """One problem in the intake sheet: where (row = line in the file, column), the cell, what."""

    row: int
    column: str
    value: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column!r}, value {self.value!r}: {self.message}"


class IntakeError(ValueError):
    """An intake sheet that cannot be used. ``problems`` lists every problem found at once."""

    def __init__(self, path: str | Path, problems: list[IntakeProblem]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        lines = "\n  ".join(str(p) for p in self.problems)
        super().__init__(f"intake sheet {self.path}: {len(self.problems)} problem(s):\n  {lines}")


def parse_yes_no(text: str) -> bool | None:
    """True/False for the usual spellings of yes and no (blank is no); None when unrecognised."""
    key = text.strip().lower()
    if key in _YES:
        return True
    if key in _NO:
        return False
    return None


def parse_sex(text: str) -> str | None:
    """"male"/"female" for the usual spellings, None for blank.

    Raises:
        ValueError: the text names no sex the rules know.
    """
    key = text.strip().lower()
    if not key:
        return None
    if key in _SEX_SPELLINGS:
        return _SEX_SPELLINGS[key]
    raise ValueError(f"unknown sex, expected one of {', '.join(SEXES)} (or m/f) or blank for unknown")


def read_intake(path: str | Path) -> tuple[dict[str, Intake], list[str]]:
    """Read and validate an intake sheet.

    Args:
        path: CSV file with a header row (UTF-8, a BOM is fine; column names are case-insensitive).

    Returns:
        The intake answers by subject, and warnings (missing or unknown columns).

    Raises:
        IntakeError: every bad yes/no value, unknown sex, empty or duplicate subject, and a
            missing ``subject`` column, all listed at once, each with row, column and value.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntakeError(path, [IntakeProblem(0, "", "", f"not UTF-8 text ({exc.reason}); save the sheet as CSV UTF-8")]) from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise IntakeError(path, [IntakeProblem(1, "", "", "the file is empty; expected a header row: " + ",".join(INTAKE_COLUMNS))])
    names = [h.strip().lower() for h in header]
    problems: list[IntakeProblem] = []
    warnings: list[str] = []
    if "subject" not in names:
        problems.append(IntakeProblem(1, "subject", "", "the header has no subject column (expected: " + ",".join(INTAKE_COLUMNS) + ")"))
        raise IntakeError(path, problems)
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(IntakeProblem(1, header[i], header[i], "column named twice in the header"))
    for flag in _FLAGS:
        if flag not in names:
            warnings.append(f"intake sheet {path}: no {flag} column; read as 'no' for every patient")
    for name, original in zip(names, header):
        if name not in INTAKE_COLUMNS:
            warnings.append(f"intake sheet {path}: column {original!r} is not used (known: {', '.join(INTAKE_COLUMNS)})")
    col = {name: names.index(name) for name in INTAKE_COLUMNS if name in names}

    intakes: dict[str, Intake] = {}
    first_row: dict[str, int] = {}
    for line_no, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) > len(header):
            problems.append(IntakeProblem(line_no, "", ",".join(cells[len(header):]),
                                          f"{len(cells)} cells but the header has {len(header)} columns"))
            continue

        def cell(name: str) -> str:
            i = col.get(name)
            return cells[i].strip() if i is not None and i < len(cells) else ""

        subject = cell("subject")
        ok = True
        if not subject:
            problems.append(IntakeProblem(line_no, "subject", "", "empty subject; every row needs the patient id"))
            ok = False
        elif subject in first_row:
            problems.append(IntakeProblem(line_no, "subject", subject,
                                          f"duplicate subject, first on row {first_row[subject]}"))
            ok = False
        try:
            sex = parse_sex(cell("sex"))
        except ValueError as exc:
            problems.append(IntakeProblem(line_no, "sex", cell("sex"), str(exc)))
            sex, ok = None, False
        flags: dict[str, bool] = {}
        for flag in _FLAGS:
            value = parse_yes_no(cell(flag))
            if value is None:
                problems.append(IntakeProblem(line_no, flag, cell(flag),
                                              "not a yes/no value (use yes/no, y/n, true/false, 1/0, x or blank)"))
                ok = False
            flags[flag] = bool(value)
        if ok:
            first_row[subject] = line_no
            intakes[subject] = Intake(sex=sex, notes=cell("notes"), subject=subject, **flags)
        elif subject and subject not in first_row:
            first_row[subject] = line_no
    if problems:
        raise IntakeError(path, problems)
    return intakes, warnings


def join_intake(subjects: Iterable[str], intake: Mapping[str, Intake]) -> list[str]:
    """Warnings for patients on one side only: photos without an intake row, intake rows without photos."""
    subjects = list(dict.fromkeys(subjects))
    seen = set(subjects)
    warnings = [
        f"subject {s!r} has photos but no intake row: assessed with nothing known (sex unknown, no cautions)"
        for s in subjects if s not in intake
    ]
    warnings += [f"subject {s!r} is on the intake sheet but has no photos" for s in intake if s not in seen]
    return warnings
