#!/usr/bin/env bash
# Downloads the CUDA/CPU reference operator's source distribution (torch-ms-deform-attn 0.1.1,
# the Deformable-DETR MSDA operator, packaged) into kernels/vendor_sdist/ (git-ignored).
#
#   bash kernels/fetch_reference_sdist.sh            # download only (needs PyPI)
#   bash kernels/fetch_reference_sdist.sh --build    # and build + install it into the venv
#
# Why a folder: the GPU machine has no network. A device run carries kernels/vendor_sdist/ and
# builds it there against the CUDA toolkit (`kernels/gpu_check.sh` does), so the sdist must be
# fetched here first. Idempotent and quiet: a present sdist is not downloaded again; an
# importable torch_ms_deform_attn is not rebuilt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PEFTSWEEP_VENV:-$root/.venv}"
dest="$root/kernels/vendor_sdist"
spec="torch-ms-deform-attn==0.1.1"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

mkdir -p "$dest"
if ! ls "$dest"/torch_ms_deform_attn-0.1.1.tar.gz >/dev/null 2>&1; then
  # --no-build-isolation: pip prepares the sdist's metadata, whose build needs torch; use the venv's.
  "${pip[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$dest" "$spec"
fi

if [ "${1:-}" = "--build" ]; then
  if "$venv/bin/python" -c "import torch_ms_deform_attn" 2>/dev/null; then
    exit 0
  fi
  # With a CUDA toolkit (a GPU image's build stage has no GPU to detect) build the CUDA operator
  # too, for $TORCH_CUDA_ARCH_LIST (torch's default list when unset: slower).
  if command -v nvcc >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
    export FORCE_CUDA="${FORCE_CUDA:-1}"
  fi
  # --no-build-isolation: the extension must be built against the venv's torch (its ABI).
  MAX_JOBS="${MAX_JOBS:-2}" "${pip[@]}" install --no-build-isolation --no-deps --no-index \
    "$dest"/torch_ms_deform_attn-0.1.1.tar.gz
fi
