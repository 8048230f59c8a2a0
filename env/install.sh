#!/usr/bin/env bash
# Create (or verify) the hpctrain virtual environment with the pinned stack:
#   TensorFlow 2.21 (CPU wheel; GPU with HPCTRAIN_GPU=1) + tf-keras 2.21 + Horovod 0.28.1
#   built from source with MPI and Gloo, mpi4py, h5py, numpy, submitit, and hpctrain itself.
#
#   env/install.sh                 # venv in ./.venv
#   HPCTRAIN_VENV=/path env/install.sh
#   HPCTRAIN_GPU=1 env/install.sh  # GPU cluster: tensorflow[and-cuda] + Horovod with NCCL
#
# Idempotent: a stamp holding the hash of the pins (this file + requirements.txt) makes a
# second run cost a second. It needs MPI, cmake and g++ on PATH: `env/install-system.sh`
# on Debian, `module load` on a cluster (see env/modules/hpctrain.lua).
#
# The Horovod wheel it builds is kept in HPCTRAIN_WHEEL_CACHE (default
# ~/.cache/hpctrain/wheels), named by the hash of everything the build depends on (this
# script, the TensorFlow pin, the compiler, MPI and Python): a second venv on the same
# machine (a fresh clone, CI) installs it in seconds instead of compiling for minutes.
# HPCTRAIN_WHEEL_CACHE=off always builds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="${HPCTRAIN_VENV:-$repo/.venv}"
gpu="${HPCTRAIN_GPU:-0}"
python="${PYTHON:-python3}"

TF_KERAS_VERSION=2.21.0
HOROVOD_VERSION=0.28.1
HOROVOD_DEPS=(cloudpickle==3.1.2 packaging==25.0)

# The stamp covers what forces a rebuild of the venv and of Horovod: this script and the
# TensorFlow pin. The other pins are applied to an existing venv with pip (seconds).
stamp_hash="$( (cat "$here/install.sh"; grep -i '^tensorflow' "$here/requirements.txt") \
  | sha256sum | cut -c1-16)-gpu$gpu"
stamp="$venv/.hpctrain-stamp"

log() { echo "env/install: $*"; }
die() { echo "env/install: ERROR: $*" >&2; exit 1; }

verify() {
  # Horovod must be built with TensorFlow, MPI and Gloo; then two real ranks must start,
  # see legacy Keras 2 (Keras 3 silently skips gradient averaging) and allreduce.
  "$venv/bin/horovodrun" --check-build >"$venv/check-build.txt" 2>&1 \
    || { cat "$venv/check-build.txt"; die "horovodrun --check-build failed"; }
  for want in "\[X\] TensorFlow" "\[X\] MPI" "\[X\] Gloo"; do
    grep -q "$want" "$venv/check-build.txt" || { cat "$venv/check-build.txt"; die "Horovod lacks ${want//\\/}"; }
  done
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 TF_USE_LEGACY_KERAS=1 \
    timeout 300 "$venv/bin/horovodrun" -np 2 -H localhost:2 --gloo \
    "$venv/bin/python" "$repo/scripts/check_stack.py" \
    || die "2-rank Horovod check failed (scripts/check_stack.py)"
}

# What a verified venv holds: the pins, the package's metadata and every installed version.
# When none of it changed since the last verify (make lint, then make test, then make demo),
# there is nothing to sync or check again: ~25 s of CPU (pip, and TensorFlow in three
# processes) saved each time. Any pip install into the venv changes the freeze, and the next
# run syncs and verifies again.
verified="$venv/.hpctrain-verified"
venv_state() {
  { echo "$stamp_hash"; cat "$here/requirements.txt" "$repo/pyproject.toml"
    "$venv/bin/python" -m pip --disable-pip-version-check freeze --all --exclude hpctrain \
      2>/dev/null; } \
    | sha256sum | cut -c1-16
}

if [[ -f "$stamp" && "$(cat "$stamp")" == "$stamp_hash" ]]; then
  if [[ -f "$verified" && "$(cat "$verified")" == "$(venv_state)" ]]; then
    log "venv $venv is as pinned and verified, and unchanged since; nothing to do"
    exit 0
  fi
  log "venv $venv has TensorFlow and Horovod as pinned ($stamp_hash); syncing the other pins"
  "$venv/bin/python" -m pip --disable-pip-version-check install -q -r "$here/requirements.txt" \
    "${HOROVOD_DEPS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$repo" >/dev/null
  verify
  venv_state >"$verified"
  log "ok"
  exit 0
fi
rm -f "$verified"

for tool in mpicc mpirun cmake g++; do
  command -v "$tool" >/dev/null || die "$tool not found: run env/install-system.sh (Debian) or module load MPI/cmake/gcc"
done

log "creating $venv"
rm -f "$stamp"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip==24.3.1 setuptools==75.6.0 wheel==0.45.1

reqs=("-r" "$here/requirements.txt")
if [[ "$gpu" == 1 ]]; then
  # GPU clusters: the CUDA build of TensorFlow instead of the CPU wheel.
  sed 's/^tensorflow-cpu==\(.*\)$/tensorflow[and-cuda]==\1/' "$here/requirements.txt" >"$venv/requirements-gpu.txt"
  reqs=("-r" "$venv/requirements-gpu.txt")
fi
log "installing pinned packages"
"${pip[@]}" install -q "${reqs[@]}" "${HOROVOD_DEPS[@]}"
# tf-keras declares a dependency on the full `tensorflow` wheel; --no-deps keeps the CPU wheel.
"${pip[@]}" install -q --no-deps "tf-keras==$TF_KERAS_VERSION"

hvd_env=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
         HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1)
[[ "$gpu" == 1 ]] && hvd_env+=(HOROVOD_GPU_OPERATIONS=NCCL)
cache="${HPCTRAIN_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hpctrain/wheels}"
# What the compiled wheel depends on: the build recipe below, TensorFlow's headers and ABI,
# the compiler, the MPI library and the Python it was built for.
build_key="$( (echo "$stamp_hash"; g++ --version | head -1; mpicc --showme:version 2>&1 \
  || mpicc --version | head -1; "$python" -c 'import sys; print(sys.version)') \
  | sha256sum | cut -c1-16)"
wheel_dir="$cache/horovod-$HOROVOD_VERSION-$build_key"
wheel=("$wheel_dir"/horovod-*.whl)

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
if [[ "$cache" != off && -f "${wheel[0]}" ]]; then
  log "Horovod $HOROVOD_VERSION from the wheel built earlier on this machine: ${wheel[0]}"
else
  log "building Horovod $HOROVOD_VERSION from source (2-4 minutes)"
  "${pip[@]}" download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$build"
  tar -xzf "$build/horovod-$HOROVOD_VERSION.tar.gz" -C "$build"
  src="$build/horovod-$HOROVOD_VERSION"
  # Fix 1: xla_mpi_ops.cc includes XLA headers that TensorFlow >= 2.19 no longer ships, so it
  # does not compile. It only serves Horovod's XLA ops, which the Keras path never uses.
  sed -i '/xla_mpi_ops.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
  # Fix 2: with TF >= 2.16, `from keras import backend` imports Keras 3 even when
  # TF_USE_LEGACY_KERAS=1, and the Horovod callbacks crash (no `get_value`). Use the backend
  # of `tensorflow.keras`, which is tf-keras (Keras 2) under TF_USE_LEGACY_KERAS=1.
  for f in keras/__init__.py keras/callbacks.py; do
    grep -q "from keras import backend as K" "$src/horovod/tensorflow/$f" \
      || die "Horovod source changed: $f"
    sed -i 's/^\( *\)from keras import backend as K$/\1K = keras.backend  # patched by hpctrain env\/install.sh/' \
      "$src/horovod/tensorflow/$f"
  done
  env "${hvd_env[@]}" MAKEFLAGS="-j$(nproc)" "${pip[@]}" wheel -q --no-deps --no-build-isolation \
    --no-cache-dir "$src" -w "$build/wheel" >"$venv/horovod-build.log" 2>&1 \
    || { tail -40 "$venv/horovod-build.log"; die "Horovod build failed (full log: $venv/horovod-build.log)"; }
  wheel=("$build"/wheel/horovod-*.whl)
  if [[ "$cache" != off ]]; then
    # into the cache under a temporary name, then renamed: a half-copied wheel is never found
    mkdir -p "$cache"
    tmp="$(mktemp -d "$cache/.partial-XXXXXX")"
    cp "${wheel[0]}" "$tmp/" && sync "$tmp/$(basename "${wheel[0]}")"
    rm -rf "$wheel_dir" && mv "$tmp" "$wheel_dir" \
      && log "kept the wheel for the next venv: $wheel_dir" || rm -rf "$tmp"
  fi
fi
"${pip[@]}" install -q --no-deps "${wheel[0]}"

log "installing hpctrain (editable)"
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$repo"

verify
echo "$stamp_hash" >"$stamp"
venv_state >"$verified"
log "ok: $venv"
