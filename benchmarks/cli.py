"""Start-up of the commands against Hydra's own, each a fresh process, interleaved.

python -m benchmarks.cli [--repeats 5] --out FILE

Timed from process start to exit: `python -c "import hydra, omegaconf"` (the yardstick the
first-hour issue names), a minimal Hydra app's `--help` (one config group: what Hydra itself
needs to answer), and our commands' `--help`, `--cfg job`, `--cfg job --resolve`,
`-sc install=bash`, and `src.train` given a config mistake (time to its one error line and exit
2). Medians over the repeats; the commands of one repeat run back to back so that drift in
machine load hits them alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT

MINIMAL_APP = """import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    print(cfg)

if __name__ == "__main__":
    main()
"""


# Config mistakes of several checks (docs/errors.md), each stopping with one line, exit 2.
MISTAKES = (
    "method.rank=0",
    "trainer.lr=-1",
    "seed=-1",
    "optimized_metric=eval_rmse",
    "trainer.epochs=0",
)


def commands(app: Path) -> dict[str, list[str]]:
    """Name -> argv of everything timed."""
    py = sys.executable
    elsewhere = [f"hydra.run.dir={app.parent}/run", f"tracking.uri=sqlite:///{app.parent}/m.db"]
    mistakes = {f"src.train {m}": [py, "-m", "src.train", m, *elsewhere] for m in MISTAKES}
    return mistakes | {
        "import hydra, omegaconf": [py, "-c", "import hydra, omegaconf"],
        "minimal Hydra app --help": [py, str(app), "--help"],
        "src.train --help": [py, "-m", "src.train", "--help"],
        "src.train --cfg job": [py, "-m", "src.train", "--cfg", "job"],
        "src.train --cfg job --resolve": [py, "-m", "src.train", "--cfg", "job", "--resolve"],
        "src.train -sc install=bash": [py, "-m", "src.train", "-sc", "install=bash"],
        "src.predict --help": [py, "-m", "src.predict", "--help"],
        "src.report --help": [py, "-m", "src.report", "--help"],
    }


def minimal_app(folder: Path) -> Path:
    """A Hydra app with one config group of two options."""
    (folder / "conf" / "db").mkdir(parents=True)
    (folder / "conf" / "config.yaml").write_text("defaults:\n  - db: mysql\n  - _self_\nx: 1\n")
    (folder / "conf" / "db" / "mysql.yaml").write_text("host: a\n")
    (folder / "conf" / "db" / "postgresql.yaml").write_text("host: b\n")
    app = folder / "app.py"
    app.write_text(MINIMAL_APP)
    return app


def wall(argv: list[str]) -> float:
    """Seconds from start to exit of one fresh process: it must succeed, or, given a config
    mistake, exit 2 with one error line and no traceback."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    mistake = any(m in argv for m in MISTAKES)
    expected = (2, 1) if mistake else (0, 0)
    if (done.returncode, len(errors)) != expected or "Traceback" in done.stderr:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return elapsed


def measure(repeats: int) -> dict[str, float]:
    """Median wall seconds of each command."""
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        argvs = commands(minimal_app(Path(tmp)))
        times: dict[str, list[float]] = {name: [] for name in argvs}
        for argv in argvs.values():  # warm the OS caches once, untimed
            wall(argv)
        for _ in range(repeats):
            for name, argv in argvs.items():
                times[name].append(wall(argv))
    medians = {name: statistics.median(values) for name, values in times.items()}
    mistakes = [medians.pop(f"src.train {m}") for m in MISTAKES]
    medians["config mistake to its error line"] = statistics.median(mistakes)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_text(json.dumps({"median_s": measure(args.repeats)}, indent=2))


if __name__ == "__main__":
    main()
