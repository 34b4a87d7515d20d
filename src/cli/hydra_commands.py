"""What every command does around its work: the one error boundary (a user's mistake is one
`error:` line on stderr and exit status 2, a multirun's parent run ends FAILED with it), and, for
the Hydra commands (`src.train`, `src.pretrain`, `src.noise`, `src.estimate`), what Hydra's own
reporting turns into a traceback or a lexer diagram: overrides it cannot read, a composed config
with keys no code reads or interpolations that do not resolve, SIGTERM and Ctrl-C, an output
folder it cannot create, secrets in what it prints.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from src.cli.boundary import report_user_error
from src.config.errors import Interrupted, UserError, stop_on_signals
from src.config.private_api import caching_repository, hydra_args_parser, hydra_config_loader
from src.tracking.console import quiet_libraries
from src.tracking.names import DEVICE_WORKER_ENV, PARENT_ENV
from src.tracking.uris import redact

R = TypeVar("R")
HYDRA_GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def command_help(name: str) -> str:
    """The `--help` header of `python -m src.<name>`: that command's module docstring."""
    import importlib

    return str(importlib.import_module(f"src.{name}").__doc__ or "").strip()


# conf/hydra/default.yaml's help header names it; Hydra resolves it only when printing --help.
if not OmegaConf.has_resolver("command_help"):
    OmegaConf.register_new_resolver("command_help", command_help)


# -- the error boundary ----------------------------------------------------------------------


@contextmanager
def job_boundary(cfg: DictConfig) -> Iterator[None]:
    """The error boundary of a Hydra command's job: its composed config is checked first
    (every key one the schema knows, every interpolation resolvable); a UserError is one line
    and exit status 2, except in a clfsweep Optuna sweep, where it fails the trial instead."""
    try:
        check_composed(cfg)
        yield
    except UserError as exc:
        if fails_the_trial():
            print(f"error: {exc}", file=sys.stderr)
            raise
        raise SystemExit(report_user_error(exc)) from None


def fails_the_trial() -> bool:
    """Whether this job is a trial of a study (the clfsweep Optuna sweeper's, a grid's on
    devices), whose loop fails the trial with a job's error and goes on; a run or a plain grid
    stops at the first user error."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from src.sweep.settings import runs_a_study

    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and runs_a_study(hydra_cfg.sweeper)


def check_composed(cfg: DictConfig) -> None:
    """The composed config as every command reads it: its keys are the schema's, and every
    interpolation and resolver in it resolves."""
    check_keys(cfg)
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        raise UserError(
            f"{exc.full_key} has no value (a deleted group, or ??? left in a preset): give it "
            f"one, e.g. {exc.full_key}=..."
        ) from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "the config"
        raise UserError(
            f"{key} cannot be resolved ({type(exc).__name__}: {omegaconf_reason(exc)}): fix the "
            "interpolation or resolver (${...}) in the override or the preset, or give a value"
        ) from None


def check_keys(cfg: DictConfig) -> None:
    """No key the schema lacks (a `+` override no code reads would be logged as applied while
    changing nothing), and none of its keys deleted."""
    unknown, deleted = schema_mismatches(cfg)
    if unknown:
        key, known = unknown[0]
        raise UserError(
            f"{key} is not a setting of this command: no code reads it, so it would change "
            f"nothing while being logged as applied; remove it (a `+{key}=...` override?) or "
            f"use one of the settings there: {', '.join(known)}"
        )
    if deleted:
        raise UserError(
            f"{deleted[0]} was deleted (a `~{deleted[0]}` override?), but every setting needs a "
            f"value: give it one ({deleted[0]}=...) instead, or null where it may be unset"
        )


def check_typed_texts(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """A value typed for a text setting that Hydra reads as a number or a boolean, and that the
    setting then keeps as other text (`data.exclude_ids=[1e3,true]` held "1000.0" and "True"),
    is refused: the run would silently use something else than what was typed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_delete():
            continue
        key = override.get_key_element().lstrip("+~")
        # An interpolation that does not resolve is the job boundary's to report (one line).
        held = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        value = override.value()
        if isinstance(held, DictConfig) and not isinstance(value, dict):
            continue  # a config group's option
        plain = OmegaConf.to_container(held) if OmegaConf.is_config(held) else held
        line = str(override.input_line)
        typed = line.split("=", 1)[-1]
        if override.is_sweep_override():  # `cfg` is one job's: the value it holds, if listed
            choices = getattr(value, "list", None)  # a,b or choice(a,b); not range or interval
            listed = [c for c in choices or () if isinstance(plain, str) and plain == str(c)]
            pairs = [(c, plain) for c in listed]
        else:
            pairs = list(typed_pairs(value, plain))
        for given, kept in pairs:
            as_typed = re.search(rf"(?<![\w.+-]){re.escape(str(kept))}(?![\w.])", typed)
            if isinstance(kept, str) and not isinstance(given, str) and not as_typed:
                kind = {bool: "boolean", int: "integer", float: "number"}.get(type(given), "value")
                raise UserError(
                    f"{line}: Hydra reads {given!r} as a {kind}, which {key} "
                    f"keeps as the text {kept!r}, not what was typed: quote the value for Hydra "
                    f"inside the shell's quotes, e.g. \"{key}='...'\" (in a list: ['...','...'])"
                )


def typed_pairs(given: Any, kept: Any) -> Iterator[tuple[Any, Any]]:
    """(what Hydra parsed, what the config holds) for each scalar of an override's value."""
    if isinstance(given, list) and isinstance(kept, list):
        for pair in zip(given, kept, strict=False):
            yield from typed_pairs(*pair)
    elif isinstance(given, dict) and isinstance(kept, dict):
        for name in given.keys() & kept.keys():
            yield from typed_pairs(given[name], kept[name])
    else:
        yield given, kept


def omegaconf_reason(exc: Exception) -> str:
    """An OmegaConf error's own words on one line, without its `full_key` / type details."""
    text = " ".join(str(exc).split())
    return re.split(r"\s+(?:full_key|reference_type|object_type)[:=]", text)[0]


def schema_mismatches(
    node: DictConfig | ListConfig, path: str = ""
) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Keys of `node` (and below) that its schema's dataclass lacks, with the ones it has, and
    the dataclass fields deleted from it. Open mappings (dict fields such as
    data.label_descriptions) take any key; Hydra's own `hydra` node is not the app's."""
    unknown: list[tuple[str, list[str]]] = []
    deleted: list[str] = []
    children: list[tuple[str, Any]]
    if isinstance(node, ListConfig):
        children = [(str(i), i) for i in range(len(node))]
    else:
        kind = OmegaConf.get_type(node)
        fields = (
            [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else None
        )
        keys = [str(k) for k in node if not (path == "" and k == "hydra")]
        if fields is not None:
            unknown += [(path + k, fields) for k in keys if k not in fields]
            deleted += [path + f for f in fields if f not in keys]
        children = [(k, k) for k in keys]
    for name, key in children:
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            continue
        value = node[key]
        if isinstance(value, DictConfig | ListConfig):
            below = schema_mismatches(value, f"{path}{name}.")
            unknown, deleted = unknown + below[0], deleted + below[1]
    return unknown, deleted


# -- Hydra commands ----------------------------------------------------------------------------


def hydra_command(main: Callable[[], R]) -> Callable[[], R]:
    """Wrap a `@hydra.main` entry point: one line for unreadable overrides and for a stop by a
    signal (runs in progress end KILLED), and no password on the console."""

    @functools.wraps(main)
    def command() -> R:
        quiet_libraries()  # before any library loads: `src.estimate` builds tiny models too
        with redacted_console():
            try:
                check_override_syntax(sys.argv[1:])
            except UserError as exc:
                raise SystemExit(report_user_error(exc)) from None
            with stop_on_signals(), one_repository_for_help(sys.argv[1:]):
                try:
                    return main()
                except Interrupted as exc:
                    exit_stopped(exc)
                except SystemExit as exc:
                    if exc.code:  # Hydra's report of an error (a job's traceback, say)
                        fail_open_parent(f"the multirun stopped with exit status {exc.code}")
                    raise

    return command


def fail_open_parent(reason: str) -> None:
    """A multirun that stopped on an error no boundary caught (a bug's traceback): its parent
    run, if still RUNNING, ends FAILED with the reason, never left RUNNING."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or DEVICE_WORKER_ENV in os.environ:  # a pool's supervisor decides for it
        return
    from src.tracking.record import end_parent_run

    end_parent_run(f"{reason}; the console output above says why", only_running=True)


@contextmanager
def one_repository_for_help(arguments: Sequence[str]) -> Iterator[None]:
    """During `--help` / `--hydra-help`, list every group's options from one copy of Hydra's
    config repository. Hydra's help deep-copies the whole repository (every registered schema)
    for each of its ~110 listings, 1.5 s of our `--help`; within one help they cannot differ.
    Uses a private method of hydra-core 1.3 (capped <1.4); without it, Hydra's own path runs."""
    loader_class = hydra_config_loader()
    original = loader_class.get_group_options
    if not {"--help", "-h", "--hydra-help"} & set(arguments):
        yield
        return
    repositories: dict[tuple[Any, ...], Any] = {}

    def get_group_options(
        self: Any,
        group_name: str,
        results_filter: Any = original.__defaults__[0],
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        key = (id(self), config_name, tuple(overrides or ()))
        if key not in repositories:
            repositories[key] = caching_repository(self, config_name, list(overrides or ()))
        if repositories[key] is None:  # this Hydra lacks the private method: its own path
            return list(original(self, group_name, results_filter, config_name, overrides))
        return list(repositories[key].get_group_options(group_name, results_filter))

    loader_class.get_group_options = get_group_options
    try:
        yield
    finally:
        loader_class.get_group_options = original


def exit_stopped(exc: KeyboardInterrupt, study: bool = False) -> NoReturn:
    """Exit with the line for a stop by a signal and the shell's code for it, 128 + the signal.
    A KeyboardInterrupt that is not ours (an app without `stop_on_signals`) is Ctrl-C."""
    stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
    print(f"error: {stopped(stop, study)}", file=sys.stderr)
    raise SystemExit(128 + stop.signum) from None


def stopped(exc: Interrupted, study: bool = False) -> str:
    """The line for a stop by a signal; a multirun's parent run ends KILLED with it too, except
    in a device pool's worker (its supervisor ends it). `study`: an Optuna study was stopped,
    which the same command continues."""
    ended = [f"MLflow run {', '.join(exc.runs)}"] if exc.runs else []
    if os.environ.get(PARENT_ENV) and DEVICE_WORKER_ENV not in os.environ:
        from src.tracking.record import end_parent_run

        end_parent_run(str(exc), killed=True)
        ended.append("the multirun's parent run")
    said = [" and ".join(ended) + " is marked KILLED"] if ended else []
    if exc.unmarked:  # the store refused (locked, full): their warnings above say why
        said.append(f"MLflow run {', '.join(exc.unmarked)} could not be marked KILLED")
    line = f"stopped by {exc.signal}: {'; '.join(said) or 'no MLflow run had started'}"
    if study:
        line += "; run the same command again to continue an Optuna study"
    return line


# -- overrides -------------------------------------------------------------------------------


def check_override_syntax(args: Sequence[str]) -> None:
    """Overrides Hydra's lexer refuses (unquoted Chinese text, a value the shell split at its
    spaces): one line with the quoted form that works."""
    if "--version" in args:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parsed = hydra_args_parser().parse_args(list(args))
    overrides: list[str] = parsed.overrides or []
    parser = OverridesParser.create()
    for i, override in enumerate(overrides):
        try:
            parser.parse_override(override)
        except HydraException as exc:  # the lexer's or parser's own words, without its diagram
            raise UserError(unreadable(overrides, i, str(exc), parsed.multirun)) from None


def unreadable(overrides: list[str], i: int, hydra_message: str, multirun: bool) -> str:
    """Why `overrides[i]` cannot be read, and the quoted form to type instead."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    start = i
    while start > 0 and "=" not in overrides[start]:  # a word the shell split off a value
        start -= 1
    end = i + 1
    while end < len(overrides) and "=" not in overrides[end]:
        end += 1
    typed = " ".join(overrides[start:end])
    reason = " ".join(hydra_message.split("\n")[0].split())
    if "=" in typed:
        key, value = typed.split("=", 1)
        fixed = f"{key}={hydra_quoted(value, multirun)}"
        try:
            OverridesParser.create().parse_override(fixed)
        except HydraException:
            pass
        else:
            return (
                f"Hydra cannot read the override {typed!r} ({reason}): values with spaces,"
                f" Chinese or other non-ASCII text, or most punctuation need quotes; type it as"
                f" {shlex.quote(fixed)}"
            )
    return (
        f"Hydra cannot read the override {typed!r} ({reason}): quote values with spaces or"
        " non-ASCII text; Hydra has no quotes for keys, so put such keys (e.g. Chinese labels of"
        f" data.label_descriptions) in a YAML file under conf/ (conf/local/default.yaml); see"
        f" {HYDRA_GRAMMAR}"
    )


def hydra_quoted(value: str, multirun: bool) -> str:
    """`value` with its text quoted for Hydra's grammar: the whole of a plain value, each
    element of a list, a sweep function's arguments or a multirun's a,b,c."""
    structured = value.startswith(("[", "{")) or re.match(r"\w+\(", value) is not None
    if not structured and not (multirun and "," in value):
        return quoted(value)
    return "".join(
        part if not part.strip() or STRUCTURE.fullmatch(part) else quoted(part.strip())
        for part in STRUCTURE.split(value)
    )


# Quoted strings and the punctuation of lists, dicts, calls and sweeps: left as typed.
STRUCTURE = re.compile(r"""("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[\[\]{}(),]|\w+\()""")


def quoted(text: str) -> str:
    """A double-quoted string of Hydra's grammar."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the console -----------------------------------------------------------------------------


class RedactingStream:
    """A console stream that hides passwords in URIs of everything written through it (Hydra
    echoes its overrides, tracebacks quote URIs). Everything else (isatty, fileno, encoding,
    errors, buffer, line_buffering, ...) is the real stream's own answer: not a subclass of
    `io.TextIOBase`, whose own `isatty()` would say False and hide the progress bar."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        """Write `text` redacted; the length of `text`, as a stream's write returns."""
        self.stream.write(redact(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """Write each line redacted."""
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def redacted_console() -> Iterator[None]:
    """stdout and stderr redacted for the command's duration."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


# -- output folders --------------------------------------------------------------------------


class OutputFolders(Callback):
    """The run's (or multirun's) output folder must be creatable and writable: one line before
    Hydra tries to make it (its own failure is a traceback)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_output_folder(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_output_folder(config.hydra.sweep.dir, "hydra.sweep.dir")


def check_output_folder(folder: Any, key: str) -> None:
    """Exit 2 with one line unless `folder` can be created and written (SystemExit: Hydra turns
    a callback's other exceptions into warnings). Made here, as Hydra would a moment later."""
    path = Path(str(folder))
    try:
        path.mkdir(parents=True, exist_ok=True)
        usable = os.access(path, os.W_OK | os.X_OK)
    except OSError:
        usable = False
    if not usable:
        print(
            f"error: {key}={path} cannot be created or written: choose a writable folder, e.g."
            f" {key}=outputs/run1",
            file=sys.stderr,
        )
        raise SystemExit(2)
