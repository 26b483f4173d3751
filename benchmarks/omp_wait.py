"""Two trainings side by side on a machine with as many cores as their threads together: GNU OpenMP's
default wait (its threads spin) vs OMP_WAIT_POLICY=PASSIVE (they sleep). This is what the test suite meets
(tests/conftest.py sets PASSIVE): `make test` runs two test files at once on 2 cores, and each starts trainings.

    .venv/bin/python benchmarks/omp_wait.py                     # ~2 min on 2 cores
    .venv/bin/python benchmarks/omp_wait.py --train-size 64 --epochs 1
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from _common import machine, table


def side_by_side(policy: str | None, argv: list[str], folder: str) -> tuple[float, float]:
    """(wall s, CPU s of the two processes) for two `googlenet-study train` runs started together."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MLFLOW_RUN_ID")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "googlenet_study", "train", *argv, "--tracking-uri",
                               f"sqlite:///{folder}/{policy}-{i}.db"], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a training exited {p.returncode}: {' '.join(argv)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="each training's threads")
    ap.add_argument("--train-size", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    argv = ["--model", "googlenet", "--weights", "none", "--dataset", "digits", "--image-size", "32", "--epochs",
            str(a.epochs), "--batch-size", "32", "--train-size", str(a.train_size), "--test-size", "100",
            "--threads", str(a.threads), "--system-metrics", "false"]
    print(f"# two trainings at once ({a.threads} threads each, googlenet 32 px, {a.train_size} images x "
          f"{a.epochs} epochs): OpenMP spinning vs sleeping while it waits\n# {machine()}")
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        for policy in (None, "PASSIVE"):
            rows[policy or "default (spin)"] = side_by_side(policy, argv, d)
    print(table(["OMP_WAIT_POLICY", "wall s", "CPU s"], [[k, f"{w:.1f}", f"{c:.1f}"] for k, (w, c) in rows.items()]))
    (spin, _), (passive, _) = rows.values()
    print(f"ratio default / PASSIVE (wall): {spin / passive:.2f}x")


if __name__ == "__main__":
    main()
