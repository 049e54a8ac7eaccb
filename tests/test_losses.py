"""Losses: unknown labels give no loss and no gradient; the ordinal loss knows distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scalpscan.data.vocab import CONDITIONS, VIEWS, ZONES
from scalpscan.training.losses import (
    MultiTaskLoss,
    compute_pos_weight,
    condition_loss,
    mask_loss,
    ordinal_stage_loss,
    ordinal_targets,
    view_loss,
)


def _outputs(batch: int = 4, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conditions": torch.randn(batch, len(CONDITIONS), generator=g).requires_grad_(),
        "stage": torch.randn(batch, 6, generator=g).requires_grad_(),
        "view": torch.randn(batch, len(VIEWS), generator=g).requires_grad_(),
        "zones": torch.randn(batch, len(ZONES), size // 4, size // 4, generator=g).requires_grad_(),
        "hairloss": torch.randn(batch, len(CONDITIONS), size // 4, size // 4, generator=g).requires_grad_(),
    }


def _batch(batch: int = 4, size: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conditions": (torch.rand(batch, len(CONDITIONS), generator=g) > 0.5).float(),
        "conditions_known": torch.tensor([[True, False, True], [False, False, False],
                                          [True, True, True], [False, True, False]][:batch]),
        "stage": torch.tensor([3, -1, 0, 6][:batch]),
        "view": torch.tensor([0, 1, -1, 3][:batch]),
        "zones": (torch.rand(batch, len(ZONES), size, size, generator=g) > 0.5).float(),
        "zones_known": torch.tensor([True, False, True, False][:batch]),
        "hairloss": (torch.rand(batch, len(CONDITIONS), size, size, generator=g) > 0.5).float(),
        "hairloss_known": torch.tensor([False, True, False, False][:batch]),
    }


def test_condition_loss_gives_zero_gradient_to_unknown_entries() -> None:
    out, batch = _outputs(), _batch()
    loss = condition_loss(out["conditions"], batch["conditions"], batch["conditions_known"])
    loss.backward()
    grad = out["conditions"].grad
    assert torch.all(grad[~batch["conditions_known"]] == 0)
    assert torch.all(grad[batch["conditions_known"]] != 0)


def test_condition_loss_is_the_mean_over_known_entries_only() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [100.0, 3.0, -4.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    known = torch.tensor([[True, True, False], [False, True, False]])
    expected = np.mean([
        F.binary_cross_entropy_with_logits(torch.tensor(2.0), torch.tensor(1.0)).item(),
        F.binary_cross_entropy_with_logits(torch.tensor(-1.0), torch.tensor(0.0)).item(),
        F.binary_cross_entropy_with_logits(torch.tensor(3.0), torch.tensor(1.0)).item(),
    ])
    assert condition_loss(logits, targets, known).item() == pytest.approx(expected, rel=1e-6)


def test_unknown_entry_holding_nan_does_not_poison_the_loss() -> None:
    logits = torch.tensor([[float("nan"), 1.0, 0.0]], requires_grad=True)
    loss = condition_loss(logits, torch.ones(1, 3), torch.tensor([[False, True, True]]))
    loss.backward()
    assert math.isfinite(loss.item())
    assert logits.grad[0, 0] == 0


def test_every_label_unknown_gives_zero_loss_and_zero_gradient() -> None:
    out = _outputs()
    batch = _batch()
    batch["conditions_known"][:] = False
    batch["stage"][:] = -1
    batch["view"][:] = -1
    batch["zones_known"][:] = False
    batch["hairloss_known"][:] = False
    total, parts = MultiTaskLoss()(out, batch)
    total.backward()
    assert total.item() == 0.0
    assert all(v == 0.0 for v in parts.values())
    for tensor in out.values():
        assert tensor.grad is None or torch.all(tensor.grad == 0)


def test_multitask_gradients_skip_unknown_photos_in_every_head() -> None:
    out, batch = _outputs(), _batch()
    total, _ = MultiTaskLoss()(out, batch)
    total.backward()
    assert torch.all(out["stage"].grad[batch["stage"] < 0] == 0)
    assert torch.all(out["stage"].grad[batch["stage"] >= 0].abs().sum(1) > 0)
    assert torch.all(out["view"].grad[batch["view"] < 0] == 0)
    assert torch.all(out["zones"].grad[~batch["zones_known"]] == 0)
    assert torch.all(out["zones"].grad[batch["zones_known"]].abs().sum() > 0)
    assert torch.all(out["hairloss"].grad[~batch["hairloss_known"]] == 0)


def test_ordinal_targets_are_cumulative() -> None:
    targets = ordinal_targets(torch.tensor([0, 3, 6]), 6)
    assert targets.tolist() == [[0] * 6, [1, 1, 1, 0, 0, 0], [1] * 6]


@pytest.mark.parametrize("true", [1, 2, 3, 4])
def test_ordinal_loss_grows_with_distance_between_stages(true: int) -> None:
    """A confident prediction of stage index p costs more the farther p is from the truth."""

    def confident(index: int) -> torch.Tensor:
        return torch.where(torch.arange(6) < index, 8.0, -8.0).unsqueeze(0)

    stage = torch.tensor([true])
    losses = [ordinal_stage_loss(confident(p), stage).item() for p in range(7)]
    for p in range(7):
        for q in range(7):
            if abs(p - true) < abs(q - true):
                assert losses[p] < losses[q], (p, q, losses)
    # "3 is closer to 4 than to 7" in Norwood terms (indices 2, 3, 6).
    four = torch.tensor([3])
    assert ordinal_stage_loss(confident(2), four) < ordinal_stage_loss(confident(6), four)


def test_stage_view_weights_weigh_front_over_back() -> None:
    stage_logits = torch.zeros(2, 6, requires_grad=True)
    batch_stage = torch.tensor([3, 3])
    loss_fn = MultiTaskLoss(stage_view_weights={"front": 3.0, "back": 1.0})
    weights = loss_fn.stage_weights(torch.tensor([VIEWS.index("front"), VIEWS.index("back")]))
    assert weights.tolist() == [3.0, 1.0]
    ordinal_stage_loss(stage_logits, batch_stage, weights).backward()
    front, back = stage_logits.grad.abs().sum(1)
    assert front.item() == pytest.approx(3 * back.item())
    # Unknown view weighs 1.
    assert loss_fn.stage_weights(torch.tensor([-1])).tolist() == [1.0]


def test_view_loss_ignores_unknown_and_matches_cross_entropy() -> None:
    logits = torch.randn(3, len(VIEWS), generator=torch.Generator().manual_seed(3))
    view = torch.tensor([1, -1, 4])
    expected = F.cross_entropy(logits[[0, 2]], view[[0, 2]])
    assert view_loss(logits, view).item() == pytest.approx(expected.item(), rel=1e-6)
    assert view_loss(logits, torch.full((3,), -1)).item() == 0.0


def test_mask_loss_is_low_for_a_perfect_mask_and_resizes_targets() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[..., :8, :] = 1
    good = (target[..., ::4, ::4] * 2 - 1) * 20  # logits at 1/4 resolution
    bad = -good
    known = torch.tensor([True])
    assert mask_loss(good, target, known).item() < 0.01
    assert mask_loss(bad, target, known).item() > 1.0


def _fit_line(resolution: str, start: int, width: int) -> float:
    """Fit free stride-4 logits to a vertical line; IoU of the line as evaluation reads it."""
    target = torch.zeros(1, 1, 32, 32)
    target[..., :, start:start + width] = 1
    logits = torch.zeros(1, 1, 8, 8, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(300):
        optimiser.zero_grad()
        mask_loss(logits, target, torch.tensor([True]), resolution=resolution).backward()
        optimiser.step()
    # Evaluation and inference upsample the logits bilinearly and threshold at 0.
    found = F.interpolate(logits.detach(), size=(32, 32), mode="bilinear",
                          align_corners=False) > 0
    truth = target > 0.5
    return float((found & truth).sum() / (found | truth).sum())


def test_mask_loss_at_the_target_resolution_learns_lines_thinner_than_the_stride() -> None:
    # A part line is narrower than one stride-4 cell. Shrunk to the logits' grid it is a
    # faint soft target, and the fit marks it badly or not at all; compared at the masks'
    # side, the fit learns it where evaluation scores it.
    lines = [(13, 1), (12, 2), (14, 2), (11, 3), (15, 3)]
    at_target = [_fit_line("target", start, width) for start, width in lines]
    at_logits = [_fit_line("logits", start, width) for start, width in lines]
    assert min(at_target) >= 0.5
    assert all(t > g for t, g in zip(at_target, at_logits))
    assert at_logits[0] == 0.0  # the 1 px line vanishes on the stride-4 grid


def test_mask_resolution_is_checked() -> None:
    known = torch.tensor([True])
    with pytest.raises(ValueError, match="resolution must be one of target, logits"):
        mask_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 16, 16), known, resolution="full")
    with pytest.raises(ValueError, match="mask_resolution"):
        MultiTaskLoss(mask_resolution="stride")


def test_dice_pools_the_batch_so_a_rare_thin_zone_is_worth_finding() -> None:
    # One photo of four shows a thin line (a part line); the model finds it, with a faint
    # spill at the same place on the three photos that do not show it. Per photo, those
    # three would make "mark nothing anywhere" the better answer; pooled, finding it is.
    from scalpscan.training.losses import dice_loss

    target = torch.zeros(4, 1, 16, 16)
    target[0, 0, :, 8] = 1
    found = torch.full((4, 1, 16, 16), -20.0)
    found[0, 0, :, 8] = 20.0
    found[1:, 0, :, 8] = math.log(0.2 / 0.8)  # probability 0.2
    nothing = torch.full((4, 1, 16, 16), -20.0)
    assert dice_loss(found, target).shape == (1,)
    assert dice_loss(found, target).item() == pytest.approx(1 - 33 / 42.6, abs=1e-3)
    assert dice_loss(found, target).item() < dice_loss(nothing, target).item()


def test_pos_weight_from_training_frequencies() -> None:
    targets = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
    known = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)
    weight = compute_pos_weight(targets, known, max_weight=20)
    # thinning: known rows 0-3 -> 1 positive, 3 negatives; alopecia: 1 pos of 4; scar: none known.
    assert weight.tolist() == pytest.approx([3.0, 3.0, 1.0])
    capped = compute_pos_weight(np.array([[1]] + [[0]] * 99), np.ones((100, 1), bool), max_weight=5)
    assert capped.item() == 5.0


def test_pos_weight_raises_the_loss_of_missed_positives() -> None:
    logits = torch.full((1, 3), -2.0)
    targets = torch.ones(1, 3)
    known = torch.ones(1, 3, dtype=torch.bool)
    plain = condition_loss(logits, targets, known)
    weighted = condition_loss(logits, targets, known, torch.tensor([4.0, 4.0, 4.0]))
    assert weighted.item() == pytest.approx(4 * plain.item(), rel=1e-6)


def test_head_weights_and_unknown_head_name() -> None:
    out, batch = _outputs(), _batch()
    _, parts = MultiTaskLoss()(out, batch)
    total, parts_off = MultiTaskLoss(weights={"zones": 0.0, "hairloss": 0.0, "view": 2.0})(out, batch)
    assert "zones" not in parts_off and "hairloss" not in parts_off
    expected = parts["conditions"] + parts["stage"] + 2 * parts["view"]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="unknown loss head"):
        MultiTaskLoss(weights={"stages": 1.0})
    with pytest.raises(ValueError, match="unknown view"):
        MultiTaskLoss(stage_view_weights={"side": 1.0})
