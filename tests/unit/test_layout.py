"""The "where things live" map (docs/design.md, copied into the README) matches the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "boxoffice"
MARKERS = re.compile(r"<!-- layout:start -->\n(.*?)<!-- layout:end -->", re.S)
HINT = "edit the map in docs/design.md (## Where things live), then run `make layout`"


def _map(path: Path) -> str:
    found = MARKERS.search(path.read_text())
    assert found, f"{path.name} has no layout markers"
    return found.group(1)


def _sections(text: str) -> dict[str, str]:
    """Top-level package name -> the text of its entry in the map."""
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"^  (\w+)/\s", line)
        if head:
            current = head.group(1)
            sections[current] = line
        elif current and line.startswith("    "):
            sections[current] += " " + line
        else:
            current = None
    return sections


def test_the_readme_shows_the_same_map_as_the_design():
    assert _map(ROOT / "README.md") == _map(ROOT / "docs" / "design.md"), HINT


def test_the_map_names_every_package_and_module_of_the_tree_and_nothing_else():
    sections = _sections(_map(ROOT / "docs" / "design.md"))
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert sorted(sections) == packages, HINT
    for package, entry in sections.items():
        named = set(re.findall(r"(\w+)\.py\b", entry))
        on_disk = {p.stem for p in (PACKAGE / package).rglob("*.py") if not p.name.startswith("__")}
        assert named == on_disk, f"{package}/: missing from the map {sorted(on_disk - named)}, " \
                                 f"not in the tree {sorted(named - on_disk)}; {HINT}"
