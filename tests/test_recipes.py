"""Recipes are files: `training/recipes/NAME.yaml`, read by `scalpscan train --recipe NAME`
and by the benchmark scripts alike, documented key by key, overridable from the command
line, and shipped in the package."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from scalpscan.scripts import bench_train
from scalpscan.scripts.cli import main
from scalpscan.training.config import (
    RECIPES_DIR,
    RECOMMENDED_RECIPE,
    ConfigError,
    TrainConfig,
    config_to_dict,
    describe_config,
    list_recipes,
    load_config,
    read_recipe,
    recipe_path,
)

REPO = Path(__file__).resolve().parents[1]
#: The recipes the benchmark rows were made with.
BENCHMARK_RECIPES = ("real", "synth", "synth2real", "cv")


def test_every_benchmark_recipe_ships_as_a_file_that_loads() -> None:
    recipes = list_recipes()
    for name in BENCHMARK_RECIPES:
        assert name in recipes and recipes[name], f"{name}.yaml missing or without a description"
        config = load_config(recipe=name)
        assert config.recipe == name
        # Each key the file sets is what the resolved config holds.
        for key, value in read_recipe(name).items():
            resolved = config_to_dict(config)[key]
            assert resolved == ({**config_to_dict(TrainConfig())[key], **value}
                                if isinstance(value, dict) else value), key
    assert RECOMMENDED_RECIPE in recipes
    assert load_config(recipe="cv").folds >= 2 and load_config(recipe="synth").backbone == "tiny"


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_key_of_a_recipe_is_documented(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 20, "first line: a one-line description"
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#")):  # a top-level key
            # Documented by the comment right above it, or above the block of keys (and
            # their mapping entries) it belongs to.
            j = i - 1
            while j >= 0 and lines[j].strip() and not lines[j].startswith("#"):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"{path.name}: {line.split(':')[0]} has no comment"
    assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_options_and_set_override_the_recipe(tmp_path: Path) -> None:
    own = tmp_path / "mine.yaml"
    own.write_text("# my recipe\nepochs: 3\nlr: 0.01\n")
    config = load_config(None, recipe="real", epochs=4, overrides=["lr=3e-4", "loss_weights.zones=1"])
    assert (config.backbone, config.image_size) == ("efficientnet_lite0", 224)  # from the recipe
    assert config.epochs == 4 and config.lr == pytest.approx(3e-4)  # option, then --set
    assert config.loss_weights["zones"] == 1.0 and config.loss_weights["conditions"] == 0.0
    # A config file comes after the recipe; a recipe may also be a file of one's own.
    assert load_config(own, recipe="real").epochs == 3
    mine = load_config(recipe=own)
    assert (mine.epochs, mine.lr, mine.recipe) == (3, 0.01, str(own))


def test_bad_recipes_are_refused_with_the_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'rea'; recipes: .*real"):
        load_config(recipe="rea")
    with pytest.raises(ConfigError, match="does not exist"):
        recipe_path(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("# bad\nepochs: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: epochs: 'many' is not valid"):
        load_config(recipe=bad)


def test_the_benchmark_builds_its_configs_from_the_same_files() -> None:
    assert not any(name.endswith("_RECIPE") for name in vars(bench_train))
    config = bench_train._recipe_config("cv", ["epochs=2"], data="train.csv", out="runs/x",
                                        folds=3)
    assert config_to_dict(config) == config_to_dict(load_config(
        recipe="cv", data="train.csv", out="runs/x", folds=3, progress=False,
        overrides=["epochs=2"]))
    assert bench_train._recipe("synth") == yaml.safe_load((RECIPES_DIR / "synth.yaml").read_text())


def test_list_recipes_prints_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--list-recipes"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    for name, description in list_recipes().items():
        assert sum(line.split()[0] == name for line in lines) == 1
        assert any(line.startswith(name) and description in line for line in lines)


def test_train_refuses_an_unknown_recipe_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--recipe", "nope", "--data", "m.csv", "--out", "runs/x"]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err
    # A resumed run continues with its own saved config, never another recipe.
    assert main(["train", "--out", "runs/x", "--resume", "--recipe", "real"]) == 2
    assert "--resume continues with the run's own config.yaml" in capsys.readouterr().err


def test_describe_config_says_what_the_defaults_train() -> None:
    text = describe_config(TrainConfig())
    assert "resnet18 (random weights)" in text and "224 px" in text
    assert "heads conditions, stage, view, zones, hairloss" in text
    assert "ImageNet weights" in describe_config(load_config(recipe="real"))


def test_recipes_are_package_data() -> None:
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "recipes/*.yaml" in setup["package-data"]["scalpscan.training"]
    assert not (RECIPES_DIR / "__init__.py").exists()  # data, not code
