"""The installed package: one `scalpscan` package, with every module and data file the code
loads, and nothing else at the top of site-packages.

The fast tests read pyproject.toml against the folders of the repository. The slow test
builds the wheel, installs it into a fresh virtual environment and uses the API, ``python
-m scalpscan`` and the ``scalpscan`` command from a folder that holds its own ``models/``,
``data.py``, ``inference/`` and ``training/``, as an ML project or a notebook folder does.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
VERSION = PYPROJECT["project"]["version"]

#: Top-level folders of the repository that are not part of the package.
NOT_PACKAGE = {"tests", "docs", "local", "build", "dist", "runs", "demo_out", "out", "scalpscan_data"}
#: Files at the root (the root package's folder) that code may load; any other root file
#: (README.md, Makefile, pyproject.toml, LICENSE...) belongs to the repository, not the package.
DATA_SUFFIXES = {".yaml", ".yml", ".json", ".j2", ".html", ".css", ".js", ".png", ".svg", ".ini", ".mako",
                 ".safetensors", ".onnx", ".csv"}
#: Top-level names a folder of the user's own may use that the package must not pick up.
CONFLICTING = ("models", "data", "inference", "training", "scripts", "app")


def _source_files() -> list[PurePosixPath]:
    """The repository's files as a fresh clone holds them (tracked and new, not ignored)."""
    if (REPO / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
        return sorted(PurePosixPath(name) for name in listed if name and (REPO / name).is_file())
    found = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__" and not d.endswith(".egg-info")]
        found += [PurePosixPath(Path(folder, name).relative_to(REPO).as_posix()) for name in files]
    return sorted(found)


def _package_folders() -> dict[str, PurePosixPath]:
    """Package name -> its folder relative to the repository, for every folder holding an
    ``__init__.py`` outside the repository-only folders."""
    folders = {}
    for path in _source_files():
        if path.name != "__init__.py" or path.parts[0] in NOT_PACKAGE or path.parts[0].startswith("."):
            continue
        folder = path.parent
        name = ".".join(("scalpscan", *folder.parts))
        folders[name] = folder
    return folders


def _package_data_patterns(package: str) -> list[str]:
    data = SETUPTOOLS.get("package-data", {})
    return [*data.get("*", []), *data.get(package, [])]


def _package_files() -> tuple[set[str], set[str]]:
    """What the wheel must hold under ``scalpscan/`` and the data files no pattern covers.

    A package's modules are the ``.py`` files directly in its folder. Everything else in
    its folder tree, down to the next subpackage, is data that the code loads (templates,
    YAML, migrations, static files, shipped models) and must match a package-data pattern.
    """
    folders = _package_folders()
    subpackage_folders = set(folders.values())
    files = [p for p in _source_files() if p.suffix != ".pyc" and "__pycache__" not in p.parts]
    expected: set[str] = set()
    uncovered: set[str] = set()
    for package, folder in folders.items():
        covered = set()
        for pattern in _package_data_patterns(package):
            for match in glob.glob(pattern, root_dir=REPO / folder, recursive=True):
                covered.add((folder / match).as_posix() if folder.parts else match)
        for path in files:
            if folder.parts and path.parts[:len(folder.parts)] != folder.parts:
                continue
            inner = path.relative_to(folder)
            owner = folder
            for part in inner.parts[:-1]:  # the nearest package folder holding the file
                if owner / part in subpackage_folders:
                    owner = owner / part
                else:
                    break
            if owner != folder:
                continue  # belongs to a subpackage, checked there
            if not folder.parts and (inner.parts[0] in NOT_PACKAGE or inner.parts[0].startswith(".")):
                continue
            in_wheel = "/".join(("scalpscan", *path.parts))
            if len(inner.parts) == 1 and path.suffix == ".py":
                expected.add(in_wheel)
            elif path.as_posix() in covered:
                expected.add(in_wheel)
            elif folder.parts or (len(inner.parts) == 1 and path.suffix in DATA_SUFFIXES):
                uncovered.add(path.as_posix())
    return expected, uncovered


def test_the_packages_list_names_every_package_folder_and_nothing_else() -> None:
    assert SETUPTOOLS["package-dir"] == {"scalpscan": "."}
    listed = SETUPTOOLS["packages"]
    assert len(listed) == len(set(listed)), "pyproject.toml lists a package twice"
    folders = _package_folders()
    missing = sorted(set(folders) - set(listed))
    assert not missing, (f"pyproject.toml [tool.setuptools] packages lacks {missing}: these folders hold an "
                         "__init__.py but would not be installed")
    stale = sorted(set(listed) - set(folders))
    assert not stale, f"pyproject.toml [tool.setuptools] packages names {stale}, which have no __init__.py"


def test_package_data_covers_every_file_the_code_loads() -> None:
    data = SETUPTOOLS.get("package-data", {})
    unknown = sorted(set(data) - {"*"} - set(SETUPTOOLS["packages"]))
    assert not unknown, f"[tool.setuptools.package-data] names packages that are not installed: {unknown}"
    _, uncovered = _package_files()
    assert not uncovered, ("files inside the package that no [tool.setuptools.package-data] pattern "
                           f"ships: {sorted(uncovered)}")


def test_the_shipped_model_pattern_covers_a_model_folder() -> None:
    # `models/shipped/NAME/` may be empty in a checkout; what lands there must still ship.
    patterns = _package_data_patterns("scalpscan.models")
    for name in ("model.safetensors", "model.json"):
        assert any(PurePosixPath(f"shipped/scalpscan-joint-v1/{name}").match(p) for p in patterns), name
    assert not any(PurePosixPath("shipped/scalpscan-joint-v1/model.pt").match(p) for p in patterns)


def test_the_license_file_ships_with_the_distribution() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


# --- the built wheel in a fresh virtual environment ------------------------------------

def _clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user of ``venv``: nothing of this test run's own paths."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_wheel(tmp_path: Path) -> Path:
    # Built from a copy of the checkout's files, so that no build/ or egg-info folder lands
    # in the repository and no stale build output can slip into the wheel.
    source = tmp_path / "src"
    for path in _source_files():
        target = source / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, target)
    dist = tmp_path / "dist"
    # No build isolation: setuptools comes from this environment, so no network is needed.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", str(dist), str(source)], cwd=tmp_path)
    (wheel,) = dist.glob("scalpscan-*.whl")
    return wheel


def _dependencies_folder(tmp_path: Path) -> Path:
    """A folder of links to the dependencies installed here, without scalpscan itself.

    This environment holds an editable install of the repository (a finder module and a
    ``.pth`` that loads it); linking only the other distributions keeps the fresh
    environment from seeing the repository while it still finds torch and the rest offline.
    """
    site = Path(sysconfig.get_paths()["purelib"])
    folder = tmp_path / "deps"
    folder.mkdir()
    for entry in site.iterdir():
        name = entry.name
        if (name.startswith(("scalpscan", "__editable__", "_distutils_hack", "__pycache__"))
                or name.endswith(".pth")):
            continue
        (folder / name).symlink_to(entry)
    return folder


def _conflicting_folder(tmp_path: Path) -> Path:
    """A working folder with packages of its own named like scalpscan's subpackages.

    Importing any of them fails loudly, with an error no ``except ImportError`` swallows.
    """
    work = tmp_path / "project"
    for name in CONFLICTING:
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(
            f"raise RuntimeError('the folder\\'s own {name}/ was imported instead of scalpscan.{name}')\n")
    shutil.rmtree(work / "data")
    (work / "data.py").write_text("raise RuntimeError('the folder\\'s own data.py was imported')\n")
    return work


# Runs inside the fresh environment, from the folder with conflicting names.
API_SCRIPT = textwrap.dedent("""
    import json, sys
    from importlib import metadata
    from pathlib import Path

    import numpy as np
    import torch

    import scalpscan
    from scalpscan import Intake, Predictor, assess, write_reports
    from scalpscan.models import create_model, inference_meta, save_checkpoint

    out = Path(sys.argv[1])
    torch.manual_seed(0)
    model = create_model("scalpnet", backbone="tiny", image_size=64)
    save_checkpoint(out / "run", model, inference_meta(model, input_size=64))
    photo = np.random.default_rng(0).integers(40, 220, (160, 128, 3), dtype=np.uint8)
    row = Predictor.load(out / "run").predict(photo, subject="P1").to_row()
    assessment = assess([row], Intake(sex="male"))
    index = write_reports([row], out / "reports")
    print(json.dumps({
        "scalpscan": scalpscan.__file__,
        "modules": {n: getattr(m, "__file__", None) for n, m in sys.modules.items()
                    if n == "scalpscan" or n.startswith("scalpscan.")},
        "conflicting": sorted(set(sys.modules) & set(sys.argv[2].split(","))),
        "version": metadata.version("scalpscan"),
        "dist": str(metadata.distribution("scalpscan").locate_file("")),
        "row": sorted(row),
        "status": row["status"],
        "decision": assessment.decision,
        "index": str(index),
    }))
""")


@pytest.mark.slow
def test_the_wheel_installs_alone_and_works_beside_conflicting_packages(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)

    # The wheel holds the package and its metadata; nothing else at the top level.
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = f"scalpscan-{VERSION}.dist-info"
    assert {n.split("/")[0] for n in names} == {"scalpscan", dist_info}
    expected, _ = _package_files()
    shipped = {n for n in names if n.startswith("scalpscan/")}
    assert not expected - shipped, f"the wheel lacks {sorted(expected - shipped)}"
    assert not shipped - expected, f"the wheel holds files that are not the package's: {sorted(shipped - expected)}"
    assert f"{dist_info}/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "scalpscan = scalpscan.scripts.cli:main" in entry_points

    # A fresh environment; pip from this one installs into it (no ensurepip, no index).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=_clean_env(venv)).strip())
    before = set(os.listdir(site))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--no-compile", "-q", str(wheel)], cwd=tmp_path, env=_clean_env(venv))
    assert set(os.listdir(site)) - before == {"scalpscan", dist_info}
    assert (venv / "bin" / "scalpscan").is_file()
    # The dependencies come after site-packages, as an installed dependency would.
    (site / "_scalpscan_test_dependencies.pth").write_text(f"{_dependencies_folder(tmp_path)}\n")

    work = _conflicting_folder(tmp_path)
    env = _clean_env(venv)
    script = work / "use_api.py"
    script.write_text(API_SCRIPT)
    out = tmp_path / "out"
    result = json.loads(_run([str(python), str(script), str(out), ",".join(CONFLICTING)], cwd=work, env=env)
                        .strip().splitlines()[-1])
    installed = site / "scalpscan"
    assert Path(result["scalpscan"]).parent == installed
    outside = {n: f for n, f in result["modules"].items() if f and not Path(f).is_relative_to(installed)}
    assert not outside, f"modules loaded from outside the installed package: {outside}"
    assert result["conflicting"] == []
    assert result["version"] == VERSION
    assert Path(result["dist"]) == site
    assert {"image", "subject", "status", "conditions", "stage", "assessment", "model"} <= set(result["row"])
    assert result["status"] == "ok"
    assert result["decision"] in {"candidate", "caution", "not_indicated", "review"}
    assert (out / "reports" / "index.html").is_file()

    # `python -m scalpscan` and the console script, from the same folder.
    assert "usage: scalpscan" in _run([str(python), "-m", "scalpscan", "--help"], cwd=work, env=env)
    assert "usage: scalpscan" in _run([str(venv / "bin" / "scalpscan"), "--help"], cwd=work, env=env)
    # Recipes are package data: listed from the installed package, not the repository.
    recipes = _run([str(venv / "bin" / "scalpscan"), "train", "--list-recipes"], cwd=work, env=env)
    assert "real" in recipes and str(installed / "training" / "recipes") in recipes
