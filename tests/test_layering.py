"""Imports point one way: every project module's imports (lazy ones inside functions too) parsed with ``ast``."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simulator", "serving", "trainers", "scenarios")
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of_source(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every imported name as a dotted path: ``import a.b`` -> a.b, ``from a import b`` -> a.b."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return out


def _modules() -> dict[str, set[str]]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = module_name(path)
            mods[name] = imports_of_source(path.read_text(), name, path.name == "__init__.py")
    return mods


MODULES = _modules()


def _top(name: str) -> str:
    return name.split(".")[0]


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_parser_sees_lazy_and_relative_imports():
    src = "import os\ndef f():\n    from mlflow import MlflowClient\n    import ray.data\nfrom .ids import IdMap\n"
    got = imports_of_source(src, "simulator.core.config")
    assert {"os", "mlflow", "mlflow.MlflowClient", "ray.data", "simulator.core.ids", "simulator.core.ids.IdMap"} <= got
    assert {"simulator", "serving", "trainers"} <= {_top(m) for m in MODULES}


def _pure_model_modules():
    return sorted(m for m in MODULES if m.startswith("trainers.models")
                  or m in ("trainers.losses", "trainers.learner", "trainers.compact", "trainers.optim"))


@pytest.mark.parametrize("module", _pure_model_modules())
def test_models_losses_learner_are_pure_torch(module):
    bad = sorted(
        i for i in MODULES[module]
        if _top(i) not in STDLIB | {"torch", "numpy"}
        and not _under(i, ("trainers.models", "trainers.losses", "trainers.metrics", "trainers.compact", "trainers.optim"))
    )
    assert not bad, (f"{module} imports {bad}: only torch/numpy/stdlib and trainers.models/losses/metrics/compact/optim "
                     "are allowed")


def test_serving_never_imports_ray_except_the_app():
    bad = {m: sorted(i for i in imps if _top(i) == "ray") for m, imps in MODULES.items()
           if m.startswith("serving") and m != "serving.app"}
    assert not {m: v for m, v in bad.items() if v}


def test_only_the_cli_imports_scenarios():
    bad = sorted(m for m, imps in MODULES.items()
                 if not m.startswith("scenarios") and m != "simulator.run.cli" and any(_top(i) == "scenarios" for i in imps))
    assert not bad, f"{bad} import scenarios (only simulator.run.cli and tests may)"


def test_mlflow_only_in_tracking_and_session():
    allowed = {"simulator.run.tracking", "simulator.run.session"}
    bad = sorted(m for m, imps in MODULES.items() if m not in allowed and any(_top(i) == "mlflow" for i in imps))
    assert not bad, f"{bad} import mlflow (only {sorted(allowed)} may)"


def layer_table(text: str) -> list[tuple[str, list[str], set[str]]]:
    """(layer, package prefixes, layers it may import) from the table between the ``layers`` markers."""
    body = text.split("<!-- layers: read by tests/test_layering.py -->", 1)[1].split("<!-- /layers -->", 1)[0]
    rows = []
    for line in body.strip().splitlines()[2:]:
        name, pkgs, may = (c.strip() for c in line.strip().strip("|").split("|"))
        allowed = set() if may == "nothing of the project" else {x.strip() for x in may.split(",")}
        rows.append((name, [x.strip().strip("`") for x in pkgs.split(",")], allowed))
    return rows


LAYERS = layer_table((ROOT / "docs" / "architecture.md").read_text())


def layer_of(module: str) -> str | None:
    best = max(((len(p), name) for name, pkgs, _ in LAYERS for p in pkgs if _under(module, [p])), default=None)
    return best[1] if best else None


def project_module(name: str) -> str | None:
    """The project module an imported dotted name refers to (``a.b.C`` -> ``a.b``), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_layer_table_parses_and_names_known_layers():
    names = [n for n, _, _ in LAYERS]
    assert names[0] == "core" and "run" in names and len(set(names)) == len(names)
    for name, _, allowed in LAYERS:
        assert allowed <= set(names), f"layer {name} may import unknown layers {allowed - set(names)}"
    assert layer_of("simulator.core.config") == "core" and layer_of("trainers.models.ihm") == "models"
    assert layer_of("simulator.run.loop") == "run" and layer_of("trainers.online") == "trainers"


def test_every_module_has_a_layer():
    assert not sorted(m for m in MODULES if layer_of(m) is None)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layer_table(module):
    own = layer_of(module)
    allowed = {own} | next(a for n, _, a in LAYERS if n == own)
    bad = sorted({i for i in MODULES[module] if _top(i) in PACKAGES and (m := project_module(i))
                  and layer_of(m) not in allowed})
    assert not bad, f"{module} (layer {own}) imports {bad}; docs/architecture.md allows it only {sorted(allowed)}"


def _graph() -> dict[str, set[str]]:
    return {m: {t for i in imps if _top(i) in PACKAGES and (t := project_module(i)) and t != m
                and not m.startswith(t + ".")} for m, imps in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    """A package importing its own submodules (``__init__`` re-exports) is not a cycle; anything else is."""
    assert find_cycle(_graph()) is None


MAX_MODULE_LINES = 420
"""About 400 lines at most per module (issue 12): a longer file is doing several things; split it by concept."""


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_too_long(package):
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / package).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def readme_layout() -> dict[str, set[str]]:
    """{package dir: names listed} from the README's Layout block (``name/`` for a subpackage)."""
    text = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    return {line.split()[0]: set(line.split("#", 1)[0].split()[1:]) for line in text.strip().splitlines()}


def tree_layout() -> dict[str, set[str]]:
    out = {}
    for pkg in PACKAGES:
        for d in [ROOT / pkg, *sorted(p for p in (ROOT / pkg).rglob("*") if p.is_dir() and (p / "__init__.py").exists())]:
            names = {p.stem for p in d.glob("*.py") if p.name != "__init__.py"}
            names |= {p.name + "/" for p in d.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
            out[str(d.relative_to(ROOT)) + "/"] = names
    return out


def test_readme_layout_matches_the_tree():
    listed, tree = readme_layout(), tree_layout()
    assert set(listed) == set(tree), f"packages missing from README Layout: {sorted(set(tree) - set(listed))}; " \
                                     f"listed but absent: {sorted(set(listed) - set(tree))}"
    diff = {d: {"missing": sorted(tree[d] - listed[d]), "absent": sorted(listed[d] - tree[d])}
            for d in tree if tree[d] != listed[d]}
    assert not diff, f"README Layout differs from the tree: {diff}"
