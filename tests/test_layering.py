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
    got = imports_of_source(src, "simulator.world")
    assert {"os", "mlflow", "mlflow.MlflowClient", "ray.data", "simulator.ids", "simulator.ids.IdMap"} <= got
    assert {"simulator", "serving", "trainers"} <= {_top(m) for m in MODULES}


def _pure_model_modules():
    return sorted(m for m in MODULES if m.startswith("trainers.models") or m in ("trainers.losses", "trainers.learner", "trainers.next_user_loss"))


@pytest.mark.parametrize("module", _pure_model_modules())
def test_models_losses_learner_are_pure_torch(module):
    bad = sorted(
        i for i in MODULES[module]
        if _top(i) not in STDLIB | {"torch", "numpy"} and not _under(i, ("trainers.models", "trainers.losses", "trainers.metrics"))
    )
    assert not bad, f"{module} imports {bad}: only torch/numpy/stdlib and trainers.models/losses/metrics are allowed"


def test_serving_never_imports_ray_except_the_app():
    bad = {m: sorted(i for i in imps if _top(i) == "ray") for m, imps in MODULES.items()
           if m.startswith("serving") and m != "serving.app"}
    assert not {m: v for m, v in bad.items() if v}


def test_only_the_cli_imports_scenarios():
    bad = sorted(m for m, imps in MODULES.items()
                 if not m.startswith("scenarios") and m != "simulator.cli" and any(_top(i) == "scenarios" for i in imps))
    assert not bad, f"{bad} import scenarios (only simulator.cli and tests may)"


@pytest.mark.parametrize("module", ["simulator.schema", "simulator.config", "simulator.ids"])
def test_bottom_modules_import_only_each_other(module):
    bottom = ("simulator.schema", "simulator.config", "simulator.ids")
    bad = sorted(i for i in MODULES[module] if _top(i) in PACKAGES and i != "simulator" and not _under(i, bottom))
    assert not bad, f"{module} imports {bad}"


def test_mlflow_only_in_tracking_and_session():
    allowed = {"simulator.tracking", "simulator.session"}
    bad = sorted(m for m, imps in MODULES.items() if m not in allowed and any(_top(i) == "mlflow" for i in imps))
    assert not bad, f"{bad} import mlflow (only {sorted(allowed)} may)"
