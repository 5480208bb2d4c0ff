"""Copy the "where things live" map of docs/design.md into the README (between the layout markers).

Run by `make layout`; tests/unit/test_layout.py checks that the two agree and match the tree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKERS = re.compile(r"(<!-- layout:start -->\n)(.*?)(<!-- layout:end -->)", re.S)


def layout_map(text: str) -> str:
    found = MARKERS.search(text)
    if found is None:
        raise SystemExit("no <!-- layout:start --> ... <!-- layout:end --> block")
    return found.group(2)


def main() -> int:
    design = (ROOT / "docs" / "design.md").read_text()
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    updated = MARKERS.sub(lambda m: m.group(1) + layout_map(design) + m.group(3), readme, count=1)
    if updated != readme:
        readme_path.write_text(updated)
        print("README.md: layout updated from docs/design.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
