"""A loaded checkpoint checked as data before any of it is used (checkpoint.load calls `problem_of`).

The checkpoint folder may be shared, so a file in it is untrusted input even when it unpickles as plain data
(checkpoint.py's module doc): a forged history would be logged to MLflow as the run's metrics, a foreign
tensor or optimizer state would be a traceback after the run was reopened. Each check says, in a few
words, what is wrong; the caller names the file."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import schema


def problem_of(d: dict, epochs: int, net: torch.nn.Module | None) -> str | None:
    """What makes a loaded checkpoint dict unusable for a run of `epochs` epochs of `net`, in a few words; None if nothing.
    Checked as data, before any of it reaches the model, the optimiser, the RNGs or MLflow."""
    epoch, history = d["epoch"], d["history"]
    if type(epoch) is not int or not isinstance(history, list) or len(history) != epoch:
        return f"epoch {str(epoch)[:20]}, {len(history) if isinstance(history, list) else 'no list of'} " \
               f"epochs of history"
    if epoch > epochs:
        return f"{epoch} epochs of history for a run of {epochs} epochs"
    for i, h in enumerate(history, start=1):
        bad = _bad_epoch(h, history[i - 2] if i > 1 else None)
        if bad:
            return f"epoch {i} of its history: {bad}"
    ended = d.get("epoch_ended_ms", [])
    if not isinstance(ended, list) or len(ended) not in (0, epoch) or any(type(t) is not int for t in ended):
        return "epoch end times that are not one integer per epoch"
    partial = d.get("partial")
    if partial is not None and (not isinstance(partial, dict) or partial.get("epoch") != epoch + 1):
        return f"a partial epoch that does not follow epoch {epoch}"
    if partial is not None and not (_tensor(partial.get("sums"), torch.float64, (4,))  # every other field a count
                                    and all(_number(v) for k, v in partial.items() if k != "sums")):  # or seconds
        return "a partial epoch whose counts or sums are not finite numbers >= 0 and a float64 (4,) tensor"
    return _bad_model(d["model"], net) or _bad_optimizer(d["optimizer"], net) or _bad_rng(d["rng"]) or \
        (None if d.get("scaler") is None or isinstance(d["scaler"], dict) else "a scaler state that is not a dict")


def _number(v, top: float = math.inf) -> bool:
    """A finite int or float in [0, top] (never a bool)."""
    return type(v) in (int, float) and math.isfinite(v) and 0 <= v <= top


def _tensor(v, dtype: torch.dtype, shape: tuple | None = None) -> bool:
    return isinstance(v, torch.Tensor) and v.dtype == dtype and (shape is None or tuple(v.shape) == shape)


def _bad_epoch(h, before: dict | None) -> str | None:
    """One history entry: schema.EPOCH_METRICS (test_acc and the clock at least: the summary reads them), each
    finite and >= 0, accuracies <= 1, a clock that never goes back (they are logged as the run's metrics)."""
    if not isinstance(h, dict) or not set(h) <= set(schema.EPOCH_METRICS):
        return f"metrics other than {', '.join(schema.EPOCH_METRICS)}"
    if schema.ACCURACY not in h or schema.CLOCK not in h:
        return f"no {schema.ACCURACY} or no {schema.CLOCK}"
    for k, v in h.items():
        if not _number(v, 1.0 if k in schema.FRACTIONS else math.inf):
            allowed = "in [0, 1]" if k in schema.FRACTIONS else ">= 0"
            return f"{k} {str(v)[:20]} (allowed: a finite number {allowed})"
    if before is not None and isinstance(before, dict) and h[schema.CLOCK] < before[schema.CLOCK]:
        return f"{schema.CLOCK} goes back"
    return None


def _bad_model(model, net: torch.nn.Module | None) -> str | None:
    """Tensor names and shapes: those of `net` (when given), every value a tensor."""
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()):
        return "a model state that is not a dict of named tensors"
    if net is None:
        return None
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    extra, missing = sorted(set(model) - set(want)), sorted(set(want) - set(model))
    if extra or missing:
        return f"model tensors this model does not have ({', '.join(extra[:3])[:120]})" if extra else \
            f"model tensors missing ({', '.join(missing[:3])[:120]})"
    wrong = next((k for k in want if tuple(model[k].shape) != want[k]), None)
    return None if wrong is None else f"model tensor {wrong} of shape {tuple(model[wrong].shape)}, the model's is " \
                                      f"{want[wrong]}"


def _bad_optimizer(opt, net: torch.nn.Module | None) -> str | None:
    """torch.optim's state_dict form: state {param index: {name: tensor or number}}, param_groups [{params: [int]}];
    with `net`, one entry per parameter it trains (engine.make_optimizer's list), each state tensor its shape."""
    ok = isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list) \
        and all(isinstance(g, dict) and isinstance(g.get("params"), list) and all(type(i) is int for i in g["params"])
                for g in opt["param_groups"])
    ids = [i for g in opt["param_groups"] for i in g["params"]] if ok else []
    ok = ok and all(k in ids and isinstance(s, dict) and all(isinstance(v, (torch.Tensor, int, float)) for v in s.values())
                    for k, s in opt["state"].items())
    if not ok:
        return "an optimizer state that is not a torch optimizer's state dict"
    if net is None:
        return None
    shapes = [tuple(p.shape) for p in net.parameters() if p.requires_grad]
    if sorted(ids) != list(range(len(shapes))):
        return f"an optimizer state for {len(ids)} parameters, the model trains {len(shapes)}"
    for i, s in opt["state"].items():
        for name, v in s.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and tuple(v.shape) != shapes[i]:
                return f"optimizer {name} of parameter {i} of shape {tuple(v.shape)}, the parameter's is {shapes[i]}"
    return None


def _bad_rng(rng) -> str | None:
    """The form _rng_state writes: python's (version, 625 ints, gauss), numpy's MT19937 key, torch's bytes."""
    try:
        version, internal, gauss = rng["python"]
        n = rng["numpy"]
        ok = type(version) is int and len(internal) == 625 and all(type(x) is int for x in internal) and \
            (gauss is None or type(gauss) is float) and _tensor(rng["torch"], torch.uint8, tuple(torch.get_rng_state().shape))
        if isinstance(n, dict):
            ok = ok and n["name"] == "MT19937" and _tensor(n["key"], torch.int64, (624,)) and \
                type(n["pos"]) is int and 0 <= n["pos"] <= 624 and type(n["has_gauss"]) is int and _number(abs(n["gauss"]))
        else:  # the tuple with an ndarray key of checkpoints written before it became a tensor
            ok = ok and n[0] == "MT19937" and isinstance(n[1], np.ndarray) and n[1].shape == (624,)
        ok = ok and all(_tensor(t, torch.uint8) for t in rng.get("cuda", []))
    except (TypeError, KeyError, ValueError, IndexError):
        ok = False
    return None if ok else "random generator states of the wrong form"
