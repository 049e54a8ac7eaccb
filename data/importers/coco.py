"""COCO JSON from annotation tools (CVAT, Label Studio, Roboflow): polygons to mask bits.

Category names say what a polygon is: a zone (``hairline``, ``crown``, ``left temple``,
... or ``--map NAME=zone:crown``) becomes that zone's bit in ``zone_mask``; a condition
(``thinning``, ``alopecia``, ``scar``, ...) becomes its bit in ``loss_mask`` and sets the
condition to 1 on that photo. Polygons and RLE (plain or compressed) are rasterised with
PIL; box-only annotations are reported and left out.

The photos are looked for where annotation tools put them: ``--images`` when given, else
beside the JSON, in ``images/`` beside the JSON's ``annotations/`` folder (CVAT's and
Label Studio's export layout) or in ``images/`` beside the JSON; the error names every
folder looked in. Only categories that some annotation uses need a meaning: an unused
category (tools export the whole label list) is ignored. A missing or unreadable photo is
reported and left out; ``strict`` refuses the whole import instead. A failed import
leaves no mask behind.

Where a photo has no polygon of a condition, the condition is unknown, unless the file
says the loss areas were annotated exhaustively (``"info": {"exhaustive": true}``, an
image's ``"exhaustive": true``, or ``--exhaustive``): then it is 0 and the photo gets a
loss mask even without polygons. An image entry may also carry ``subject``, ``view``,
``stage`` and condition values (0/1) directly; they take precedence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from scalpscan.data.decode import ImageDecodeError, image_size
from scalpscan.data.files import atomic_write
from scalpscan.data.importers._common import (
    DEFAULT_SUBJECT_PATTERN,
    ImportFormatError,
    ImportResult,
    LabelSet,
    labels_for_name,
    normalise_name,
    subject_from_name,
    view_from_name,
    zone_for_name,
)
from scalpscan.data.manifest import ManifestRow
from scalpscan.data.vocab import CONDITIONS, STAGES, condition_bit, parse_view, zone_bit

__all__ = ["import_coco", "rle_to_mask", "polygons_to_mask"]


def _rle_counts_from_string(text: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools ``rleFrString``)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE (``{"size": [h, w], "counts": list | str}``) to an ``HxW`` bool mask.

    Raises:
        ValueError: if the runs do not add up to the size.
    """
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _rle_counts_from_string(counts)
    flat = np.zeros(h * w, dtype=bool)
    pos, value = 0, False
    for run in counts:
        if run < 0 or pos + run > h * w:
            raise ValueError(f"RLE runs exceed the {w}x{h} image")
        flat[pos : pos + run] = value
        pos += run
        value = not value
    return flat.reshape((w, h)).T  # COCO runs go down the columns


def polygons_to_mask(polygons: list[list[float]], size: tuple[int, int]) -> np.ndarray:
    """COCO polygons (``[[x1, y1, x2, y2, ...], ...]``) to an ``HxW`` bool mask at ``size`` (w, h)."""
    layer = Image.new("1", size, 0)
    draw = ImageDraw.Draw(layer)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1)
    return np.asarray(layer, dtype=bool)


def _find_json(src: Path) -> Path:
    if src.is_file():
        return src
    if src.is_dir():
        for name in ("_annotations.coco.json", "annotations.json", "instances.json"):
            if (src / name).is_file():
                return src / name
        found = sorted(src.glob("*.json")) + sorted(src.glob("annotations/*.json"))
        if len(found) == 1:
            return found[0]
        if found:
            raise ImportFormatError(f"{src}: several JSON files ({', '.join(p.name for p in found)}); pass one of them")
    raise ImportFormatError(f"{src}: no COCO JSON file; expected a .json file or a folder holding one")


def _save_mask(mask: np.ndarray, path: Path, result: ImportResult) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(mask.astype(np.uint8), "L").save(tmp, format="PNG"))
    result.written.append(path)


def _image_roots(json_path: Path, images: str | Path | None) -> list[Path]:
    """Folders the photos may be in, in the order annotation tools use them."""
    if images is not None:
        return [Path(images)]
    here = json_path.parent
    roots = [here, here.parent / "images", here / "images"]
    if here.name == "annotations":
        roots.insert(0, here.parent / "images")
    return list(dict.fromkeys(roots))


def _find_image(file_name: str, roots: list[Path]) -> Path | None:
    for root in roots:
        for candidate in (root / file_name, root / Path(file_name).name):
            if candidate.is_file():
                return candidate.resolve()
    return None


def _category_labels(name: str, mapping: dict[str, LabelSet]) -> LabelSet | None:
    """The user's mapping first, then zone names ("crown" is a zone here, not the top
    view), then the default condition/stage/view spellings."""
    for key in (name, name.strip(), normalise_name(name)):
        if key in mapping:
            return mapping[key]
    zone = zone_for_name(name)
    if zone is not None:
        return LabelSet(zones=(zone,))
    return labels_for_name(name, {})


def import_coco(
    src: str | Path,
    *,
    out_dir: str | Path,
    mapping: dict[str, LabelSet] | None = None,
    images: str | Path | None = None,
    exhaustive: bool = False,
    subject_pattern: str | None = DEFAULT_SUBJECT_PATTERN,
    strict: bool = False,
) -> ImportResult:
    """Read a COCO JSON file and rasterise its polygons into mask PNGs.

    Args:
        src: The JSON file, or a folder holding one (e.g. Roboflow's ``_annotations.coco.json``).
        out_dir: Where the manifest goes; masks are written to ``out_dir/masks``.
        mapping: Category name -> labels (``zone:NAME``, conditions, stage, view, skip).
        images: Folder that ``file_name`` is relative to (default: the JSON's folder, or
            ``images/`` beside the JSON's ``annotations/`` folder, whichever holds the photos).
        exhaustive: Every loss area is annotated: no polygon means the condition is absent.
        subject_pattern: Regex whose first group in the file name is the person id
            (default: the leading number; without a match the stem). An image entry's own
            ``subject`` takes precedence.
        strict: Refuse the whole import when a photo is missing or unreadable (default:
            report it in the warnings and leave it out).

    Raises:
        ImportFormatError: for a malformed file, unknown category names that annotations
            use, no photo found at all (naming the folders looked in), or with ``strict``
            any missing or unreadable photo (all listed at once). No mask is left behind.
    """
    json_path = _find_json(Path(src))
    out_dir = Path(out_dir)
    roots = _image_roots(json_path, images)
    mapping = mapping or {}
    result = ImportResult()
    try:
        return _import(json_path, out_dir, roots, mapping, exhaustive, subject_pattern, strict, result)
    except BaseException:
        result.discard()
        raise


def _import(
    json_path: Path,
    out_dir: Path,
    roots: list[Path],
    mapping: dict[str, LabelSet],
    exhaustive: bool,
    subject_pattern: str | None,
    strict: bool,
    result: ImportResult,
) -> ImportResult:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImportFormatError(f"{json_path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ImportFormatError(f"{json_path}: expected a COCO object with 'images', 'annotations', 'categories'")
    info = data.get("info") or {}
    file_exhaustive = bool(info.get("exhaustive") or info.get("loss_exhaustive")) if isinstance(info, dict) else False

    used = {ann.get("category_id") for ann in data.get("annotations", []) if isinstance(ann, dict)}
    categories: dict[int, LabelSet] = {}
    unknown = []
    for cat in data.get("categories", []):
        labels = _category_labels(str(cat.get("name", "")), mapping)
        if labels is None:
            if cat.get("id") in used:  # tools export every label; only the used ones need a meaning
                unknown.append(str(cat.get("name")))
        else:
            categories[int(cat["id"])] = labels
    if unknown:
        raise ImportFormatError(
            f"{json_path}: category name(s) {', '.join(map(repr, unknown))} have no known meaning; map them, "
            f"e.g. --map '{unknown[0]}=zone:crown', --map '{unknown[0]}=thinning' or --map '{unknown[0]}=skip'"
        )

    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(int(ann["image_id"]), []).append(ann)

    problems: list[str] = []
    missing: list[str] = []
    for entry in data["images"]:
        where = f"{json_path}: image id {entry.get('id')} ({entry.get('file_name')!r})"
        try:
            image_id, file_name = int(entry["id"]), str(entry["file_name"])
            size = (int(entry["width"]), int(entry["height"]))
        except (KeyError, TypeError, ValueError):
            problems.append(f"{where}: expected 'id', 'file_name', 'width' and 'height'")
            continue
        found = _find_image(file_name, roots)
        if found is None:
            missing.append(f"{where}: image not found")
            continue
        path = found
        try:
            actual = image_size(path)
        except ImageDecodeError as exc:
            missing.append(f"{where}: unreadable: {exc.problem}")
            continue
        if actual != size:
            problems.append(
                f"{where}: the file is {actual[0]}x{actual[1]} but the JSON says {size[0]}x{size[1]}; "
                "the polygons would not line up"
            )
            continue

        zones = np.zeros((size[1], size[0]), dtype=np.uint8)
        loss = np.zeros_like(zones)
        labels = LabelSet()
        has_zone = has_loss = box_only_loss = False
        for ann in by_image.get(image_id, []):
            cat = categories.get(int(ann.get("category_id", -1)))
            if cat is None:
                problems.append(f"{where}: annotation {ann.get('id')} has unknown category_id {ann.get('category_id')}")
                continue
            if cat.skip:
                continue
            seg = ann.get("segmentation")
            region: np.ndarray | None = None
            try:
                if isinstance(seg, list) and seg:
                    region = polygons_to_mask(seg, size)
                elif isinstance(seg, dict) and "counts" in seg:
                    region = rle_to_mask(seg)
                    if region.shape != zones.shape:
                        raise ValueError(f"RLE size {region.shape[::-1]} differs from the image {size}")
            except (ValueError, TypeError, IndexError) as exc:
                problems.append(f"{where}: annotation {ann.get('id')}: bad segmentation: {exc}")
                continue
            spatial = bool(cat.zones or cat.conditions)
            if region is None and spatial:
                # The finding still counts for the photo; only its area is unknown.
                result.warnings.append(f"{where}: annotation {ann.get('id')} has no polygon (box only); no mask drawn")
                box_only_loss = box_only_loss or bool(cat.conditions)
                labels = labels.merge(LabelSet(conditions=cat.conditions), where=where)
                continue
            for zone in cat.zones:
                zones[region] |= zone_bit(zone)
                has_zone = True
            for condition, value in cat.conditions.items():
                if value == 1:
                    loss[region] |= condition_bit(condition)
                    has_loss = True
            labels = labels.merge(LabelSet(conditions=cat.conditions, stage=cat.stage, view=cat.view), where=where)

        complete = exhaustive or file_exhaustive or bool(entry.get("exhaustive"))
        conditions: dict[str, int | None] = {c: (0 if complete else None) for c in CONDITIONS}
        conditions.update(labels.conditions)
        for c in CONDITIONS:  # the file's own image-level values take precedence
            if str(entry.get(c, "")) in ("0", "1"):
                conditions[c] = int(entry[c])
        stage = labels.stage
        if entry.get("stage") not in (None, ""):
            stage = int(entry["stage"]) if str(entry["stage"]).isdigit() and int(entry["stage"]) in STAGES else None
            if stage is None:
                problems.append(f"{where}: stage {entry['stage']!r} is outside 1-7")
                continue
        stem = Path(file_name).stem
        view = parse_view(str(entry["view"])) if entry.get("view") else labels.view
        if view is None:
            view, problem = view_from_name(stem)
            if problem:
                result.warnings.append(f"{where}: {problem}; view left unknown")
        subject = str(entry["subject"]) if entry.get("subject") else subject_from_name(stem, pattern=subject_pattern)

        mask_stem = f"{image_id}_{stem}"
        zone_path = loss_path = None
        if has_zone:
            zone_path = out_dir / "masks" / f"{mask_stem}_zones.png"
            _save_mask(zones, zone_path, result)
        if (has_loss or complete) and not box_only_loss:
            loss_path = out_dir / "masks" / f"{mask_stem}_loss.png"
            _save_mask(loss, loss_path, result)
        result.rows.append(
            ManifestRow(
                image=path,
                subject=subject,
                view=view,
                conditions=conditions,
                stage=stage,
                zone_mask=zone_path.resolve() if zone_path else None,
                loss_mask=loss_path.resolve() if loss_path else None,
                extra={"source": "coco"},
            )
        )
    looked = ", ".join(str(r) for r in roots)
    if missing and (strict or len(missing) == len(data["images"])):
        hint = (
            "; give the photos' folder with --images" if len(missing) == len(data["images"])
            else "; without --strict they would be left out"
        )
        problems = [*missing, *problems]
        problems.append(f"looked for the photos in: {looked}{hint}")
    elif missing:
        result.warnings.extend(f"{m}; left out (looked in {looked})" for m in missing)
    if problems:
        raise ImportFormatError(f"{json_path}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return result
