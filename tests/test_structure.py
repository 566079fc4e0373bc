"""The package's shape: no import cycles between modules, task types asked rather than branched on,
and inference that pulls in neither Lightning nor the training package."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import polyfuse
from polyfuse.tasks import TASKS

PACKAGE = Path(polyfuse.__file__).parent


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> polyfuse modules it imports anywhere (top level or inside functions)."""
    modules = module_names()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("polyfuse"):
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("polyfuse")]
            for target in targets:
                found = resolve(target)
                if found and found != module:
                    graph[module].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    assert len(graph) > 100  # the whole package was read
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: Bottom to top (docs/architecture.md, "Imports"): a module may import its own layer and those below.
LAYERS = [
    ["polyfuse._version", "polyfuse.errors", "polyfuse.types", "polyfuse.registry", "polyfuse.safe_state", "polyfuse.cells"],
    ["polyfuse.tasks", "polyfuse.config"],
    ["polyfuse.data", "polyfuse.row_problems"],
    ["polyfuse.layers", "polyfuse.encoders", "polyfuse.fusion", "polyfuse.heads", "polyfuse.objectives",
     "polyfuse.generation", "polyfuse.weights"],
    ["polyfuse.model", "polyfuse.ensemble", "polyfuse.build", "polyfuse.checkpoint"],
    ["polyfuse.evaluate", "polyfuse.retrieval", "polyfuse.predictor", "polyfuse.results", "polyfuse.explain"],
    ["polyfuse.presets", "polyfuse.recipes"],
    ["polyfuse.train"],
    ["polyfuse.deploy", "polyfuse.serve", "polyfuse.benchmark", "polyfuse.tuning"],
    ["polyfuse.api", "polyfuse.commands", "polyfuse.cli", "polyfuse"],
]


def layer_of(module: str) -> int:
    """The layer of ``module``: the one whose listed package is its longest prefix."""
    found = [(len(p), i) for i, group in enumerate(LAYERS) for p in group if module == p or module.startswith(p + ".")]
    assert found, f"{module} is in no layer of LAYERS"
    return max(found)[1]


def test_imports_point_down_the_layers() -> None:
    upward = sorted(
        (module, target) for module, targets in import_graph().items() for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert upward == []


TYPE_NAMES = "|".join(TASKS)
#: A comparison of a value with a task type's name: ``task.type == "regression"``, ``kind in ("classification", ...)``.
BRANCH = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["'](?:{TYPE_NAMES})["']|["'](?:{TYPE_NAMES})["']\s*(==|!=|\bin\b)""")


def test_task_types_are_asked_not_branched_on_outside_polyfuse_tasks() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "tasks":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line):
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert found == []


def test_the_branch_pattern_catches_branches() -> None:
    for line in ('if task.type == "regression":', 'kind not in ("classification", "multilabel")', '"generation" == kind'):
        assert BRANCH.search(line), line
    assert not BRANCH.search('tasks = {"digit": {"column": "label", "type": "classification"}}')


def test_commands_do_not_import_each_other() -> None:
    graph = import_graph()
    crossing = {
        (module, target) for module, targets in graph.items() if module.startswith("polyfuse.commands.")
        for target in targets
        if target.startswith("polyfuse.commands.") and target not in ("polyfuse.commands._common", module)
    }
    assert crossing == set()


COMPONENT_PACKAGES = ("encoders", "fusion", "heads")
CONFIG_PATH = re.compile(r"""ConfigError\(\s*f?["'](model|tasks|data|objectives)\.""")


def test_components_name_their_own_parameters_and_the_builder_adds_the_key_path() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{text[: m.start()].count(chr(10)) + 1}"
        for package in COMPONENT_PACKAGES for path in (PACKAGE / package).rglob("*.py")
        for text in [path.read_text()] for m in CONFIG_PATH.finditer(text)
    ]
    assert offenders == [], f"components raising errors with a config key path: {offenders}"

    from polyfuse.build import build_model
    from polyfuse.config import Config, ConfigError
    from polyfuse.types import InputSpec

    specs = {"image": InputSpec(name="image", kind="image", channels=1, height=28, width=28)}
    cases = [
        ({"model": {"fusion": {"name": "bottleneck", "fusion_layer": 99}}}, "model.fusion.fusion_layer: "),
        ({"model": {"encoders": {"image": {"name": "lenet", "channels": [8]}}}}, "model.encoders.image.channels: "),
        ({"model": {"encoders": {"image": {"name": "lenet"}}}, "tasks": {"y": {"column": "y", "head": {"dropout": 2.0}}}},
         "tasks.y.head.dropout: "),
        # an ensemble member's error names the key where the member holds that value
        ({"model": {"ensemble": [{"name": "a", "weight": 1.0, "inputs": ["image"],
                                  "fusion": {"name": "bottleneck", "fusion_layer": 99}}]}}, "model.ensemble[0].fusion.fusion_layer: "),
        ({"model": {"ensemble": [{"name": "a", "weight": 0.5, "inputs": ["image"]},
                                 {"name": "b", "weight": 0.5, "inputs": ["image"], "heads": {"y": {"dropout": 2.0}}}]}},
         "model.ensemble[1].heads.y.dropout: "),
    ]
    for raw, prefix in cases:
        config = Config.from_dict({"tasks": {"y": {"column": "y"}}, **raw})
        with pytest.raises(ConfigError) as caught:
            build_model(config, specs, {"y": 3})
        assert str(caught.value).startswith(prefix), str(caught.value)


@pytest.mark.parametrize("module", ["polyfuse.predictor", "polyfuse.serve.app"])
def test_inference_imports_neither_lightning_nor_training(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'lightning' or m.startswith('polyfuse.train'))\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_loading_and_predicting_imports_neither_lightning_nor_training(run: Path, avmnist) -> None:
    code = (
        "import sys, pandas as pd, polyfuse.predictor as p\n"
        f"model = p.Predictor.load({str(run)!r})\n"
        f"rows = pd.read_csv({str(avmnist.test)!r}).head(2)\n"
        f"model.predict(rows, root={str(avmnist.root)!r}, explain=True)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'lightning' or m.startswith('polyfuse.train'))\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
