"""The sweep loop: ask a trial, launch its Hydra job, tell the outcome, until the study is done.

One process is one worker. Workers sharing `study_name` + `storage` share the study; each asks
for a new trial only while finished (COMPLETE/PRUNED) + running trials < n_trials, so together
they finish exactly n_trials, and a re-run of the same command tops the study up.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import importlib.util
import itertools
import logging
import os
import signal
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from src.config.errors import Interrupted, UserError, writable_place
from src.config.private_api import OPTUNA_QUEUED_KEYS, check_private_api, job_result
from src.sweep import results
from src.sweep.custom_space import SpaceExtender, extend_trial, load_extender
from src.sweep.devices import (
    PLACED_TRIAL_ENV,
    DevicePool,
    PlacedPool,
    check_devices,
    device_groups,
    worker_command,
)
from src.sweep.launch import launch
from src.sweep.liveness import (
    WORKER_ATTR,
    Heartbeat,
    Worker,
    stale_reason,
)
from src.sweep.objectives import (
    best_trials,
    describe_values,
    objective_names,
    objective_values,
)
from src.sweep.search_space import (
    SearchSpace,
    coerce,
    describe_distribution,
    grid_size,
    grid_space,
    param_overrides,
    parse_search_space,
    quote,
)
from src.sweep.settings import (
    GRID_SWEEPER,
    GridSettings,
    PrunerName,
    SamplerConf,
    SamplerName,
    SweeperSettings,
)
from src.sweep.storage import journal_path, normalize_storage_url, open_storage, tool_commands
from src.sweep.trial import build_pruner
from src.tracking.names import (
    CHAMPION_TAG,
    DEVICE_WORKER_ENV,
    DEVICES_ATTR,
    EXCESS_ATTR,
    FAIL_REASON_ATTR,
    OPTUNA_BEST_TRIAL_TAG,
    OPTUNA_DASHBOARD_TAG,
    OPTUNA_STORAGE_TAG,
    OPTUNA_STUDY_DIR_TAG,
    OPTUNA_STUDY_TAG,
    OUTPUT_DIR_ATTR,
    PRUNER_ATTR,
    SEARCH_SPACE_ATTR,
    SWEEPER_ATTR_PREFIX,
    TRIAL_STORAGE_ENV,
    WORKER_PREFIX,
)
from src.tracking.uris import redact

if TYPE_CHECKING:  # MLflow loads only with a parent run: a worker starts seconds sooner
    from src.tracking.registry import Registry

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
REASON_MAX = 2000


class OptunaSweep:
    """The worker loop behind ``ClfsweepOptunaSweeper``."""

    def __init__(self, settings: SweeperSettings) -> None:
        check_private_api()
        self.settings = settings
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None
        self.worker = Worker.current()
        self._ran: list[FrozenTrial] = []  # trials this worker told in this run
        self._trial_ids: dict[int, int] = {}  # trial number -> storage id
        self._parent: results.ParentRun | None = None
        self.registry: Registry | None = None  # the study's champion model, with a parent run

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep Hydra's context and instantiate the launcher."""
        self.config = config
        self.hydra_context = hydra_context
        s = self.settings
        if s.devices and not self.in_pool:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            check_devices(s.devices, visible, str(config.hydra.launcher._target_))
        gpus = len(os.environ[DEVICE_WORKER_ENV].split(",")) if self.in_pool else 1
        if gpus > 1:
            from src.sweep.multi_gpu import TorchrunTask

            task_function = TorchrunTask(task_function, gpus)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- set-up ---------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> dict[str, Any] | None:
        """Run trials until the study has n_trials finished ones; return the best so far."""
        assert self.config is not None and self.hydra_context is not None
        s = self.settings
        plan = check_sweep(s, self.config, arguments, self.hydra_context.config_loader)
        self.space, self.extender = plan.space, plan.extender
        self.directions = s.directions
        self.metric_names = plan.metric_names
        self.study_dir, self.storage_url = plan.study_dir, plan.storage_url
        self.sweep_dir = plan.sweep_dir
        self.study_dir.mkdir(parents=True, exist_ok=True)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        self.storage = open_storage(
            self.storage_url, s.heartbeat_interval or None, s.grace_period, s.max_retry
        )
        self.grace_period = float(s.grace_period or 2 * (s.heartbeat_interval or 60))
        self.n_target = s.n_trials
        with self._lock():
            self.study = self._open_study()
            self._enqueue()
        tools = tool_commands(redact(self.storage_url), s.study_name)
        log.info(
            "Optuna study %s (%s), n_trials=%d, storage %s\n%s\nwatch it: %s\nlist its trials: %s",
            s.study_name,
            ", ".join(self.directions),
            s.n_trials,
            redact(self.storage_url),
            self._describe_space(),
            tools["dashboard"],
            tools["optuna_cli"],
        )
        self._parent = results.ParentRun.from_env()
        if self._parent is not None:
            self._parent.log_params(self._setup_params())
            self._parent.set_tags(
                {
                    OPTUNA_STUDY_TAG: s.study_name,
                    OPTUNA_STORAGE_TAG: redact(self.storage_url),
                    OPTUNA_STUDY_DIR_TAG: str(self.study_dir),
                    OPTUNA_DASHBOARD_TAG: tools["dashboard"],
                }
            )
            if s.register_model:
                self.registry = self._parent.registry(
                    s.study_name,
                    self.directions[0] == "maximize",
                    results.objective_labels(self.study, self.metric_names),
                )
        if s.devices and not self.in_pool:
            self._run_pool()
        elif PLACED_TRIAL_ENV in os.environ:
            self._run_placed_trial(int(os.environ[PLACED_TRIAL_ENV]))
        else:
            self._loop()
        if self.in_pool:
            return None  # its pool's supervisor writes the results, once
        best = self._finish()
        if self.is_grid:
            self._check_cells_finished()
        return best

    @property
    def in_pool(self) -> bool:
        """Whether this process is a worker of a device pool (src.sweep.devices)."""
        return bool(self.settings.devices) and DEVICE_WORKER_ENV in os.environ

    def _setup_params(self) -> dict[str, Any]:
        """The sweep's settings as parent-run params."""
        s = self.settings
        return {
            "study_name": s.study_name,
            "n_trials": s.n_trials,
            "direction": ",".join(self.directions),
            "sampler": _describe_spec(
                s.sampler.name.value, {"seed": s.sampler.seed, **s.sampler.kwargs}
            ),
            "pruner": _describe_spec(self.pruner_spec["name"], self.pruner_spec),
            "search_space": self._describe_space(),
            "max_failure_rate": s.max_failure_rate,
        }

    def _describe_space(self) -> str:
        """The search space, one line per parameter, and the custom function if any."""
        custom = self.settings.custom_search_space
        return self.space.describe() + (f"\ncustom_search_space: {custom}" if custom else "")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise check-then-ask among workers sharing a journal file (no-op for RDB)."""
        path = journal_path(self.storage_url)
        if path is None:
            yield
            return
        with open(str(path) + ".clfsweep-lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _open_study(self) -> optuna.Study:
        """Create or load the study; register this worker; build its sampler."""
        s = self.settings
        pruner_spec = s.pruner.spec()
        if len(self.directions) > 1 and s.pruner.name != PrunerName.none:
            log.warning("pruning is off: Optuna prunes single-objective studies only")
            pruner_spec = {"name": PrunerName.none.value}
        self.pruner_spec = pruner_spec
        # Our own lines say what Optuna's INFO lines would (study created, trial finished).
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with _quiet():
            study = optuna.create_study(
                study_name=s.study_name,
                storage=self.storage,
                sampler=optuna.samplers.RandomSampler(),
                pruner=checked_pruner(pruner_spec),
                directions=[StudyDirection[d.upper()] for d in self.directions],
                load_if_exists=True,
            )
        existing = [d.name.lower() for d in study.directions]
        if existing != self.directions:
            raise UserError(
                f"study {s.study_name} exists with direction {', '.join(existing)}, "
                f"not {', '.join(self.directions)}: choose another hydra.sweeper.study_name"
            )
        if self.metric_names and study.metric_names != self.metric_names:
            with _quiet():  # experimental in Optuna; optuna-dashboard shows the names
                study.set_metric_names(self.metric_names)
        self.study_id = self.storage.get_study_id_from_name(s.study_name)
        attrs = self.storage.get_study_system_attrs(self.study_id)
        old_space = attrs.get(SEARCH_SPACE_ATTR)
        if old_space is not None and old_space != self._describe_space():
            log.warning(
                "study %s was started with another search space:\n%s", s.study_name, old_space
            )
        set_attr = self.storage.set_study_system_attr
        set_attr(self.study_id, SEARCH_SPACE_ATTR, self._describe_space())
        set_attr(self.study_id, PRUNER_ATTR, pruner_spec)
        index = sum(1 for k in attrs if k.startswith(WORKER_PREFIX))
        worker = self.worker.to_attr("none") | {"index": index}
        set_attr(self.study_id, WORKER_PREFIX + uuid.uuid4().hex[:12], worker)
        check_space_unchanged(study, self.space, s.study_name)
        study.sampler = build_sampler(s.sampler, self.space, index)
        if s.sampler.name == SamplerName.grid:
            self.n_target = min(self.n_target, grid_size(self.space))
        return study

    def _enqueue(self) -> None:
        """Queue the configured trials, then a grid's cells, that this study has not queued or
        run yet."""
        for i, entry in enumerate(self.settings.enqueue):
            params: dict[str, Any] = {}
            for key, value in entry.items():
                key = str(key)
                dist = self.space.distributions.get(key)
                if dist is None and self.extender is not None:
                    params[key] = value  # suggested by custom_search_space, which types it
                    continue
                if dist is None:
                    raise UserError(
                        f"hydra.sweeper.enqueue[{i}]: {key} is not a searched parameter "
                        f"(searched: {', '.join(self.space.distributions)})"
                    )
                params[key] = coerce(key, value, dist)
            with _quiet():
                self.study.enqueue_trial(params, skip_if_exists=True)
        if self.is_grid and not self.in_pool:
            # Optuna's GridSampler shuffles the cells; queued, they run in the order the
            # command lists them, as Hydra's basic sweeper runs a grid (and the plan of
            # `python -m src.estimate -m` shows). A cell already finished, running or queued is
            # not queued again; one whose trials all failed is, once per command (a re-run
            # retries it), by the command the user ran, not by the pool's processes.
            grid = grid_space(self.space)
            live = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
            taken = [
                t.params or t.system_attrs.get(OPTUNA_QUEUED_KEYS[0], {})
                for t in self._trials()
                if t.state in live
            ]
            for cell in itertools.product(*grid.values()):
                params = dict(zip(grid, cell, strict=True))
                if params not in taken:
                    with _quiet():
                        self.study.enqueue_trial(params)

    @property
    def is_grid(self) -> bool:
        """Whether the study is a grid: each cell queued once, the sampler never asked."""
        return self.settings.sampler.name == SamplerName.grid

    def _left_to_ask(self, trials: Sequence[FrozenTrial]) -> int:
        """How many more trials to ask now: up to n_trials finished or running, and for a grid
        no more than its queued cells (each cell once a run; a failed one waits for a re-run)."""
        busy = sum(t.state in FINISHED or t.state == TrialState.RUNNING for t in trials)
        left = self.n_target - busy
        if self.is_grid:
            left = min(left, sum(t.state == TrialState.WAITING for t in trials))
        return max(left, 0)

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        """Ask, launch, tell until the study is done, the time is up, or too many fail."""
        started = time.monotonic()
        s = self.settings
        while True:
            with self._lock():
                self._fail_stale()
                trials = self._trials()
                finished = sum(t.state in FINISHED for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                left = self._left_to_ask(trials)
                if not left:
                    log.info(
                        "study %s: %d finished, %d running of n_trials=%d: this worker is done",
                        s.study_name,
                        finished,
                        running,
                        self.n_target,
                    )
                    return
                if s.timeout is not None and time.monotonic() - started > s.timeout:
                    log.info("study %s: timeout of %s s reached", s.study_name, s.timeout)
                    return
                failed = sum(t.state == TrialState.FAIL for t in self._ran)
                if s.max_failure_rate >= 1 and failed >= self.n_target:  # never loop for ever
                    log.warning(
                        "study %s: %d trials failed in this run, as many as n_trials "
                        "(max_failure_rate=1.0 never stops the study): this worker stops; see "
                        "their fail_reason",
                        s.study_name,
                        failed,
                    )
                    return
                batch = [self._ask() for _ in range(min(s.n_jobs, left))]
            batch = self._drop_excess(batch)
            if batch:
                self._run(batch)
                self._check_failure_rate()

    def _run_pool(self) -> None:
        """One worker per device group (this command again), until the study is done."""
        s = self.settings
        with self._lock():
            self._fail_stale()  # a killed run's trials no longer count as running
            trials = self._trials()
        busy = sum(t.state in FINISHED or t.state == TrialState.RUNNING for t in trials)
        command = worker_command(sys.orig_argv, sys.executable, self.sweep_dir)
        assert self.config is not None
        cwd = Path(str(self.config.hydra.runtime.cwd))
        if s.gpus_per_trial is None:
            self._placing_since = time.monotonic()
            pool = PlacedPool(
                command,
                os.environ,
                cwd,
                s.devices,
                self._ask_placed,
                self._placed_ended,
                self._abandon,
            )
            self._stopped(pool.run())
            return
        groups = device_groups(s.devices, s.gpus_per_trial)[: max(self.n_target - busy, 0)]
        if not groups:
            log.info(
                "study %s: %d of n_trials=%d finished or running", s.study_name, busy, self.n_target
            )
        result = DevicePool(command, os.environ, cwd, self._trials_of).run(groups)
        self._stopped(result.stopped_by)
        finished = sum(t.state in FINISHED for t in self._trials())
        if result.errors and finished < self.n_target:
            ended = ", ".join(f"{name} (exit code {code})" for name, code in result.errors)
            raise UserError(
                f"study {s.study_name}: {finished} of n_trials={self.n_target} finished; the "
                f"workers on {ended} stopped with an error (their lines above carry that "
                "prefix). Fix the cause and re-run the same command to continue the study"
            )

    def _stopped(self, signum: int | None) -> None:
        """Stop as the signal that stopped the pool asks, if one did: the parent run KILLED, the
        one line, exit 128 + the signal (the command's boundary)."""
        if signum is None:
            return
        log.warning(
            "study %s: stopped by %s; re-run the same command to finish it (storage %s)",
            self.settings.study_name,
            signal.Signals(signum).name,
            redact(self.storage_url),
        )
        raise Interrupted(signum)

    # -- trials placed by size (hydra.sweeper.gpus_per_trial=null) --------------------------

    def _ask_placed(self) -> tuple[int, int] | None:
        """The next trial and the GPUs it needs; None once the study needs no more now."""
        s = self.settings
        if s.timeout is not None and time.monotonic() - self._placing_since > s.timeout:
            return None  # as a worker's loop: no new trial after the timeout
        with self._lock():
            self._fail_stale()
            if not self._left_to_ask(self._trials()):
                return None
            trial = self._ask()
        try:
            gpus = self._gpus_of(trial)
        except Exception as exc:  # its config does not compose, or fits no GPU count
            reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            self._fail(trial, reason)
            raise UserError(f"trial {trial.number}: {reason.splitlines()[0]}") from exc
        self._set_user_attr(trial, "gpus", gpus)
        log.info("trial %d needs %d GPU%s", trial.number, gpus, "s" * (gpus > 1))
        return trial.number, gpus

    def _gpus_of(self, trial: optuna.Trial) -> int:
        """The GPUs of a trial's job, from the memory estimate of its config."""
        from src.model.sharding import trial_gpus

        assert self.hydra_context is not None and self.config is not None
        overrides = self._job_overrides(trial)
        job = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        gpus = trial_gpus(job, self.settings.gpu_memory_gib)
        if gpus > len(self.settings.devices):
            raise UserError(
                f"trial {trial.number} ({' '.join(param_overrides(trial.params))}) needs {gpus} "
                f"GPUs by the memory estimate; hydra.sweeper.devices has "
                f"{len(self.settings.devices)} (python -m src.estimate -m ... shows the plan)"
            )
        return gpus

    def _placed_ended(self, number: int, returncode: int) -> None:
        """A trial's process ended: a trial it left RUNNING failed (re-queued if the process
        was killed); then the failure rate of this run's trials."""
        trial_id = self._trial_id(number)
        frozen = copy.deepcopy(self.storage.get_trial(trial_id))
        if frozen.state == TrialState.RUNNING:
            reason = f"its process ended (exit code {returncode}) before the trial did"
            self.storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, f"stale: {reason}")
            if self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                log.warning("trial %d marked FAILED: %s", number, reason)
                if returncode < 0:  # killed (kill -9, the OOM killer): worth another try
                    self._retry(frozen)
        self._ran.append(self.storage.get_trial(trial_id))
        self._check_failure_rate()

    def _abandon(self, numbers: list[int]) -> None:
        """Trials asked but never started (the pool stopped): failed, and back in the queue."""
        for number in numbers:
            frozen = copy.deepcopy(self.storage.get_trial(self._trial_id(number)))
            trial = optuna.Trial(self.study, self._trial_id(number))
            self._fail(trial, "interrupted: the pool stopped before the trial started")
            self._requeue(frozen)

    def _run_placed_trial(self, number: int) -> None:
        """In a placed trial's process: run the study's trial `number` (asked by the pool)."""
        trial_id = self._trial_id(number)
        mode = Heartbeat(self.storage, [], self.settings.heartbeat_interval).mode
        # Its liveness is this process's from now on: a kill -9 shows as a dead pid.
        self.storage.set_trial_system_attr(trial_id, WORKER_ATTR, self.worker.to_attr(mode))
        trial = optuna.Trial(self.study, trial_id)
        self._set_user_attr(trial, "devices", os.environ[DEVICE_WORKER_ENV])
        self._run([trial])

    def _trials_of(self, pid: int) -> tuple[int, int]:
        """How many trials this host's worker process `pid` asked, and finished."""
        mine = [
            t
            for t in self.study.get_trials(deepcopy=False)
            if isinstance(info := t.system_attrs.get(WORKER_ATTR), dict)
            and (info.get("host"), info.get("pid")) == (self.worker.host, pid)
        ]
        return len(mine), sum(t.state in FINISHED for t in mine)

    def _trials(self) -> list[FrozenTrial]:
        """The study's trials, without those this sweeper discarded as excess."""
        return [
            t for t in self.study.get_trials(deepcopy=False) if not t.system_attrs.get(EXCESS_ATTR)
        ]

    def _ask(self) -> optuna.Trial:
        """A new (or queued) trial with every parameter sampled, marked as this worker's."""
        with _quiet():
            trial = self.study.ask(fixed_distributions=self.space.distributions)
        mode = Heartbeat(self.storage, [], self.settings.heartbeat_interval).mode
        worker = self.worker.to_attr(mode)
        self.storage.set_trial_system_attr(self._trial_id(trial.number), WORKER_ATTR, worker)
        if self.in_pool:  # the GPUs it runs on, as the job's CUDA_VISIBLE_DEVICES names them
            self._set_user_attr(trial, DEVICES_ATTR, os.environ[DEVICE_WORKER_ENV])
        fixed = self.space.fixed_values
        for key, value in fixed.items():  # as hydra-optuna-sweeper: shown, and not to suggest
            self._set_user_attr(trial, key, value)
        if self.extender is not None:
            assert self.config is not None and self.settings.custom_search_space is not None
            try:
                extend_trial(self.extender, self.config, trial, fixed)
            except UserError as exc:
                self._fail(trial, str(exc))
                raise UserError(
                    f"hydra.sweeper.custom_search_space={self.settings.custom_search_space}: {exc}"
                ) from exc
        return trial

    def _trial_id(self, number: int) -> int:
        """The storage's id of the study's trial `number` (what a job re-opens its trial by)."""
        if number not in self._trial_ids:
            self._trial_ids[number] = self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, number
            )
        return self._trial_ids[number]

    def _drop_excess(self, batch: list[optuna.Trial]) -> list[optuna.Trial]:
        """Give back trials asked in a race with other workers beyond n_trials (RDB only)."""
        if journal_path(self.storage_url) is not None:
            return batch  # the file lock already serialised check-then-ask
        keep: list[optuna.Trial] = []
        trials = self._trials()
        for trial in batch:
            ahead = sum(
                t.number <= trial.number and (t.state in FINISHED or t.state == TrialState.RUNNING)
                for t in trials
            )
            if ahead <= self.n_target:
                keep.append(trial)
                continue
            trial_id = self._trial_id(trial.number)
            frozen = copy.deepcopy(self.storage.get_trial(trial_id))
            self.storage.set_trial_system_attr(trial_id, EXCESS_ATTR, True)
            self._fail(trial, "not run: other workers already cover n_trials")
            if any(key in frozen.system_attrs for key in OPTUNA_QUEUED_KEYS):
                self._requeue(frozen)
        return keep

    def _requeue(self, frozen: FrozenTrial) -> None:
        """Put a trial's configuration back in the queue (an excess or an interrupted trial)."""
        system_attrs = {
            k: v for k, v in frozen.system_attrs.items() if not k.startswith(SWEEPER_ATTR_PREFIX)
        }
        user_attrs = {k: v for k, v in frozen.user_attrs.items() if k != FAIL_REASON_ATTR}
        self.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=frozen.params,
                distributions=frozen.distributions,
                user_attrs=user_attrs,
                system_attrs=system_attrs,
            )
        )

    def _run(self, batch: list[optuna.Trial]) -> None:
        """Launch the batch (consecutive trial numbers per launcher call) and tell outcomes."""
        assert self.launcher is not None
        pending = {t.number: t for t in batch}
        ids = [self._trial_id(t.number) for t in batch]
        with Heartbeat(self.storage, ids, self.settings.heartbeat_interval):
            try:
                for group in _consecutive(sorted(batch, key=lambda t: t.number)):
                    jobs = [self._job_overrides(t) for t in group]
                    for t in group:
                        log.info("trial %d: %s", t.number, " ".join(param_overrides(t.params)))
                    try:
                        returns = launch(self.launcher, jobs, group[0].number)
                    except Exception as exc:
                        log.error("launching trials %s failed: %s", [t.number for t in group], exc)
                        returns = [exc] * len(group)  # type: ignore[list-item]
                    for t, ret in zip(group, returns, strict=True):
                        self._tell(t, ret)
                        pending.pop(t.number, None)
            except BaseException as exc:  # Ctrl-C, SystemExit: the trials must not stay RUNNING
                retry = isinstance(exc, KeyboardInterrupt)
                for t in pending.values():
                    frozen = copy.deepcopy(self.storage.get_trial(self._trial_id(t.number)))
                    self._fail(t, f"interrupted: {_reason(exc)}")
                    if retry and frozen.state == TrialState.RUNNING:
                        # Stopped, not broken: back in the queue however often (max_retry
                        # limits the re-runs of trials whose worker died).
                        self._requeue(frozen)
                raise

    def _job_overrides(self, trial: optuna.Trial) -> list[str]:
        """Fixed overrides, the trial's parameters, and where the job finds its trial."""
        storage = quote(self.storage_url)
        if redact(self.storage_url) != self.storage_url:
            # A password stays out of the overrides, which launchers print and jobs keep in
            # .hydra/overrides.yaml: jobs (here, or submitted from here) read the environment.
            os.environ[TRIAL_STORAGE_ENV] = self.storage_url
            storage = "${oc.env:" + TRIAL_STORAGE_ENV + "}"
        return [
            *self.space.fixed,
            *param_overrides(trial.params),
            f"++trial.storage={storage}",
            f"++trial.study_name={quote(self.settings.study_name)}",
            f"++trial.trial_id={self._trial_id(trial.number)}",
            f"hydra.sweep.dir={quote(str(self.sweep_dir))}",
        ]

    def _tell(self, trial: optuna.Trial, ret: JobReturn | BaseException) -> None:
        """Map a job's outcome to the trial: value -> COMPLETE, TrialPruned -> PRUNED, else FAIL."""
        if isinstance(ret, BaseException):
            self._fail(trial, _reason(ret))
            return
        # The trial's own folder (working_dir is the same for all when hydra.job.chdir=false).
        output_dir = ret.hydra_cfg and OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")
        if output_dir or ret.working_dir:
            self._set_user_attr(trial, OUTPUT_DIR_ATTR, str(output_dir or ret.working_dir))
        result = job_result(ret)
        if ret.status == JobStatus.COMPLETED:
            values = objective_values(result, len(self.directions))
            if values is None:
                wanted = "a finite number"
                if len(self.directions) > 1:
                    wanted = f"a list of {len(self.directions)} finite numbers, one per direction"
                self._fail(trial, f"the job returned {result!r}, not {wanted}")
                return
            frozen = self.study.tell(trial, values, skip_if_finished=True)
        elif ret.status == JobStatus.FAILED and _is_pruned(result):
            frozen = self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        elif ret.status == JobStatus.FAILED:
            exc = result
            log.error(
                "trial %d failed: %s",
                trial.number,
                _reason(exc),
                exc_info=(type(exc), exc, exc.__traceback__)
                if isinstance(exc, BaseException)
                else None,
            )
            self._fail(trial, _reason(exc))
            return
        else:
            self._fail(trial, f"job status {ret.status.name}")
            return
        self._after(frozen)

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        """Record why, then mark the trial FAILED."""
        self._set_user_attr(trial, FAIL_REASON_ATTR, reason[:REASON_MAX])
        frozen = self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        self._after(frozen)

    def _set_user_attr(self, trial: optuna.Trial, key: str, value: Any) -> None:
        """Set a user attr unless the trial already finished (e.g. failed as stale)."""
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            self.storage.set_trial_user_attr(self._trial_id(trial.number), key, value)

    def _after(self, frozen: FrozenTrial) -> None:
        """Log a told trial and keep the parent MLflow run current."""
        if frozen.system_attrs.get(EXCESS_ATTR):
            return
        self._ran.append(frozen)
        values = frozen.values
        value = "" if values is None else f" {describe_values(values, self.metric_names)}"
        reason = frozen.user_attrs.get(FAIL_REASON_ATTR, "")
        log.info(
            "trial %d %s%s%s",
            frozen.number,
            frozen.state.name,
            value,
            f" ({reason})" if reason else "",
        )
        if self._parent is not None:
            self._parent.log_trial(frozen, self.study, self.metric_names)
        if self.registry is not None and frozen.state == TrialState.COMPLETE:
            self.registry.promote(frozen, self._trial_id(frozen.number))

    def _check_failure_rate(self) -> None:
        """Stop the sweep (one clear line) once too many of this run's trials failed."""
        s = self.settings
        failed = [t for t in self._ran if t.state == TrialState.FAIL]
        judged = sum(t.state in FINISHED for t in self._ran) + len(failed)
        if judged < s.min_trials_for_failure_rate or len(failed) / judged <= s.max_failure_rate:
            return
        last = failed[-1]
        self._finish()
        raise UserError(
            f"study {s.study_name}: {len(failed)} of {judged} trials failed in this run "
            f"(max_failure_rate={s.max_failure_rate}); last: trial {last.number}: "
            f"{last.user_attrs.get(FAIL_REASON_ATTR, '?')}. Fix the cause and re-run the same "
            f"command to continue the study (storage {redact(self.storage_url)})"
        )

    def _check_cells_finished(self) -> None:
        """A grid whose cells did not all finish (failed, or not run before a timeout) ends with
        one line naming the first, not as a success with rows missing from its table (a cell
        another worker is running is that worker's to report)."""
        grid = grid_space(self.space)
        done = [
            t.params for t in self._trials() if t.state in FINISHED or t.state == TrialState.RUNNING
        ]
        cells = [dict(zip(grid, c, strict=True)) for c in itertools.product(*grid.values())]
        missing = [cell for cell in cells if cell not in done]
        if not missing:
            return
        first = missing[0]
        failed = [t for t in self._trials() if t.state == TrialState.FAIL and t.params == first]
        reason = failed[-1].user_attrs.get(FAIL_REASON_ATTR, "?") if failed else "not run"
        raise UserError(
            f"grid: {len(missing)} of {len(cells)} cells did not finish, e.g. "
            f"{' '.join(param_overrides(first))} ({reason}); fix the cause and re-run the "
            f"same command with hydra.sweep.dir={quote(str(self.sweep_dir))} to run them (the "
            "finished cells are kept)"
        )

    def _fail_stale(self) -> None:
        """Fail RUNNING trials whose worker is gone and re-queue their configuration once."""
        storage = self.storage
        if isinstance(storage, RDBStorage) and storage.get_heartbeat_interval():
            before = [t.number for t in self.study.get_trials(states=(TrialState.RUNNING,))]
            with _quiet():
                optuna.storages.fail_stale_trials(self.study)
            for trial_id in map(self._trial_id, before):
                frozen = storage.get_trial(trial_id)
                if frozen.state == TrialState.FAIL and FAIL_REASON_ATTR not in frozen.user_attrs:
                    with contextlib.suppress(Exception):
                        storage.set_trial_user_attr(
                            trial_id, FAIL_REASON_ATTR, "stale: no Optuna heartbeat"
                        )
        now = time.time()
        for frozen in self.study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
            reason = stale_reason(frozen, self.worker, self.grace_period, now)
            if reason is None:
                continue
            trial_id = self._trial_id(frozen.number)
            try:
                storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, f"stale: {reason}")
                if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker got there first
            log.warning("trial %d marked FAILED: %s", frozen.number, reason)
            self._retry(frozen)  # the snapshot taken while it ran

    def _retry(self, frozen: FrozenTrial) -> None:
        """Re-queue a trial whose worker died, without our bookkeeping attrs (`frozen` is a
        copy: journal storages hand out their own objects)."""
        frozen.system_attrs = {
            k: v for k, v in frozen.system_attrs.items() if not k.startswith(SWEEPER_ATTR_PREFIX)
        }
        _retry_callback(self.settings.max_retry)(self.study, frozen)

    # -- the end --------------------------------------------------------------------------

    def _finish(self) -> dict[str, Any] | None:
        """best.yaml, plots, parent-run artifacts, a summary line; returns the best trial."""
        s = self.settings
        counts = results.count_states(self._trials())
        best = best_trials(self.study)
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        if not best:
            log.info("study %s: %s; no completed trial yet", s.study_name, summary or "no trials")
            return None
        best_path = self.study_dir / "best.yaml"
        champion = self.registry.champion() if self.registry is not None else None
        champion_uri = self.registry.uri if self.registry is not None and champion else None
        results.write_best(
            best_path,
            self.study,
            self.metric_names,
            self.space.fixed,
            redact(self.storage_url),
            champion_uri,
        )
        what = "best trial" if len(best) == 1 else f"the Pareto front of {len(best)} trials"
        log.info("study %s: %s; %s (%s):", s.study_name, summary, what, best_path)
        for trial in best:
            log.info(
                "  trial %d %s: %s",
                trial.number,
                describe_values(trial.values, self.metric_names),
                " ".join(param_overrides(trial.params)),
            )
        written: list[Path] = []
        if s.plots:
            written = results.write_plots(self.study, self.study_dir / "plots", self.metric_names)
        if self._parent is not None:
            self._parent.log_artifacts([best_path], "optuna")
            self._parent.log_artifacts(written, "optuna/plots")
            self._parent.set_tags({OPTUNA_BEST_TRIAL_TAG: ",".join(str(t.number) for t in best)})
            if champion is not None:
                self._parent.set_tags(
                    {CHAMPION_TAG: f"{champion_uri} (version {champion.version})"}
                )
        if len(self.directions) > 1:
            return {"pareto_front": [{"trial": t.number, "values": t.values} for t in best]}
        (top,) = best
        return {"best_value": top.value, "best_params": dict(top.params), "trial": top.number}


@dataclass
class SweepPlan:
    """What a sweep will search and where it writes, worked out before anything is written."""

    space: SearchSpace
    extender: SpaceExtender | None
    metric_names: list[str] | None
    study_dir: Path
    storage_url: str
    sweep_dir: Path


def study_settings(
    sweeper: Mapping[str, Any], arguments: Sequence[str], sweep_dir: str, config_loader: Any
) -> SweeperSettings:
    """The checked settings of the study a multirun runs (`runs_a_study`): the clfsweep Optuna
    sweeper's own, or the study of a grid on devices (`GridSettings.study`)."""
    given = {str(k): v for k, v in sweeper.items() if k != "_target_"}
    if not str(sweeper.get("_target_", "")).endswith(GRID_SWEEPER):
        return SweeperSettings.from_kwargs(given)
    grid = GridSettings.from_kwargs(given)
    space = parse_search_space(grid.params, arguments, config_loader)
    study = grid.study(grid_size(space), sweep_dir)
    study.check()
    return study


def check_sweep(
    s: SweeperSettings, config: DictConfig, arguments: Sequence[str], config_loader: Any
) -> SweepPlan:
    """Everything a sweep builds from its settings, built once without writing anything: the
    search space, the objectives, the sampler and pruner with their kwargs (a library's refusal
    is one line naming the setting), and storage places that can be created. The multirun's
    first callback runs it before the parent MLflow run exists (src.cli.preflight)."""
    cwd = Path(str(config.hydra.runtime.cwd))
    space = parse_search_space(s.params, arguments, config_loader)
    extender = load_extender(s.custom_search_space)
    if not space.distributions and extender is None and s.sampler.name != SamplerName.grid:
        raise UserError(
            "clfsweep_optuna: nothing to search: set hydra.sweeper.params or give sweep "
            "overrides (a,b or interval(...)) on the command line"
        )
    metric_names = objective_names(config, len(s.directions))
    study_dir = Path(s.study_dir or cwd / "sweeps" / s.study_name)
    if not study_dir.is_absolute():
        study_dir = cwd / study_dir
    storage_url = normalize_storage_url(s.storage or str(study_dir / "journal.log"), cwd)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    if not sweep_dir.is_absolute():
        sweep_dir = cwd / sweep_dir
    build_sampler(s.sampler, space, 0)
    checked_pruner(s.pruner.spec())
    places = {"hydra.sweeper.study_dir": study_dir, "hydra.sweep.dir": sweep_dir}
    usable = {key: writable_place(place) for key, place in places.items()}
    storage_file = journal_path(storage_url)
    if storage_file is None and storage_url.startswith("sqlite:///"):
        storage_file = Path(storage_url.removeprefix("sqlite:///"))
    if storage_file is not None and storage_url != "sqlite:///:memory:":
        places["hydra.sweeper.storage"] = storage_file  # a file: written where it is
        usable["hydra.sweeper.storage"] = (
            os.access(storage_file, os.W_OK)
            if storage_file.is_file()
            else writable_place(storage_file)
        )
    for key, ok in usable.items():
        if not ok:
            place = places[key]
            raise UserError(
                f"{key}={place} cannot be created or written (a file in the way, or a folder "
                "this user may not write): choose a writable place"
            )
    return SweepPlan(space, extender, metric_names, study_dir, storage_url, sweep_dir)


SAMPLERS: dict[SamplerName, Callable[..., BaseSampler]] = {
    SamplerName.tpe: optuna.samplers.TPESampler,
    SamplerName.nsgaii: optuna.samplers.NSGAIISampler,
    SamplerName.random: optuna.samplers.RandomSampler,
    SamplerName.cmaes: optuna.samplers.CmaEsSampler,
    SamplerName.gp: optuna.samplers.GPSampler,
    SamplerName.qmc: optuna.samplers.QMCSampler,
}
# Samplers drawing from a random stream: each worker (and each re-run) continues with its own
# seed, as the same seed twice would propose the same points again.
STREAM_SAMPLERS = (SamplerName.tpe, SamplerName.nsgaii, SamplerName.random, SamplerName.cmaes)


def build_sampler(conf: SamplerConf, space: SearchSpace, worker_index: int) -> BaseSampler:
    """The configured Optuna sampler, built by Optuna itself: settings it refuses (an unknown
    or invalid kwarg) are one line naming hydra.sweeper.sampler."""
    seed = conf.seed
    if seed is not None and conf.name in (*STREAM_SAMPLERS, SamplerName.gp):
        seed = int(seed) + worker_index
    kwargs = dict(conf.kwargs)
    if conf.name == SamplerName.grid and kwargs:  # a grid samples nothing: tuning is moot
        log.warning(
            "hydra.sweeper.sampler.name=grid: its kwargs %s do not apply (a grid tries every "
            "combination)",
            sorted(kwargs),
        )
        kwargs = {}
    if conf.name == SamplerName.cmaes and importlib.util.find_spec("cmaes") is None:
        raise UserError("sampler cmaes needs the cmaes package: pip install cmaes")
    try:
        with _quiet():
            if conf.name == SamplerName.grid:
                return _GridSampler(grid_space(space), seed=seed, **kwargs)
            return SAMPLERS[conf.name](seed=seed, **kwargs)
    except (TypeError, ValueError) as exc:
        shown = _describe_spec(conf.name.value, {"seed": conf.seed, **conf.kwargs})
        raise UserError(
            f"hydra.sweeper.sampler: Optuna refuses {shown} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())}); fix hydra.sweeper.sampler.kwargs or the seed"
        ) from None


def checked_pruner(spec: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The configured pruner, built by Optuna itself: settings it refuses (a percentile out of
    range, an unknown kwarg) are one line naming hydra.sweeper.pruner."""
    moot = sorted(k for k, v in spec.items() if k != "name" and v not in (None, {}))
    if str(spec.get("name")).lower() in ("none", "nop") and moot:
        log.warning(
            "hydra.sweeper.pruner.name=none: its settings %s do not apply (no trial is pruned)",
            moot,
        )
    try:
        return build_pruner(spec)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"hydra.sweeper.pruner: Optuna refuses {_describe_spec(spec['name'], spec)} "
            f"({type(exc).__name__}: {' '.join(str(exc).split())}); fix the hydra.sweeper.pruner "
            "settings"
        ) from None


def check_space_unchanged(study: optuna.Study, space: SearchSpace, name: str) -> None:
    """A resumed study whose trials sampled a parameter from a distribution Optuna cannot mix
    with this command's (a choice now an interval, say) is refused before any trial starts."""
    held: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        held.update(trial.distributions)
    for key, new in space.distributions.items():
        old = held.get(key)
        if old is None:
            continue
        try:
            check_distribution_compatibility(old, new)
        except ValueError:
            raise UserError(
                f"study {name} holds trials that sampled {key} as {describe_distribution(old)}; "
                f"this command searches it as {describe_distribution(new)}, which Optuna cannot "
                "mix in one study: give a new hydra.sweeper.study_name for the new space, or "
                "search the study's own space again"
            ) from None


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell: ``Study.stop()`` only works inside ``optimize``."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        """The sweep loop caps n_trials at the grid size instead of stopping the study."""


def _retry_callback(max_retry: int) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Optuna's re-queue-with-the-same-params callback, at most `max_retry` times per config."""
    with _quiet():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Optuna's experimental-API and heartbeat-with-ask warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")
        warnings.filterwarnings("ignore", message=".*is out of range.*")
        yield


def _consecutive(trials: Sequence[optuna.Trial]) -> Iterator[list[optuna.Trial]]:
    """Split trials into runs of consecutive numbers (one launcher call each)."""
    group: list[optuna.Trial] = []
    for t in trials:
        if group and t.number != group[-1].number + 1:
            yield group
            group = []
        group.append(t)
    if group:
        yield group


def _is_pruned(exc: Any) -> bool:
    """Whether a job's exception is Optuna's TrialPruned (also when re-created by a launcher)."""
    return isinstance(exc, optuna.TrialPruned) or type(exc).__name__ == "TrialPruned"


def _reason(exc: Any) -> str:
    """``ExceptionType: message`` on one line."""
    if isinstance(exc, BaseException):
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return " ".join(str(exc).split())


def _describe_spec(name: str, settings: Mapping[str, Any]) -> str:
    """``tpe(seed=0, n_startup_trials=5)`` from a sampler's or pruner's name and settings."""
    args = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "name" and v is not None)
    return f"{name}({args})"
