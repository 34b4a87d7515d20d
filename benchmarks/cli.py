"""Start-up of the commands against Hydra's own, each a fresh process, interleaved.

python -m benchmarks.cli [--repeats 5] --out FILE

Timed from process start to exit: `python -c "import hydra, omegaconf"` (the yardstick the
first-hour issue names), a minimal Hydra app's `--help` (one config group: what Hydra itself
needs to answer), and our commands' `--help`, `--cfg job`, `--cfg job --resolve`,
`-sc install=bash`. Medians over the repeats; the commands of one repeat run back to back so
that drift in machine load hits them alike.
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


def commands(app: Path) -> dict[str, list[str]]:
    """Name -> argv of everything timed."""
    py = sys.executable
    return {
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
    """Seconds from start to exit of one fresh process (which must succeed)."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


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
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_text(json.dumps({"median_s": measure(args.repeats)}, indent=2))


if __name__ == "__main__":
    main()
