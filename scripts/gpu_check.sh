#!/usr/bin/env bash
# The prepared GPU check: run it first whenever a CUDA machine is lent (the device tool), and put its table in the
# note. From the repo root:   bash scripts/gpu_check.sh
# It runs, in under 8 minutes on one H100/H200:
#   1. pytest tests/test_gpu.py                        (CUDA loop with bf16/compile, reproducibility, CUDA graphs)
#   2. scripts/bench.py --device cuda --json            (ours vs HF generate / an HF training loop)
#   3. a 10-generation --preset shakespeare run on ../shared/corpora/tinyshakespeare.txt (or $CORPUS)
# and prints one Markdown table: sampling tokens/s ours vs HF generate at batch 64 and at the largest batch that
# fits, training tokens/s and MFU, seconds per generation by stage, peak memory. Outputs (logs, bench.json, the
# run's metrics.jsonl) go to $OUT if set (the device tool's folder), else runs/gpu-check/.
# Without CUDA it prints one line and exits 2. Each step has its own time limit, so the table always comes.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is false); nothing run" >&2
  exit 2
fi
DIR=${OUT:-runs/gpu-check}
mkdir -p "$DIR"
CORPUS=${CORPUS:-../shared/corpora/tinyshakespeare.txt}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$DIR/gpu.txt" 2>&1 || true

t0=$(date +%s)
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py -o addopts="" > "$DIR/pytest.log" 2>&1
echo "pytest rc=$? $(tail -n 1 "$DIR/pytest.log")" > "$DIR/steps.txt"
timeout 210 "$PY" scripts/bench.py --device cuda --json "$DIR/bench.json" > "$DIR/bench.log" 2>&1
echo "bench rc=$?" >> "$DIR/steps.txt"
if [ -f "$CORPUS" ]; then
  timeout 240 "$PY" -m training run --preset shakespeare --corpus.path="$CORPUS" --loop.generations=10 \
    --loop.progress=false --out "$DIR/shakespeare" --overwrite > "$DIR/shakespeare.log" 2>&1
  echo "shakespeare rc=$? (10 generations, or as many as finished within 240 s)" >> "$DIR/steps.txt"
else
  echo "shakespeare skipped: no corpus at $CORPUS (set CORPUS=FILE)" >> "$DIR/steps.txt"
fi
echo "total $(( $(date +%s) - t0 )) s" >> "$DIR/steps.txt"

"$PY" scripts/gpu_table.py "$DIR"
