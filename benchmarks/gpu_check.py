"""The lecture's epoch on a GPU, end to end, in one call (benchmarks/gpu_check.sh runs this): one table.

(a) gpu_epoch.py's table: the lecture's configuration (Inception-v3, 299 px, full, aux_weight 1) at amp
    none/bf16 x channels_last off/on x batch 32/128; the fastest row's amp and channels_last are used below.
(b) one real `googlenet-study train` of the lecture's config (batch 32, Adam 1e-4) on `dataset: fake`
    (CIFAR-10's 50,000 + 10,000 images), 1 epoch, with that amp/channels_last, into OUT/mlflow.db.
    `weights: none`: nothing to download, and a step's time does not depend on the weights' values.
(c) the lecture's way on the same images: per-image PIL Resize + ToTensor + Normalize in a DataLoader (a
    worker per core), torchvision's model, fp32, batch 32, Adam: training images/s -> ratio (b) / (c).
(d) backbone frozen, 2 epochs, `feature_cache` auto vs off ("n/a" where the config has no such field).
(e) 1, 2 and 4 processes sharing the device, each training batch-32 steps (frozen; full) for a fixed
    time: total images/s, and the gain over one process.
(f) experiments/factorial.yaml projected from all of the above.
Every part that cannot run says why in its row (a missing package, a failed run, the time budget).
`--tiny`: the same at toy sizes on a CPU (GoogLeNet 16 px, 64 images), for CI; its numbers mean nothing.

    benchmarks/gpu_check.sh [--out DIR]          # on a CUDA machine, <= 8 min
    GPU_CHECK_TINY=1 benchmarks/gpu_check.sh     # anywhere, ~1 min
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import gpu_epoch
from _common import ROOT, machine, table
from gpu_share import share_rows
from googlenet_study.config import RunConfig, field_names

# batch: the lecture's 32 for (b), (c) and (e); sizes: extra train flags; lecture_images: (c)'s images;
# share_s: (e)'s timed seconds per scenario; factorial_batches: None keeps the study's.
GPU = dict(model="inception_v3", image_size=299, steps=20, warmup=5, batch_sizes=[32, 128], amps=["none", "bf16"],
           batch=32, sizes=[], lecture_images=3200, share_s=8.0, share_warmup=3, workers=(1, 2, 4),
           factorial_batches=None)
TINY = dict(model="googlenet", image_size=16, steps=1, warmup=1, batch_sizes=[2], amps=["none"], batch=16,
            sizes=["--train-size", "64", "--test-size", "32", "--threads", "1"], lecture_images=48, share_s=0.5,
            share_warmup=1, workers=(1, 2), factorial_batches=[2])
HEADERS = ["part", "what", "measured", "note"]


class Check:
    """The settings, the clock against the budget, and the table's rows."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a, self.s = a, SimpleNamespace(**(TINY if a.tiny else GPU))
        self.t0, self.rows = time.monotonic(), []
        self.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.best = {"amp": "none", "channels_last": False}
        self.results: dict[str, dict] = {}
        self.device_name = gpu_epoch.peak_flops(torch.device(self.device))[0]

    def left(self) -> float:
        return self.a.budget_s - (time.monotonic() - self.t0)

    def row(self, part: str, what: str, measured: str, note: str = "") -> None:
        self.rows.append([part, what, measured, note])
        print(f"[{part}] {what}: {measured}{'  (' + note + ')' if note else ''}", flush=True)

    def run_part(self, part: str, fn, need_s: float) -> None:
        """fn(); a part that fails or would overrun the budget becomes a row saying so."""
        if self.left() < need_s:
            for p in part:  # "bd": one child process runs both parts' trainings
                self.row(p, "skipped", "n/a", f"{self.left():.0f} s of the {self.a.budget_s:.0f} s budget left")
            return
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one part's failure must not hide the others' numbers
            for p in part:
                self.row(p, "failed", "n/a", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
        print(f"[{part}] took {time.monotonic() - t0:.1f} s", flush=True)


# ---- (a) the gpu_epoch table ----------------------------------------------------------------
def part_a(c: Check) -> None:
    s = c.s
    a = SimpleNamespace(model=s.model, image_size=s.image_size, steps=s.steps, warmup=s.warmup,
                        batch_sizes=s.batch_sizes, amps=s.amps, channels_last=[False, True])
    got = gpu_epoch.lecture_grid(a, c.device, gpu_epoch.peak_flops(torch.device(c.device))[1])
    for g in got:
        amp, cl, b, ips, _, ep, x, _, mfu = g["row"]
        c.row("a", f"lecture config, amp {amp}, channels_last {cl}, batch {b}",
              f"{ep:,.1f} s per epoch (projected)", f"{ips:,.0f} train img/s, {x:.3g}x the lecture's 466 s, MFU {mfu}")
    best = min(got, key=lambda g: g["epoch_s"])
    c.best = {"amp": best["cfg"].amp, "channels_last": best["cfg"].channels_last}
    c.results["a"] = {g["cfg"].batch_size: g for g in got if g["cfg"].amp == best["cfg"].amp
                      and g["cfg"].channels_last == best["cfg"].channels_last}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- (b) and (d): real runs through the CLI, in one child process ------------------------------
def train_argv(c: Check, name: str, *extra: str) -> list[str]:
    out = Path(c.a.out).resolve()
    return ["train", "--model", c.s.model, "--weights", "none", "--dataset", "fake", "--image-size",
            str(c.s.image_size), "--batch-size", str(c.s.batch), "--device", c.device,
            "--amp", c.best["amp"], "--channels-last", str(c.best["channels_last"]).lower(),
            "--system-metrics", "false", "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}",
            "--experiment", f"gpu-check-{name}", "--checkpoint-dir", str(out / "checkpoints"),
            "--resume", "never", *c.s.sizes, *extra]


def train_child(spec_path: str) -> None:
    """In the child: run each {name, argv} through the CLI's main, read back its metrics from MLflow."""
    from googlenet_study import cli, tracking

    spec = json.loads(Path(spec_path).read_text())
    results = {}
    for job in spec["jobs"]:
        t0 = time.monotonic()
        rc = cli.main(job["argv"])
        wall = time.monotonic() - t0
        runs = tracking.search_runs_all(f"gpu-check-{job['name']}", uri=spec["uri"]) if rc == 0 else []
        r = {"rc": rc, "wall_s": wall}
        if runs:
            run = runs[0]
            r.update(status=run["status"], tags=run["tags"], metrics=run["metrics"])
            for k in ("epoch_time_s", "train_time_s", "throughput_img_s"):
                r[k] = [v for _, v in sorted(tracking.metric_history(run["run_id"], k, spec["uri"]))]
        results[job["name"]] = r
    Path(spec["result"]).write_text(json.dumps(results))


def part_bd(c: Check) -> None:
    try:
        import mlflow  # noqa: F401 - the child needs it; say so here instead of failing there
    except ImportError:
        for part in ("b", "d"):
            c.row(part, "real googlenet-study train", "n/a", "mlflow is not installed: carry its wheels (docs/gpu-check.md)")
        return
    jobs = [{"name": "b", "argv": train_argv(c, "b", "--epochs", "1")}]
    has_cache = "feature_cache" in field_names()
    if has_cache:
        for mode in ("off", "auto"):
            jobs.append({"name": f"d-{mode}", "argv": train_argv(c, f"d-{mode}", "--epochs", "2", "--backbone",
                                                                 "frozen", "--feature-cache", mode)})
    out = Path(c.a.out).resolve()
    spec = {"jobs": jobs, "uri": f"sqlite:///{out / 'mlflow.db'}", "result": str(out / "train_results.json")}
    (out / "train_jobs.json").write_text(json.dumps(spec))
    p = subprocess.run([sys.executable, __file__, "--train-child", str(out / "train_jobs.json")],
                       timeout=max(10.0, c.left() - 60), capture_output=True, text=True)
    (out / "train_child.log").write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"the training child exited {p.returncode}: {(p.stderr or p.stdout)[-300:]}")
    res = c.results["runs"] = json.loads(Path(spec["result"]).read_text())
    b = res["b"]
    if b.get("status") != "FINISHED":
        c.row("b", "real googlenet-study train", "failed", f"exit {b['rc']}; see {out / 'train_child.log'}")
    else:
        c.row("b", f"googlenet-study train, {c.s.model} {c.s.image_size} px, fake data, 1 epoch, amp {c.best['amp']}, "
                   f"channels_last {'on' if c.best['channels_last'] else 'off'}, batch {c.s.batch}",
              f"{b['epoch_time_s'][0]:,.1f} s per epoch", f"{b['throughput_img_s'][0]:,.0f} train img/s; "
              f"{gpu_epoch.LECTURE_EPOCH_S / b['epoch_time_s'][0]:.3g}x the lecture's 466 s; run wall "
              f"{b['wall_s']:.0f} s incl. start-up")
    if not has_cache:
        c.row("d", "frozen run with / without the feature cache", "n/a", "this checkout has no feature_cache field")
        return
    off, on = res["d-off"], res["d-auto"]
    if off.get("status") != "FINISHED" or on.get("status") != "FINISHED":
        c.row("d", "frozen run with / without the feature cache", "failed", f"see {out / 'train_child.log'}")
        return
    from googlenet_study.schema import FEATURE_CACHE_BUILD_S, FEATURE_CACHE_TAG

    tag = on["tags"].get(FEATURE_CACHE_TAG, "?")
    build = on["metrics"].get(FEATURE_CACHE_BUILD_S, float("nan"))
    for name, r in (("off", off), ("auto", on)):
        c.row("d", f"frozen, feature_cache {name}, 2 epochs", " + ".join(f"{e:,.1f}" for e in r["epoch_time_s"]) + " s",
              f"tag {FEATURE_CACHE_TAG}={r['tags'].get(FEATURE_CACHE_TAG, '-')}"
              + (f", build {build:.1f} s charged to epoch 1" if name == "auto" else ""))
    c.row("d", "ratio uncached / cached", f"epoch 2: {off['epoch_time_s'][1] / on['epoch_time_s'][1]:.3g}x; "
               f"2-epoch run: {sum(off['epoch_time_s']) / sum(on['epoch_time_s']):.3g}x", f"cache {tag}")


# ---- (c) the lecture's way --------------------------------------------------------------------
def part_c(c: Check) -> None:
    import torchvision
    from input_pipeline import PilImages

    from googlenet_study import data as data_mod

    n = c.s.lecture_images
    ds = data_mod.load(RunConfig(dataset="fake", weights="none", model=c.s.model, image_size=c.s.image_size))
    hwc = ds.train.images[:n].permute(0, 2, 3, 1).numpy()  # the same images (b) trains on, as PIL wants them
    pil = PilImages(hwc, ds.train.labels[:n].numpy(), c.s.image_size)
    workers = len(os.sched_getaffinity(0))
    batch = c.s.batch
    loader = torch.utils.data.DataLoader(pil, batch_size=batch, shuffle=True, num_workers=workers)
    dev = torch.device(c.device)
    torch.manual_seed(0)
    arch = getattr(torchvision.models, c.s.model)
    extra = {"init_weights": False} if c.s.model == "inception_v3" else {"init_weights": True, "transform_input": False}
    net = arch(weights=None, aux_logits=True, num_classes=10, **extra).to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)  # the lecture's: plain Adam, fp32, no autocast
    seen, t_start, untimed = 0, None, min(2, len(loader) - 1)
    for i, (x, y) in enumerate(loader):
        if i == untimed:  # the first batches pay the workers' start-up and cuDNN's autotuning
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t_start, seen = time.perf_counter(), 0
        x, y = x.to(dev), y.to(dev)
        out = net(x)
        logits, auxes = out[0], [a for a in out[1:] if a is not None]
        loss = torch.nn.functional.cross_entropy(logits, y) + sum(torch.nn.functional.cross_entropy(a, y)
                                                                  for a in auxes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    ips = seen / (time.perf_counter() - t_start)
    c.row("c", f"lecture's way: per-image PIL resize, DataLoader x{workers}, fp32, batch {batch}, {n} images",
          f"{ips:,.0f} train img/s", f"projected {gpu_epoch.TRAIN_IMAGES / ips:,.0f} s per epoch of training")
    b = c.results.get("runs", {}).get("b", {})
    if b.get("throughput_img_s"):
        c.row("c", "ratio googlenet-study (b) / lecture's way, training images per second",
              f"{b['throughput_img_s'][0] / ips:.3g}x", "measured in this call, on the same images")
    else:
        c.row("c", "ratio googlenet-study (b) / lecture's way", "n/a", "(b) did not run")
    del net, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()


# ---- (e) processes sharing the device -----------------------------------------------------------
def part_e(c: Check) -> None:
    base = dict(model=c.s.model, weights="none", image_size=c.s.image_size, batch_size=c.s.batch, device=c.device,
                system_metrics=False, **c.best)
    gains = share_rows(c, base, workers=c.s.workers, seconds=c.s.share_s, warmup=c.s.share_warmup)
    c.results["share"] = gains


# ---- (f) the factorial projection ----------------------------------------------------------------
def part_f(c: Check) -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "experiments" / "factorial.yaml").read_text())
    space = dict(spec["space"])
    seeds, epochs = len(space.pop("seed", [0])), int(spec["base"].get("epochs", 10))
    if c.s.factorial_batches:
        space["batch_size"] = c.s.factorial_batches
    base = {**spec["base"], "weights": "none", "device": c.device, "system_metrics": False, **c.best}
    if c.a.tiny:
        base.update(model=c.s.model, image_size=c.s.image_size)
    runs = c.results.get("runs", {})
    cached = runs.get("d-auto", {}).get("status") == "FINISHED"
    if cached:
        from googlenet_study.schema import FEATURE_CACHE_BUILD_S
    full_s = frozen_plain_s = frozen_cached_s = 0.0
    builds = set()
    # (a) timed the full, aux-on graph at its batch sizes with these amp/channels_last: not again.
    measured = {(b, True, "full"): g["m"] for b, g in c.results.get("a", {}).items()}
    for point in _grid(space):
        cfg = RunConfig.from_dict({**base, **point}, source="factorial.yaml").resolve()
        key = (cfg.batch_size, cfg.has_aux, cfg.backbone)
        if key not in measured:
            measured[key] = gpu_epoch.measure(cfg, c.s.steps, c.s.warmup + 1, flops=False)
        ep = gpu_epoch.epoch_seconds(measured[key], cfg.batch_size)
        if cfg.backbone == "full":
            full_s += seeds * epochs * ep
            continue
        frozen_plain_s += seeds * epochs * ep
        if cached:  # the cached epoch measured in (d) at batch 32 (a larger batch is no slower); one build per key
            builds.add(cfg.has_aux)
            frozen_cached_s += seeds * epochs * runs["d-auto"]["epoch_time_s"][1]
    n_runs = seeds * len(_grid(space))
    lecture_h = n_runs * epochs * gpu_epoch.LECTURE_EPOCH_S / 3600
    c.row("f", f"factorial.yaml: {n_runs} runs x {epochs} epochs, at the lecture's 466 s per epoch", f"{lecture_h:,.1f} h")
    plain_h = (full_s + frozen_plain_s) / 3600
    c.row("f", f"projected, amp {c.best['amp']}, channels_last {c.best['channels_last']}, no cache, 1 process",
          f"{plain_h:,.2f} h", f"full {full_s / 3600:,.2f} h + frozen {frozen_plain_s / 3600:,.2f} h")
    frozen_s = frozen_plain_s
    if cached:
        build = runs["d-auto"]["metrics"].get(FEATURE_CACHE_BUILD_S, 0.0)
        frozen_s = frozen_cached_s + len(builds) * build
        c.row("f", "+ feature cache for the frozen runs", f"{(full_s + frozen_s) / 3600:,.2f} h",
              f"frozen {frozen_s / 3600:,.2f} h: {len(builds)} build(s) of {build:.0f} s, cached epochs from (d)")
    else:
        c.row("f", "+ feature cache for the frozen runs", "n/a", "(d) did not run")
    share = c.results.get("share") or {}
    g_full, g_frozen = share.get("full", (1, 1.0)), share.get("frozen", (1, 1.0))
    total_h = (full_s / g_full[1] + frozen_s / g_frozen[1]) / 3600
    c.row("f", f"+ processes sharing the device (full: {g_full[0]}, frozen: {g_frozen[0]}, from (e))",
          f"{total_h:,.2f} h", f"goal <= 1 h on one H100: {'met' if total_h <= 1 else 'not met'} on {c.device_name}")


def _grid(space: dict) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, v)) for v in itertools.product(*(space[k] for k in keys))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", default=os.environ.get("GPU_CHECK_TINY") == "1",
                    help="toy sizes on any device (default when GPU_CHECK_TINY=1)")
    ap.add_argument("--out", default="gpu-check", help="folder for gpu_check.txt, mlflow.db and logs")
    ap.add_argument("--budget-s", type=float, default=480.0, help="s; parts that would overrun it are skipped")
    ap.add_argument("--device", default=None, help="default: cuda if there is one, else cpu")
    ap.add_argument("--train-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.train_child:
        return train_child(a.train_child)
    c = Check(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True  # what a run with deterministic=false does
    if a.tiny:  # 1 thread: on a shared 2-core machine 2-thread OpenMP loses most of its time spinning
        torch.set_num_threads(1)
    head = (f"# gpu_check{' --tiny (toy sizes: the numbers mean nothing)' if a.tiny else ''}: {c.device_name}\n"
            f"# {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(head, flush=True)
    c.run_part("a", lambda: part_a(c), 0)
    c.run_part("bd", lambda: part_bd(c), 120)
    c.run_part("c", lambda: part_c(c), 30)
    c.run_part("e", lambda: part_e(c), 60)
    c.run_part("f", lambda: part_f(c), 20)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # run checkpoints and the feature cache: GBs
    text = f"{head}\n# total {time.monotonic() - c.t0:.0f} s\n" + table(HEADERS, c.rows) + "\n"
    (out / "gpu_check.txt").write_text(text)
    print("\n" + text + f"written to {out / 'gpu_check.txt'}")
    ratio = next((r[2] for r in c.rows if r[1].startswith("ratio googlenet-study")), "n/a")
    print(f"ratio googlenet-study / lecture's way (training img/s): {ratio}")


if __name__ == "__main__":
    main()
