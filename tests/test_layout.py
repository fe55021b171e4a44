"""The floors of docs/design.md: codec_models -> rlasc_env -> agents -> rlasc_harness -> scripts; no import runs upward,
agents reach the env through its public API, nothing imports experiments/, and one resolve_device exists."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["codec_models", "rlasc_env", "agents", "rlasc_harness"]
ENV_PUBLIC = {"rlasc_env", "rlasc_env.engine", "rlasc_env.registration", "rlasc_env.score", "rlasc_env.tasks"}


def imports(path: Path) -> list[str]:
    """Every module a file imports (absolute names; relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.append(".".join(base + ([node.module] if node.module else [])))
            else:
                out.append(node.module or "")
    return out


@pytest.mark.parametrize("floor", FLOORS)
def test_no_import_runs_upward(floor):
    above = FLOORS[FLOORS.index(floor) + 1:]
    bad = [(str(p.relative_to(ROOT)), m) for p in (ROOT / floor).rglob("*.py") for m in imports(p)
           if m.split(".")[0] in above + ["experiments"]]
    assert bad == []


def test_agents_use_the_public_env_api():
    bad = [(str(p.relative_to(ROOT)), m) for p in (ROOT / "agents").rglob("*.py") for m in imports(p)
           if m.startswith("rlasc_env") and not any(m == k or m.startswith("rlasc_env.tasks") for k in ENV_PUBLIC)]
    assert bad == []


def test_nothing_imports_experiments_and_one_resolve_device():
    sources = [p for d in FLOORS + ["tests"] for p in (ROOT / d).rglob("*.py")] + list(ROOT.glob("*.py"))
    assert [p for p in sources if any(m.split(".")[0] == "experiments" for m in imports(p))] == []
    defs = [str(p.relative_to(ROOT)) for p in sources if any(isinstance(n, ast.FunctionDef) and n.name == "resolve_device"
                                                             for n in ast.walk(ast.parse(p.read_text())))]
    assert defs == ["codec_models/device.py"]


def test_agents_holds_agents():
    """agents/: policies, algorithms, baselines, their checkpoints and hyperparameters; nothing of the harness."""
    modules = {p.stem for p in (ROOT / "agents").glob("*.py")} - {"__init__"}
    assert modules <= {"baselines", "checkpoint", "class_table", "corrected_rule", "hyperparams", "policy",
                       "reinforce", "rollout", "sb3"}
    assert not [p for p in (ROOT / "agents").iterdir() if p.is_dir() and p.name not in ("hyperparams", "weights",
                                                                                         "__pycache__")]
