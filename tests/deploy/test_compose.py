"""docker-compose.yml and .env.example against the settings class and each other.

No Docker engine runs here: `docker-compose config` (Debian's docker-compose) validates and renders the file,
and the rendered values go through the real Settings class.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from core.settings import Settings
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SECRET = "GENDEF_S3_SECRET_ACCESS_KEY"

# Settings compose does not pass, and why.
NOT_IN_COMPOSE = {
    "GENDEF_LOCAL_STORAGE_DIR": "local storage backend only; compose stores artifacts in MinIO",
    "GENDEF_URL_SECRET": "signs the API's own file URLs, local storage backend only",
}

SETTINGS_VARS = {(Settings.model_config["env_prefix"] + name).upper() for name in Settings.model_fields}
INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}")


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"[A-Z]", line))
    return {name: value for name, value in pairs}


def _compose_defaults() -> dict[str, str]:
    """Each variable compose interpolates -> its default ('' for a required one)."""
    defaults: dict[str, str] = {}
    for name, op, default in INTERPOLATION.findall(COMPOSE.read_text()):
        value = default if op == ":-" else ""
        assert defaults.setdefault(name, value) == value, (
            f"{name} has two different defaults in docker-compose.yml"
        )
    return defaults


def test_every_gendef_variable_in_compose_and_env_example_is_a_setting() -> None:
    for path in (COMPOSE, ENV_EXAMPLE):
        unknown = set(re.findall(r"GENDEF_[A-Z0-9_]+", path.read_text())) - SETTINGS_VARS
        assert not unknown, f"{path.name} names variables core/settings.py does not read: {sorted(unknown)}"


def test_every_setting_reaches_the_containers() -> None:
    in_compose = set(re.findall(r"GENDEF_[A-Z0-9_]+", COMPOSE.read_text()))
    missing = SETTINGS_VARS - in_compose - set(NOT_IN_COMPOSE)
    assert not missing, (
        f"settings docker-compose.yml does not pass (add them, or to NOT_IN_COMPOSE): {sorted(missing)}"
    )


def test_env_example_documents_every_compose_variable_with_its_default() -> None:
    compose, documented = _compose_defaults(), _env_example()
    assert set(compose) == set(documented), (
        f"only in docker-compose.yml: {sorted(set(compose) - set(documented))}; "
        f"only in .env.example: {sorted(set(documented) - set(compose))}"
    )
    differ = {
        name: (compose[name], documented[name]) for name in compose if compose[name] != documented[name]
    }
    assert not differ, f"defaults differ (compose, .env.example): {differ}"


Compose = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def docker_compose(tmp_path_factory: pytest.TempPathFactory) -> Compose:
    """Runs `docker-compose ARGS` on the repo's file with only `env` set of the variables it reads: neither the
    caller's environment nor a developer's .env leak in."""
    require_tool(
        shutil.which("docker-compose") is not None,
        "docker-compose is not installed (Debian: apt-get install docker-compose; .ci/run does)",
    )
    no_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    no_env_file.touch()

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if k not in _compose_defaults()} | env
        return subprocess.run(
            [
                "docker-compose",
                "--project-directory",
                str(ROOT),
                "--env-file",
                str(no_env_file),
                "-f",
                str(COMPOSE),
                "--profile",
                "cpu",
                *args,
            ],
            env=clean,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.fixture(scope="module")
def rendered(docker_compose: Compose) -> dict:
    result = docker_compose({SECRET: "a-test-secret-of-some-length"}, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_config_is_valid(docker_compose: Compose) -> None:
    result = docker_compose({SECRET: "a-test-secret-of-some-length"}, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_s3_secret(docker_compose: Compose) -> None:
    result = docker_compose({}, "config", "-q")
    assert result.returncode != 0
    assert SECRET in result.stderr


def _settings(service: dict) -> Settings:
    """The settings a container gets: its GENDEF_ environment through the real class (no .env, nothing else)."""
    env = {
        k.removeprefix("GENDEF_").lower(): v
        for k, v in service["environment"].items()
        if k.startswith("GENDEF_")
    }
    return Settings(_env_file=None, **env)


def _queues(service: dict) -> set[str]:
    (flag,) = [arg for arg in service["command"] if arg.startswith("--queues=")]
    return set(flag.removeprefix("--queues=").split(","))


def test_containers_get_valid_production_settings(rendered: dict) -> None:
    services = rendered["services"]
    for name in ("api", "worker", "worker-cpu"):
        settings = _settings(services[name])
        assert (settings.env, settings.storage_backend) == ("production", "s3"), name
    assert _settings(services["worker-cpu"]).device == "cpu"


def test_presigned_urls_use_an_address_clients_reach(rendered: dict) -> None:
    public = _settings(rendered["services"]["api"]).s3_public_endpoint_url
    assert public, "the API must presign with GENDEF_S3_PUBLIC_ENDPOINT_URL"
    assert urlparse(public).hostname not in rendered["services"], f"{public} only resolves inside compose"


def test_workers_consume_every_queue_the_api_sends_to(rendered: dict) -> None:
    services = rendered["services"]
    api = _settings(services["api"])
    gpu, cpu = _queues(services["worker"]), _queues(services["worker-cpu"])
    assert api.generate_queue in gpu, "generate and resample jobs need the GPU worker"
    assert cpu <= {api.edit_queue}, "CPU workers must not take generate jobs"
    assert {api.generate_queue, api.edit_queue} <= gpu | cpu
    assert api.webhook_queue in gpu, "webhook deliveries need a worker that always runs"


def test_redis_persists_and_the_worker_reserves_a_gpu(rendered: dict) -> None:
    services = rendered["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
