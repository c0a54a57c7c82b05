"""The official schemas shipped in the package are unchanged copies of those in the shared spec.

Postier validates Chorus Pro returns, CDAR lifecycle files and Plateforme Agréée API calls against
copies kept in `include/postier/domain/schemas/` (the spec folder is not part of a deployment).
A copy edited by hand, or a spec update not copied over, would make Postier check against a schema
that is not the official one; this test catches both. A new copy is one more line in `COPIES`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "include" / "postier" / "domain" / "schemas"
SPEC = Path("/work/shared/spec")

#: (copy inside the package, relative to SCHEMAS; its source, relative to SPEC).
#: A pair of folders compares every file of the source folder, and the two folders' file lists.
COPIES = [
    ("CPPStatutPivot_V1_19.xsd", "chorus/CPPStatutPivot_V1_19.xsd"),
    ("afnor/AFNOR-Flow_Service-1.1.0-openapi.json", "afnor/AFNOR-Flow_Service-1.1.0-openapi.json"),
    (
        "afnor/AFNOR-Directory_Service-1.1.0-openapi.json",
        "afnor/AFNOR-Directory_Service-1.1.0-openapi.json",
    ),
    ("cdar-d22b", "afnor/cdar-d22b"),
]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.skipif(not SPEC.is_dir(), reason=f"{SPEC} (the shared spec) is not on this machine")
@pytest.mark.parametrize(("copy", "source"), COPIES, ids=[c for c, _ in COPIES])
def test_schema_copy_is_byte_identical_to_the_spec(copy: str, source: str) -> None:
    copy_path, source_path = SCHEMAS / copy, SPEC / source
    assert source_path.exists(), f"{source_path} no longer exists: update COPIES"
    if source_path.is_dir():
        assert _files(copy_path) == _files(source_path), f"{copy} and {source} hold other files"
        pairs = [(copy_path / name, source_path / name) for name in _files(source_path)]
    else:
        pairs = [(copy_path, source_path)]
    for ours, official in pairs:
        assert ours.read_bytes() == official.read_bytes(), (
            f"{ours.relative_to(ROOT)} differs from {official}: copy the official file again"
        )


def test_every_schema_in_the_package_is_pinned_to_its_source() -> None:
    pinned: set[str] = set()
    for copy, _ in COPIES:
        path = SCHEMAS / copy
        pinned |= {f"{copy}/{name}" for name in _files(path)} if path.is_dir() else {copy}
    unpinned = set(_files(SCHEMAS)) - pinned
    assert not unpinned, f"schema copies with no source in COPIES: {sorted(unpinned)}"
