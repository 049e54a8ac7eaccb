"""Subject-grouped, stratified train/val/test splits.

The unit of splitting is the subject (person), never the photo: every photo of one person
(and every augmented copy of it) lands on the same side. Subjects are stratified by their
label (Norwood stage, else the condition pattern, else the view) with scikit-learn, so
each side sees every class in about the same proportion.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence

from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from scalpscan.data.manifest import ManifestRow
from scalpscan.data.vocab import CONDITIONS

__all__ = ["SPLIT_NAMES", "parse_ratios", "split_rows", "fold_subjects", "shared_subjects"]

#: Names of the parts, in the order the ratios are given.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def parse_ratios(text: str) -> tuple[float, ...]:
    """Parse ``0.7,0.15,0.15`` (two or three positive parts summing to 1).

    Raises:
        ValueError: naming the bad value and what is expected.
    """
    try:
        ratios = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--split {text!r}: expected numbers like 0.7,0.15,0.15") from None
    _check_ratios(ratios)
    return ratios


def _check_ratios(ratios: Sequence[float]) -> None:
    if not 2 <= len(ratios) <= len(SPLIT_NAMES):
        raise ValueError(f"split ratios {tuple(ratios)}: expected 2 or 3 parts (train,val[,test])")
    if any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise ValueError(f"split ratios {tuple(ratios)}: every part must be a positive number")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"split ratios {tuple(ratios)} sum to {sum(ratios):g}; expected 1")


def _stratum(rows: list[ManifestRow]) -> str:
    """The most common label of one subject's photos."""
    stages = Counter(r.stage for r in rows if r.stage is not None)
    if stages:
        return f"stage{stages.most_common(1)[0][0]}"
    patterns = Counter(
        "".join("?" if r.conditions.get(c) is None else str(r.conditions[c]) for c in CONDITIONS) for r in rows
    )
    pattern = patterns.most_common(1)[0][0]
    return f"cond{pattern}" if pattern != "?" * len(CONDITIONS) else "unknown"


def _split_subjects(
    subjects: list[str], strata: list[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split subjects in two, ``fraction`` of them on the second side, stratified when possible."""
    counts = Counter(strata)
    n_second = max(1, round(len(subjects) * fraction))
    n_first = len(subjects) - n_second
    # Stratify only when every stratum can reach both sides; rare ones are pooled first.
    pooled = [s if counts[s] >= 2 else "rare" for s in strata]
    pooled_counts = Counter(pooled)
    stratify: list[str] | None = pooled
    if (
        min(pooled_counts.values()) < 2
        or n_second < len(pooled_counts)
        or n_first < len(pooled_counts)
    ):
        stratify = None
    try:
        first, second = train_test_split(subjects, test_size=n_second, random_state=seed, stratify=stratify)
    except ValueError:
        first, second = train_test_split(subjects, test_size=n_second, random_state=seed, stratify=None)
    return list(first), list(second)


def split_rows(
    rows: Sequence[ManifestRow],
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    *,
    seed: int = 0,
) -> dict[str, list[ManifestRow]]:
    """Split rows by subject, stratified by label, reproducibly.

    Args:
        rows: Manifest rows.
        ratios: Fraction of subjects per part, for ``train``, ``val`` and (optionally) ``test``.
        seed: The same seed and rows always give the same split.

    Returns:
        Part name -> rows, in the input order. No subject is on two sides.

    Raises:
        ValueError: for bad ratios or fewer subjects than parts.
    """
    _check_ratios(ratios)
    names = SPLIT_NAMES[: len(ratios)]
    by_subject: dict[str, list[ManifestRow]] = defaultdict(list)
    for row in rows:
        by_subject[row.subject].append(row)
    subjects = sorted(by_subject)
    if len(subjects) < len(ratios):
        raise ValueError(f"{len(subjects)} subject(s) cannot fill {len(ratios)} splits; expected at least {len(ratios)}")
    strata = {s: _stratum(by_subject[s]) for s in subjects}

    assignment: dict[str, str] = {}
    remaining = subjects
    remaining_share = 1.0
    # Peel off the last parts one at a time (test, then val); the rest is train.
    for index in range(len(ratios) - 1, 0, -1):
        fraction = ratios[index] / remaining_share
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            remaining, taken = _split_subjects(remaining, [strata[s] for s in remaining], fraction, seed + index)
        for s in taken:
            assignment[s] = names[index]
        remaining_share -= ratios[index]
    for s in remaining:
        assignment[s] = names[0]

    parts: dict[str, list[ManifestRow]] = {name: [] for name in names}
    for row in rows:
        parts[assignment[row.subject]].append(row)
    return parts


def fold_subjects(rows: Sequence[ManifestRow], folds: int, *, seed: int = 0) -> dict[str, int]:
    """Deal subjects into ``folds`` folds for K-fold cross-validation, stratified by label.

    Every photo of a subject lands in the subject's fold, so a fold model never sees a
    person it is validated on. Folds get about the same number of photos and the same mix
    of stages (scikit-learn's ``StratifiedGroupKFold``; strata as in `split_rows`).

    Args:
        rows: Manifest rows.
        folds: Number of folds, at least 2 and at most the number of subjects.
        seed: The same seed and rows always give the same folds.

    Returns:
        Subject -> fold index (0 to ``folds - 1``); every fold holds at least one subject.

    Raises:
        ValueError: for fewer than 2 folds or more folds than subjects.
    """
    by_subject: dict[str, list[ManifestRow]] = defaultdict(list)
    for row in rows:
        by_subject[row.subject].append(row)
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds={folds!r}: cross-validation needs at least 2 folds")
    if len(by_subject) < folds:
        raise ValueError(f"{len(by_subject)} subject(s) cannot fill {folds} folds; expected at "
                         f"least {folds} subjects (or fewer folds)")
    strata = {s: _stratum(photos) for s, photos in by_subject.items()}
    ordered = [row.subject for row in rows]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    assignment: dict[str, int] = {}
    with warnings.catch_warnings():
        # Rare strata (fewer subjects than folds) only make the stratification approximate.
        warnings.simplefilter("ignore")
        for fold, (_, held_out) in enumerate(splitter.split(
                ordered, [strata[s] for s in ordered], groups=ordered)):
            for i in held_out:
                assignment[ordered[i]] = fold
    return dict(sorted(assignment.items()))


def shared_subjects(parts: dict[str, Sequence[ManifestRow]]) -> dict[str, list[str]]:
    """Subjects found in more than one part: subject -> part names (empty when clean)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for name, rows in parts.items():
        for row in rows:
            seen[row.subject].add(name)
    return {s: sorted(p) for s, p in sorted(seen.items()) if len(p) > 1}
