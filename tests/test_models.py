"""Backbone registry, network outputs, gradients and the ordinal head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scalpscan.models import (
    BACKBONES,
    RegistryError,
    UnknownNameError,
    create_backbone,
    create_model,
    list_backbones,
    list_models,
)
from scalpscan.models.heads import OrdinalHead
from scalpscan.models.ordinal import ordinal_expected_index, ordinal_index, ordinal_probabilities
from scalpscan.models.registry import Registry

EXPECTED_BACKBONES = {
    "resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "convnext_tiny", "efficientnet_lite0", "efficientnet_lite1",
    "efficientnet_lite2", "tiny",
}


def _images(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ registry

def test_registry_holds_every_backbone_of_the_issue() -> None:
    assert EXPECTED_BACKBONES <= set(list_backbones())
    assert "scalpnet" in list_models()


def test_unknown_backbone_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        create_model("scalpnet", backbone="resnet19")
    message = str(info.value)
    assert "resnet19" in message
    for name in EXPECTED_BACKBONES:
        assert name in message


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="scalpnet"):
        create_model("scalpnett")


def test_duplicate_registration_is_an_error() -> None:
    before = list_backbones()
    factory = BACKBONES.get("tiny")
    with pytest.raises(RegistryError, match="already registered"):
        BACKBONES.register("tiny")(lambda: None)
    assert list_backbones() == before and BACKBONES.get("tiny") is factory

    registry = Registry("thing")
    registry.register("a")(int)
    with pytest.raises(RegistryError, match="'a' is already registered"):
        registry.register("a")(float)
    with pytest.raises(RegistryError):
        registry.register(" spaced ")
    assert registry.get("a") is int


def test_bad_arguments_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="multiple of 32.*100"):
        create_model("scalpnet", backbone="tiny", image_size=100)
    with pytest.raises(TypeError, match="colour"):
        create_model("scalpnet", backbone="tiny", colour="red")
    with pytest.raises(ValueError, match="dropout"):
        create_model("scalpnet", backbone="tiny", dropout=1.5)


# ------------------------------------------------------------------------ forward shapes

@pytest.mark.parametrize("name", list_backbones())
def test_backbone_and_network_shapes(name: str) -> None:
    size, batch = 64, 2
    model = create_model("scalpnet", backbone=name, image_size=size).eval()
    with torch.no_grad():
        features = model.forward_features(_images(batch, size))
        assert len(features) == len(model.backbone.channels) == 4
        for feature, channels, stride in zip(features, model.backbone.channels,
                                              model.backbone.reductions):
            assert feature.shape == (batch, channels, size // stride, size // stride)
        out = model.forward_head(features)
    assert set(out) == {"conditions", "stage", "view", "zones", "hairloss"}
    assert out["conditions"].shape == (batch, 3)
    assert out["stage"].shape == (batch, 6)
    assert out["view"].shape == (batch, 5)
    assert out["zones"].shape == (batch, 6, size // 4, size // 4)
    assert out["hairloss"].shape == (batch, 3, size // 4, size // 4)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert model.pretrained_cfg["input_size"] == size
    assert len(model.pretrained_cfg["mean"]) == len(model.pretrained_cfg["std"]) == 3


@pytest.mark.parametrize("size", [32, 80, 96])
def test_network_takes_other_input_sides(size: int) -> None:
    # 80 is not a multiple of 32: the decoder must still line the pyramid up.
    model = create_model("scalpnet", backbone="tiny", image_size=64).eval()
    with torch.no_grad():
        out = model(_images(1, size))
    side = (size + 3) // 4
    assert out["zones"].shape == (1, 6, side, side)
    assert out["hairloss"].shape == (1, 3, side, side)


def test_tiny_backbone_is_tiny_and_outputs_depend_on_the_input() -> None:
    backbone = create_backbone("tiny")
    assert sum(p.numel() for p in backbone.parameters()) < 10_000
    model = create_model("scalpnet", backbone="tiny", image_size=64).eval()
    with torch.no_grad():
        a, b = model(_images(1, seed=1)), model(_images(1, seed=2))
    assert not torch.allclose(a["conditions"], b["conditions"])
    assert not torch.allclose(a["zones"], b["zones"])


@pytest.mark.parametrize("name", ["tiny", "efficientnet_lite0", "mobilenet_v3_small", "resnet18"])
def test_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = create_model("scalpnet", backbone=name, image_size=64).train()
    out = model(_images(2))
    # A random weighting of every output, so no gradient cancels by symmetry.
    loss = sum((v * torch.randn_like(v)).sum() for v in out.values())
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


# ------------------------------------------------------------------------------ ordinal

def test_ordinal_head_cumulative_probabilities_are_monotone_for_any_parameters() -> None:
    torch.manual_seed(0)
    head = OrdinalHead(16, 7)
    with torch.no_grad():  # scramble the parameters, gaps negative included
        head.bias_first.fill_(3.0)
        head.bias_gaps.copy_(torch.tensor([-5.0, 4.0, -0.5, 0.0, 2.0]))
        head.fc.weight.mul_(50)
    logits = head(torch.randn(256, 16))
    assert logits.shape == (256, 6)
    assert (logits[:, 1:] < logits[:, :-1]).all()
    cumulative = torch.sigmoid(logits)
    assert (cumulative[:, 1:] <= cumulative[:, :-1]).all()
    # The positive logits form a prefix: the prediction is a count that never skips.
    positive = logits > 0
    index = ordinal_index(logits)
    prefix = torch.arange(6)[None, :] < index[:, None]
    assert torch.equal(positive, prefix)


def test_ordinal_prediction_never_jumps_as_the_score_rises() -> None:
    head = OrdinalHead(4, 7).eval()
    direction = head.fc.weight.detach()[0] / head.fc.weight.detach()[0].pow(2).sum()
    scores = torch.linspace(-30, 30, 3001)
    logits = head(scores[:, None] * direction[None, :])
    index = ordinal_index(logits)
    steps = index[1:] - index[:-1]
    assert ((steps == 0) | (steps == 1)).all()
    assert index[0] == 0 and index[-1] == 6  # every stage is reached, in order
    expected = ordinal_expected_index(logits)
    assert (expected[1:] >= expected[:-1]).all()


def test_ordinal_head_starts_at_a_uniform_prior() -> None:
    head = OrdinalHead(8, 7)
    nn.init.zeros_(head.fc.weight)
    probs = ordinal_probabilities(head(torch.zeros(1, 8)))
    assert torch.allclose(probs, torch.full((1, 7), 1 / 7), atol=1e-5)


def test_ordinal_probabilities_and_index_on_known_values() -> None:
    big = 20.0
    logits = torch.tensor([
        [big, big, -big, -big, -big, -big],   # P(>0), P(>1) sure: class 2
        [-big] * 6,                           # class 0
        [big] * 6,                            # class 6
        [0.0] * 6,                            # each P(>k) = 0.5: mass on the ends
    ])
    probs = ordinal_probabilities(logits)
    assert probs.shape == (4, 7)
    assert torch.allclose(probs.sum(-1), torch.ones(4))
    assert probs[0].argmax() == 2 and probs[0, 2] > 0.99
    assert probs[1].argmax() == 0 and probs[2].argmax() == 6
    assert torch.allclose(probs[3], torch.tensor([0.5, 0, 0, 0, 0, 0, 0.5]))
    assert ordinal_index(logits).tolist() == [2, 0, 6, 0]
    assert torch.allclose(ordinal_expected_index(logits[:3]), torch.tensor([2.0, 0.0, 6.0]),
                          atol=1e-6)
    # Temperature softens but keeps the argmax and the predicted index.
    soft = ordinal_probabilities(logits[:1], temperature=10.0)
    assert soft[0].argmax() == 2 and soft[0, 2] < probs[0, 2]


def test_ordinal_probabilities_stay_a_distribution_for_unordered_logits() -> None:
    logits = torch.tensor([[-3.0, 2.0, 1.0, -1.0, 4.0, -2.0]])
    probs = ordinal_probabilities(logits)
    assert (probs >= 0).all() and torch.allclose(probs.sum(), torch.tensor(1.0))


# --------------------------------------------------------------------------------- export

@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_network_exports_to_onnx_with_the_same_outputs(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = create_model("scalpnet", backbone="tiny", image_size=64).eval()
    names = ["conditions", "stage", "view", "zones", "hairloss"]
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (_images(2),), str(path), input_names=["image"],
                      output_names=names, dynamic_axes={"image": {0: "batch"}}, dynamo=False)
    batch = _images(3, seed=4)  # another batch size than the one traced
    outputs = ort.InferenceSession(str(path)).run(None, {"image": batch.numpy()})
    with torch.no_grad():
        reference = model(batch)
    for name, value in zip(names, outputs):
        assert torch.allclose(torch.from_numpy(value), reference[name], atol=1e-5), name
