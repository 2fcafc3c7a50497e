"""The import rules of the map (../shared/DESIGN.md), checked over every module under src/gambar.

Each module is parsed with `ast` and every import in it counts, at the top or inside a function
(`import x`, `from x import y`, relative imports, `importlib.import_module("x")`). A forbidden
edge fails the test with its file, line and the rule it breaks. The torch-free modules are
checked by importing them in a fresh interpreter, which names the chain that pulled torch in.

An edge someone is still removing goes in ALLOWED / ALLOWED_TORCH with its owner; an entry that
no longer matches anything fails too, so that it is deleted as soon as the code is clean.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "gambar"

# (importing module, imported module) -> who is removing it. Empty: every rule holds.
ALLOWED: dict[tuple[str, str], str] = {}
# A gambar module on the chain that imports torch -> who is removing it and how.
ALLOWED_TORCH: dict[str, str] = {}


def under(name: str, *packages: str) -> bool:
    """Whether module `name` is one of `packages` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def _family_sampler_import(module: str, target: str) -> bool:
    parts = module.split(".")
    # gambar.generators.<family>.pipeline / .options: where a family's networks meet samplers
    meeting_point = len(parts) == 4 and parts[3] in ("pipeline", "options")
    return under(module, "gambar.generators") and under(target, "gambar.samplers") and (
        not meeting_point)


# (what the rule says, the forbidden (module, imported) pairs)
RULES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("samplers stay free of text encoders, generators and contrastive models",
     lambda m, t: under(m, "gambar.samplers")
     and under(t, "gambar.text", "gambar.generators", "gambar.contrastive")),
    ("a family's networks never import samplers; they meet only in its pipeline.py "
     "(or options.py)", _family_sampler_import),
    ("the server and the CLI never import samplers; they read a family's Options",
     lambda m, t: under(m, "gambar.server", "gambar.cli", "gambar.commands")
     and under(t, "gambar.samplers")),
    ("the contrastive model imports neither the shapes dataset nor gambar.pipeline",
     lambda m, t: m == "gambar.contrastive.model" and under(t, "gambar.data.shapes",
                                                             "gambar.pipeline")),
    ("generators never import the server or the CLI",
     lambda m, t: under(m, "gambar.generators")
     and under(t, "gambar.server", "gambar.cli", "gambar.commands")),
]


@dataclass(frozen=True)
class Edge:
    module: str  # the importing module
    target: str  # the imported module
    file: str  # its file, from the package folder on: gambar/samplers/ddim.py
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.module} imports {self.target}"


def module_name(root: Path, file: Path) -> str:
    """src/gambar/a/b.py -> gambar.a.b; a package's __init__.py is the package."""
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package at `root`, by dotted name."""
    return {module_name(root, f): f for f in sorted(root.rglob("*.py"))}


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The module a `from ...name import x` in `module` refers to."""
    if not level:
        return name or ""
    base = module.split(".")
    base = base[:len(base) - level + (1 if is_package else 0)]
    return ".".join([*base, name] if name else base)


def edges(root: Path) -> list[Edge]:
    """Every import of a gambar module in the package at `root`, wherever it is in the file."""
    known = modules(root)
    found: list[Edge] = []
    for module, file in known.items():
        is_package = file.name == "__init__.py"
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node.level, node.module)
                # `from gambar import samplers` imports the submodule gambar.samplers
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in node.names]
            elif (isinstance(node, ast.Call) and node.args
                  and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"):
                targets = [node.args[0].value]
            where = file.relative_to(root.parent).as_posix()
            found += [Edge(module, t, where, node.lineno) for t in dict.fromkeys(targets)
                      if under(t, "gambar")]
    return found


def violations(root: Path) -> list[tuple[Edge, str]]:
    """(edge, the rule it breaks) for every forbidden import in the package at `root`."""
    return [(edge, rule) for edge in edges(root) for rule, forbidden in RULES
            if forbidden(edge.module, edge.target)]


def test_the_import_rules_hold():
    found = violations(SRC)
    bad = [f"{edge}  ({rule})" for edge, rule in found
           if (edge.module, edge.target) not in ALLOWED]
    stale = [f"{m} -> {t} ({owner})" for (m, t), owner in ALLOWED.items()
             if not any((e.module, e.target) == (m, t) for e, _ in found)]
    assert not bad, "forbidden imports (../shared/DESIGN.md):\n  " + "\n  ".join(bad)
    assert not stale, ("these ALLOWED edges are gone: delete them from "
                       "tests/test_import_rules.py:\n  " + "\n  ".join(stale))


def scratch_package(root: Path, files: dict[str, str]) -> Path:
    """A package named gambar under `root` made of `files` ({relative path: source})."""
    for name, text in files.items():
        path = root / "gambar" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [p for p in path.parents if p != root and root in p.parents]:
            (parent / "__init__.py").touch()
        path.write_text(text)
    return root / "gambar"


def test_the_checker_finds_every_kind_of_forbidden_import(tmp_path):
    """The rules can fail: one forbidden edge of each kind, written each way an import can be."""
    pkg = scratch_package(tmp_path, {
        "samplers/ddim.py": "from ..text import base\n",  # relative, a package's submodule
        "samplers/guidance.py": "def f():\n    import gambar.contrastive.model\n",  # in a function
        "generators/gan/model.py": "from gambar import samplers\n",  # a subpackage by name
        "generators/gan/pipeline.py": "from gambar.samplers import ddim\nimport gambar.cli\n",
        "generators/gan/options.py": "from gambar.samplers import ddim\n",
        "server/app.py": "import importlib\nimportlib.import_module('gambar.samplers.ddim')\n",
        "commands/generate.py": "from gambar.samplers.ddim import sample_ddim\n",
        "contrastive/model.py": "from gambar.data.shapes import to_tensor\n"
                                "from gambar.pipeline import resolve_model\n",
        "data/shapes.py": "", "pipeline.py": "", "cli.py": "", "text/base.py": "",
        "samplers/base.py": "from gambar.schedule import NoiseSchedule\n",  # allowed
    })
    found = sorted(f"{edge}" for edge, _ in violations(pkg))
    assert found == [
        "gambar/commands/generate.py:1: gambar.commands.generate imports gambar.samplers.ddim",
        "gambar/contrastive/model.py:1: gambar.contrastive.model imports gambar.data.shapes",
        "gambar/contrastive/model.py:2: gambar.contrastive.model imports gambar.pipeline",
        "gambar/generators/gan/model.py:1: gambar.generators.gan.model imports gambar.samplers",
        "gambar/generators/gan/pipeline.py:2: gambar.generators.gan.pipeline imports gambar.cli",
        "gambar/samplers/ddim.py:1: gambar.samplers.ddim imports gambar.text.base",
        "gambar/samplers/guidance.py:2: gambar.samplers.guidance imports "
        "gambar.contrastive.model",
        "gambar/server/app.py:2: gambar.server.app imports gambar.samplers.ddim",
    ]


# ---------------------------------------------------------------------------------------------
# Torch-free modules: the CLI builds its flags from every family's Options without torch


def torch_free_targets() -> list[str]:
    families = sorted(p.parent.name for p in (SRC / "generators").glob("*/options.py"))
    return ["gambar.options", "gambar.inputs", "gambar.registry", "gambar.cli",
            *(f"gambar.generators.{f}.options" for f in families)]


# Run in a fresh interpreter: imports argv[1] (gambar.cli: and builds its parser;
# gambar.registry: and every family's Options) and prints the gambar frames that were importing
# when torch was first asked for. The import stops there, torch never loaded: the chain is all
# the test needs (a BaseException, so that no `except Exception` on the way swallows it).
# The modules named in argv[3] (ALLOWED_TORCH) are replaced by empty stand-ins, their submodules
# still importable, so that a known offender does not hide a new one behind it.
PROBE = r"""
import importlib, importlib.abc, importlib.machinery, importlib.util, json, sys, traceback
from pathlib import Path
TARGET, SRC, STUBS = sys.argv[1], Path(sys.argv[2]), set(json.loads(sys.argv[3]))
stubbed = []
class TorchWanted(BaseException):
    pass
class StandIn(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        stubbed.append(module.__name__)
        folders = [Path(f) for f in getattr(module, "__path__", [])]
        def attribute(name):
            # a submodule is imported for real (`from stand_in import submodule`)
            if name.startswith("__") or any((f / name).with_suffix(".py").is_file()
                                            or (f / name / "__init__.py").is_file()
                                            for f in folders):
                raise AttributeError(name)
            return type(name, (), {})
        module.__getattr__ = attribute
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in STUBS:
            real = importlib.machinery.PathFinder.find_spec(name, path)
            locations = real.submodule_search_locations if real else None
            spec = importlib.util.spec_from_loader(name, StandIn(),
                                                   is_package=locations is not None)
            if locations is not None:
                spec.submodule_search_locations[:] = list(locations)
            return spec
        if name != "torch" and not name.startswith("torch."):
            return None
        chain = []
        for frame in traceback.extract_stack()[:-1]:
            file = Path(frame.filename)
            if SRC in file.parents:
                parts = list(file.relative_to(SRC.parent).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                chain.append([".".join(parts), frame.lineno])
        raise TorchWanted(chain)
sys.meta_path.insert(0, Spy())
chain = None
try:
    module = importlib.import_module(TARGET)
    if TARGET == "gambar.cli":
        module.build_parser()
    if TARGET == "gambar.registry":
        module.all_options()
except TorchWanted as wanted:
    chain = wanted.args[0]
print(json.dumps({"torch": chain is not None or "torch" in sys.modules, "chain": chain,
                  "stubbed": stubbed}))
"""


def probe(target: str, stubs: Iterable[str] = (), src: Path = SRC,
          env: dict[str, str] | None = None) -> dict[str, Any]:
    """{"torch": whether importing `target` asks for torch, "chain": [[module, line], ...] of
    the gambar frames importing at that moment, "stubbed": the stand-ins that were imported}."""
    done = subprocess.run([sys.executable, "-c", PROBE, target, str(src), json.dumps(list(stubs))],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_options_inputs_registry_and_the_cli_never_import_torch():
    bad, used = [], set()
    for target in torch_free_targets():
        result = probe(target, ALLOWED_TORCH)
        used.update(result["stubbed"])
        if result["torch"]:
            steps = " -> ".join(dict.fromkeys(f"{m}:{line}" for m, line in result["chain"] or []))
            bad.append(f"{target} imports torch: {steps} -> torch")
    assert not bad, "modules that must stay torch-free import it:\n  " + "\n  ".join(bad)
    # An entry is still needed while some target goes through it and it still pulls torch in.
    stale = [f"{m} ({owner})" for m, owner in ALLOWED_TORCH.items()
             if m not in used or not probe(m, set(ALLOWED_TORCH) - {m})["torch"]]
    assert not stale, ("these ALLOWED_TORCH entries no longer pull torch into a torch-free "
                       "module: delete them from tests/test_import_rules.py:\n  "
                       + "\n  ".join(stale))


@pytest.fixture
def scratch(tmp_path):
    """A package gambar: a imports b (and c.d, c a package that imports torch)."""
    pkg = scratch_package(tmp_path, {"a.py": "from gambar import b\nfrom gambar.c import d\n",
                                     "b.py": "import json\n", "c/d.py": "X = 1\n"})
    (pkg / "c" / "__init__.py").write_text("import torch\n")
    return pkg


def run_probe(scratch, stubs=()):
    env = {"PYTHONPATH": str(scratch.parent), "PATH": "/usr/bin:/bin"}
    return probe("gambar.a", stubs, src=scratch, env=env)


def test_the_torch_probe_names_the_chain(scratch):
    assert run_probe(scratch) == {"torch": True, "chain": [["gambar.a", 2], ["gambar.c", 1]],
                                  "stubbed": []}


def test_an_allowed_module_hides_no_other_offender(scratch):
    assert run_probe(scratch, ["gambar.c"]) == {"torch": False, "chain": None,
                                               "stubbed": ["gambar.c"]}
    (scratch / "c" / "d.py").write_text("import torch.nn\n")
    assert run_probe(scratch, ["gambar.c"]) == {
        "torch": True, "chain": [["gambar.a", 2], ["gambar.c.d", 1]], "stubbed": ["gambar.c"]}
