"""Limits and defaults, declared once: each route's body limit comes from its own file fields (service/uploads.py),
over real HTTP; and what the docs say of the request defaults and bounds (service/limits.py, the schemas) and of the
settings' defaults (core/settings.py) is what the code does."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import redis
from fastapi import FastAPI, File, UploadFile
from pydantic import SecretStr

from client import cli
from core.settings import Settings
from service.app import create_app
from service.limits import ASPECT_TOLERANCE, JSON_BODY_LIMIT, MULTIPART_OVERHEAD, RANDOM_SEED_BOUND
from service.uploads import LIMIT_KEY, body_limits
from tests.service.helpers import Server, make_settings

ROOT = Path(__file__).resolve().parents[2]
API_MD = (ROOT / "docs" / "API.md").read_text()
DOCS_THAT_NAME_SETTINGS = ("README.md", "docs/API.md", "docs/CONFIG.md", "docs/DEPLOY.md", "docs/DESIGN.md")
SETTINGS = Settings()
SPEC = create_app(SETTINGS).openapi()


def _body_schema(operation: dict[str, Any]) -> dict[str, Any]:
    """The properties of an operation's request body (JSON or multipart), {} without one."""
    for content in operation.get("requestBody", {}).get("content", {}).values():
        ref = content["schema"]["$ref"].rsplit("/", 1)[1]
        return SPEC["components"]["schemas"][ref].get("properties", {})
    return {}


def _file_settings(operation: dict[str, Any]) -> dict[str, str]:
    """file field -> the GENDEF_ setting that bounds its bytes, as the operation declares it."""
    return {name: prop[LIMIT_KEY] for name, prop in _body_schema(operation).items() if LIMIT_KEY in prop}


def _setting(name: str, settings: Settings) -> Any:
    return getattr(settings, name.removeprefix("GENDEF_").lower())


UPLOAD_ROUTES = sorted(
    path for path, operations in SPEC["paths"].items() if _file_settings(operations.get("post", {}))
)


def test_the_upload_routes_are_those_with_files():
    assert UPLOAD_ROUTES == ["/decompose", "/edit", "/render", "/segment"]


# --- each route's body limit, over real HTTP


@pytest.fixture
def small_limits(redis_db: redis.Redis, tmp_path: Path) -> Iterator[Server]:
    """An API whose video limit is as small as its image limit, so bodies at the limits stay cheap to send."""
    with Server(make_settings(tmp_path, max_video_bytes=300 * 1024)) as server:
        yield server


@pytest.mark.parametrize("path", UPLOAD_ROUTES)
def test_an_upload_route_takes_its_files_limits_and_refuses_a_byte_more(small_limits: Server, path: str):
    files = _file_settings(SPEC["paths"][path]["post"])
    limits = {name: _setting(setting, small_limits.settings) for name, setting in files.items()}
    assert all(limit > 2 * JSON_BODY_LIMIT for limit in limits.values())  # past what a JSON body may be
    body_limit = sum(limits.values()) + MULTIPART_OVERHEAD
    with httpx.Client(base_url=small_limits.url, timeout=30) as http:
        # Files at their limits pass the size check (the route then answers for the missing fields or the junk).
        r = http.post(path, files={name: (name, b"\0" * limit) for name, limit in limits.items()})
        assert r.status_code != 413, r.text
        # A body past the route's limit is refused before the route runs.
        r = http.post(path, files={name: (name, b"\0" * body_limit) for name in limits})
        assert r.status_code == 413
        assert r.json()["detail"] == f"request body is larger than the limit of {body_limit} bytes"
        # A JSON route keeps the JSON limit.
        r = http.post("/generate", content=b"{" + b" " * JSON_BODY_LIMIT + b"}")
        assert r.status_code == 413


def test_a_file_field_without_a_declared_limit_stops_the_app():
    app = FastAPI()

    @app.post("/upload")
    def upload(picture: Annotated[UploadFile, File()]) -> None: ...

    with pytest.raises(ValueError, match="POST /upload: file field 'picture' declares no size limit"):
        body_limits(app.openapi(), SETTINGS)


def test_the_cli_sends_an_option_only_when_given_and_repeats_no_default_of_the_api():
    """The CLI cannot know a server's defaults: what it leaves out, the API decides (client/cli.py)."""
    commands = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    left_to_the_api = [
        (name, action)
        for name, command in commands.items()
        for action in command._actions
        if "the API's" in (action.help or "")
    ]
    assert {name for name, _ in left_to_the_api} >= {"generate", "resample", "render", "decompose"}
    wrong = [
        f"gendef {name} {action.option_strings[0]}: default {action.default!r}, help {action.help!r}"
        for name, action in left_to_the_api
        if action.default is not None or re.search(r"\d", action.help)
    ]
    assert not wrong, wrong


# --- docs/API.md's tables against the OpenAPI document


def _number(text: str) -> int:
    """'600', '2^32-1', '2^31' -> int."""
    match = re.fullmatch(r"(\d+)(?:\^(\d+))?(?:-(\d+))?", text)
    assert match, f"not a number: {text!r}"
    base, power, minus = match.groups()
    return int(base) ** int(power or 1) - int(minus or 0)


def _documented_bounds(kind: str) -> tuple[int | None, int | None]:
    """The bounds a table's type column states: 'int 1..60', 'int >= 1', 'list of ..., 1 to 256'."""
    if match := re.search(r"(\S+)\.\.(\S+)", kind):
        return _number(match[1]), _number(match[2])
    if match := re.search(r">= (\d+)", kind):
        return int(match[1]), None
    if match := re.search(r"(\d+) to (\d+)", kind):
        return int(match[1]), int(match[2])
    return None, None


def _code_bounds(prop: dict[str, Any]) -> tuple[int | None, int | None] | None:
    """(minimum, maximum) of a number field, (minItems, maxItems) of a list; None for other fields."""
    option = next((o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"), prop)
    if option.get("type") in ("integer", "number"):
        low, high = option.get("minimum"), option.get("maximum")
    elif option.get("type") == "array":
        low, high = option.get("minItems"), option.get("maxItems")
    else:
        return None
    return (None if low is None else int(low)), (None if high is None else int(high))


def _tables() -> Iterator[tuple[str, str, str, str, str]]:
    """(method, path, field, type column, default column) of each row of the request tables of docs/API.md."""
    for section in re.split(r"^## ", API_MD, flags=re.M)[1:]:
        heading = re.match(r"(GET|POST) (\S+)", section)
        if heading is None:
            continue
        method, path = heading[1].lower(), heading[2].replace("{id}", "{job_id}")
        for row in re.finditer(r"^\| `(\w+)` \| (.*?) \| (.*?) \|", section, flags=re.M):
            yield method, path, row[1], row[2], row[3]


def test_api_md_states_each_fields_default_and_bounds_as_the_code_has_them():
    rows = list(_tables())
    assert len(rows) > 25  # the tables were found
    wrong = []
    for method, path, field, kind, default in rows:
        prop = _body_schema(SPEC["paths"][path][method]).get(field)
        where = f"{method.upper()} {path} `{field}`"
        if prop is None:
            wrong.append(f"{where}: the API takes no such field")
            continue
        bounds = _code_bounds(prop)
        if bounds is not None and _documented_bounds(kind) != bounds:
            wrong.append(f"{where}: docs say {kind!r}, the code's bounds are {bounds}")
        code_default = prop.get("default")
        documented = _number(default) if re.fullmatch(r"[\d^-]+", default) else None
        if isinstance(code_default, bool):
            if {"true": True, "false": False}.get(default) is not code_default:
                wrong.append(f"{where}: docs say default {default!r}, the code's is {code_default!r}")
        elif isinstance(code_default, int | float) or documented is not None:
            if documented != code_default:
                wrong.append(f"{where}: docs say default {default!r}, the code's is {code_default!r}")
        if LIMIT_KEY in prop and f"`{prop[LIMIT_KEY]}`" not in kind:
            wrong.append(f"{where}: docs do not name its size limit `{prop[LIMIT_KEY]}`")
    assert not wrong, "docs/API.md differs from the code:\n" + "\n".join(wrong)


def test_api_md_states_the_limits_it_gives_in_prose_as_the_code_has_them():
    assert RANDOM_SEED_BOUND == 2 ** (RANDOM_SEED_BOUND.bit_length() - 1)
    phrases = [
        f"Random seeds are drawn by the API (below 2^{RANDOM_SEED_BOUND.bit_length() - 1})",
        f"aspect ratio off by more than {ASPECT_TOLERANCE * 100:g} %",
        f"JSON bodies at most {JSON_BODY_LIMIT // 1024} KiB; uploads their files' limits plus "
        f"{MULTIPART_OVERHEAD // 1024} KiB",
    ]
    text = " ".join(API_MD.split())
    missing = [p for p in phrases if p not in text]
    assert not missing, f"docs/API.md lacks: {missing}"


# --- the settings' defaults wherever the docs give them

QUANTITY = r"(\d+(?:\.\d+)?)(?:\s*[x×]\s*(\d+)|(²))?(?:\s+(KiB|MiB|GiB|s|min|h|days?)\b)?"
UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "s": 1, "min": 60, "h": 3600, "day": 86400, "days": 86400}


def _quantity(value: str, times: str | None, square: str | None, unit: str | None) -> float:
    """QUANTITY's groups of '20 MiB', '4096 x 4096', '4096²', '7 days', '0.25 s' -> the number in bytes, pixels or
    seconds."""
    value = float(value) * (float(times) if times else 1) * (float(value) if square else 1)
    return value * UNITS.get(unit, 1)


def _default(name: str) -> Any:
    value = Settings.model_fields[name].default
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def test_the_docs_give_each_settings_default_as_the_code_has_it():
    """`GENDEF_X` (20 MiB ...), `GENDEF_X`, 128 ... in prose, and CONFIG.md's column of defaults."""
    wrong = []
    prose = re.compile(r"`GENDEF_(\w+)`[\s,(]+" + QUANTITY + r"(?=\s*[,;)]|\s+by default)")
    for doc in DOCS_THAT_NAME_SETTINGS:
        text = (ROOT / doc).read_text()
        for match in prose.finditer(text):
            name = match[1].lower()
            said = _quantity(*match.groups()[1:])
            if name in Settings.model_fields and said != _default(name):
                wrong.append(f"{doc}: {match[0]!r}, the code's default is {_default(name)!r}")
    config = (ROOT / "docs" / "CONFIG.md").read_text()
    rows = re.findall(r"^\| `GENDEF_(\w+)` \| (.*?) \|", config, flags=re.M)
    assert len(rows) == len(Settings.model_fields)
    for upper, cell in rows:
        name, default = upper.lower(), _default(upper.lower())
        literal = re.match(r"`([^`]*)`", cell)
        if literal is None:
            said = "" if cell.startswith("empty") else None if cell.startswith("unset") else default
        elif isinstance(default, bool):
            said = {"true": True, "false": False}.get(literal[1])
        elif isinstance(default, int | float):
            said = float(literal[1])
        elif isinstance(default, Path) or name == "models_dir":  # a path: the docs may give its end
            said = default if str(default).endswith(literal[1]) else literal[1]
        else:
            said = literal[1]
        if said != default:
            wrong.append(f"docs/CONFIG.md `GENDEF_{upper}`: {cell!r}, the code's default is {default!r}")
        for aside in re.finditer(r"\(" + QUANTITY + r"\)", cell):
            if _quantity(*aside.groups()) != default:
                wrong.append(f"docs/CONFIG.md `GENDEF_{upper}`: {cell!r}, the code's default is {default!r}")
    assert not wrong, "\n".join(wrong)
