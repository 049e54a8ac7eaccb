"""Atomic writes: the old file survives a failed write; a new one is readable by others."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scalpscan.data.files import atomic_write, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "sub" / "metrics.json", "old\n")
    assert target.read_text() == "old\n"

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_permissions_follow_the_umask_not_mkstemps_0600(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        target = write_text_atomic(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o644
