"""`scalpscan synth`, the first `scalpscan demo` and the renderer benchmark's file update."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

from scalpscan.scripts.bench_synth import SECTION, markdown_section
from scalpscan.scripts.benchmarks import markers, write_section
from scalpscan.scripts.cli import main


def test_synth_command_writes_a_data_set_and_refuses_to_clobber_it(tmp_path: Path, capsys) -> None:
    out = tmp_path / "set"
    argv = ["synth", str(out), "--n", "7", "--size", "64", "--workers", "1", "--seed", "3", "--quiet"]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(out / "manifest.csv", encoding="utf-8")))
    assert len(rows) == 7 and all((out / r["image"]).is_file() for r in rows)
    assert Image.open(out / "contact_sheet.png").size[0] > 64
    assert "wrote 7 photos" in capsys.readouterr().out
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--n", "5", "--format", "png", "--contact-sheet", "0"]) == 0
    assert len(list((out / "images").iterdir())) == 5
    assert sorted(p.suffix for p in (out / "images").iterdir()) == [".png"] * 5


def test_synth_command_names_a_bad_value(tmp_path: Path, capsys) -> None:
    assert main(["synth", str(tmp_path / "x"), "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "x"), "--n", "2", "--size", "10"]) == 2
    assert "size" in capsys.readouterr().err


def test_demo_synth_step_renders_a_set_and_its_contact_sheet(tmp_path: Path, capsys) -> None:
    from scalpscan.scripts.commands.demo import DemoContext, step_synth

    ctx = DemoContext(out=tmp_path / "demo", n=6, size=64, seed=0, workers=1)
    step_synth(ctx)
    assert (tmp_path / "demo" / "synth" / "manifest.csv").is_file()
    assert ctx.outputs["contact_sheet"].is_file()
    assert "contact sheet" in capsys.readouterr().out


def test_benchmark_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nother figures\n", encoding="utf-8")
    write_section(path, SECTION, markdown_section([(1, 10, 0.5, 0.4)], 256, "test box", "cmd"))
    first = path.read_text(encoding="utf-8")
    assert "other figures" in first and "| 1 | 10 | 0.50 | 20.0 | 0.40 | 25.0 |" in first
    write_section(path, SECTION, markdown_section([(2, 10, 0.25, 0.5)], 256, "test box", "cmd"))
    second = path.read_text(encoding="utf-8")
    start, end = markers(SECTION)
    assert second.count(start) == 1 and second.count(end) == 1
    assert "| 2 | 10 | 0.25 | 40.0 | 0.50 | 20.0 |" in second and "| 1 | 10 |" not in second
    assert "other figures" in second
