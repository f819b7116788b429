"""Facts about the repository as a whole: the packages' import graph (docs/DESIGN.md), docs that cover the API and
every setting, and no file that points outside the repository."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings
from service.app import create_app

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "model", "service", "worker", "client")

# package -> first-party packages it may import (docs/DESIGN.md: service -> core <- worker -> model)
ALLOWED = {
    "core": {"core"},
    "model": {"model", "core"},  # core.video only (MODEL_CORE)
    "service": {"service", "core"},
    "worker": {"worker", "core", "model"},
    "client": {"client"},
}
MODEL_CORE = {"core.video"}  # what model/ may import from core/, and core.video's own first-party closure:
VIDEO_CLOSURE = {"core.video", "core.errors"}  # torch-free and server-free, so model/ stays trainable alone
# third-party packages a package must never import
FORBIDDEN = {
    "core": {"torch", "fastapi", "starlette", "uvicorn", "prometheus_client"},
    "model": {"fastapi", "starlette", "celery", "redis", "boto3"},
    "service": {"torch"},
    "worker": {"fastapi", "starlette", "uvicorn", "prometheus_client"},
}


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (``from a.b import c`` gives a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _modules() -> dict[str, set[str]]:
    graph = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            graph[module] = _imports(path)
    return graph


def _first_party(names: set[str], graph: dict[str, set[str]]) -> set[str]:
    """The first-party modules among imported names (``from core import video`` names core.video)."""
    return {n for n in names if n in graph}


def test_the_import_graph_is_service_to_core_from_worker_to_model():
    graph = _modules()
    wrong = []
    for module, names in graph.items():
        package = module.split(".")[0]
        for name in sorted(names):
            top = name.split(".")[0]
            if top in PACKAGES and top not in ALLOWED[package]:
                wrong.append(f"{module} imports {name}")
            if top in FORBIDDEN.get(package, ()):
                wrong.append(f"{module} imports {name}")
        if package == "model":
            wrong += [
                f"{module} imports {n} (model/ may import only core.video)"
                for n in _first_party(names, graph)
                if n.startswith("core.") and n not in MODEL_CORE
            ]
    assert not wrong, "\n".join(wrong)


# model/'s rooms (docs/DESIGN.md): the networks and what sampling needs at the top, the rooms above them. A room
# may import the rooms named here and nothing else of model/: imports run downward, so the networks never import
# training, evaluation or decomposition, and the decomposition needs nothing of the GAN's training.
ROOMS = {
    "model": {"model"},
    "model.evaluation": {"model", "model.evaluation"},
    "model.training": {"model", "model.evaluation", "model.training"},
    "model.decomposition": {"model", "model.decomposition"},
}


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or f"{parts[0]}.{parts[-1]}" in ROOMS else parts[0]


def test_model_rooms_import_downward_only():
    graph = _modules()
    wrong = [
        f"{module} imports {name}"
        for module, names in graph.items()
        if module.startswith("model")
        for name in sorted(_first_party(names, graph))
        if name.startswith("model") and _room(name) not in ROOMS[_room(module)]
    ]
    assert not wrong, "\n".join(wrong)


def test_core_video_needs_nothing_else_of_core():
    graph, seen, todo = _modules(), set(), ["core.video"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += [n for n in _first_party(graph[module], graph) if n != "core"]
    assert seen <= VIDEO_CLOSURE, seen - VIDEO_CLOSURE


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def test_no_file_points_outside_the_repository():
    bad = []
    for path in _tracked():
        if path.suffix in {".png", ".gif", ".safetensors"}:
            continue
        text = path.read_text(errors="replace")
        for pattern in (r"\.\./shared", r"\b[Ii]ssue \d+"):
            bad += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not bad, "\n".join(bad)


def test_the_repository_fits_the_gpu_machine_it_is_sent_to():
    """benchmarks/gpu_check.sh and GPU training run on a lent machine that receives the repository's files, at
    most 64 MiB of them; what grows is training_state/ (docs/TRAINING.md, "Resuming the runs in progress")."""
    size = sum(path.stat().st_size for path in _tracked())
    assert size < 64 * 2**20, f"the tracked files are {size / 2**20:.1f} MiB: a lent GPU machine takes 64 MiB"


def _schema(spec: dict, ref_or_schema: dict) -> dict:
    ref = ref_or_schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else ref_or_schema


def test_api_md_names_every_path_and_request_field():
    api = (ROOT / "docs" / "API.md").read_text()
    spec = create_app(Settings()).openapi()
    missing = []
    for path, operations in spec["paths"].items():
        shown = path.replace("{job_id}", "{id}")
        for method, operation in operations.items():
            if f"{method.upper()} {shown}" not in api:
                missing.append(f"{method.upper()} {shown}")
            fields = [p["name"] for p in operation.get("parameters", []) if p["in"] != "path"]
            for content in operation.get("requestBody", {}).get("content", {}).values():
                fields += list(_schema(spec, content["schema"]).get("properties", {}))
            missing += [f"{method.upper()} {shown}: `{f}`" for f in fields if f"`{f}`" not in api]
    assert not missing, "docs/API.md lacks:\n" + "\n".join(missing)


def test_config_md_documents_every_setting():
    config = (ROOT / "docs" / "CONFIG.md").read_text()
    missing = [name for name in Settings.model_fields if f"`GENDEF_{name.upper()}`" not in config]
    assert not missing, f"docs/CONFIG.md lacks: {missing}"


def _assert_loads_none_of(modules: str, forbidden: tuple[str, ...]) -> None:
    """Importing modules (comma-separated) in a fresh interpreter loads no package named in forbidden."""
    code = f"import sys, {modules}\n"
    code += f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\nassert not bad, bad\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("package", ["core", "service"])
def test_core_and_the_api_never_load_torch(package: str):
    modules = "core.video, core.jobs, core.queues, core.documents" if package == "core" else "service.app"
    _assert_loads_none_of(modules, ("torch", "model", "worker"))


def test_moving_mnist_training_needs_neither_pyav_nor_imageio():
    """A lent GPU machine receives at most 64 MiB: PyAV's wheel (35 MB) does not fit beside the repository, so
    Moving-MNIST training must import without it (only video files need it: model.data.decode)."""
    _assert_loads_none_of("model.training.train, model.training.widen", ("av", "imageio"))


def test_the_worker_never_loads_training_or_evaluation_code():
    """A worker samples, warps, fits clips and encodes; the GAN's training and evaluation stay out of its process."""
    code = "import sys, worker.tasks\n"
    code += "bad = sorted(m for m in sys.modules if m.startswith(('model.training', 'model.evaluation')))\n"
    code += "assert not bad, bad\nassert 'model.gendef' in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
