#!/usr/bin/env bash
# The GPU check of the MSDA kernels, in one command, on a CUDA machine (H100/H200), < 5 minutes:
#
#   bash kernels/fetch_reference_sdist.sh     # once, where PyPI is reachable (the GPU box has no network)
#   bash kernels/gpu_check.sh                 # on the GPU machine, from anywhere in the repository
#
# Builds the CUDA reference operator from kernels/vendor_sdist/ (carry that folder to the machine),
# runs tests/kernels compiled on CUDA, checks correctness at Mask DINO R50 shapes and times every
# path; writes kernels/benchmarks/gpu_check_<gpu>.json (and copies it into $OUT when that is set).
# See kernels/gpu_check.py for the sections. Extra arguments go to it (e.g. --budget-s 200).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# the project's venv where it has a CUDA torch, else the machine's python3 (a GPU image's torch)
py="${PYTHON:-}"
if [ -z "$py" ]; then
  py=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    py=.venv/bin/python
  fi
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET

# the outer guard: the script keeps its own budget (285 s); this stops a hang in a CUDA call
timeout -k 10 300 "$py" -m kernels.gpu_check --out kernels/benchmarks/ "$@"
rc=$?
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
  cp kernels/benchmarks/gpu_check_*.json "$OUT"/ 2>/dev/null || true
fi
exit $rc
