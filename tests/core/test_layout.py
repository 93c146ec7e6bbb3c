"""The package shows the architecture: modules live in layer packages, each package says what it owns, the public
import paths are thin re-exports, and the layers import each other without a cycle (read with ast, nothing run)."""
import ast
import itertools
from pathlib import Path

import robustal

ROOT = Path(robustal.__file__).parent
#: What may stay flat at the top of ``src/robustal``: the shared helpers every layer uses.
CORE = {"__init__", "_registry", "_runtime", "_validation", "errors"}
#: Public import paths the docs use, kept as thin re-exports of the modules' new homes.
SHIMS = {"attacks", "evaluation", "experiment", "store", "training"}


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every robustal module or package ``path`` imports, at its top or inside a function (a lazy import is still a
    dependency), with relative imports resolved."""
    name = _name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # ``from pkg import module``
    return {m for m in found if m == "robustal" or m.startswith("robustal.")}


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in ROOT.rglob("*.py")}


def _layer(module: str) -> str:
    """The layer package of a module: ``robustal.engine.training`` → ``engine``; flat modules are the core layer."""
    parts = module.split(".")
    if len(parts) > 1 and (ROOT / parts[1]).is_dir():
        return parts[1]
    return "core"


def _layer_graph() -> dict[str, dict[str, str]]:
    """layer → {imported layer: one module import that makes the edge (for the failure message)}; shims left out."""
    modules = _modules()
    graph: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        if name.rpartition(".")[2] in SHIMS and name.count(".") == 1:
            continue
        for target in _imports(path):
            if target not in modules:
                continue  # ``from robustal.x import Name``: the module is counted on its own
            a, b = _layer(name), _layer(target)
            graph.setdefault(a, {})
            if a != b:
                graph[a].setdefault(b, f"{name} imports {target}")
    return graph


def _cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """A cycle of the graph as its nodes in order (depth-first search with the nodes on the current path), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_is_left_flat_but_the_core_helpers_and_the_public_shims():
    flat = {p.stem for p in ROOT.glob("*.py")}
    assert flat - CORE - SHIMS == set(), "put each of these modules in the package of its layer"
    assert SHIMS <= flat


def test_every_package_says_what_it_owns():
    packages = [p.parent for p in ROOT.rglob("__init__.py")]
    assert len(packages) >= 9
    missing = [str(p.relative_to(ROOT.parent)) for p in packages
               if not ast.get_docstring(ast.parse((p / "__init__.py").read_text()))]
    assert missing == []


def test_the_public_import_paths_are_thin_reexports_nothing_inside_robustal_uses():
    for shim in SHIMS:
        tree = ast.parse((ROOT / f"{shim}.py").read_text())
        assert ast.get_docstring(tree), shim
        body = tree.body[1:]
        assert all(isinstance(n, ast.ImportFrom) or (isinstance(n, ast.Assign) and n.targets[0].id == "__all__")
                   for n in body), f"robustal/{shim}.py must only re-export"
        imported = {a.asname or a.name for n in body if isinstance(n, ast.ImportFrom) for a in n.names}
        exported = next(ast.literal_eval(n.value) for n in body if isinstance(n, ast.Assign))
        assert set(exported) == imported and imported, shim
    users = {name: sorted(f"robustal.{s}" for s in SHIMS if f"robustal.{s}" in _imports(path))
             for name, path in _modules().items()}
    assert {name: used for name, used in users.items() if used} == {}, "import the module's new path"


def test_the_public_names_still_import_from_their_documented_paths():
    from robustal.attacks import AttackConfig
    from robustal.engine.attacks import AttackConfig as Engine
    from robustal.experiment import RunSpec, run_experiment  # noqa: F401
    from robustal.loop import ActiveLearningLoop, LoopConfig, run_active_learning  # noqa: F401
    from robustal.loop.active import LoopConfig as Active
    from robustal.store import Store  # noqa: F401
    from robustal.training import TrainConfig  # noqa: F401

    assert AttackConfig is Engine and LoopConfig is Active


def test_the_layers_import_each_other_without_a_cycle():
    graph = _layer_graph()
    assert {"core", "storage", "engine", "loop", "studies", "reports", "cli"} <= set(graph)
    cycle = _cycle(graph)
    assert cycle is None, " → ".join(cycle) + ": " + "; ".join(graph[a][b] for a, b in itertools.pairwise(cycle))
    assert graph["core"] == {}, "errors and the core helpers import no layer"
    assert "cli" not in {b for edges in graph.values() for b in edges}, "only the CLI imports the CLI"


def test_the_cycle_search_finds_a_cycle_and_names_it():
    assert _cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {}}) is None
