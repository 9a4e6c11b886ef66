#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md ("0.3.0 on one GPU"), in one go, on a machine with one CUDA GPU.
#
#   bash benchmarks/gpu_run.sh DATA OUT [part ...]
#
# DATA holds mnist-idx/ and anime-faces-96/ (as ../shared/datasets does). OUT gets a log per part and the
# runs' metrics. Parts, in order (default: env mnist speed faces):
#   env      the GPU, torch and the packages vqgen needs
#   mnist    the default `vqgen train --device cuda` twice (empty cache, then warm), timed whole, then profiled
#   speed    benchmarks/speed.py: each model at fp32 batch 64 and at the GPU defaults, larger batches, a profile
#   faces    63,565 synthetic faces: build, decode on 1 and all cores, the VAE 5 epochs in bf16 and fp32, first batch
#   vae100   the seed's workload: the VAE for 100 epochs on the 63,565 faces
#   compile  the default MNIST run and the VAE's 5 epochs with --compile, and compiled steps
# DEVICE=cpu EPOCHS=1 COUNT=3000 make a quick rehearsal on a machine without a GPU.
# Needs vqgen's `bench` extra (pip install -e ".[bench]"): speed.py times the seed's torchvision pipeline.
set -u
DATA=$(realpath "$1"); OUT=$(realpath "$2"); shift 2
PARTS=${*:-env mnist speed faces}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
COUNT=${COUNT:-63565}
FACES=/tmp/faces-$COUNT
export PYTHONUNBUFFERED=1 PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}"
export VQGEN_CACHE=${VQGEN_CACHE:-/tmp/vqgen-cache}
TIMEFORMAT="=== whole command: %R s"
mkdir -p "$OUT"
cd /tmp || exit 1

vqgen() { $PY -m vqgen "$@"; }
metrics() {   # a run's per-epoch figures, and its config, into the log and OUT
  echo "--- $1/metrics.csv"; cat "$1/metrics.csv"; cp "$1/metrics.csv" "$OUT/$(basename "$1").csv" 2>/dev/null
  grep -E "batch_size|lr:|precision|epochs|compile" "$1/config.yaml" | head -8
}

for part in $PARTS; do
  echo "######## $part $(date +%T)"
  case $part in
  env)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1
    nproc; free -g | head -2
    $PY -c "import torch, torchvision, typer, rich, safetensors, PIL, imageio, yaml, matplotlib; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'bf16', torch.cuda.is_bf16_supported() if torch.cuda.is_available() else '')"
    ;;
  mnist)
    rm -rf /tmp/runs/mnist-*
    time vqgen train --dataset "$DATA/mnist-idx" --device "$DEVICE" --out /tmp/runs --name mnist-cold -q ${EPOCHS:+--epochs $EPOCHS}
    metrics /tmp/runs/mnist-cold
    time vqgen train --dataset "$DATA/mnist-idx" --device "$DEVICE" --out /tmp/runs --name mnist-warm -q ${EPOCHS:+--epochs $EPOCHS}
    metrics /tmp/runs/mnist-warm
    $PY -m cProfile -o "$OUT/mnist.prof" -m vqgen train --dataset "$DATA/mnist-idx" --device "$DEVICE" \
      --out /tmp/runs --name mnist-profiled -q ${EPOCHS:+--epochs $EPOCHS} >/dev/null
    $PY -c "import pstats; pstats.Stats('$OUT/mnist.prof').sort_stats('cumulative').print_stats(45)" | cut -c1-160 | tail -60
    ;;
  speed)
    $PY "$HERE/benchmarks/speed.py" --device "$DEVICE" --steps 50 --only vqvae vae prior \
      --batch-sizes "vqvae=256,1024,2048;vae=128,512;prior=1024" --profile
    ;;
  faces)
    [ -d "$FACES" ] || $PY "$HERE/benchmarks/build_faces.py" --count "$COUNT" --out "$FACES" --source "$DATA/anime-faces-96"
    $PY "$HERE/benchmarks/scale.py" decode --folder "$FACES"
    for precision in auto fp32; do
      rm -rf "/tmp/runs/vae-$precision"
      time vqgen train --model vae --dataset "$FACES" --device "$DEVICE" --epochs "${EPOCHS:-5}" \
        --precision $precision --out /tmp/runs --name "vae-$precision" -q
      metrics "/tmp/runs/vae-$precision"
    done
    $PY "$HERE/benchmarks/scale.py" first-batch --folder "$FACES"
    ;;
  vae100)
    [ -d "$FACES" ] || $PY "$HERE/benchmarks/build_faces.py" --count "$COUNT" --out "$FACES" --source "$DATA/anime-faces-96"
    rm -rf /tmp/runs/vae-100
    time vqgen train --model vae --dataset "$FACES" --device "$DEVICE" --epochs "${EPOCHS:-100}" \
      --out /tmp/runs --name vae-100 -q
    metrics /tmp/runs/vae-100
    ;;
  compile)
    rm -rf /tmp/runs/*-compiled
    time vqgen train --dataset "$DATA/mnist-idx" --device "$DEVICE" --compile --out /tmp/runs --name mnist-compiled -q ${EPOCHS:+--epochs $EPOCHS}
    metrics /tmp/runs/mnist-compiled
    time vqgen train --model vae --dataset "$FACES" --device "$DEVICE" --epochs "${EPOCHS:-5}" --compile \
      --out /tmp/runs --name vae-compiled -q
    metrics /tmp/runs/vae-compiled
    $PY "$HERE/benchmarks/speed.py" --device "$DEVICE" --steps 50 --only vqvae vae --compile
    ;;
  *) echo "unknown part $part"; exit 2 ;;
  esac 2>&1 | tee "$OUT/$part.log"
done
