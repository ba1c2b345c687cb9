#!/usr/bin/env bash
# The GPU figures of issue 11, on the device machine (../shared/device/README.md: one H100,
# 16 cores, JAX, no TensorFlow, no network, at most 64 MiB carried per command).
#
# Here, first (the wheel sets go in ignored folders of the checkout):
#   bash ../shared/device/wheels.sh keras; bash ../shared/device/wheels.sh beam
#   bash ../shared/device/wheels.sh gpudecode
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 -d .whl-tables deltalake arro3-core
# Then, on the device, one command per step while the machine stays warm (each carries
# only its own wheel folders; files under /tmp survive between commands):
#   bash benchmarks/gpu_machine.sh install .whl-keras .whl-beam      # carry those two
#   bash benchmarks/gpu_machine.sh install .whl-tables .whl-gpudecode
#   bash benchmarks/gpu_machine.sh run                                # JSON under $OUT
# STAGE_RATES_FLAGS adds flags to stage_rates.py, e.g. "--cost NAME:PRICE:CORES:GPUS" with
# the machine prices you pay.
set -euo pipefail
step=${1:?usage: gpu_machine.sh install DIR... | run}
shift
site=/tmp/site
case $step in
  install)
    for dir in "$@"; do
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$dir"/*.whl
    done
    ;;
  run)
    export PYTHONPATH="$site:$PWD" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
    export LD_LIBRARY_PATH="$site/nvidia/nvjpeg/lib:$site/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}"
    # nvImageCodec allocates outside JAX's pool: JAX must not take the whole GPU up front.
    export XLA_PYTHON_CLIENT_PREALLOCATE=false
    export CAPTIONING_NVIMGCODEC_BACKENDS="${CAPTIONING_NVIMGCODEC_BACKENDS:-hw,hybrid}"
    out=${OUT:-/tmp/out}
    mkdir -p "$out"
    nvidia-smi -L > "$out/gpu.txt" 2>&1 || true
    python3 benchmarks/gpu_decode.py > "$out/gpu_decode.json" 2> "$out/gpu_decode.err" || true
    work=/tmp/stage_work
    for size in 640x480 4032x3024; do
      images=3000
      [ "$size" = 4032x3024 ] && images=600
      python3 benchmarks/stage_rates.py --untrained-bundle --workdir "$work-$size" \
        --photo-size "$size" --images "$images" --caption-flags "--gpu" \
        ${STAGE_RATES_FLAGS:-} > "$out/stage_rates_$size.json" 2> "$out/stage_rates_$size.err" || true
    done
    ls -la "$out"
    ;;
  *)
    echo "unknown step $step" >&2
    exit 2
    ;;
esac
