"""The benchmark scripts rebuild their BENCHMARKS.md sections from results stored outside
git: a checkout that lacks some of them must not drop the rows those results built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalpscan.scripts import bench_train


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(bench_train, "REPO", tmp_path)
    monkeypatch.setattr(bench_train, "RESULTS", tmp_path / "local" / "bench" / "train")
    bench_train.RESULTS.mkdir(parents=True)
    return tmp_path


def _store(bench: Path, *names: str) -> None:
    for name in names:
        (bench_train.RESULTS / f"{name}.json").write_text(json.dumps({"name": name}))


def test_a_section_is_written_and_lists_the_results_it_was_built_from(bench: Path) -> None:
    _store(bench, "real", "mixed", "cv5")
    (bench / "BENCHMARKS.md").write_text("# Benchmarks\n\nhand-written text\n")
    assert bench_train.publish_section(bench_train.MARKER, "rows of real and mixed")
    assert bench_train.publish_section(bench_train.CV_MARKER, "rows of cv5")
    text = (bench / "BENCHMARKS.md").read_text()
    assert "hand-written text" in text
    assert "rows of real and mixed\n<!-- results: mixed real -->\n<!-- /bench_train -->" in text
    assert "rows of cv5\n<!-- results: cv5 -->\n<!-- /bench_train_cv -->" in text
    # One more result: the section is rebuilt in place.
    _store(bench, "real_v2")
    assert bench_train.publish_section(bench_train.MARKER, "three rows")
    text = (bench / "BENCHMARKS.md").read_text()
    assert "rows of real and mixed" not in text
    assert "three rows\n<!-- results: mixed real real_v2 -->" in text


def test_a_rebuild_that_would_drop_rows_is_set_aside(bench: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    _store(bench, "real", "mixed")
    bench_train.publish_section(bench_train.MARKER, "both rows")
    before = (bench / "BENCHMARKS.md").read_text()
    (bench_train.RESULTS / "mixed.json").unlink()  # e.g. a fresh checkout, one run redone
    assert not bench_train.publish_section(bench_train.MARKER, "one row")
    assert (bench / "BENCHMARKS.md").read_text() == before
    assert "results this checkout does not have (mixed)" in capsys.readouterr().out
    aside = bench_train.RESULTS / "bench_train_section.md"
    assert aside.read_text().startswith("one row\n<!-- results: real -->")
    assert bench_train.publish_section(bench_train.MARKER, "one row", replace=True)
    assert "one row" in (bench / "BENCHMARKS.md").read_text()


def test_a_section_that_lists_no_results_is_not_rebuilt_unasked(bench: Path) -> None:
    _store(bench, "real")
    (bench / "BENCHMARKS.md").write_text("<!-- bench_train -->\nold rows\n<!-- /bench_train -->\n")
    assert not bench_train.publish_section(bench_train.MARKER, "new rows")
    assert "old rows" in (bench / "BENCHMARKS.md").read_text()


# --- the one section writer of the three benchmark scripts --------------------------------


def test_write_section_replaces_only_its_own_section_atomically(tmp_path: Path) -> None:
    from scalpscan.scripts.benchmarks import read_section, write_section

    path = tmp_path / "BENCHMARKS.md"
    write_section(path, "bench_a", "figures A")  # a new file starts with a title
    write_section(path, "bench_b", "figures B\n")
    path.write_text(path.read_text() + "\nhand-written notes\n")
    write_section(path, "bench_a", "new figures A")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert text.count("<!-- bench_a -->") == 1 and "figures A" not in text.replace("new figures A", "")
    assert read_section(path, "bench_a") == "new figures A"
    assert read_section(path, "bench_b") == "figures B"
    assert "hand-written notes" in text and read_section(path, "bench_c") is None
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]  # no temporary file left
    with pytest.raises(ValueError, match="section name"):
        write_section(path, "bench a -->", "x")


def test_notes_outside_the_repository_are_refused_and_never_recorded(
        bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        bench_train.main(["report", "--notes", "/tmp/notes.md"])
    assert "outside the repository" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["bench_train", "real", "--notes", "local/n.md",
                                     "--replace-section", "--tag", "_x"])
    assert bench_train._command() == "python -m scalpscan.scripts.bench_train real --tag _x"


def test_a_cross_validation_row_names_its_recipe_file_and_what_it_changed(bench: Path) -> None:
    figures = {"photos": 10, "person_n": 3, **{key: 0.5 for key in (
        "stage_accuracy", "stage_mae", "stage_qwk", "stage_ece", "stage_ece_floor",
        "person_accuracy", "person_mae", "person_qwk", "view_accuracy")}}
    changed = {**bench_train._recipe("cv"), "backbone_lr_scale": 0.3, "threads": 1}
    (bench_train.RESULTS / "cv5_blr03.json").write_text(json.dumps({
        "title": "5-fold cross-validation", "recipe_file": "training/recipes/cv.yaml",
        "recipe": changed, "folds": 5, "oof": {**figures, "persons": 3}, "per_fold": {},
        "members": [figures] * 5, "ensemble": figures, "train_seconds": 60, "command": "c",
        "machine": "m", "run": "local/bench/train/runs/cv5_blr03"}))
    header = bench_train.render_cv_report().splitlines()[2]
    assert "recipe `training/recipes/cv.yaml`" in header
    assert "backbone_lr_scale=0.3" in header and "threads" not in header  # machine settings aside
