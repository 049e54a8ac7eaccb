"""ImageFolder tree: one folder per class, photos inside (subfolders allowed).

::

    SRC/thinning/IMG_0001.jpg
    SRC/alopecia_patch/17-front.heic
    SRC/norwood_3/...
    SRC/none/...

Folder names become labels through the mapping: ``--map bald_spots=alopecia_patch``,
``--map 'nw3=stage:3,thinning'`` or a YAML/JSON file, on top of the default spellings
(thinning, alopecia_patch, transplant_scar, none, norwood_N / level_N / stage_N, views,
skip). The view comes from the folder's labels or the file name; the subject is
``<folder>:<id>`` where the id is the subject pattern's first group in the file name
(default: the leading number), else the file's stem.
"""

from __future__ import annotations

from pathlib import Path

from scalpscan.data.importers._common import (
    DEFAULT_SUBJECT_PATTERN,
    IMAGE_EXTENSIONS,
    ImportFormatError,
    ImportResult,
    LabelSet,
    labels_for_name,
    subject_from_name,
    view_from_name,
)
from scalpscan.data.manifest import ManifestRow
from scalpscan.data.vocab import CONDITIONS

__all__ = ["import_imagefolder"]

_SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}


def import_imagefolder(
    src: str | Path,
    *,
    mapping: dict[str, LabelSet] | None = None,
    subject_pattern: str | None = DEFAULT_SUBJECT_PATTERN,
) -> ImportResult:
    """Read an ImageFolder tree.

    Args:
        src: The folder holding one subfolder per class.
        mapping: Folder name -> labels, overriding the default spellings.
        subject_pattern: Regex whose first group in the file name is the person id.

    Returns:
        One row per photo, and warnings (non-picture files, photos without a view).

    Raises:
        ImportFormatError: no class folders, or folder names with no known meaning (all
            listed, with the ``--map`` that fixes them).
    """
    src = Path(src)
    if not src.is_dir():
        raise ImportFormatError(f"{src}: not a folder; expected an ImageFolder tree (one subfolder per class)")
    mapping = mapping or {}
    folders = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ImportFormatError(f"{src}: no class folders; expected SRC/<class>/<photo> (e.g. SRC/thinning/a.jpg)")
    labels_by_folder: dict[Path, LabelSet] = {}
    unknown = []
    for folder in folders:
        labels = labels_for_name(folder.name, mapping)
        if labels is None:
            unknown.append(folder.name)
        else:
            labels_by_folder[folder] = labels
    if unknown:
        hint = ""
        if {u.lower() for u in unknown} & _SPLIT_NAMES:
            hint = f" ({', '.join(unknown)} look like split folders: import each one, e.g. {src / unknown[0]})"
        raise ImportFormatError(
            f"{src}: folder name(s) {', '.join(map(repr, unknown))} have no known meaning{hint}; "
            f"map them, e.g. --map '{unknown[0]}=thinning' or --map '{unknown[0]}=stage:3' (or =skip)"
        )

    result = ImportResult()
    no_view = 0
    for folder, labels in labels_by_folder.items():
        if labels.skip:
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                result.warnings.append(f"{path}: not a picture file name ({path.suffix or 'no extension'}); left out")
                continue
            view = labels.view
            if view is None:
                view, problem = view_from_name(path.stem)
                if problem:
                    no_view += 1
            conditions: dict[str, int | None] = dict.fromkeys(CONDITIONS)
            conditions.update(labels.conditions)
            result.rows.append(
                ManifestRow(
                    image=path.resolve(),
                    subject=subject_from_name(path.stem, pattern=subject_pattern, prefix=folder.name),
                    view=view,
                    conditions=conditions,
                    stage=labels.stage,
                    extra={"source": "imagefolder", "class": folder.name},
                )
            )
    if no_view:
        result.warnings.append(
            f"{src}: {no_view} of {len(result.rows)} photo(s) name no view (front, top, back, left, right); "
            "view left unknown"
        )
    return result
