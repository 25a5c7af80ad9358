#!/usr/bin/env bash
# One-shot set-up of .venv for attnzoo: torch, mmcv 2.1.0 (wheel cache or a C++20 source build), the package
# editable with all extras. Idempotent: a stamp file records the inputs, so a second run is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
PINS=$ROOT/tools/pins.txt
WHEELHOUSE=${ZOO_WHEELHOUSE:-$ROOT/../shared/wheels}
CACHE=${ZOO_WHEEL_CACHE:-$HOME/.cache/attnzoo/wheels}
STAMP=$VENV/.attnzoo-stamp
want=$(cat pyproject.toml tools/pins.txt tools/install.sh | sha256sum | cut -d' ' -f1)

if [[ -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

log() { printf '[install] %s\n' "$*"; }
[[ -x $PY ]] || { log "creating .venv"; python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"; }
pip_() { "$PY" -m pip install --disable-pip-version-check -q -c "$PINS" "$@"; }

log "torch + torchvision (pinned)"
pip_ torch torchvision "setuptools<81" wheel

if ! "$PY" -c "import mmcv, mmcv.ops" 2>/dev/null; then
  tag=cp$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
  wheel=""
  for dir in "$WHEELHOUSE" "$CACHE"; do
    for w in "$dir"/mmcv-2.1.0-"$tag"-*.whl; do [[ -f $w ]] && { wheel=$w; break 2; }; done
  done
  if [[ -z $wheel ]]; then
    log "no mmcv 2.1.0 wheel for $tag in $WHEELHOUSE or $CACHE: building it from the sdist (about 25 min on 2 cores)"
    src=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --no-binary :all: mmcv==2.1.0 -d "$src"
    tar -xzf "$src"/mmcv-2.1.0.tar.gz -C "$src"
    # torch 2.14's headers need C++20; mmcv 2.1.0's setup.py asks for C++14/17.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src"/mmcv-2.1.0/setup.py
    mkdir -p "$CACHE"
    (cd "$src/mmcv-2.1.0" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$CACHE" .)
    wheel=$(ls "$CACHE"/mmcv-2.1.0-"$tag"-*.whl | head -n1)
    rm -rf "$src"
    log "cached $wheel"
  fi
  log "mmcv from $wheel"
  pip_ --no-deps "$wheel"
  # mmcv's own runtime deps (the wheel was installed with --no-deps to keep pip from resolving it again)
  pip_ addict mmengine packaging Pillow pyyaml yapf opencv-python
fi

log "attnzoo (editable, extras mm,mllm,dev,yolo)"
# A venv made before the one import root (attnzoo) may still hold the old editable install's four top-level names.
"$PY" -m pip uninstall -y -q attnzoo >/dev/null 2>&1 || true
pip_ -e ".[mm,mllm,dev,yolo]"
echo "$want" > "$STAMP"
log "done"
