"""The label vocabulary: names, orders, bits and view spellings."""

import pytest

from scalpscan.data.vocab import (
    CONDITIONS,
    MANIFEST_COLUMNS,
    STAGES,
    VIEWS,
    ZONES,
    condition_bit,
    index_to_stage,
    parse_view,
    stage_to_index,
    zone_bit,
)


def test_names_and_orders_match_the_design():
    assert CONDITIONS == ("thinning", "alopecia_patch", "transplant_scar")
    assert VIEWS == ("front", "top", "back", "left", "right")
    assert ZONES == ("hairline", "crown", "temple_left", "temple_right", "part", "donor")
    assert STAGES == tuple(range(1, 8))
    assert MANIFEST_COLUMNS == (
        "image", "subject", "view", "thinning", "alopecia_patch", "transplant_scar",
        "stage", "zone_mask", "loss_mask",
    )


def test_bits_are_powers_of_two_in_vocabulary_order():
    assert [condition_bit(c) for c in CONDITIONS] == [1, 2, 4]
    assert [zone_bit(z) for z in ZONES] == [1, 2, 4, 8, 16, 32]
    assert max(zone_bit(z) for z in ZONES) < 256  # fits an 8-bit PNG


@pytest.mark.parametrize("stage", STAGES)
def test_stage_index_round_trip(stage):
    assert index_to_stage(stage_to_index(stage)) == stage


@pytest.mark.parametrize("bad", [0, 8, -1])
def test_stage_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="1, 2, 3"):
        stage_to_index(bad)


@pytest.mark.parametrize("bad", [-1, 7])
def test_index_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="0..6"):
        index_to_stage(bad)


@pytest.mark.parametrize(
    "text, view",
    [("Front", "front"), ("Top-Down", "top"), ("top down", "top"), (" vertex ", "top"),
     ("BACK", "back"), ("Left", "left"), ("right", "right"), ("sideways", None), ("", None)],
)
def test_parse_view_spellings(text, view):
    assert parse_view(text) == view
