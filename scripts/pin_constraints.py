"""Rewrite constraints.txt: pin every package gambar[test] pulls in to the version installed now.

Run after `bash scripts/install.sh test` on a fresh machine, when a dependency must change:
    python3 scripts/pin_constraints.py && git diff constraints.txt
An unpinned range resolves to whatever is newest on the day CI runs (pytest>=8 became 9.2 and
broke a test on a fresh machine), so every install goes through these exact versions.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = """\
# Every pip call in this project uses this file (pip install -c constraints.txt ...): every
# package gambar and its test extra pull in, pinned to the version tested, so a fresh machine
# installs what CI passed with. Regenerate with `python3 scripts/pin_constraints.py`.
# torch is pinned: 2.13.0 is the CPU build that lies on this machine's disk; anything newer
# pulls a multi-GB CUDA build. torchvision is never installed (it breaks this torch).
"""
# pip's own tooling is not part of the closure a fresh machine resolves.
SKIP = {"pip", "setuptools", "wheel", "gambar"}


def _name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, extras: set[str]) -> dict[str, str]:
    """Installed name -> version for `root` and everything it requires (with its extras)."""
    seen: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency for another platform or Python: not installed
        key = _canonical(dist.metadata["Name"])
        if key in seen and not wanted:
            continue
        seen[key] = dist.version
        for req in dist.requires or []:
            marker = req.split(";", 1)[1] if ";" in req else ""
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if extra and extra.group(1) not in wanted:
                continue
            if not extra and marker and not _marker_holds(marker):
                continue
            todo.append((_name(req), set()))
    return seen


def _marker_holds(marker: str) -> bool:
    try:
        from packaging.markers import Marker
    except ImportError:
        return True
    return Marker(marker).evaluate()


def main() -> int:
    pins = closure("gambar", {"test"})
    if "torch" not in pins:
        print("error: gambar is not installed here; run `bash scripts/install.sh test` first",
              file=sys.stderr)
        return 2
    # A local label (torch's "+cpu") is dropped: `torch==2.13.0` is what takes the file on disk.
    lines = [f"{name}=={version.split('+')[0]}" for name, version in sorted(pins.items())
             if name not in SKIP]
    (ROOT / "constraints.txt").write_text(HEADER + "\n".join(lines) + "\n")
    print(f"pinned {len(lines)} packages in constraints.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
