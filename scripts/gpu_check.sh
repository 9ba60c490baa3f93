#!/usr/bin/env bash
# The prepared GPU check: run it first whenever a CUDA machine is lent (the device tool), and put its table in the
# note. From the repo root:   bash scripts/gpu_check.sh
# It runs, in at most 8 minutes (each step has its own limit: 150 + 150 + 180 s):
#   1. pytest tests/test_gpu.py                        (CUDA loop with bf16/compile, reproducibility, CUDA graphs)
#   2. scripts/bench.py --device cuda --json            (ours vs HF generate / an HF training loop; the per-stage
#                                                        times come from step 3, so no --generations here)
#   3. a 10-generation --preset shakespeare run on tinyshakespeare.txt ($CORPUS, else corpora/ in the checkout,
#      else ../shared/corpora/), as many generations as finish within its limit
# and prints one Markdown table: sampling tokens/s ours vs HF generate at batch 64 and at the largest batch that
# fits, training tokens/s and MFU, seconds per generation by stage, peak memory. Outputs (logs, bench.json, the
# run's metrics.jsonl and summary.json; the run itself, ~40 MB of weights a generation, stays in a temporary folder)
# go to $OUT if set (the device tool's folder), else runs/gpu-check/.
# Through the device tool, whose machine gets the checkout but not ../shared: first, here,
#   mkdir -p corpora && cp ../shared/corpora/tinyshakespeare.txt corpora/     (corpora/ is git-ignored)
# then run `bash scripts/gpu_check.sh` with carry ["corpora"] and timeout_s 540.
# Without CUDA it prints one line and exits 2. The table always comes; the exit status is 1 if the tests or the
# benchmark failed (a Shakespeare run stopped by its limit is expected, not a failure), else 0.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is false); nothing run" >&2
  exit 2
fi
DIR=${OUT:-runs/gpu-check}
mkdir -p "$DIR/shakespeare"
if [ -z "${CORPUS:-}" ]; then
  CORPUS=corpora/tinyshakespeare.txt
  [ -f "$CORPUS" ] || CORPUS=../shared/corpora/tinyshakespeare.txt
fi
RUN=$(mktemp -d)/shakespeare
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "CUDA", torch.version.cuda,
"transformers", transformers.__version__)' > "$DIR/gpu.txt" 2>&1
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$DIR/gpu.txt" 2>&1 || true

failed=0
t0=$(date +%s)
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py -o addopts="" > "$DIR/pytest.log" 2>&1
rc=$?; [ $rc -eq 0 ] || failed=1
echo "pytest rc=$rc $(tail -n 1 "$DIR/pytest.log")" > "$DIR/steps.txt"
timeout 150 "$PY" scripts/bench.py --device cuda --generations "" --json "$DIR/bench.json" > "$DIR/bench.log" 2>&1
rc=$?; [ $rc -eq 0 ] || failed=1
echo "bench rc=$rc$([ $rc -eq 124 ] && echo ' (stopped at 150 s: bench.json holds the rows measured by then)')" \
  >> "$DIR/steps.txt"
if [ -f "$CORPUS" ]; then
  timeout 180 "$PY" -m training run --preset shakespeare --corpus.path="$CORPUS" --loop.generations=10 \
    --loop.progress=false --out "$RUN" > "$DIR/shakespeare.log" 2>&1
  rc=$?
  for f in metrics.jsonl summary.json; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$DIR/shakespeare/"; done
  echo "shakespeare rc=$rc (10 generations, or as many as finished within 180 s)" >> "$DIR/steps.txt"
else
  echo "shakespeare skipped: no corpus at $CORPUS (set CORPUS=FILE, or copy it into corpora/)" >> "$DIR/steps.txt"
fi
echo "total $(( $(date +%s) - t0 )) s" >> "$DIR/steps.txt"
rm -rf "$(dirname "$RUN")"

"$PY" scripts/gpu_table.py "$DIR"
exit $failed
