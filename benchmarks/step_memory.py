"""Peak memory of one training step and one evaluation step on the CPU: the evidence behind the
constants in googlenet_study/budget.py.

Each measurement runs in a fresh interpreter: the model, optimiser and input batch are built, the
peak resident set (VmHWM) is read, then two training steps (the first allocates gradients and
Adam's state) or two no-grad evaluation steps run, and the peak is read again. The difference is
what the step needs beyond the model itself. tracemalloc cannot see torch's allocations.

    .venv/bin/python benchmarks/step_memory.py            # the calibration table
    .venv/bin/python benchmarks/step_memory.py --quick    # two small points (smoke)
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch, torch.nn.functional as F
from googlenet_study import engine, model
from googlenet_study.config import RunConfig
kw, mode = json.loads(sys.argv[1]), sys.argv[2]
cfg = RunConfig(dataset="digits", weights="none", device="cpu", threads=2, system_metrics=False, **kw).resolve()
torch.set_num_threads(2)
net, _ = model.build(cfg)
opt = engine.make_optimizer(cfg, net)
n = cfg.batch_size if mode == "train" else cfg.eval_batch_size
x, y = torch.randn(n, 3, cfg.image_size, cfg.image_size), torch.randint(0, 10, (n,))
def peak():  # VmHWM: this address space's peak; ru_maxrss would carry the forking parent's across exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = peak()
for _ in range(2):
    if mode == "train":
        net.train()
        main, aux = net(x)
        loss = F.cross_entropy(main, y) + cfg.aux_weight * sum((F.cross_entropy(a, y) for a in aux), torch.zeros(()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        del main, aux, loss
    else:
        net.eval()
        with torch.no_grad():
            net(x)
print(json.dumps({"step_bytes": peak() - before, "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad)}))
"""

POINTS = [  # (model, image_size, batch, aux_weight, backbone, mode)
    ("googlenet", 64, 16, 1.0, "full", "train"), ("googlenet", 128, 16, 1.0, "full", "train"),
    ("googlenet", 224, 8, 1.0, "full", "train"), ("googlenet", 224, 16, 1.0, "full", "train"),
    ("googlenet", 224, 16, 0.0, "full", "train"), ("googlenet", 224, 16, 1.0, "frozen", "train"),
    ("googlenet", 224, 32, 1.0, "full", "eval"),
    ("inception_v3", 299, 4, 1.0, "full", "train"), ("inception_v3", 299, 8, 1.0, "full", "train"),
    ("inception_v3", 299, 8, 0.0, "full", "train"), ("inception_v3", 299, 8, 1.0, "frozen", "train"),
    ("inception_v3", 150, 16, 0.0, "full", "train"), ("inception_v3", 299, 16, 1.0, "full", "eval"),
]
QUICK = [("googlenet", 64, 8, 1.0, "full", "train"), ("googlenet", 64, 16, 1.0, "full", "eval")]


def measure(arch: str, size: int, batch: int, aux: float, backbone: str, mode: str) -> dict:
    kw = dict(model=arch, image_size=size, batch_size=batch, eval_batch_size=batch, aux_weight=aux,
              backbone=backbone)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(kw), mode], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from googlenet_study import budget

    print(f"{'model':<13}{'px':>5}{'batch':>6}{'aux':>5} {'backbone':<9}{'mode':<6}"
          f"{'MiB':>8}{'per px*img B':>14}{'estimate MiB':>14}")
    for arch, size, batch, aux, backbone, mode in (QUICK if "--quick" in sys.argv else POINTS):
        m = measure(arch, size, batch, aux, backbone, mode)
        per = m["step_bytes"] / (size * size * batch)
        est = budget.step_bytes(arch, size, batch, aux > 0, backbone == "frozen", "none", training=mode == "train")
        est -= 4 * budget.PARAMS[(arch, aux > 0)]  # the weights exist before the step: not in the measurement
        print(f"{arch:<13}{size:>5}{batch:>6}{aux:>5} {backbone:<9}{mode:<6}"
              f"{m['step_bytes'] / 2**20:>8.0f}{per:>14.0f}{est / 2**20:>14.0f}", flush=True)


if __name__ == "__main__":
    main()
