"""The intake sheet: spellings accepted, every error named by row, column and value, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalpscan.inference.intake import Intake, IntakeError, join_intake, parse_yes_no, read_intake

HEADER = "subject,sex,keloid_history,eczema_active,psoriasis_active,notes\n"


def write(tmp_path: Path, text: str, name: str = "intake.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_a_good_sheet(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + 'P1,male,no,no,no,"thinning, slow"\nP2,F,yes,Y,1,\n\nP3,,,,,\n')
    intake, warnings = read_intake(path)
    assert warnings == []
    assert intake["P1"] == Intake(sex="male", notes="thinning, slow", subject="P1")
    assert intake["P2"] == Intake(sex="female", keloid_history=True, eczema_active=True, psoriasis_active=True, subject="P2")
    assert intake["P3"] == Intake(subject="P3")  # blanks: sex unknown, answers "no"


@pytest.mark.parametrize("text", ["yes", "Y", "true", "TRUE", "1", "x", "X", " yes ", "✓"])
def test_yes_spellings(text: str) -> None:
    assert parse_yes_no(text) is True


@pytest.mark.parametrize("text", ["no", "N", "false", "0", "", "  ", "-"])
def test_no_spellings(text: str) -> None:
    assert parse_yes_no(text) is False


@pytest.mark.parametrize("text", ["maybe", "2", "yess", "?"])
def test_unrecognised_spellings(text: str) -> None:
    assert parse_yes_no(text) is None


def test_header_case_bom_and_column_order(tmp_path: Path) -> None:
    path = tmp_path / "intake.csv"
    path.write_bytes("\ufeffNotes,SUBJECT,Sex,Keloid_History\nhi,P1,woman,x\n".encode("utf-8"))
    intake, warnings = read_intake(path)
    assert intake["P1"] == Intake(sex="female", keloid_history=True, notes="hi", subject="P1")
    # A missing yes/no column reads as "no" for everyone, and says so.
    assert any("eczema_active" in w for w in warnings) and any("psoriasis_active" in w for w in warnings)


def test_unknown_column_is_a_warning(tmp_path: Path) -> None:
    intake, warnings = read_intake(write(tmp_path, HEADER.strip() + ",age\nP1,m,n,n,n,,44\n"))
    assert "P1" in intake and any("'age'" in w for w in warnings)


@pytest.mark.parametrize(
    "line,row,column,value,message",
    [
        ("P1,male,maybe,no,no,\n", 2, "keloid_history", "maybe", "not a yes/no value"),
        ("P1,male,no,2,no,\n", 2, "eczema_active", "2", "not a yes/no value"),
        ("P1,male,no,no,yess,\n", 2, "psoriasis_active", "yess", "not a yes/no value"),
        ("P1,other,no,no,no,\n", 2, "sex", "other", "unknown sex"),
        (",male,no,no,no,\n", 2, "subject", "", "empty subject"),
        ("P1,male,no,no,no,,extra\n", 2, "", "extra", "cells but the header has"),
    ],
)
def test_each_error_names_row_column_value(tmp_path: Path, line: str, row: int, column: str, value: str,
                                           message: str) -> None:
    path = write(tmp_path, HEADER + line)
    with pytest.raises(IntakeError) as info:
        read_intake(path)
    (problem,) = info.value.problems
    assert (problem.row, problem.column, problem.value) == (row, column, value)
    assert message in problem.message
    text = str(info.value)
    assert str(path) in text and f"row {row}" in text and repr(value) in text


def test_duplicate_subject(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "P1,m,n,n,n,\nP2,f,n,n,n,\nP1,m,y,n,n,\n")
    (problem,) = pytest.raises(IntakeError, read_intake, path).value.problems
    assert (problem.row, problem.column, problem.value) == (4, "subject", "P1")
    assert "first on row 2" in problem.message


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "P1,robot,maybe,no,no,\nP1,m,n,n,n,\nP2,m,n,n,perhaps,\n")
    problems = pytest.raises(IntakeError, read_intake, path).value.problems
    assert [(p.row, p.column) for p in problems] == [(2, "sex"), (2, "keloid_history"), (3, "subject"), (4, "psoriasis_active")]


def test_missing_subject_column_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(IntakeError, match="no subject column"):
        read_intake(write(tmp_path, "patient,sex\nP1,m\n"))
    with pytest.raises(IntakeError, match="empty"):
        read_intake(write(tmp_path, "", "empty.csv"))
    with pytest.raises(FileNotFoundError):
        read_intake(tmp_path / "missing.csv")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes((HEADER + "Jos\xe9,m,n,n,n,\n").encode("latin-1"))
    with pytest.raises(IntakeError, match="UTF-8"):
        read_intake(path)


def test_join_warnings_both_ways() -> None:
    intake = {"P1": Intake(subject="P1"), "P9": Intake(subject="P9")}
    warnings = join_intake(["P1", "P2", "P2"], intake)
    assert len(warnings) == 2
    assert "'P2' has photos but no intake row" in warnings[0]
    assert "'P9' is on the intake sheet but has no photos" in warnings[1]
    assert join_intake(["P1", "P9"], intake) == []


def test_intake_refuses_unknown_sex_in_code() -> None:
    with pytest.raises(ValueError, match="sex"):
        Intake(sex="M")
