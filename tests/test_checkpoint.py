"""Checkpoints: round trip, accepted paths, and every refusal with its reason."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from scalpscan.models import CheckpointError, create_model, load_checkpoint, save_checkpoint
from scalpscan.models.checkpoint import FORMAT_VERSION

META = {
    "vocab": {"conditions": ["thinning", "alopecia_patch", "transplant_scar"]},
    "input_size": 64,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "thresholds": {"thinning": 0.4},
    "temperature": {"conditions": 1.3, "stage": 0.9, "view": 1.0},
    "metrics": {"stage_qwk": 0.5, "undefined_auroc": float("nan")},
}


def _trained_tiny(seed: int = 0) -> nn.Module:
    """A tiny network whose weights and BatchNorm statistics are not the initial ones."""
    torch.manual_seed(seed)
    model = create_model("scalpnet", backbone="tiny", image_size=64)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
        model.train()
        model(torch.randn(4, 3, 64, 64))  # moves the running statistics
    return model.eval()


def _images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, nn.Module]:
    model = _trained_tiny()
    save_checkpoint(tmp_path, model, META)
    return tmp_path, model


def test_round_trip_gives_identical_outputs(run) -> None:
    folder, model = run
    loaded, meta = load_checkpoint(folder)
    assert not loaded.training
    with torch.no_grad():
        before, after = model(_images()), loaded(_images())
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["architecture"] == model.architecture
    assert meta["architecture"]["kwargs"]["backbone"] == "tiny"
    assert meta["temperature"] == META["temperature"]
    assert meta["metrics"]["undefined_auroc"] is None  # strict JSON: NaN becomes null
    assert meta["created"]


def test_folder_holds_only_the_two_files(run) -> None:
    folder, _ = run
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    json.loads((folder / "model.json").read_text())  # strict JSON


@pytest.mark.parametrize("target", ["model.safetensors", "model.json"])
def test_either_file_can_be_given(run, target: str) -> None:
    folder, model = run
    loaded, _ = load_checkpoint(folder / target)
    assert torch.equal(loaded.stage_head.bias_gaps, model.stage_head.bias_gaps)


def test_named_checkpoints_sit_side_by_side(tmp_path: Path) -> None:
    best, last = _trained_tiny(1), _trained_tiny(2)
    save_checkpoint(tmp_path, best, META)
    save_checkpoint(tmp_path, last, META, name="last")
    loaded_last, _ = load_checkpoint(tmp_path / "last.json")
    loaded_best, _ = load_checkpoint(tmp_path)
    assert torch.equal(loaded_last.view_head.fc.weight, last.view_head.fc.weight)
    assert torch.equal(loaded_best.view_head.fc.weight, best.view_head.fc.weight)


def test_overwriting_is_atomic_and_leaves_no_temporary_files(run) -> None:
    folder, _ = run
    other = _trained_tiny(5)
    save_checkpoint(folder, other, META)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    loaded, _ = load_checkpoint(folder)
    assert torch.equal(loaded.conditions_head.fc.bias, other.conditions_head.fc.bias)


def test_wrapped_and_channels_last_models_save(tmp_path: Path) -> None:
    model = _trained_tiny().to(memory_format=torch.channels_last)

    class Wrapper(nn.Module):  # stands in for DistributedDataParallel
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    save_checkpoint(tmp_path, Wrapper(model), META)
    loaded, _ = load_checkpoint(tmp_path)
    with torch.no_grad():
        assert torch.allclose(model(_images())["zones"], loaded(_images())["zones"], atol=1e-6)


def test_saving_refuses_what_it_cannot_describe(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="architecture"):
        save_checkpoint(tmp_path, nn.Linear(2, 2), META)
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path, _trained_tiny(), {"config": {"path": object()}})
    assert not any(tmp_path.iterdir())


def test_pickle_in_place_of_the_weights_is_refused_unexecuted(run) -> None:
    folder, _ = run
    marker = folder / "pwned"
    (folder / "model.safetensors").write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(folder)
    assert not marker.exists()


def test_weights_whose_header_length_starts_with_the_pickle_byte_load(run) -> None:
    # The first byte of a safetensors file is the low byte of its header length; 0x80 is
    # also pickle's first byte. Such a file is safetensors all the same (a real run hit it).
    import struct

    from safetensors.torch import save

    folder, model = run
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    for pad in range(512):
        data = save(state, metadata={"pad": "x" * pad})
        if struct.unpack("<Q", data[:8])[0] % 256 == 0x80:
            break
    assert data[:1] == b"\x80"
    (folder / "model.safetensors").write_bytes(data)
    loaded, _ = load_checkpoint(folder)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_torch_save_file_in_place_of_the_weights_is_refused(run) -> None:
    folder, model = run
    torch.save(model.state_dict(), folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="zip archive"):
        load_checkpoint(folder)


def test_pt_file_is_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="never loaded"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":",
                                     b"garbage" * 20])
def test_truncated_or_garbage_weights_are_refused(run, content: bytes) -> None:
    folder, _ = run
    (folder / "model.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(folder)


def test_missing_files_are_named(tmp_path: Path, run) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    folder, _ = run
    (folder / "model.json").unlink()
    with pytest.raises(CheckpointError, match="model.json is missing"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "elsewhere.safetensors")


def _edit_meta(folder: Path, edit) -> None:
    path = folder / "model.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("version, reason",
                         [(2, "newer"), ("1", "unsupported"), (None, "unsupported")])
def test_unknown_format_version_is_refused(run, version, reason: str) -> None:
    folder, _ = run
    _edit_meta(folder, lambda m: m.update(format_version=version))
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(folder)


def test_unknown_architecture_is_refused_listing_known(run) -> None:
    folder, _ = run
    _edit_meta(folder, lambda m: m["architecture"].update(name="hairnet"))
    with pytest.raises(CheckpointError, match="hairnet.*scalpnet"):
        load_checkpoint(folder)
    _edit_meta(folder, lambda m: m["architecture"].update(name="scalpnet",
                                                          kwargs={"backbone": "resnet99"}))
    with pytest.raises(CheckpointError, match="resnet99"):
        load_checkpoint(folder)
    _edit_meta(folder, lambda m: m.update(architecture="scalpnet"))
    with pytest.raises(CheckpointError, match="'architecture' must be"):
        load_checkpoint(folder)


def test_meta_that_is_not_json_is_refused(run) -> None:
    folder, _ = run
    (folder / "model.json").write_bytes(b"\x80\x04not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(folder)


def test_weight_shape_mismatch_is_refused(run) -> None:
    folder, _ = run
    _edit_meta(folder, lambda m: m["architecture"]["kwargs"].update(decoder_channels=24))
    with pytest.raises(CheckpointError, match="wrong shape.*decoder"):
        load_checkpoint(folder)


def test_missing_and_unexpected_weights_are_refused(run) -> None:
    folder, _ = run
    path = folder / "model.safetensors"
    state = load_file(str(path))
    dropped = dict(state)
    del dropped["stage_head.bias_gaps"]
    save_file(dropped, str(path))
    with pytest.raises(CheckpointError, match="1 missing weights.*stage_head.bias_gaps"):
        load_checkpoint(folder)
    extra = dict(state, **{"extra_head.weight": torch.zeros(2)})
    save_file(extra, str(path))
    with pytest.raises(CheckpointError, match="1 unexpected weights.*extra_head.weight"):
        load_checkpoint(folder)


class _Exploit:
    """Pickles into a call that would create ``marker`` if it were ever unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_inference_meta_takes_normalisation_from_the_model_and_merges_calibration() -> None:
    from scalpscan.models import inference_meta

    model = create_model("scalpnet", backbone="efficientnet_lite0", image_size=64)
    meta = inference_meta(model, thresholds={"thinning": 0.3}, temperature={"stage": 1.7}, epoch=4)
    assert meta["input_size"] == 64
    assert meta["mean"] == pytest.approx(list(model.pretrained_cfg["mean"]))
    assert meta["thresholds"] == {"thinning": 0.3, "alopecia_patch": 0.5, "transplant_scar": 0.5}
    assert meta["temperature"] == {"conditions": 1.0, "stage": 1.7, "view": 1.0}
    assert meta["vocab"]["zones"][0] == "hairline" and meta["epoch"] == 4
