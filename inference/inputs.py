"""What to score: photos found in files, folders and manifests, each with its patient.

* **Every file accounted for.** A folder is searched recursively; each file under it becomes
  a :class:`PhotoJob` or a :class:`SkippedFile` with its reason (hidden, not a photo, a
  format this installation cannot read, not a regular file). A file whose name has no
  photo ending is identified from its first bytes, so ``scan`` or ``photo.dat`` holding a
  JPEG is still scored.
* **A photo is its file.** A job holds the photo's resolved path, size and modification
  time (:meth:`PhotoJob.key`); the same file reached through another spelling of its path
  (relative, absolute, ``.``, a symlink) is one photo.
* **Who is who.** A photo's patient comes from the first of these that applies:

  1. the manifest's ``subject`` column (``manifest``);
  2. the intake sheet: a subject on it named by one of the photo's folders (below the
     input folder) or by a whole token of its file name (``intake``);
  3. the per-patient folder the photo sits in, a folder directly under the input folder
     (``folder``); folders named like dates or cameras (``2024-11-25``, ``DCIM``,
     ``100APPLE``, ``Camera``) are passed over, so ``intake/2024-11-25/P001/IMG_1.jpg``
     is ``P001`` and a day's folder is never one patient;
  4. a patient-id pattern in the file name, ``--subject REGEX`` (``pattern``); the default,
     :data:`DEFAULT_SUBJECT_PATTERN`, recognises ids such as ``P001`` or ``2024-0012`` and
     never camera names (``IMG_4411``, ``DSC01234``, ``PXL_…``, ``Screenshot …``) or dates
     and times (``20240115_103045``).

  Otherwise the patient is unknown (``unknown``): the photo is a patient of its own, never
  pooled with another by a guess. :data:`SUBJECT_SOURCES` describes each source in words.
* **Sharding** keeps the photos whose stable hash of the path relative to its input folder
  or manifest is ``k`` modulo ``n``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_SUBJECT_PATTERN",
    "SUBJECT_SOURCES",
    "InputError",
    "PhotoJob",
    "SkippedFile",
    "Inputs",
    "compile_subject_pattern",
    "subject_from_name",
    "discover_inputs",
    "jobs_from_paths",
    "photo_key",
    "parse_shard",
    "shard_from_env",
    "select_shard",
]

#: Patient ids in file names: one to three letters and two to five digits (``P001``,
#: ``pt12``, ``AB00042``) or a year-style number (``2024-0012``), standing alone between
#: separators; camera prefixes are refused by name.
DEFAULT_SUBJECT_PATTERN = (
    r"(?i)(?<![A-Za-z0-9])"
    r"(?!(?:IMG|DSC|DSCN|DSCF|PXL|VID|MOV|DJI|SAM|PIC|PHO|CAM|IMAG|MVIMG|CIMG|PANO|BURST)\d)"
    r"([A-Za-z]{1,3}\d{2,5}|\d{4}-\d{3,6})"
    r"(?![A-Za-z0-9])"
)

#: How a photo's patient was found, as the patient page says it.
SUBJECT_SOURCES: dict[str, str] = {
    "manifest": "the manifest's subject column",
    "intake": "a name on the intake sheet (the photo's folder or file name)",
    "folder": "the per-patient folder the photos sit in",
    "pattern": "the patient id in the file names",
    "given": "the subject given by the caller",
    "staff": "assigned to the patient by a member of staff (web app)",
    "unknown": "unknown: nothing names this photo's patient, so it is a patient of its own",
}

# File endings of pictures this installation cannot read: camera raw files, vector
# drawings and documents. They are reported as unsupported, not as "not a photo".
_UNSUPPORTED_PICTURES = frozenset({
    ".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
    ".pef", ".srw", ".raw", ".3fr", ".erf", ".kdc", ".mrw", ".x3f", ".svg", ".svgz", ".pdf",
    ".eps", ".ai", ".jxl", ".emf", ".wmf",
})


class InputError(ValueError):
    """A bad input, shard or output argument; the message names it and the fix."""


@dataclass(frozen=True)
class PhotoJob:
    """One photo to score.

    Attributes:
        image: the path the photo is read from (resolved and absolute for discovered
            photos; as given for :func:`jobs_from_paths`).
        subject: patient id, or None when unknown.
        shard_key: path relative to its input folder or manifest, hashed for sharding.
        subject_source: how the patient was found (a key of :data:`SUBJECT_SOURCES`).
        size: file size in bytes when the file was listed (None: not known).
        mtime_ns: modification time in nanoseconds when the file was listed.
    """

    image: str
    subject: str | None
    shard_key: str
    subject_source: str = "unknown"
    size: int | None = None
    mtime_ns: int | None = None

    def key(self) -> tuple[str, int | None, int | None]:
        """The photo's identity: resolved path, size and modification time."""
        return photo_key(self.image, self.size, self.mtime_ns)


@dataclass(frozen=True)
class SkippedFile:
    """A file under an input folder that is not scored, and why.

    Attributes:
        path: the file.
        reason: ``hidden``, ``not a photo``, ``unsupported format`` or ``not a regular file``.
        detail: what was found (e.g. ``camera raw file (.dng)``).
    """

    path: str
    reason: str
    detail: str = ""


@dataclass
class Inputs:
    """What :func:`discover_inputs` found.

    Attributes:
        jobs: the photos to score, each once, in a stable order.
        skipped: the files under the input folders that are not photos, with reasons.
    """

    jobs: list[PhotoJob] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def skipped_counts(self) -> Counter[str]:
        """Skipped files per reason."""
        return Counter(s.reason for s in self.skipped)

    def unknown_patients(self) -> list[PhotoJob]:
        """The photos whose patient could not be known (each a patient of its own)."""
        return [job for job in self.jobs if job.subject is None]


def photo_key(path: str | Path, size: int | None, mtime_ns: int | None) -> tuple[str, int | None, int | None]:
    """``(resolved path, size, mtime_ns)``: one photo however its path is spelled."""
    return (os.path.normcase(str(Path(path).resolve())), size, mtime_ns)


def compile_subject_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """Compile ``--subject REGEX`` (None: no pattern; "" too).

    Raises:
        InputError: if the pattern is not a valid regular expression.
    """
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputError(
            f"--subject {pattern!r} is not a valid regular expression ({exc}); e.g. --subject 'P\\d{{3}}'"
        ) from exc


_DEFAULT_PATTERN = re.compile(DEFAULT_SUBJECT_PATTERN)


def subject_from_name(path: str | Path, pattern: str | re.Pattern[str] | None = _DEFAULT_PATTERN) -> str | None:
    """The patient id a file name carries, or None.

    The pattern's named group ``subject``, else its first group, else the whole match, is
    the id. ``P001_top.jpg`` -> ``P001``; ``2024-0012 crown.heic`` -> ``2024-0012``;
    ``IMG_4411.HEIC``, ``20240115_103045.jpg`` -> None.
    """
    compiled = compile_subject_pattern(pattern) if isinstance(pattern, str) else pattern
    if compiled is None:
        return None
    match = compiled.search(Path(path).stem)
    if match is None:
        return None
    if "subject" in compiled.groupindex and match.group("subject"):
        return match.group("subject")
    if compiled.groups and match.group(1):
        return match.group(1)
    return match.group(0) or None


_TOKENS = re.compile(r"[^A-Za-z0-9]+")

# Folder names that say when or with what a photo was taken, never whose scalp it shows.
_NOT_PATIENT_FOLDER = re.compile(
    r"(?i)^(?:"
    r"\d{4}[-_. ]?\d{2}([-_. ]?\d{2})?([-_. T]+\d{2}[-_.:h]?\d{2}([-_.:m]?\d{2})?s?)?"  # 2024-11-25, 20241125_1030
    r"|\d{1,2}[-_. ]\d{1,2}[-_. ]\d{2,4}"  # 25.11.2024
    r"|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*[-_ ]?\d{2,4}"  # nov-2024
    r"|dcim|camera|camera roll|screenshots|pictures|photos|images|img|upload|uploads|export|exports|originals"
    r"|\d{3}[a-z_]{5}"  # DCF camera folders: 100APPLE, 101MSDCF, 100_FUJI
    r")$"
)


def _patient_folder(parts: Sequence[str]) -> str | None:
    """The first folder below the input folder that can name a patient (not a date or camera folder)."""
    for part in parts:
        if not _NOT_PATIENT_FOLDER.match(part):
            return part
    return None


def _on_sheet(names: Iterable[str], sheet: Mapping[str, str]) -> str | None:
    for name in names:
        found = sheet.get(name.casefold())
        if found is not None:
            return found
    return None


def _subject_of(
    photo: Path, root: Path | None, sheet: Mapping[str, str] | None, pattern: re.Pattern[str] | None
) -> tuple[str | None, str]:
    rel_parts = photo.relative_to(root).parts[:-1] if root is not None else ()
    if sheet:
        stem = photo.stem
        found = _on_sheet([*reversed(rel_parts), stem, *(t for t in _TOKENS.split(stem) if t)], sheet)
        if found is not None:
            return found, "intake"
    folder = _patient_folder(rel_parts)
    if folder is not None:
        return folder, "folder"
    subject = subject_from_name(photo, pattern)
    if subject is not None:
        return subject, "pattern"
    return None, "unknown"


def _sniff(path: Path) -> str | None:
    """The picture format a file's first bytes show, or None (only the header is read)."""
    from PIL import Image

    from scalpscan.data.decode import IMAGE_EXTENSIONS  # noqa: F401  (registers pillow-heif)

    try:
        with Image.open(path) as im:
            return str(im.format)
    except Exception:  # anything Pillow cannot identify is not a photo
        return None


def _classify(path: Path, hidden: bool) -> tuple[bool, SkippedFile | None]:
    """(is a photo, why not) for one file found in a folder."""
    from scalpscan.data.decode import is_photo_name

    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        return False, SkippedFile(str(path), "not a regular file", f"cannot be listed ({exc.strerror})")
    if stat.S_ISLNK(mode):
        if not path.exists():
            return False, SkippedFile(str(path), "not a regular file", "a link to a file that does not exist")
        mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        return False, SkippedFile(str(path), "not a regular file")
    if hidden:
        return False, SkippedFile(str(path), "hidden", "its name or a folder's starts with '.'")
    if is_photo_name(path):
        return True, None
    suffix = path.suffix.lower()
    if suffix in _UNSUPPORTED_PICTURES:
        kind = "camera raw file" if suffix not in {".svg", ".svgz", ".pdf", ".eps", ".ai", ".jxl", ".emf", ".wmf"} else "format"
        return False, SkippedFile(
            str(path), "unsupported format", f"{kind} ({suffix}); export it as JPEG to score it"
        )
    from scalpscan.data.decode import is_photo_format

    if is_photo_format(_sniff(path)):
        return True, None
    return False, SkippedFile(str(path), "not a photo", suffix or "no file name ending")


def _walk(folder: Path) -> Iterator[tuple[Path, bool]]:
    """Every file under ``folder`` in sorted order, with whether it is hidden."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        here = Path(root)
        hidden_dir = any(part.startswith(".") for part in here.relative_to(folder).parts)
        for name in sorted(files):
            yield here / name, hidden_dir or name.startswith(".")
        # Links to folders are not followed (they could loop); they are reported.
        for name in list(dirs):
            if (here / name).is_symlink():
                dirs.remove(name)
                yield here / name, False


def _stat(path: Path) -> tuple[int | None, int | None]:
    try:
        info = path.stat()
    except OSError:
        return None, None
    return info.st_size, info.st_mtime_ns


def _manifest_jobs(path: Path) -> Iterator[PhotoJob]:
    from scalpscan.data.manifest import ManifestError, read_manifest

    try:
        rows = read_manifest(path, check_files=False)
    except ManifestError as exc:
        raise InputError(f"manifest {path} cannot be read:\n{exc}") from exc
    base = path.resolve().parent
    for row in rows:
        resolved = row.image.resolve()
        try:
            key = resolved.relative_to(base).as_posix()
        except ValueError:
            key = resolved.as_posix()
        size, mtime = _stat(resolved)
        subject = row.subject or None
        yield PhotoJob(
            image=str(resolved),
            subject=subject,
            shard_key=key,
            subject_source="manifest" if subject else "unknown",
            size=size,
            mtime_ns=mtime,
        )


def discover_inputs(
    inputs: Sequence[str | Path],
    *,
    subjects: Iterable[str] | None = None,
    subject_pattern: str | re.Pattern[str] | None = DEFAULT_SUBJECT_PATTERN,
) -> Inputs:
    """The photos named by files, folders and manifests, each once, and the files skipped.

    Args:
        inputs: photo files, folders (recursive) and ``.csv`` manifests.
        subjects: the subjects on the intake sheet, matched against folder names and file
            name tokens (case-insensitively; the sheet's spelling is kept).
        subject_pattern: the patient-id pattern for file names (``--subject``); None
            reads no ids from file names.

    Raises:
        InputError: for an input that does not exist, a manifest that cannot be read or a
            bad ``subject_pattern``.
    """
    pattern = compile_subject_pattern(subject_pattern) if isinstance(subject_pattern, str) else subject_pattern
    sheet = {str(s).casefold(): str(s) for s in subjects} if subjects is not None else None
    found = Inputs()
    seen: set[str] = set()

    def add(job: PhotoJob) -> None:
        key = photo_key(job.image, None, None)[0]
        if key not in seen:
            seen.add(key)
            found.jobs.append(job)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            root = path.resolve()
            for file, hidden in _walk(root):
                is_photo, skipped = _classify(file, hidden)
                if not is_photo:
                    assert skipped is not None
                    found.skipped.append(skipped)
                    continue
                resolved = file.resolve()
                subject, source = _subject_of(file, root, sheet, pattern)
                size, mtime = _stat(resolved)
                add(PhotoJob(str(resolved), subject, file.relative_to(root).as_posix(), source, size, mtime))
        elif path.is_file() and path.suffix.lower() == ".csv":
            for job in _manifest_jobs(path):
                add(job)
        elif path.is_file():
            resolved = path.resolve()
            subject, source = _subject_of(resolved, None, sheet, pattern)
            size, mtime = _stat(resolved)
            add(PhotoJob(str(resolved), subject, resolved.name, source, size, mtime))
        else:
            raise InputError(f"input not found: {path} (give photo files, folders or a manifest .csv)")
    return found


def jobs_from_paths(
    paths: Iterable[str | Path], *, subject_pattern: str | re.Pattern[str] | None = DEFAULT_SUBJECT_PATTERN
) -> list[PhotoJob]:
    """One job per path, as given; the subject read from the file name's patient id."""
    pattern = compile_subject_pattern(subject_pattern) if isinstance(subject_pattern, str) else subject_pattern
    jobs = []
    for p in paths:
        subject = subject_from_name(p, pattern)
        jobs.append(PhotoJob(str(p), subject, Path(p).name, "pattern" if subject else "unknown"))
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``; K counts from 0 (``0/4`` .. ``3/4``), like torchrun ranks.

    Raises:
        InputError: if the text is not ``K/N`` with ``0 <= K < N``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise InputError(f"--shard {text!r}: expected K/N, e.g. 0/4 (K counts from 0)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise InputError(f"--shard {text!r}: need N >= 1 and 0 <= K < N (K counts from 0, e.g. 0/4 .. 3/4)")
    return index, count


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when running under torchrun with more than one process."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
    except ValueError:
        return None
    if world > 1 and 0 <= rank < world:
        return rank, world
    return None


def _shard_of(key: str, count: int) -> int:
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(jobs: Iterable[PhotoJob], index: int, count: int) -> list[PhotoJob]:
    """The jobs of shard ``index`` of ``count``; every job lands in exactly one shard."""
    return [job for job in jobs if _shard_of(job.shard_key, count) == index]
