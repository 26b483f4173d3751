"""The time cost of the auxiliary arms: training step time with aux_weight > 0 against aux_weight = 0.

The lecture blames its two losses for the slowness; this measures it. aux_weight = 0 builds the model
without the arms (their forward, backward and optimiser state leave the step); any aux_weight > 0
runs the same graph, so 0.3 and 1 cost the same -- measured at 1. Evaluation never runs the arms.
GoogLeNet at 64 px (both arms), full and frozen; Inception-v3 at 299 px (its arm needs 299) with a
tiny step count, since it trains at a few images per second on a CPU. Variants alternate.

    .venv/bin/python benchmarks/aux_cost.py                        # ~2 min on 2 cores
    .venv/bin/python benchmarks/aux_cost.py --repeats 1 --steps 1 --image-size 32 --inception-steps 0
"""

from __future__ import annotations

import argparse

import torch

from _common import Stepper, base_config, machine, median, replace, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    ap.add_argument("--steps", type=int, default=3, help="GoogLeNet training steps per round")
    ap.add_argument("--image-size", type=int, default=64, help="GoogLeNet px")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--inception-steps", type=int, default=1, help="Inception-v3 steps per round (0: skip it)")
    ap.add_argument("--inception-batch-size", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    cfg = base_config(image_size=a.image_size, batch_size=a.batch_size, device=a.device)
    torch.set_num_threads(cfg.threads)
    print(f"# aux arms cost: training step time, aux_weight 1 vs 0, {a.repeats} alternating rounds\n# {machine()}")
    groups = [(f"googlenet {cfg.image_size} px, batch {cfg.batch_size}, {bb}", a.steps,
               {w: replace(cfg, backbone=bb, aux_weight=w) for w in (0.0, 1.0)}) for bb in ("full", "frozen")]
    if a.inception_steps > 0:
        inc = replace(cfg, model="inception_v3", image_size=299, batch_size=a.inception_batch_size)
        groups.append((f"inception_v3 299 px, batch {inc.batch_size}, full", a.inception_steps,
                       {w: replace(inc, aux_weight=w) for w in (0.0, 1.0)}))
    steppers = {(g, w): Stepper(c) for g, _, cs in groups for w, c in cs.items()}
    for s in steppers.values():
        s.train_step()  # warm-up
    times = {k: [] for k in steppers}
    for _ in range(a.repeats):
        for g, steps, cs in groups:
            for w in cs:
                times[(g, w)].append(steppers[(g, w)].time(steps))
    rows, ratios = [], []
    for g, _, cs in groups:
        t0, t1 = median(times[(g, 0.0)]), median(times[(g, 1.0)])
        rows.append([g, t0, t1, t1 / t0, f"{(t1 - t0) / t1:.1%}"])
        ratios.append((g, t1 / t0))
    print(table(["model", "s/step aux 0", "s/step aux 1", "aux1/aux0", "share of the step spent on arms"], rows))
    for g, r in ratios:
        print(f"ratio aux_weight>0 / aux_weight=0 step time, {g}: {r:.3f}x")


if __name__ == "__main__":
    main()
