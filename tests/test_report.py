"""Reports: pages per patient and the index, escaping, metadata stripping, self-containment,
merging sharded results, and the `scalpscan report` command on a hand-written results file."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scalpscan.data.vocab import CONDITIONS
from scalpscan.inference.intake import Intake
from scalpscan.inference.report import ResultsError, patient_filename, read_results, write_reports
from scalpscan.inference.report.images import photo_figure

EVIL_NAME = "<img src=x onerror=alert(1)>.jpg"
EVIL_SUBJECT = "<script>alert('p')</script>"
GPS_TAG = 0x8825


def make_photo(path: Path, size: tuple[int, int] = (64, 48), *, gps: bool = False, orientation: int | None = None,
               seed: int = 0) -> Path:
    """A small seeded JPEG; optionally with GPS EXIF and an orientation tag."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 2, : size[0] // 2] = (220, 30, 30)  # a red top-left quarter, to see rotation
    image = Image.fromarray(pixels, "RGB")
    exif = Image.Exif()
    if gps:
        exif[0x010F] = "PhoneMaker"  # Make
        exif.get_ifd(GPS_TAG).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    if orientation:
        exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", exif=exif.tobytes() if (gps or orientation) else b"")
    return path


def result_row(image: str, subject: str = "P1", **extra: Any) -> dict[str, Any]:
    row = {
        "image": image, "subject": subject, "status": "ok", "error": None, "view": "top",
        "conditions": {"thinning": 0.91, "alopecia_patch": 0.03, "transplant_scar": 0.02},
        "findings": ["thinning"], "stage": 4, "width": 64, "height": 48,
        "zones": {"crown": {"visible": True, "box": [10, 8, 40, 30], "loss_fraction": 0.62},
                  "part": {"visible": False, "box": None, "loss_fraction": None}},
        "model": {"id": "tiny-test-1", "rules_version": "1.0.0"},
    }
    row.update(extra)
    return row


def write_jsonl(path: Path, rows: list[dict[str, Any]], *, tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


class _Page(HTMLParser):
    """Collects tags, ids, attributes and text of a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def content(self) -> str:
        """The visible text, whitespace collapsed."""
        return " ".join(" ".join(self.text).split())

    @property
    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


def data_uri_images(html: str) -> list[Image.Image]:
    images = []
    for uri in re.findall(r'src="(data:image/[a-z]+;base64,[^"]+)"', html):
        raw = base64.b64decode(uri.split(",", 1)[1])
        assert b"Exif" not in raw and b"GPS" not in raw and b"PhoneMaker" not in raw
        image = Image.open(io.BytesIO(raw))
        image.load()
        images.append(image)
    return images


@pytest.fixture()
def sample(tmp_path: Path) -> Path:
    """A results folder: two patients, photos (one with GPS EXIF, one with HTML in its name)."""
    base = tmp_path / "scored"
    make_photo(base / "photos" / "p1_top.jpg", gps=True)
    make_photo(base / "photos" / "p1_front.jpg", seed=1)
    make_photo(base / "photos" / EVIL_NAME, seed=2)
    rows = [
        result_row("photos/p1_top.jpg"),
        result_row("photos/p1_front.jpg", view="front", stage=3,
                   zones={"hairline": {"visible": True, "box": [5, 5, 60, 20], "loss_fraction": 0.3}}),
        result_row("photos/p1_left.jpg", view="left", status="recapture", error="too blurred"),
        result_row(f"photos/{EVIL_NAME}", subject=EVIL_SUBJECT, view="back", findings=["transplant_scar"],
                   conditions={"thinning": 0.1, "alopecia_patch": 0.02, "transplant_scar": 0.95}, stage=2),
    ]
    write_jsonl(base / "results.jsonl", rows)
    (base / "intake.csv").write_text(
        "subject,sex,keloid_history,eczema_active,psoriasis_active,notes\n"
        f'P1,male,no,no,no,"<b>bold</b> & stable"\n"{EVIL_SUBJECT}",f,yes,,,\nP9,m,n,n,n,\n',
        encoding="utf-8",
    )
    return base


def build(sample: Path, out: Path, **kwargs: Any) -> Path:
    from scalpscan.inference.intake import read_intake

    rows, _ = read_results([sample / "results.jsonl"])
    intake, _ = read_intake(sample / "intake.csv")
    return write_reports(rows, out, intake=intake, **kwargs)


def test_pages_and_sections(sample: Path, tmp_path: Path) -> None:
    index = build(sample, tmp_path / "out")
    pages = sorted(p.name for p in index.parent.iterdir())
    assert pages == sorted(["index.html", "patients.jsonl", "patient-P1.html", patient_filename(EVIL_SUBJECT)])
    page = _Page((index.parent / "patient-P1.html").read_text())
    for section in ("summary", "decision", "recommendations", "focus-zones", "cautions", "photos", "findings",
                    "stage", "reasons", "intake", "disclaimers", "provenance"):
        assert section in page.ids
    text = " ".join(page.text)
    for words in ("Candidate for SMP", "Density SMP", "hairline", "crown", "0.91", "tiny-test-1", "1.0.0",
                  "does not regrow hair", "not microblading", "not a diagnosis", "too blurred", "p1_left.jpg"):
        assert words in text, words
    assert len(page.all("img")) == 2  # the recapture photo does not exist: its error is shown instead
    svg_labels = re.findall(r"<text[^>]*>([^<]+)</text>", (index.parent / "patient-P1.html").read_text())
    assert "crown 62%" in svg_labels and "hairline 30%" in svg_labels
    idx = _Page(index.read_text())
    assert {"overview", "counts", "charts", "patients", "notes", "disclaimers"} <= idx.ids
    hrefs = [a["href"] for a in idx.all("a")]
    assert "patient-P1.html" in hrefs and patient_filename(EVIL_SUBJECT) in hrefs
    idx_text = " ".join(idx.text)
    assert "'P9' is on the intake sheet but has no photos" in idx_text
    assert not list(index.parent.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_counts_per_decision_on_the_index(sample: Path, tmp_path: Path) -> None:
    html = build(sample, tmp_path / "out").read_text()
    counts = dict(re.findall(r'<div class="count d-(\w+)"><div class="n">(\d+)</div>', html))
    assert counts == {"candidate": "1", "caution": "1", "not_indicated": "0", "review": "0"}
    assert html.count("<svg") == 3  # decision, recommendation and stage charts


def test_html_in_names_shows_as_text(sample: Path, tmp_path: Path) -> None:
    out = build(sample, tmp_path / "out").parent
    html = (out / patient_filename(EVIL_SUBJECT)).read_text()
    page = _Page(html)
    assert not page.all("script")
    assert all(a["src"].startswith("data:image/") for a in page.all("img"))
    assert "onerror" not in {k for _, attrs in page.tags for k in attrs}
    assert EVIL_NAME in " ".join(page.text) and EVIL_SUBJECT in " ".join(page.text)
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html
    p1 = (out / "patient-P1.html").read_text()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; stable" in p1 and "<b>bold</b>" not in p1
    index = (out / "index.html").read_text()
    assert not _Page(index).all("script") and "&lt;script&gt;" in index


def test_exif_and_gps_stripped(sample: Path, tmp_path: Path) -> None:
    source = Image.open(sample / "photos" / "p1_top.jpg")
    assert GPS_TAG in source.getexif()  # the test photo really carries GPS
    html = (build(sample, tmp_path / "out").parent / "patient-P1.html").read_text()
    images = data_uri_images(html)
    assert len(images) == 2
    for image in images:
        assert not image.getexif() and "exif" not in image.info and "icc_profile" not in image.info


def test_exif_orientation_applied(tmp_path: Path) -> None:
    make_photo(tmp_path / "rotated.jpg", size=(64, 48), orientation=6, gps=True)
    figure = photo_figure({"image": "rotated.jpg"}, base=tmp_path)
    (image,) = data_uri_images(f'src="{figure.src}"')
    assert image.size == (48, 64)  # upright, as the predictor saw it
    assert figure.error is None


def test_nothing_loaded_from_outside(sample: Path, tmp_path: Path) -> None:
    out = build(sample, tmp_path / "out").parent
    for page_path in out.glob("*.html"):
        html = page_path.read_text()
        page = _Page(html)
        assert not page.all("link") and not page.all("script") and not page.all("iframe")
        assert "http://" not in html and "https://" not in html and "url(" not in html
        (csp,) = [a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
        assert "default-src 'none'" in csp and "img-src data:" in csp
        assert not [a for _, a in page.tags if "style" in a]  # the CSP allows no style attributes
        assert any(a.get("name") == "viewport" for a in page.all("meta"))
        assert "@media print" in html and "@media (max-width" in html


def test_masks_are_drawn_when_the_row_has_them(tmp_path: Path) -> None:
    make_photo(tmp_path / "p.jpg", size=(64, 48))
    zones = np.zeros((48, 64), np.uint8)
    zones[10:40, 30:60] = 2  # crown
    loss = np.zeros((48, 64), np.uint8)
    loss[20:30, 40:50] = 1  # thinning
    Image.fromarray(zones, "L").save(tmp_path / "p_zones.png")
    Image.fromarray(loss, "L").save(tmp_path / "p_loss.png")
    plain = photo_figure({"image": "p.jpg"}, base=tmp_path)
    masked = photo_figure({"image": "p.jpg", "masks": {"zones": "p_zones.png", "hairloss": "p_loss.png"},
                           "zones": {"crown": {"visible": True, "box": [30, 10, 60, 40], "loss_fraction": 0.1}}},
                          base=tmp_path)
    a = np.asarray(data_uri_images(f'src="{plain.src}"')[0], dtype=float)
    b = np.asarray(data_uri_images(f'src="{masked.src}"')[0], dtype=float)
    assert np.abs(a[22:28, 42:48] - b[22:28, 42:48]).mean() > 20  # loss area tinted
    assert np.abs(a[2:8, 2:8] - b[2:8, 2:8]).mean() < 8  # outside untouched (JPEG noise only)
    assert [label for label, _ in masked.legend] == ["thinning", "crown (zone)"]
    assert masked.boxes[0]["outline"] is False  # masks replace the boxes; the label stays


def test_unreadable_photo_is_shown_as_an_error(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8not a jpeg")
    figure = photo_figure({"image": "broken.jpg"}, base=tmp_path)
    assert figure.src is None and figure.name == "broken.jpg" and "could not be read" in figure.error
    index = write_reports([result_row(str(tmp_path / "broken.jpg"))], tmp_path / "out")
    assert "could not be read" in (index.parent / "patient-P1.html").read_text()


def test_patient_filenames_are_safe_and_unique() -> None:
    taken: set[str] = set()
    names = [patient_filename(s, taken) for s in ("P1", "a/b", "a?b", "../etc", "p1")]
    assert names[0] == "patient-P1.html"
    assert len({n.lower() for n in names}) == 5
    assert all(re.fullmatch(r"patient-[A-Za-z0-9._-]+\.html", n) and "/" not in n for n in names)


def test_merge_shards_last_ok_row_wins(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a" / "results.jsonl", [
        result_row("x.jpg", stage=2),
        result_row("y.jpg", status="error", error="truncated"),
        result_row("z.jpg", stage=5),
    ])
    b = write_jsonl(tmp_path / "b" / "results.jsonl", [
        result_row("../a/x.jpg", stage=3),  # the same photo, named from the other shard's folder
        result_row("../a/y.jpg", stage=4),
        result_row("../a/z.jpg", status="recapture", error="too dark"),
        result_row("w.jpg"),
    ], tail='{"image": "half')
    rows, summary = read_results([a, b])
    by_name = {Path(r["image"]).name: r for r in rows}
    assert sorted(by_name) == ["w.jpg", "x.jpg", "y.jpg", "z.jpg"]
    assert by_name["x.jpg"]["stage"] == 3  # last ok row
    assert by_name["y.jpg"]["status"] == "ok"  # an ok row replaces an error row
    assert by_name["z.jpg"]["stage"] == 5 and by_name["z.jpg"]["status"] == "ok"  # not replaced by recapture
    assert Path(by_name["w.jpg"]["image"]) == (tmp_path / "b" / "w.jpg").resolve()
    assert (summary.rows_read, summary.photos, summary.duplicates, summary.replaced_by_ok) == (7, 4, 3, 1)
    assert "merged 2 results file(s): 7 row(s), 4 photo(s), 3 duplicate row(s) dropped" in summary.describe()
    assert len(summary.warnings) == 1 and "incomplete last line" in summary.warnings[0]


def test_bad_results_lines_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"image": "a.jpg"}\nnot json\n{"subject": "P1"}\n')
    message = str(pytest.raises(ResultsError, read_results, [path, tmp_path / "missing.jsonl"]).value)
    assert f"{path}:2" in message and f"{path}:3" in message and "missing.jsonl: file not found" in message


# --------------------------------------------------------------------------- the command


def cli(*argv: str) -> int:
    from scalpscan.scripts.cli import main

    return main(["report", *map(str, argv)])


def test_report_command(sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports"
    assert cli(sample / "results.jsonl", "--out", out, "--intake", sample / "intake.csv") == 0
    captured = capsys.readouterr()
    assert "merged 1 results file(s): 4 row(s), 4 photo(s)" in captured.out
    assert "'P9' is on the intake sheet but has no photos" in captured.err
    assert (out / "index.html").exists() and (out / "patient-P1.html").exists()
    assert "Candidate, with cautions" in (out / patient_filename(EVIL_SUBJECT)).read_text()  # keloid history


def test_report_command_with_clinic_rules(sample: Path, tmp_path: Path) -> None:
    rules = tmp_path / "clinic.yaml"
    rules.write_text('version: "clinic-2"\nstage:\n  full_coverage_min: 3\n')
    assert cli(sample / "results.jsonl", "--out", tmp_path / "r", "--rules", rules) == 0
    html = (tmp_path / "r" / "patient-P1.html").read_text()
    assert "clinic-2" in html and "Full coverage SMP" in html


@pytest.mark.parametrize(
    "setup,expected",
    [
        ("intake", "row 2, column 'keloid_history', value 'maybe'"),
        ("rules", "stage.full_coverage_min: 9 is out of range"),
        ("results", "missing.jsonl: file not found"),
        ("no_intake_file", "intake sheet"),
    ],
)
def test_report_command_refuses_bad_input(sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          setup: str, expected: str) -> None:
    args: list[Any] = [sample / "results.jsonl", "--out", tmp_path / "r"]
    if setup == "intake":
        bad = tmp_path / "bad.csv"
        bad.write_text("subject,sex,keloid_history\nP1,m,maybe\n")
        args += ["--intake", bad]
    elif setup == "rules":
        bad = tmp_path / "bad.yaml"
        bad.write_text('version: "x"\nstage:\n  full_coverage_min: 9\n')
        expected = "stage.full_coverage_min: 9 is not valid: expected a Norwood stage 1 to 7"
        args += ["--rules", bad]
    elif setup == "results":
        args[0] = tmp_path / "missing.jsonl"
    else:
        args += ["--intake", tmp_path / "nope.csv"]
    assert cli(*args) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "r" / "index.html").exists()


def test_photos_without_a_patient_are_each_a_flagged_patient_of_their_own(tmp_path: Path) -> None:
    make_photo(tmp_path / "IMG_4411.jpg")
    make_photo(tmp_path / "IMG_4412.jpg")
    rows = [result_row("IMG_4411.jpg", subject=None, subject_source="unknown"),
            result_row("IMG_4412.jpg", subject=None, subject_source="unknown")]
    index = write_reports(rows, tmp_path / "out", results_dir=tmp_path)
    page = _Page(index.read_text())
    assert "unknown-patients" in page.ids and "patient unknown" in page.content
    records = [json.loads(line) for line in (index.parent / "patients.jsonl").read_text().splitlines()]
    assert len(records) == 2  # never pooled into one patient
    assert all(r["subject"] is None and r["patient_known"] is False for r in records)
    assert {r["photos"][0]["image"] for r in records} == {"IMG_4411.jpg", "IMG_4412.jpg"}
    for record in records:
        patient = _Page((index.parent / record["page"]).read_text())
        assert "unknown-patient" in patient.ids and "assessed on its own" in patient.content
        assert len(data_uri_images((index.parent / record["page"]).read_text())) == 1


def test_patient_page_says_how_its_photos_were_grouped(tmp_path: Path) -> None:
    make_photo(tmp_path / "a.jpg")
    index = write_reports([result_row("a.jpg", subject="anna", subject_source="folder")], tmp_path / "out",
                          results_dir=tmp_path)
    page = _Page((index.parent / "patient-anna.html").read_text())
    assert "per-patient folder" in page.content
    record = json.loads((index.parent / "patients.jsonl").read_text())
    assert record["grouping"]["sources"] == ["folder"]


def _not_assessed_row(image: str) -> dict[str, Any]:
    return result_row(
        image,
        conditions={"thinning": 0.91, "alopecia_patch": None, "transplant_scar": None},
        findings=["thinning"],
        stage=None,
        stage_probabilities=None,
        zones={"crown": {"visible": True, "box": [10, 8, 40, 30], "loss_fraction": None}},
        not_assessed=["alopecia_patch", "transplant_scar", "stage", "hairloss"],
        unvalidated=["thinning"],
    )


def test_what_the_model_does_not_assess_is_said_never_shown_as_absent(tmp_path: Path) -> None:
    make_photo(tmp_path / "a.jpg")
    index = write_reports([_not_assessed_row("a.jpg")], tmp_path / "out", results_dir=tmp_path)
    home = _Page(index.read_text())
    assert "not-assessed" in home.ids
    assert "alopecia patches" in home.content and "Norwood stage" in home.content
    html = (index.parent / "patient-P1.html").read_text()
    page = _Page(html)
    assert {"limits", "not-assessed", "unvalidated"} <= page.ids
    assert "not validated on real photos" in page.content
    assert "loss (shading)" not in page.content  # no loss legend when the loss map is not assessed
    findings = page.content[page.content.index("Findings"):]
    # A condition the model cannot assess is never "0 %", "0.00" or "no".
    patch_row = findings[findings.index("alopecia patch"):findings.index("transplant scar")]
    assert "not assessed" in patch_row and "no" not in patch_row.replace("not assessed", "").split()
    assert "0.00" not in patch_row and "0%" not in patch_row
    record = json.loads((index.parent / "patients.jsonl").read_text())
    assert record["not_assessed"] == ["alopecia_patch", "transplant_scar", "stage", "hairloss"]
    assert record["unvalidated"] == ["thinning"]
    assert record["stage"] is None
    by_name = {f["name"]: f for f in record["findings"]}
    assert by_name["alopecia_patch"] == {"name": "alopecia_patch", "present": None, "probability": None,
                                         "threshold": None, "not_assessed": True, "unvalidated": False}
    assert by_name["thinning"]["present"] is True and by_name["thinning"]["unvalidated"] is True
    assert [(z["name"], z["loss_fraction"]) for z in record["zones"]] == [("crown", None)]


def test_patients_jsonl_holds_every_field_the_page_shows(tmp_path: Path) -> None:
    make_photo(tmp_path / "a.jpg")
    make_photo(tmp_path / "b.jpg")
    rows = [result_row("a.jpg"), result_row("b.jpg", status="error", error="b.jpg: the file is truncated")]
    index = write_reports(rows, tmp_path / "out", results_dir=tmp_path,
                          intake={"P1": Intake(sex="male", subject="P1", keloid_history=True)})
    record = json.loads((index.parent / "patients.jsonl").read_text())
    page = _Page((index.parent / record["page"]).read_text())
    assert record["subject"] == "P1" and record["decision_label"] in page.content
    assert record["stage"] == 4 and record["assessment"]["decision"] == record["decision"]
    assert [r["label"] for r in record["recommendations"]] == [label for label in
                                                               (r["label"] for r in record["recommendations"])
                                                               if label in page.content]
    assert record["cautions"] and all(c["label"] in page.content for c in record["cautions"])
    assert record["intake"]["keloid_history"] is True and record["intake"]["sex"] == "male"
    assert [p["status"] for p in record["photos"]] == ["ok", "error"]
    assert record["photos"][1]["error"] == "b.jpg: the file is truncated"
    assert record["disclaimers"] and all(d in page.content for d in record["disclaimers"])
    assert record["reasons"] and all(r["text"] in page.content for r in record["reasons"])
    assert record["models"] == ["tiny-test-1"] and record["rules"]["version"] == "1.0.0"
    assert {f["name"] for f in record["findings"]} == set(CONDITIONS)


def test_pdf_without_an_engine_is_one_clear_message_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    from scalpscan.inference.report import pdf

    make_photo(tmp_path / "a.jpg")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv(pdf.ENGINE_ENV, raising=False)
    with pytest.raises(pdf.PdfError, match="apt-get install chromium"):
        write_reports([result_row("a.jpg")], tmp_path / "out", results_dir=tmp_path, pdf=True)
    assert not (tmp_path / "out").exists()


def test_patient_intake_is_used(tmp_path: Path) -> None:
    make_photo(tmp_path / "a.jpg")
    index = write_reports([result_row("a.jpg", zones={"temple_left": {"visible": True, "box": None, "loss_fraction": 0.5},
                                                      "crown": {"visible": True, "box": None, "loss_fraction": 0.5}})],
                          tmp_path / "out", results_dir=tmp_path, intake={"P1": Intake(sex="female", subject="P1")})
    html = (index.parent / "patient-P1.html").read_text()
    focus = re.search(r'<section id="focus-zones">(.*?)</section>', html, re.S).group(1)
    assert focus.index("temple left") < focus.index("crown")  # women: temples first


def test_focus_zones_say_why_none_when_loss_is_not_assessed(tmp_path: Path) -> None:
    # A model without a loss map: the page names no focus zone and says why, not a bare "None".
    make_photo(tmp_path / "a.jpg")
    row = result_row("a.jpg", not_assessed=["hairloss"],
                     zones={"crown": {"visible": True, "box": [10, 8, 40, 30], "loss_fraction": None}})
    index = write_reports([row], tmp_path / "out", results_dir=tmp_path,
                          intake={"P1": Intake(sex="male", subject="P1")})
    html = (index.parent / "patient-P1.html").read_text()
    focus = re.search(r'<section id="focus-zones">(.*?)</section>', html, re.S).group(1)
    assert "<ol>" not in focus and "Loss per zone is not assessed" in focus and "practitioner" in focus


def test_photos_decode_without_data_decode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Pillow fallback (for checkouts without data.decode) also applies orientation and strips EXIF."""
    from scalpscan.inference.report import images

    monkeypatch.setattr(images, "load_image", None)
    make_photo(tmp_path / "r.jpg", size=(64, 48), orientation=6, gps=True)
    figure = images.photo_figure({"image": "r.jpg"}, base=tmp_path)
    (image,) = data_uri_images(f'src="{figure.src}"')
    assert image.size == (48, 64)
    missing = images.photo_figure({"image": "nope.jpg"}, base=tmp_path)
    assert missing.src is None and "file not found" in missing.error


def test_findings_table_shows_the_models_calibrated_threshold(tmp_path: Path) -> None:
    # The photo's findings were made at the model's threshold (0.83), not the rules' 0.50.
    make_photo(tmp_path / "P9_top.jpg")
    row = result_row("P9_top.jpg", "P9", findings=[],
                     conditions={"thinning": 0.7, "alopecia_patch": 0.03, "transplant_scar": 0.02},
                     thresholds={"thinning": 0.83, "alopecia_patch": 0.5, "transplant_scar": 0.5})
    index = write_reports([row], tmp_path / "out", results_dir=tmp_path)
    page = (index.parent / patient_filename("P9")).read_text()
    findings = page[page.index('id="findings"'):]
    thinning_row = findings[findings.index("thinning"):].split("</tr>")[0]
    assert "0.83" in thinning_row and "0.50" not in thinning_row


def test_a_callers_assessment_with_prior_visits_is_the_one_shown(tmp_path: Path) -> None:
    import datetime as dt

    from scalpscan.inference.report import patient_context, patient_record, render_patient
    from scalpscan.inference.rules import PriorVisit, assess, load_rules

    make_photo(tmp_path / "a.jpg")
    rows = [result_row("a.jpg")]  # crown 62 % loss today
    rules = load_rules()
    prior = (PriorVisit(date=dt.date(2025, 1, 10), zones={"crown": 0.20}, stage=3),)
    assessment = assess(rows, None, rules=rules, prior=prior, visit_date=dt.date(2026, 1, 10))
    assert any("progress" in r.rule for r in assessment.reasons)
    html, shown = render_patient(rows, rules=rules, base=tmp_path, assessment=assessment)
    assert shown is assessment
    progression = next(r.text for r in assessment.reasons if "progress" in r.rule)
    assert progression in _Page(html).content
    alone, _ = render_patient(rows, rules=rules, base=tmp_path)
    assert progression not in _Page(alone).content  # the rows alone know no earlier visit
    context = patient_context(rows, rules=rules, base=tmp_path, assessment=assessment, label="Ann", known=False)
    record = patient_record(context)
    assert record["label"] == "Ann" and record["patient_known"] is False and record["subject"] is None
    assert record["reasons"] == [{"rule": r.rule, "text": r.text, "evidence": r.evidence} for r in assessment.reasons]
