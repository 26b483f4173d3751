#!/usr/bin/env bash
# The lecture's epoch on a GPU, end to end, in one command (<= 8 min on a CUDA machine): one table,
# printed and written to OUT/gpu_check.txt (default OUT: ./gpu-check). What it measures: gpu_check.py.
#
#   benchmarks/gpu_check.sh [--out DIR] [--budget-s 480]
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh      # or --tiny: toy sizes on a CPU (CI runs this)
#
# Python: $PYTHON, else the project's .venv, else python3; it needs torch and torchvision. A bare machine
# (Python + PyTorch only, no network) gets the rest from wheels carried in $GPU_CHECK_WHEELS (default
# ./wheels next to this repository's README; made by `pip download`, README "Speed"): they are installed
# with pip --no-index into .gpu-check-venv, which sees the machine's own torch (--system-site-packages).
# Without them the parts that need a package it lacks say so in their row ("n/a") and the rest still run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py=$root/.venv/bin/python; else py=python3; fi
fi
wheels=${GPU_CHECK_WHEELS:-$root/wheels}
# find_spec, not import: importing mlflow alone takes seconds
missing() { "$py" -c "import importlib.util as u, sys; sys.exit(all(u.find_spec(m) for m in sys.argv[1:]))" "$@"; }
if missing yaml tqdm mlflow && [ -d "$wheels" ]; then
    venv=$root/.gpu-check-venv
    [ -x "$venv/bin/python" ] || "$py" -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install --quiet --no-index --find-links "$wheels" \
        -r "$root/benchmarks/gpu_check_requirements.txt"
    py=$venv/bin/python
fi
if missing torch torchvision; then echo "gpu_check: $py has no torch or no torchvision" >&2; exit 2; fi
# googlenet_study from this checkout, installed or not; the benchmark modules from benchmarks/.
export PYTHONPATH="$root:$root/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$root/benchmarks/gpu_check.py" "$@"
