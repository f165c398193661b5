#!/usr/bin/env bash
# device.graphs checked on a GPU: install the project, then one table (benchmarks/gpu_check.py):
# a single run and a 64-member stack with the eager step, the step to capture run as it is, and
# the step captured and replayed; the seed's loop; the IW estimate at K=1000 and K=5000. Exits 1
# when a capture trains another model than the step it captured. Under 5 minutes on a fresh GPU
# machine that has torch installed.
#
#   bash benchmarks/gpu_check.sh                        # CUDA, Fashion-MNIST (--root DIR)
#   bash benchmarks/gpu_check.sh --cpu-dry-run          # tiny, on the CPU: proves the script
#
# Needs Fashion-MNIST's four IDX files (Debian's dataset-fashion-mnist, or --root DIR); it never
# downloads. Set NO_INSTALL=1 to use the vae-runner already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${NO_INSTALL:-}" ]; then
    # torch and the rest are there already: install only the project (its config files too).
    # Offline, pip cannot fetch setuptools for an isolated build: then the installed one builds.
    python -m pip install --quiet --no-deps -e . ||
        python -m pip install --quiet --no-deps --no-build-isolation -e .
fi
python benchmarks/gpu_check.py "$@"
