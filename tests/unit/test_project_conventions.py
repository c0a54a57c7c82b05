"""Project conventions enforced as tests: the lock matches its source, the code is lint-clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _direct_requirements(path: Path) -> dict[str, Requirement]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[_norm(req.name)] = req
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock(path: Path) -> tuple[dict[str, str], set[str]]:
    """Pinned versions, and the names the lock says come straight from the `.in` file."""
    pins: dict[str, str] = {}
    direct: set[str] = set()
    current = None
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-\[\],]+)==(\S+)", line):
            current = _norm(m.group(1).split("[")[0])
            pins[current] = m.group(2)
        elif current and re.search(rf"-r {re.escape(path.stem)}\.in\b", line):
            direct.add(current)
    return pins, direct


@pytest.mark.parametrize("stem", ["requirements", "requirements-dev"])
def test_lock_file_matches_its_source(stem: str) -> None:
    wanted = _direct_requirements(ROOT / f"{stem}.in")
    pins, direct = _lock(ROOT / f"{stem}.txt")
    assert set(wanted) == direct, "requirements changed: run `make lock`"
    for name, req in wanted.items():
        assert name in pins, f"{name} is not pinned: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} does not satisfy {req}: run `make lock`"
        )
    for line in (ROOT / f"{stem}.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert "==" in line, f"unpinned line in the lock: {line}"


def test_airflow_is_pinned_to_3_3() -> None:
    pins, _ = _lock(ROOT / "requirements.txt")
    assert pins["apache-airflow"].startswith("3.3.")


def test_code_is_ruff_clean() -> None:
    folders = [p for p in ("include", "dags", "plugins", "tests", "bench") if (ROOT / p).exists()]
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run([*ruff, "check", *folders], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [*ruff, "format", "--check", *folders], cwd=ROOT, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout
