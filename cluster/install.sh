#!/usr/bin/env bash
# Installs peftsweep and everything it needs into a project-local virtual environment.
#
#   bash cluster/install.sh            # creates ./.venv (or $PEFTSWEEP_VENV) and installs into it
#   PEFTSWEEP_VENV=/opt/venv bash cluster/install.sh
#
# Idempotent: a second run only checks. detectron2 is not on PyPI: an importable detectron2 is
# kept as it is (GPU images build it from source, see cluster/docker/Dockerfile); otherwise the
# `sal-detectron2` wheel (upstream detectron2 main, 2024-04) is repacked as pure Python without
# its compiled _C for torch 2.3 and without its stale `numpy<2` pin, and installed. Our code never
# needs _C (deformable convolution, rotated boxes); ROIAlign and nms fall back to torchvision.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PEFTSWEEP_VENV:-$root/.venv}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3

if [ ! -x "$venv/bin/python" ]; then
  echo "[install] creating virtual environment $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

stamp="$venv/.peftsweep-installed"
want="$(sha256sum "$root/pyproject.toml" "$root/cluster/install.sh" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[install] environment up to date ($venv)"
  exit 0
fi

"${pip[@]}" install --upgrade "pip>=24" wheel
echo "[install] installing peftsweep and its pinned dependencies (torch is large: about 2 minutes)"
"${pip[@]}" install -e "$root[dev]"

# Real instance-segmentation data for the tests: the nuclei image + labels that ship inside the
# stardist wheel (BSD-3). Only the two files are taken, so stardist's own stack is not installed.
data="$venv/share/peftsweep/stardist"
if [ ! -f "$data/mask2d.tif" ]; then
  tmpw="$(mktemp -d)"
  "${pip[@]}" download --no-deps -d "$tmpw" "stardist==0.9.2"
  mkdir -p "$data"
  "$venv/bin/python" - "$tmpw" "$data" <<'PY'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(next(src.glob("stardist-*.whl"))) as whl:
    for name in ("img2d.tif", "mask2d.tif"):
        (dst / name).write_bytes(whl.read(f"stardist/data/images/{name}"))
PY
  rm -rf "$tmpw"
fi

if "$venv/bin/python" -c "import detectron2" 2>/dev/null; then
  echo "[install] using the importable detectron2: $("$venv/bin/python" -c 'import detectron2; print(detectron2.__file__)')"
else
  echo "[install] repacking sal-detectron2==0.7.2 as a pure-Python detectron2"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "${pip[@]}" download --no-deps --only-binary :all: --python-version 3.10 -d "$work" "sal-detectron2==0.7.2"
  "$venv/bin/python" -m wheel unpack -d "$work/src" "$work"/sal_detectron2-*.whl
  pkg="$(echo "$work"/src/sal_detectron2-*)"
  rm -f "$pkg"/detectron2/_C.*.so
  info="$(echo "$pkg"/*.dist-info)"
  sed -i -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' -e 's/^Tag: .*/Tag: py3-none-any/' "$info/WHEEL"
  sed -i -e '/^Requires-Dist: numpy/d' "$info/METADATA"
  mkdir -p "$work/dist"
  "$venv/bin/python" -m wheel pack -d "$work/dist" "$pkg" >/dev/null
  "${pip[@]}" install "$work"/dist/*.whl
fi

# The compiled MSDA operator (torch-ms-deform-attn, an sdist built against this torch): the CPU
# path of kernels.ms_deform_attn (3-7x grid_sample on the op) and the GPU check's CUDA
# reference. Optional: without it MSDA runs on grid_sample. About 1.5 minutes on 2 cores, once.
if ! "$venv/bin/python" -c "import torch_ms_deform_attn" 2>/dev/null; then
  echo "[install] building torch-ms-deform-attn 0.1.1 (compiled MSDA operator, log: $venv/msda-build.log)"
  PEFTSWEEP_VENV="$venv" bash "$root/kernels/fetch_reference_sdist.sh" --build >"$venv/msda-build.log" 2>&1 \
    || echo "[install] torch-ms-deform-attn did not build (see the log): MSDA uses the grid_sample path"
fi

"$venv/bin/python" -m pip check
"$venv/bin/python" -c "import detectron2, ray, optuna, peft, pyarrow, wandb, triton, torch; print('[install] ok: torch', torch.__version__, 'ray', ray.__version__, 'optuna', optuna.__version__)"
echo "$want" > "$stamp"
