"""ONNX export: the ONNX Runtime predictor gives the same rows as the PyTorch one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from scalpscan.data.vocab import CONDITIONS, VIEWS
from scalpscan.inference import Predictor
from scalpscan.inference.export import ID_KEY, META_KEY, ExportError, load_onnx
from scalpscan.models import create_model, inference_meta, save_checkpoint
from scalpscan.scripts.commands import export as export_command

SIDE = 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.manual_seed(1)
    model = create_model("scalpnet", backbone="tiny", image_size=SIDE)
    run = tmp_path_factory.mktemp("run")
    meta = inference_meta(
        model,
        input_size=SIDE,
        thresholds={"thinning": 0.4, "alopecia_patch": 0.5, "transplant_scar": 0.6},
        temperature={"conditions": 1.3, "stage": 0.9, "view": 1.1},
    )
    save_checkpoint(run, model, meta)
    out = run.parent / "onnx" / "model.onnx"
    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    assert export_command.run(parser.parse_args(["--model", str(run), "--out", str(out)])) == 0
    return run, out


def test_onnx_file_carries_the_model_json(exported: tuple[Path, Path]) -> None:
    run, out = exported
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props[META_KEY]) == json.loads((run / "model.json").read_text())
    assert props[ID_KEY] == Predictor.load(run).model_name


def test_onnx_rows_match_torch_rows(exported: tuple[Path, Path], tmp_path: Path) -> None:
    run, out = exported
    paths = []
    for i, (h, w) in enumerate([(128, 128), (150, 240), (300, 110), (128, 129), (200, 200)]):
        path = tmp_path / f"P{i}_x.png"
        Image.fromarray(np.random.default_rng(i).integers(30, 230, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    torch_rows = list(Predictor.load(run).score(paths, batch_size=3))  # batch of 3 then 2: dynamic axis
    onnx_predictor = Predictor.load(out)
    assert onnx_predictor.input_size == SIDE
    onnx_rows = list(onnx_predictor.score(paths, batch_size=3))
    worst = 0.0
    for a, b in zip(torch_rows, onnx_rows):
        worst = max(worst, *(abs(a["conditions"][c] - b["conditions"][c]) for c in CONDITIONS))
        worst = max(worst, *(abs(x - y) for x, y in zip(a["stage_probabilities"], b["stage_probabilities"])))
        worst = max(worst, *(abs(a["view_probabilities"][v] - b["view_probabilities"][v]) for v in VIEWS))
        assert a["model"] == b["model"]
        assert (a["image"], a["status"], a["view"], a["findings"], a["stage"]) == (
            b["image"], b["status"], b["view"], b["findings"], b["stage"]
        )
    assert worst < 1e-4


def test_folder_with_only_model_onnx_loads(exported: tuple[Path, Path]) -> None:
    _, out = exported
    assert Predictor.load(out.parent).model_name == Predictor.load(out).model_name


def test_onnx_without_metadata_is_refused(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = exported
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ExportError, match="scalpscan export"):
        load_onnx(bare)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x80\x04not onnx")
    with pytest.raises(ExportError, match="not an ONNX model"):
        Predictor.load(junk)


def test_export_command_refuses_bad_arguments(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    assert export_command.run(parser.parse_args(["--model", str(tmp_path), "--out", str(tmp_path / "m.onnx")])) == 2
    assert export_command.run(parser.parse_args(["--model", str(tmp_path), "--out", str(tmp_path / "m.pt")])) == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated upstream
def test_torchscript_exporter_gives_the_same_outputs(exported: tuple[Path, Path], tmp_path: Path) -> None:
    from scalpscan.inference.export import export_onnx

    run, _ = exported
    path = export_onnx(run, tmp_path / "ts.onnx", exporter="torchscript")
    photo = np.random.default_rng(9).integers(30, 230, (130, 170, 3), dtype=np.uint8)
    a, b = Predictor.load(run).predict(photo).to_row(), Predictor.load(path).predict(photo).to_row()
    assert max(abs(a["conditions"][c] - b["conditions"][c]) for c in CONDITIONS) < 1e-4
    with pytest.raises(ExportError, match="exporter"):
        export_onnx(run, tmp_path / "x.onnx", exporter="jit")
