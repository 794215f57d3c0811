#!/usr/bin/env bash
# GPU benchmark of diffusers-sonify (issue 16, point 5): SD 1.5 + CLAP-HTSAT shapes, random weights, 512 px, fp16
# and bf16: pipeline latency vs StableDiffusionPipeline, peak memory, training samples/s (adapter only; adapter +
# LoRA) on cached latents, describe throughput of a random VLM at SmolVLM-256M's architecture. 253 s on one H200
# (2026-12-04; at most 8 minutes). DEVELOPERS.md says how to run it on the device machine.
#
#   benchmarks/gpu.sh             # on a CUDA machine; results in $RESULTS_DIR (default: $OUT, else outputs/gpu_bench)
#   benchmarks/gpu.sh --quick     # CPU, tiny shapes, seconds: checks the script (tests/benchmarks runs it)
#
# Extra arguments go to benchmarks/gpu_bench.py (e.g. --dtypes bf16, --steps 50).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
RESULTS_DIR="${RESULTS_DIR:-${OUT:-$ROOT/outputs/gpu_bench}}"
mkdir -p "$RESULTS_DIR"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
LOG="$RESULTS_DIR/gpu_results.log"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  fi
  "$PYTHON" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} | tee "$LOG"
# 480 s: the issue's 8-minute budget; results are written after each dtype, so a cut run keeps what it measured
timeout 480 "$PYTHON" "$ROOT/benchmarks/gpu_bench.py" --output "$RESULTS_DIR/gpu_results.json" "$@" 2>&1 | tee -a "$LOG"
