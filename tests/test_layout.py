"""The package's structure, drawn from its imports (issue 11).

Done means: no stage imports a stage, no model-work module imports the CLI, the loop, the
stage table or the device runner, no import circles, no package file over 400 lines, and
README's Layout section matches the tree. The source is parsed with `ast`, never imported.

How the import graph is drawn (`import_graph`):

- Every `import` and `from ... import` in a file counts, wherever it is: module level, inside
  functions (the lazy imports of heavy libraries), under `if TYPE_CHECKING:`.
- Relative imports are resolved against the importing module's package.
- `from edgekd.pkg import name` is an edge to `edgekd.pkg.name` when that is a module file,
  else to `edgekd.pkg` (its `__init__.py`). `import edgekd.pkg` is an edge to the package's
  `__init__.py` only, not to its submodules; an `__init__` that imports its own submodules
  has ordinary edges to them.
- Importing `edgekd.a.b` also runs `edgekd/__init__.py` and `edgekd/a/__init__.py`; those
  implicit edges are left out (Python initialises a parent before its child, so they never
  make a circle that matters, and drawing them would make every package look circular).
- A name passed to `importlib.import_module(...)` is not an edge: the stage table
  (`edgekd/stages/__init__.py`) loads stage modules lazily by name, which is exactly how it
  avoids depending on them.
- Names that are no module file here (a folder without `__init__.py`, a stale name) and a
  module importing itself are left out.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "edgekd"
MAX_LINES = 400

STAGES = "edgekd.stages"
MODEL_WORK = ("edgekd.kd", "edgekd.models", "edgekd.quant", "edgekd.export", "edgekd.data",
              "edgekd.metrics")
"""Packages (with everything under them) and modules that do the model work."""
OFF_LIMITS_TO_MODEL_WORK = ("edgekd.cli", "edgekd.pipeline", STAGES, "edgekd.devices.runner")
"""What model work may not import: the CLI, the loop, the stage table and every stage, and
the device runner (`edgekd.stages` covers the table and all `edgekd.stages.*`)."""
NOT_IN_LAYOUT = {"__init__.py", "__main__.py", "py.typed"}


# --- the checker --------------------------------------------------------------------------

def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_files(package_dir: Path) -> dict[str, Path]:
    """Module name (`edgekd.stages.export`, `edgekd.stages` for its `__init__`) -> file."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported_names(tree: ast.AST, module: str, is_package: bool, known: set[str]):
    """Yield the module names one file's import statements reach (see the module docstring)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in known else base


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, for every `.py` under `package_dir`."""
    files = module_files(package_dir)
    known = set(files)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = _imported_names(tree, module, path.name == "__init__.py", known)
        graph[module] = {name for name in names if name in known and name != module}
    return graph


def _edges(graph: dict[str, set[str]]):
    return ((a, b) for a in sorted(graph) for b in sorted(graph[a]))


def stage_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for every stage module importing a stage module or the stage table."""
    return [f"{a} -> {b}" for a, b in _edges(graph)
            if a.startswith(STAGES + ".") and _within(b, STAGES)]


def model_work_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for every model-work module importing the CLI, loop, stages or runner."""
    return [f"{a} -> {b}" for a, b in _edges(graph)
            if any(_within(a, p) for p in MODEL_WORK)
            and any(_within(b, p) for p in OFF_LIMITS_TO_MODEL_WORK)]


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted; singletons included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _shortest_cycle(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    """One shortest circle through the first member, staying inside the component."""
    start, inside = members[0], set(members)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & inside):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if w not in came_from:
                came_from[w] = v
                queue.append(w)
    raise AssertionError(f"no circle through {start}")  # a component always has one


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One entry per circle of imports: a circle through it, then every edge inside it."""
    report = []
    for members in strongly_connected(graph):
        if len(members) < 2:
            continue
        inside = set(members)
        edges = [f"    {a} -> {b}" for a in members for b in sorted(graph[a] & inside)]
        circle = " -> ".join(_shortest_cycle(graph, members))
        report.append(f"{len(members)} modules, e.g. {circle}; edges inside:\n"
                      + "\n".join(edges))
    return report


def long_files(package_dir: Path, limit: int = MAX_LINES) -> list[str]:
    """`path: N lines` for every `.py` under `package_dir` longer than `limit` lines."""
    report = []
    for path in sorted(package_dir.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            report.append(f"{path.relative_to(package_dir.parent)}: {n} lines (limit {limit})")
    return report


_NAME = re.compile(r"[\w-]+(?:/[\w-]+)*(?:/|\.\w+)")


def layout_names(readme: str, package: str = "edgekd") -> list[str]:
    """Files and folders the README's `## Layout` block names under `<package>/`.

    In the fenced block, the lines indented under `edgekd/` start with one or more names
    (`cli.py`, `data/ models/ kd/`), separated by single spaces; two or more spaces start the
    description, and so does the first word that is no file or folder name.
    """
    section = re.search(r"^## Layout[ \t]*\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert section, "README.md has no '## Layout' section"
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.M | re.S)
    assert block, "README.md's Layout section has no fenced block"
    lines = block.group(1).splitlines()
    heads = [i for i, line in enumerate(lines) if line.split("  ")[0].strip() == package + "/"]
    assert heads, f"README.md's Layout block has no '{package}/' line"
    names = []
    for line in lines[heads[0] + 1:]:
        if line.strip() and not line[0].isspace():
            break
        for token in re.split(r"\s{2,}", line.strip())[0].split():
            if not _NAME.fullmatch(token):
                break
            names.append(token)
    return names


def layout_mismatches(readme: str, package_dir: Path) -> list[str]:
    """What README's Layout names that is not there, and what is there that it leaves out."""
    package = package_dir.name
    named = layout_names(readme, package)
    report = []
    for name in named:
        path = package_dir / name.rstrip("/")
        if not (path.is_dir() if name.endswith("/") else path.is_file()):
            report.append(f"README names {package}/{name}, which does not exist")
    listed = {name.rstrip("/") for name in named}
    for path in sorted(package_dir.iterdir()):
        is_subpackage = path.is_dir() and path.name != "__pycache__" and any(path.glob("*.py"))
        is_module = path.is_file() and path.suffix == ".py" and path.name not in NOT_IN_LAYOUT
        if (is_subpackage or is_module) and path.name not in listed:
            shown = f"{package}/{path.name}" + ("/" if is_subpackage else "")
            report.append(f"{shown} is not named in README's Layout section")
    return report


# --- the rules, on this tree --------------------------------------------------------------

@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_DIR)


def _listing(items: list[str]) -> str:
    return "\n" + "\n".join(f"  {item}" for item in items)


def test_no_stage_imports_a_stage(graph):
    bad = stage_imports(graph)
    assert not bad, "stage modules importing a stage or the stage table:" + _listing(bad)


def test_model_work_imports_no_cli_loop_stages_or_runner(graph):
    bad = model_work_imports(graph)
    assert not bad, ("model-work modules importing the CLI, the loop, the stage table / a "
                     "stage, or the device runner:" + _listing(bad))


def test_no_import_cycles(graph):
    bad = import_cycles(graph)
    assert not bad, f"{len(bad)} import circle(s):" + _listing(bad)


def test_no_package_file_over_400_lines():
    bad = long_files(PACKAGE_DIR)
    assert not bad, f"package files over {MAX_LINES} lines:" + _listing(bad)


def test_readme_layout_matches_tree():
    bad = layout_mismatches((ROOT / "README.md").read_text(encoding="utf-8"), PACKAGE_DIR)
    assert not bad, "README.md's Layout section and edgekd/ disagree:" + _listing(bad)


# --- the checker, on tiny trees -----------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "edgekd"


TANGLED = {
    "edgekd/__init__.py": "__version__ = '0'\n",
    "edgekd/cli.py": "from edgekd import __version__, pipeline\n",
    "edgekd/pipeline.py": "from edgekd.stages import STAGES\n",
    "edgekd/stages/__init__.py": (
        "import importlib\n\n\ndef load(name):\n"
        "    return importlib.import_module(f'edgekd.stages.{name}')\n"),
    "edgekd/stages/train.py": "from ..kd import loss\nfrom .. import metrics as m\n",
    "edgekd/stages/export.py": (
        "def run():\n    from edgekd.stages.train import run\n    import edgekd.stages\n"),
    "edgekd/kd/__init__.py": "from .loss import kl\n",
    "edgekd/kd/loss.py": "import numpy\nfrom . import helpers\nfrom .loss import kl\n",
    "edgekd/metrics.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    import edgekd.cli\n",
    "edgekd/kd/train.py": "from edgekd.devices import runner\n",
    "edgekd/devices/runner.py": "import json\n",
}


def test_graph_builder_resolves_every_kind_of_import(tmp_path):
    assert import_graph(_write(tmp_path, TANGLED)) == {
        "edgekd": set(),
        "edgekd.cli": {"edgekd", "edgekd.pipeline"},  # a name in __init__, then a module
        "edgekd.pipeline": {"edgekd.stages"},
        "edgekd.stages": set(),  # importlib.import_module is not an edge
        "edgekd.stages.train": {"edgekd.kd.loss", "edgekd.metrics"},  # relative, two levels
        "edgekd.stages.export": {"edgekd.stages.train", "edgekd.stages"},  # inside a function
        "edgekd.kd": {"edgekd.kd.loss"},  # an __init__ importing its own submodule
        "edgekd.kd.loss": {"edgekd.kd"},  # `helpers` is no module; itself is left out
        "edgekd.kd.train": {"edgekd.devices.runner"},  # through a folder without __init__
        "edgekd.metrics": {"edgekd.cli"},  # under TYPE_CHECKING
        "edgekd.devices.runner": set(),  # a folder without __init__.py
    }


def test_rules_catch_each_violation_in_a_tangled_tree(tmp_path):
    graph = import_graph(_write(tmp_path, TANGLED))
    assert stage_imports(graph) == ["edgekd.stages.export -> edgekd.stages",
                                    "edgekd.stages.export -> edgekd.stages.train"]
    assert model_work_imports(graph) == ["edgekd.kd.train -> edgekd.devices.runner",
                                         "edgekd.metrics -> edgekd.cli"]
    assert import_cycles(graph) == [
        "2 modules, e.g. edgekd.kd -> edgekd.kd.loss -> edgekd.kd; edges inside:\n"
        "    edgekd.kd -> edgekd.kd.loss\n    edgekd.kd.loss -> edgekd.kd"]


def test_rules_pass_on_a_clean_tree(tmp_path):
    clean = {**TANGLED,
             "edgekd/stages/export.py": "from edgekd.kd import kl\nfrom edgekd import metrics\n",
             "edgekd/kd/loss.py": "import numpy\n",
             "edgekd/metrics.py": "import numpy\n",
             # model work may use the other device modules; only the runner is off limits
             "edgekd/kd/train.py": "from edgekd.devices import transports\n",
             "edgekd/devices/transports.py": ""}
    graph = import_graph(_write(tmp_path, clean))
    assert graph["edgekd.kd.train"] == {"edgekd.devices.transports"}
    assert stage_imports(graph) == model_work_imports(graph) == import_cycles(graph) == []


def test_a_longer_circle_is_reported_with_a_path_through_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert strongly_connected(graph) == [["d"], ["a", "b", "c"], ["e"]]
    assert import_cycles({k: v - {k} for k, v in graph.items()}) == [
        "3 modules, e.g. a -> b -> c -> a; edges inside:\n    a -> b\n    b -> c\n    c -> a"]


def test_long_files_counts_lines(tmp_path):
    package = _write(tmp_path, {"edgekd/ok.py": "x = 1\n" * 400,
                                "edgekd/sub/big.py": "x = 1\n" * 401})
    assert long_files(package) == ["edgekd/sub/big.py: 401 lines (limit 400)"]


README = """# x

## Layout

```
edgekd/
  cli.py        the command; report.json is not a name here
  data/ kd/     one folder per concern
  gone.py       removed
  stages/       teacher, distill: run(cfg, ctx)
pipelines/      pipelines to copy
```

## Next
  missing.py    not in the block
"""


def test_layout_check_both_ways(tmp_path):
    package = _write(tmp_path, {"edgekd/__init__.py": "", "edgekd/__main__.py": "",
                                "edgekd/py.typed": "", "edgekd/cli.py": "",
                                "edgekd/console.py": "", "edgekd/data/__init__.py": "",
                                "edgekd/kd/a.py": "", "edgekd/stages/__init__.py": "",
                                "edgekd/devices/runner.py": "", "edgekd/notes/readme.txt": ""})
    assert layout_names(README) == ["cli.py", "data/", "kd/", "gone.py", "stages/"]
    assert layout_mismatches(README, package) == [
        "README names edgekd/gone.py, which does not exist",
        "edgekd/console.py is not named in README's Layout section",
        "edgekd/devices/ is not named in README's Layout section",
    ]
    fixed = README.replace("gone.py       removed", "console.py devices/")
    assert layout_mismatches(fixed, package) == []
