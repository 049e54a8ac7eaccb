"""BENCHMARKS.md sections: each benchmark script owns one, between two markers.

``bench_train``, ``bench_synth`` and ``bench_score`` each rewrite their own section,
``<!-- NAME -->`` ... ``<!-- /NAME -->``, and leave the rest of the file (hand-written
text and the other scripts' sections) as it is. The file is replaced in one atomic step,
so an interrupted benchmark never leaves half a file.

    >>> write_section(Path("BENCHMARKS.md"), "bench_synth", "## Synthetic renderer\\n...")
"""

from __future__ import annotations

import re
from pathlib import Path

from scalpscan.data.files import write_text_atomic

__all__ = ["BENCHMARKS", "markers", "read_section", "write_section", "inside_repository"]

#: The repository's benchmark page.
BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def markers(name: str) -> tuple[str, str]:
    """The opening and closing markers of section ``name``.

    Raises:
        ValueError: a name that would not make a plain HTML comment.
    """
    if not _NAME.match(name):
        raise ValueError(f"section name {name!r}: use letters, digits, '_', '.' or '-'")
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def read_section(path: Path, name: str) -> str | None:
    """The text between section ``name``'s markers in ``path`` (None when it has none)."""
    start, end = markers(name)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start not in text or end not in text.split(start, 1)[1]:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def write_section(path: Path, name: str, text: str) -> None:
    """Replace section ``name`` of ``path`` with ``text`` (appended when missing), atomically.

    A file that does not exist yet starts with a ``# Benchmarks`` title.
    """
    start, end = markers(name)
    current = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    block = f"{start}\n{text.strip(chr(10))}\n{end}"
    if start in current and end in current.split(start, 1)[1]:
        before, rest = current.split(start, 1)
        updated = before + block + rest.split(end, 1)[1]
    else:
        updated = current.rstrip("\n") + "\n\n" + block + "\n"
    write_text_atomic(path, updated)


def inside_repository(path: Path, repository: Path | None = None) -> bool:
    """Whether ``path`` lies inside the repository, so that a recorded benchmark command
    that names it reproduces from the repository alone."""
    root = (repository or BENCHMARKS.parent).resolve()
    return path.resolve().is_relative_to(root)
