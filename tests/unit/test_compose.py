"""The production compose file, checked as far as possible without a Docker engine: YAML,
variable interpolation as compose does it, start order, the image's install steps."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.live_airflow import CELERY, CELERY_SETTINGS, PRODUCTION_SETTINGS

from postier.store.cluster import find_binaries

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

#: What compose must refuse to start without: passwords, keys and connections, never empty.
SECRETS = {
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "POSTIER_OWNER_PASSWORD",
    "POSTIER_APP_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_CONN_POSTIER_SMTP",
    "AIRFLOW_CONN_POSTIER_CHORUS_SFTP",
    "AIRFLOW_CONN_POSTIER_SIGNING",
    "AIRFLOW_CONN_POSTIER_GED",
}
MIGRATIONS = {"migrate", "postier-migrate"}
BACKING = {"postgres", "redis"}
AIRFLOW = {"api-server", "scheduler", "dag-processor", "triggerer", "worker"}


#: What every Airflow service runs with when no optional variable is set, one row a setting
#: (None: declared without value, passed from docker/.env or the shell when set, else unset).
AIRFLOW_SETTINGS: dict[str, str | None] = {
    # Airflow's own cost (README § Performance), what the tests and the bench run too.
    **PRODUCTION_SETTINGS,
    # Runs' files on the postier-data volume mounted there, unless told (README § Where a run's
    # files live); its companions only when set.
    "POSTIER_STORAGE_URL": "/var/lib/postier",
    "POSTIER_STORAGE_HOST_KEY": None,
    "POSTIER_STORAGE_KEY_FILE": None,
    "POSTIER_STORAGE_OPTIONS": None,
    # Celery's: the end-to-end harness (Celery test, bench) runs with them (README § Performance).
    **CELERY_SETTINGS,
}


class Missing(Exception):
    """A required variable (`${VAR:?…}`) is unset or empty."""


def interpolate(text: str, env: dict[str, str], seen: list[tuple[str, str]]) -> str:
    """Compose's interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?error}`, `${VAR?error}`, defaults nested. Records (name, operator) in `seen`."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                else:
                    depth, j = depth - (text[j] == "}"), j + 1
            body = text[i + 2 : j - 1]
            m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", body, re.S)
            assert m, f"interpolation illisible : ${{{body}}}"
            name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
            seen.append((name, op))
            value = env.get(name)
            if op in (":-", "-"):
                unset = value is None or (op == ":-" and value == "")
                out.append(interpolate(arg, env, seen) if unset else str(value))
            elif op in (":?", "?"):
                if value is None or (op == ":?" and value == ""):
                    raise Missing(name)
                out.append(value)
            else:
                out.append(value or "")
            i = j
        elif text[i] == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)", text[i:])):
            seen.append((m.group(1), ""))
            out.append(env.get(m.group(1), ""))
            i += m.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def resolve(node: Any, env: dict[str, str], seen: list[tuple[str, str]]) -> Any:
    if isinstance(node, dict):
        return {k: resolve(v, env, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, env, seen) for v in node]
    return interpolate(node, env, seen) if isinstance(node, str) else node


def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved like compose


def references() -> list[tuple[str, str | None]]:
    """Every variable read: interpolated (`${VAR…}`) or passed through by a key without value,
    which compose takes from the shell or the env file, else leaves unset (operator `None`)."""
    doc = raw()
    seen: list[tuple[str, str]] = []
    resolve(doc, {name: "x" for name in SECRETS}, seen)
    passed: list[tuple[str, str | None]] = [
        (name, None)
        for service in doc["services"].values()
        for name, value in (service.get("environment") or {}).items()
        if value is None
    ]
    return [*seen, *passed]


def deployed(**overrides: str) -> dict[str, Any]:
    env = {name: f"valeur-de-{name.lower()}" for name in SECRETS} | overrides
    return resolve(raw(), env, [])["services"]


def production_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Production\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end > 0 else None]


def test_every_variable_is_documented_in_the_readme() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", production_section()))
    undocumented = sorted({name for name, _ in references()} - documented)
    example = (ROOT / "docker" / "env.example").read_text()
    assert {name for name, _ in references()} == set(
        re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, re.M)
    )
    assert undocumented == [], (
        f"variables of compose.yaml missing from README § Production: {undocumented}"
    )


def test_secrets_are_required_and_have_no_default() -> None:
    operators: dict[str, set[str]] = {}
    for name, op in references():
        operators.setdefault(name, set()).add(op)
    for name in SECRETS:
        assert operators.get(name) == {":?"}, f"{name}: {operators.get(name)}"
    # Compose refuses to start, naming the variable, while any secret is missing or empty.
    for name in sorted(SECRETS):
        with pytest.raises(Missing, match=name):
            deployed(**{name: ""})
    # No other variable falls back to an empty value.
    empty_default = re.findall(r"\$\{[A-Za-z0-9_]+:?-\}", COMPOSE.read_text())
    assert empty_default == []


def test_every_airflow_component_runs_celery_in_production_mode_with_shared_keys() -> None:
    services = deployed()
    assert set(services) == BACKING | MIGRATIONS | AIRFLOW
    shared = (
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    )
    values = {name: set() for name in shared}
    for name in AIRFLOW | MIGRATIONS:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == CELERY, name
        assert env["POSTIER_ENV"] == "production", name
        assert all(value != "" for value in env.values()), name
        for key in shared:
            values[key].add(env[key])
    assert all(len(v) == 1 for v in values.values()), values
    assert values["AIRFLOW__API_AUTH__JWT_SECRET"] == {"valeur-de-airflow_jwt_secret"}
    # The tasks connect as the task role; only postier-migrate has the owner's connection.
    assert "postier_app:" in services["worker"]["environment"]["AIRFLOW_CONN_POSTIER_DB"]
    owners = [n for n, s in services.items() if "POSTIER_DB_OWNER_DSN" in s.get("environment", {})]
    assert owners == ["postier-migrate"]


def test_the_settings_the_tests_and_the_bench_run_are_documented() -> None:
    # In every Airflow service of the compose file: AIRFLOW_SETTINGS above.
    readme = (ROOT / "README.md").read_text()
    assert [k for k in PRODUCTION_SETTINGS if f"`{k}={PRODUCTION_SETTINGS[k]}`" not in readme] == []


def test_nothing_starts_before_the_migrations_finished() -> None:
    services = deployed()
    for name in MIGRATIONS:
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert services[name]["restart"] == "no"
    for name in AIRFLOW:
        depends = services[name]["depends_on"]
        for migration in MIGRATIONS:
            assert depends[migration] == {"condition": "service_completed_successfully"}, name
        assert depends["postgres"] == depends["redis"] == {"condition": "service_healthy"}, name
    assert services["worker"]["depends_on"]["api-server"] == {"condition": "service_healthy"}
    # The api-server is healthy once its execution API answered: built before the first task.
    assert "/execution/health" in " ".join(services["api-server"]["healthcheck"]["test"])
    for name in AIRFLOW | BACKING:
        assert services[name]["healthcheck"]["test"], name


def test_workers_scale_and_the_ui_listens_on_loopback_unless_told() -> None:
    services = deployed()
    worker = services["worker"]
    assert worker["command"] == "celery worker"
    assert "container_name" not in worker and "ports" not in worker
    assert services["api-server"]["ports"] == ["127.0.0.1:8080:8080"]
    exposed = deployed(POSTIER_UI_BIND="0.0.0.0", POSTIER_UI_PORT="443")["api-server"]
    assert exposed["ports"] == ["0.0.0.0:443:8080"]
    assert all("ports" not in s for n, s in services.items() if n != "api-server")


def test_the_image_installs_exactly_the_lock() -> None:
    dockerfile = DOCKERFILE.read_text()
    installs = re.findall(r"pip install ([^\n\\&]+)", dockerfile)
    assert [" ".join(i.split()) for i in installs] == [
        "--no-cache-dir --no-deps -r requirements.txt",
        "--no-cache-dir --no-deps -e .",
    ]
    assert "COPY requirements.txt" in dockerfile
    # The lock is compiled for the image's Python.
    image_python = re.search(r"^FROM python:(\d+\.\d+)", dockerfile, re.M)
    assert image_python is not None
    makefile = (ROOT / "Makefile").read_text()
    assert set(re.findall(r"--python-version (\S+)", makefile)) == {image_python.group(1)}
    lock = (ROOT / "requirements.txt").read_text()
    for package in ("apache-airflow-providers-celery", "redis", "celery"):
        assert re.search(rf"^{package}==", lock, re.M), package


@pytest.mark.parametrize(("setting", "value"), sorted(AIRFLOW_SETTINGS.items()))
def test_every_airflow_component_has_the_production_setting(
    setting: str, value: str | None
) -> None:
    services = deployed()
    for name in AIRFLOW | MIGRATIONS:
        env = services[name]["environment"]
        assert setting in env and env[setting] == value, name


def test_the_default_run_storage_is_the_volume_every_worker_mounts() -> None:
    services = deployed()
    for name in AIRFLOW:
        default = services[name]["environment"]["POSTIER_STORAGE_URL"]
        assert f"postier-data:{default}" in services[name]["volumes"], name
    told = deployed(POSTIER_STORAGE_URL="sftp://postier@stockage.example/runs")["worker"]
    assert told["environment"]["POSTIER_STORAGE_URL"] == "sftp://postier@stockage.example/runs"


def test_postgres_finds_a_dead_worker_host_within_two_minutes_as_the_readme_says() -> None:
    # A worker host that dies without closing its connections keeps its chunk claims (session
    # advisory locks) until the server drops them: with the system's keepalives, ≈ 2 hours.
    command = deployed()["postgres"]["command"]
    assert command[0] == "postgres" and command[1::2] == ["-c"] * (len(command) // 2)
    settings = dict(option.split("=", 1) for option in command[2::2])
    keepalives = {k: v for k, v in settings.items() if k.startswith("tcp_keepalives_")}
    described = subprocess.run(
        [str(find_binaries() / "postgres"), "--describe-config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    known = {line.split("\t", 1)[0] for line in described.splitlines()}
    assert set(settings) <= known  # the server would refuse to start otherwise
    idle, interval, count = (
        int(keepalives[f"tcp_keepalives_{k}"]) for k in ("idle", "interval", "count")
    )
    assert min(idle, interval, count) > 0  # 0 is the system's default
    assert idle + interval * count <= 120
    readme = (ROOT / "README.md").read_text()
    assert [f"{k}={v}" for k, v in keepalives.items() if f"`{k}={v}`" not in readme] == []
