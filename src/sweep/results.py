"""What a sweep leaves behind: the parent MLflow run kept current, plots, best.yaml."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from src.config.outputs import open_output, output_folder, write_text
from src.sweep.objectives import best_trials
from src.sweep.search_space import format_value, param_overrides
from src.sweep.storage import tool_commands
from src.tracking.names import BEST_TRIAL_TAG, PARETO_TRIALS_TAG
from src.tracking.parent import SweepRun
from src.tracking.uris import redact

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class ParentRun(SweepRun):
    """The sweep's parent MLflow run (created by the caller); every call here is best effort."""

    def log_trial(
        self, trial: FrozenTrial, study: optuna.Study, names: Sequence[str] | None = None
    ) -> None:
        """After a trial: its value(s), the study's counts, and the best trial so far (one
        objective) or the Pareto front's size and members (several)."""
        step = trial.number
        if trial.state == TrialState.COMPLETE and trial.values is not None:
            if len(trial.values) == 1:
                self.log_metric("trial_value", trial.values[0], step)
            else:
                for name, value in zip(objective_labels(study, names), trial.values, strict=True):
                    self.log_metric(f"trial_{name}", value, step)
        for name, n in count_states(study.get_trials(deepcopy=False)).items():
            self.log_metric(f"n_{name}", n, step)
        best = best_trials(study)
        if not best:
            return
        if len(study.directions) > 1:
            self.log_metric("pareto_size", len(best), step)
            self.set_tags({PARETO_TRIALS_TAG: ",".join(str(t.number) for t in best)})
            return
        (top,) = best
        self.log_metric("best_value", top.values[0], step)
        tags = {f"best.{k}": format_value(v) for k, v in top.params.items()}
        tags[BEST_TRIAL_TAG] = str(top.number)
        self.set_tags(tags)


def count_states(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """Trials per state: complete, pruned, failed, running, waiting."""
    names = {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }
    counts = dict.fromkeys(names.values(), 0)
    for t in trials:
        counts[names[t.state]] += 1
    return counts


def objective_labels(study: optuna.Study, names: Sequence[str] | None) -> list[str]:
    """A name per objective: the metrics' names, else ``objective0``, ``objective1``..."""
    return list(names or [f"objective{i}" for i in range(len(study.directions))])


def program_command() -> list[str]:
    """How this program was started: ``python -m pkg.mod`` or ``python path/to/script.py``,
    with the Hydra options that chose its primary config; ``python`` is the interpreter that
    runs it (its absolute path: a bare `python` outside the activated venv has no `src`)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        module = spec.name.removesuffix(".__main__")
        return [sys.executable, "-m", module, *config_flags(sys.argv[1:])]
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("main.py")
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path.cwd())
    return [sys.executable, str(script), *config_flags(sys.argv[1:])]


def pasteable(command: Sequence[str]) -> str:
    """`command` as one line that runs as pasted from any shell and folder: it first enters
    this folder, where `-m src.train` finds the project and relative paths in overrides (data
    files, --config-dir) mean what they meant to the sweep."""
    return f"cd {shlex.quote(str(Path.cwd()))} && {shlex.join(command)}"


def config_flags(argv: Sequence[str]) -> list[str]:
    """Hydra's --config-path, --config-name and --config-dir options of a command line (the
    config dir made absolute); the rest (overrides, --multirun) is left out."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag, short in (
        ("--config-path", "-cp"),
        ("--config-name", "-cn"),
        ("--config-dir", "-cd"),
    ):
        parser.add_argument(flag, short)
    given, _ = parser.parse_known_args(list(argv))
    flags: list[str] = []
    if given.config_path:
        flags += ["--config-path", given.config_path]  # relative to the script, as Hydra reads it
    if given.config_name:
        flags += ["--config-name", given.config_name]
    if given.config_dir:
        flags += ["--config-dir", os.path.abspath(given.config_dir)]
    return flags


def write_best(
    path: Path,
    study: optuna.Study,
    names: Sequence[str] | None,
    fixed: Sequence[str],
    storage_url: str,
    champion: str | None = None,
) -> None:
    """``best.yaml``: the best trial (one objective) or every trial of the Pareto front
    (several), each with its params, overrides and a ready-to-paste command; the commands that
    open the study in optuna-dashboard and the optuna CLI; the registered champion model."""
    doc: dict[str, Any] = {"study_name": study.study_name, "storage": storage_url}
    doc |= tool_commands(storage_url, study.study_name)
    if champion is not None:
        doc["champion"] = champion
    best = best_trials(study)
    if len(study.directions) == 1:
        (top,) = best
        doc |= {
            "direction": study.direction.name.lower(),
            "best_trial": top.number,
            "best_value": top.value,
            **_replay(top, fixed),
        }
    else:
        doc |= {
            "directions": [d.name.lower() for d in study.directions],
            "metrics": objective_labels(study, names),
            "pareto_front": [
                {"trial": t.number, "values": list(t.values), **_replay(t, fixed)} for t in best
            ],
        }
    output_folder(path.parent)
    # The file is logged to MLflow: a password in a URI on the command line must not be in it.
    write_text(path, redact(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)))


def _replay(trial: FrozenTrial, fixed: Sequence[str]) -> dict[str, Any]:
    """A trial's params, its overrides and the command that runs it alone."""
    overrides = [*fixed, *param_overrides(trial.params)]
    return {
        "params": dict(trial.params),
        "overrides": overrides,
        "command": pasteable([*program_command(), *overrides]),
    }


def write_plots(
    study: optuna.Study, out_dir: Path, names: Sequence[str] | None = None
) -> list[Path]:
    """PNGs: optimisation history, intermediate values, importances, parallel coordinates
    (one objective); the Pareto front and importances per objective (several)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    varying = [
        name
        for name in {k for t in complete for k in t.params}
        if len({format_value(t.params.get(name)) for t in complete}) > 1
    ]
    plots: dict[str, Callable[[], Any]] = {}
    if len(study.directions) > 1:
        labels = objective_labels(study, names)
        plots["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=labels)
        for i, label in enumerate(labels if len(complete) >= 2 and varying else []):
            plots[f"param_importances_{label}"] = functools.partial(
                ovm.plot_param_importances,
                study,
                target=functools.partial(_objective, index=i),
                target_name=label,
            )
    else:
        plots["optimization_history"] = lambda: ovm.plot_optimization_history(study)
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            plots["intermediate_values"] = lambda: ovm.plot_intermediate_values(study)
        if len(complete) >= 2 and varying:
            plots["param_importances"] = lambda: ovm.plot_param_importances(study)
            plots["parallel_coordinate"] = lambda: ovm.plot_parallel_coordinate(
                study, params=sorted(varying)
            )
    output_folder(out_dir)
    written: list[Path] = []
    for name, make in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = make()
            ax = result.flat[0] if hasattr(result, "flat") else result
            fig = ax.figure
            fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 5))
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            with open_output(path, binary=True) as out:
                fig.savefig(out, dpi=100, format="png")
            plt.close(fig)
            written.append(path)
        except Exception as exc:
            log.warning("plot %s skipped: %s", name, exc)
    return written


def _objective(trial: FrozenTrial, index: int) -> float:
    """One objective's value of a trial (a plot's target)."""
    return trial.values[index]
