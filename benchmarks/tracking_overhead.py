"""MLflow logging per epoch as a share of epoch time (goal < 1 %).

Times `MlflowRun.log_epoch` (the only MLflow call inside the epoch loop: one log_batch of the
epoch's metrics) on a fresh SQLite store, and MLflow's asynchronous log_batch for comparison,
against a real epoch of the engine (GoogLeNet 64 px, batch 64, CPU). Also prints the shortest
epoch for which logging would stay under 1 % -- what a fast GPU epoch must exceed.

    .venv/bin/python benchmarks/tracking_overhead.py                # ~1 min on 2 cores
    .venv/bin/python benchmarks/tracking_overhead.py --calls 3 --train-size 32 --test-size 10 --image-size 32
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import base_config, fit, machine, median, table

GOAL = 0.01


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20, help="log_epoch calls timed")
    ap.add_argument("--epochs", type=int, default=2, help="the last one is compared (the first warms up)")
    ap.add_argument("--train-size", type=int, default=1437, help="digits training images (1437: all)")
    ap.add_argument("--test-size", type=int, default=None, help="digits test images (default: all 360)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()
    from mlflow.entities import Metric

    from googlenet_study import tracking

    cfg = base_config(epochs=a.epochs, train_size=a.train_size if a.train_size < 1437 else None, test_size=a.test_size,
                      image_size=a.image_size, batch_size=a.batch_size)
    print(f"# tracking overhead: MLflow log_epoch on SQLite vs a real epoch (googlenet {cfg.image_size} px, "
          f"batch {cfg.batch_size})\n# {machine()}")
    history = fit(cfg)
    epoch_s = history[-1]["epoch_time_s"]  # the last epoch: warm when there are two
    metrics = {k: float(v) for k, v in history[-1].items()}  # the real per-epoch metric set
    sync_s, async_s = [], []
    with tempfile.TemporaryDirectory(prefix="tracking-overhead-") as d:
        run = tracking.MlflowRun(cfg, f"sqlite:///{d}/mlflow.db", "tracking-overhead")
        try:
            run.log_epoch(0, metrics)  # first call creates the metric keys
            for i in range(1, a.calls + 1):
                t0 = time.perf_counter()
                run.log_epoch(i, metrics)
                sync_s.append(time.perf_counter() - t0)
            futures = []
            for i in range(a.calls + 1, 2 * a.calls + 1):
                now = int(time.time() * 1000)
                t0 = time.perf_counter()
                futures.append(run.client.log_batch(run.run_id, metrics=[Metric(k, v, now, i) for k, v in metrics.items()],
                                                    synchronous=False))
                async_s.append(time.perf_counter() - t0)
            for f in futures:
                f.wait()
        finally:
            run.end("FINISHED")
    rows = []
    for name, ts in (("log_epoch (synchronous log_batch, what runs)", sync_s),
                     ("log_batch(synchronous=False)", async_s)):
        m = median(ts)
        rows.append([name, m * 1e3, max(ts) * 1e3, f"{m / epoch_s:.3%}", m / GOAL])
    print(table(["call", "median ms", "max ms", f"share of a {epoch_s:.2f} s epoch", "epoch s for 1 %"], rows))
    share = median(sync_s) / epoch_s
    print(f"ratio logging/epoch time: {share:.4%} ({len(metrics)} metrics per epoch; goal < {GOAL:.0%}: "
          f"{'met' if share < GOAL else 'not met'})")


if __name__ == "__main__":
    main()
