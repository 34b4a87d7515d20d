"""What docs/architecture.md claims about the code's shape, checked on the code: the parts and
their imports, the import graph without cycles, MLflow behind `tracking/`, private library names
only through `src/config/private_api.py`, random draws only through named streams."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from src.config.errors import UserError
from src.config.private_api import OPTUNA_QUEUED_KEYS, PRIVATE_USES, check_private_api
from tests.conftest import ROOT

PACKAGES = ("src", "hydra_plugins")
DOC = ROOT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Edge:
    """`source` imports `target` (both our modules); `deferred`: inside a function."""

    source: str
    target: str
    deferred: bool


def module_name(path: Path) -> str:
    """`src/model/build.py` -> `src.model.build`; a package's `__init__` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    """Every module of ours, by dotted name."""
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def type_checking_blocks(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under `if TYPE_CHECKING:` (they never run)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids |= {id(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    return ids


def imported_names(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> Iterator[str]:
    """The modules of ours an import statement loads (`from src.x import y` may name module y)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name in modules)
        return
    base = node.module or ""
    for alias in node.names:
        full = f"{base}.{alias.name}"
        if full in modules:
            yield full
        elif base in modules:
            yield base


def import_edges() -> list[Edge]:
    """Every import between our modules that can run (TYPE_CHECKING blocks left out)."""
    modules = our_modules()
    edges: set[Edge] = set()
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = type_checking_blocks(tree)
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skipped:
                continue
            for target in imported_names(node, modules):
                if target != name and not name.startswith(target + "."):
                    edges.add(Edge(name, target, id(node) not in top_level))
    return sorted(edges, key=lambda e: (e.source, e.target, e.deferred))


def part(module: str) -> str:
    """The part a module belongs to: its folder under src/ (`config`, `model`, ...), `commands`
    for the modules directly under src/, `plugin` for the Hydra plugins."""
    pieces = module.split(".")
    if pieces[0] == "hydra_plugins":
        return "plugin"
    if len(pieces) == 1:
        return "commands"  # src/__init__.py
    return pieces[1] if (ROOT / "src" / pieces[1]).is_dir() else "commands"


# The parts from the lowest up (docs/architecture.md): a part imports only parts below it or
# beside it, never one above.
LAYERS = {
    "config": 0,
    "data": 1,
    "task": 1,
    "inputs": 1,
    "model": 2,
    "training": 3,
    "checkpoint": 3,
    "tracking": 4,
    "sweep": 5,
    "analysis": 5,
    "cli": 6,
    "commands": 7,
    "plugin": 8,
}


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def library_importers(library: str) -> set[str]:
    """Our modules that import `library` (at any depth of the file, TYPE_CHECKING included)."""
    found = set()
    for name, path in our_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n == library or n.startswith(library + ".") for n in names):
                found.add(name)
    return found


def test_no_import_cycle_not_even_through_imports_inside_functions() -> None:
    assert cycles(import_edges()) == []


def test_every_part_has_its_layer() -> None:
    assert {part(m) for m in our_modules()} <= set(LAYERS)


def test_no_part_imports_one_above_it() -> None:
    edges = import_edges()
    assert [e for e in edges if LAYERS[part(e.target)] > LAYERS[part(e.source)]] == []


def test_config_is_the_lowest_part_and_imports_no_other() -> None:
    upward = [
        e for e in import_edges() if part(e.source) == "config" and part(e.target) != "config"
    ]
    assert upward == []


def test_the_writing_side_never_imports_the_reporting_side() -> None:
    writers = {"data", "task", "inputs", "model", "training", "tracking", "checkpoint", "sweep"}
    wrong = [
        e for e in import_edges() if part(e.source) in writers and part(e.target) == "analysis"
    ]
    assert wrong == []


def test_every_module_directly_under_src_is_a_command() -> None:
    for path in sorted((ROOT / "src").glob("*.py")):
        if path.name == "__init__.py":
            continue
        assert 'if __name__ == "__main__":' in path.read_text(), f"{path.name} is no command"


def test_mlflow_is_imported_by_tracking_and_at_most_three_modules_elsewhere() -> None:
    outside = {m for m in library_importers("mlflow") if part(m) != "tracking"}
    assert len(outside) <= 3, sorted(outside)


def test_the_documented_counts_are_the_code_s() -> None:
    edges = import_edges()
    modules = [m for m, p in our_modules().items() if p.name != "__init__.py"]
    inits = [m for m, p in our_modules().items() if p.name == "__init__.py"]
    text = " ".join(DOC.read_text().split())
    stated = re.search(
        r"(\d+) modules .*?plus (\d+) `__init__.py`\), (\d+) import edges between them, (\d+) of"
        r" them at module level",
        text,
    )
    assert stated, "docs/architecture.md no longer states the counts"
    assert [int(g) for g in stated.groups()] == [
        len(modules),
        len(inits),
        len(edges),
        sum(not e.deferred for e in edges),
    ]


# -- private library names -----------------------------------------------------------------

PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_target_"}  # namedtuple's API, Hydra's key


def private_names_used(path: Path) -> Iterator[tuple[int, str]]:
    """(line, name) of every private library name a file reaches for: an import from a
    `_private` module, or an `_attribute` of anything but `self` / `cls`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if any(p.startswith("_") and p != "__future__" for p in node.module.split(".")):
                yield node.lineno, node.module
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            dunder = node.attr.startswith("__") and node.attr.endswith("__")
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not (dunder or own or node.attr in PUBLIC_UNDERSCORE):
                yield node.lineno, node.attr
        elif isinstance(node, ast.Constant) and is_private_string(node.value):
            yield node.lineno, str(node.value)


def is_private_string(value: object) -> bool:
    """A string that names a private module or one of Optuna's internal trial keys."""
    return isinstance(value, str) and (value in OPTUNA_QUEUED_KEYS or "._internal" in value)


def test_private_library_names_are_used_only_through_private_api() -> None:
    allowed = {use.attribute for use in PRIVATE_USES}
    home = ROOT / "src" / "config" / "private_api.py"
    stray = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        for path in our_modules().values()
        if path != home
        for line, name in private_names_used(path)
        if name not in allowed
    ]
    assert stray == []
    listed_elsewhere = {
        name
        for path in our_modules().values()
        if path != home
        for _, name in private_names_used(path)
    }
    # What is used elsewhere is only the Trainer's sampler hooks our subclass overrides.
    assert listed_elsewhere <= {"_get_train_sampler", "_get_eval_sampler"}


def test_private_library_attributes_we_rely_on_are_there() -> None:
    check_private_api(import_all=True)


def test_a_removed_private_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.core.utils import JobReturn

    monkeypatch.delattr(JobReturn, "_return_value")
    with pytest.raises(UserError, match=r"hydra\.core\.utils\.JobReturn\._return_value"):
        check_private_api()


def test_optuna_marks_queued_trials_with_the_keys_we_read() -> None:
    import optuna
    from optuna.storages import RetryFailedTrialCallback

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    trial = study.ask()
    assert OPTUNA_QUEUED_KEYS[0] in study.trials[0].system_attrs
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    RetryFailedTrialCallback()(study, study.trials[0])
    assert OPTUNA_QUEUED_KEYS[1] in study.trials[-1].system_attrs


def test_job_results_are_values_or_the_exception_a_job_failed_with() -> None:
    from hydra.core.utils import JobReturn, JobStatus

    from src.config.private_api import job_result

    failed = JobReturn(status=JobStatus.FAILED)
    error = ValueError("boom")
    failed.return_value = error
    assert job_result(failed) is error
    done = JobReturn(status=JobStatus.COMPLETED)
    done.return_value = 0.5
    assert job_result(done) == 0.5


# -- random draws --------------------------------------------------------------------------


def test_every_random_generator_comes_from_a_named_stream() -> None:
    streams = ROOT / "src" / "data" / "streams.py"
    bare = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in our_modules().values()
        if path != streams
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr in ("default_rng", "RandomState", "seed")
        and "random" in ast.unparse(node.value)
    ]
    assert bare == []
