#!/usr/bin/env bash
# The lecture's epoch on a GPU, end to end, in one command (<= 8 min on a CUDA machine): one table,
# printed and written to OUT/gpu_check.txt (default OUT: ./gpu-check). What it measures: gpu_check.py.
#
#   benchmarks/gpu_check.sh [--out DIR] [--budget-s 480]
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh      # or --tiny: toy sizes on a CPU (CI runs this)
#
# Python: $PYTHON, else the project's .venv, else python3; it needs torch and torchvision. A bare machine
# (Python + PyTorch only, no network) gets the rest from wheels carried in $GPU_CHECK_WHEELS (default
# wheels/ in this checkout; made by `pip download`, docs/gpu-check.md): pip --no-index installs them
# into .gpu-check-packages/ (--target, then on PYTHONPATH: any interpreter, venv or conda or system,
# keeps its own torch). Without mlflow, (b) and (d) say "n/a" and the rest still runs; pyyaml and tqdm
# are needed by everything.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py=$root/.venv/bin/python; else py=python3; fi
fi
wheels=${GPU_CHECK_WHEELS:-$root/wheels}
# find_spec, not import: importing mlflow alone takes seconds
missing() { "$py" -c "import importlib.util as u, sys; sys.exit(all(u.find_spec(m) for m in sys.argv[1:]))" "$@"; }
packages=$root/.gpu-check-packages
if [ -d "$packages" ]; then export PYTHONPATH="$packages${PYTHONPATH:+:$PYTHONPATH}"; fi
if missing yaml tqdm mlflow && [ -d "$wheels" ]; then
    if "$py" -m pip --version >/dev/null 2>&1; then
        "$py" -m pip install --quiet --no-index --find-links "$wheels" --target "$packages" --upgrade \
            -r "$root/benchmarks/gpu_check_requirements.txt"
    else  # no pip (Debian's python3 without python3-pip): a wheel is a zip of what goes on the path
        for w in "$wheels"/*.whl; do "$py" -m zipfile -e "$w" "$packages"; done
    fi
    export PYTHONPATH="$packages${PYTHONPATH:+:$PYTHONPATH}"
fi
if missing torch torchvision; then echo "gpu_check: $py has no torch or no torchvision" >&2; exit 2; fi
if missing yaml tqdm; then
    echo "gpu_check: $py lacks pyyaml or tqdm and $wheels has none; carry wheels (docs/gpu-check.md)" >&2
    exit 2
fi
# googlenet_study from this checkout, installed or not; the benchmark modules from benchmarks/.
export PYTHONPATH="$root:$root/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$root/benchmarks/gpu_check.py" "$@"
