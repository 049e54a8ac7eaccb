"""ScalpDataset: tensors as the contract says, unknown labels as masks."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from scalpscan.data.dataset import ScalpDataset, unpack_bits
from scalpscan.data.manifest import ManifestRow, write_manifest
from scalpscan.data.transforms import build_transforms
from scalpscan.data.vocab import CONDITIONS, VIEWS, ZONES, zone_bit


@pytest.fixture()
def manifest(tmp_path):
    rows = []
    for i in range(3):
        photo = tmp_path / f"p{i}.jpg"
        Image.fromarray(np.full((40, 60, 3), 40 * i, np.uint8)).save(photo)
        rows.append(photo)
    zone = np.zeros((40, 60), np.uint8)
    zone[:, :30] = zone_bit("hairline") | zone_bit("donor")
    Image.fromarray(zone, "L").save(tmp_path / "z0.png")
    loss = np.zeros((40, 60), np.uint8)
    loss[10:20] = 1
    Image.fromarray(loss, "L").save(tmp_path / "l0.png")
    manifest_rows = [
        ManifestRow(rows[0], "s1", "front", {"thinning": 1, "alopecia_patch": 0, "transplant_scar": 0}, 4,
                    tmp_path / "z0.png", tmp_path / "l0.png"),
        ManifestRow(rows[1], "s1", None, {"thinning": None, "alopecia_patch": 1, "transplant_scar": None}, None),
        ManifestRow(rows[2], "s2", "right", dict.fromkeys(CONDITIONS), 7),
    ]
    path = tmp_path / "manifest.csv"
    write_manifest(manifest_rows, path)
    return path


def test_items_follow_the_contract(manifest):
    ds = ScalpDataset.from_manifest(manifest, transform=build_transforms(32, train=False))
    assert len(ds) == 3
    item = ds[0]
    expected = {
        "image": ((3, 32, 32), torch.float32), "conditions": ((3,), torch.float32),
        "conditions_known": ((3,), torch.bool), "stage": ((), torch.int64), "view": ((), torch.int64),
        "zones": ((6, 32, 32), torch.float32), "zones_known": ((), torch.bool),
        "hairloss": ((3, 32, 32), torch.float32), "hairloss_known": ((), torch.bool), "index": ((), torch.int64),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(item[key].shape) == shape and item[key].dtype == dtype, key
    assert item["conditions"].tolist() == [1, 0, 0] and item["conditions_known"].all()
    assert item["stage"] == 3 and item["view"] == VIEWS.index("front")
    assert item["zones_known"] and item["hairloss_known"]
    # 60x40 letterboxed to 32x32: the left half of the photo is hairline + donor, nothing else.
    hairline, donor = ZONES.index("hairline"), ZONES.index("donor")
    assert item["zones"][hairline, 16, 5] == 1 and item["zones"][donor, 16, 5] == 1
    assert item["zones"][hairline, 16, 28] == 0
    assert item["zones"].sum(dim=(1, 2))[[1, 2, 3, 4]].sum() == 0
    assert item["hairloss"][0].sum() > 0 and item["hairloss"][1:].sum() == 0


def test_unknown_labels_travel_as_masks(manifest):
    ds = ScalpDataset.from_manifest(manifest, transform=build_transforms(32, train=False))
    item = ds[1]
    assert item["conditions_known"].tolist() == [False, True, False]
    assert item["conditions"].tolist() == [0, 1, 0]
    assert item["stage"] == -1 and item["view"] == -1
    assert not item["zones_known"] and not item["hairloss_known"]
    assert item["zones"].abs().sum() == 0 and item["index"] == 1
    assert ds[2]["stage"] == 6


def test_batches_collate_with_training_transform(manifest):
    ds = ScalpDataset.from_manifest(manifest, transform=build_transforms(32, train=True, seed=0))
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["zones"].shape == (3, 6, 32, 32)
    assert batch["zones_known"].tolist() == [True, False, False]


def test_unpack_bits():
    bits = unpack_bits(np.array([[0, 1], [6, 33]], np.uint8), 6)
    assert bits[:, 1, 0].tolist() == [0, 1, 1, 0, 0, 0]
    assert bits[:, 1, 1].tolist() == [1, 0, 0, 0, 0, 1]
