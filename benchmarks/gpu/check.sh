#!/usr/bin/env bash
# Issue 10's GPU checks in one run on a lent CUDA machine (the device tool's `run`), about 6-8 minutes on
# one H200 (each step has its own time limit; all of them together stay under 570 s): the CUDA tests,
# `bench speed --methods all` at batch 1 and 32 in fp32 / fp16 / bf16, `bench select` and `bench mllm`
# on the GPU, the farthest-first strategies, and the ragged-form comparison. Everything it measures lands in $OUT (or ./gpu_out) for docs/benchmarks.md.
#
# The device image has torch, timm, transformers, scipy, matplotlib, tqdm, Pillow and safetensors but
# not pycocotools or PyAV: carry them as wheels (see benchmarks/gpu/README.md) in .whl/.
#   run(command="bash benchmarks/gpu/check.sh", carry=[".whl"], timeout_s=600)
# Eight files come back from $OUT (the device tool's limit): machine.txt, cuda_tests.log, speed_cuda.json,
# select_cuda.json, mllm_cuda.json, strategies_cuda.json, ragged_cuda.txt and stderr.log.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'; } \
    2>&1 | tee "$OUT/machine.txt"
# 1. every CUDA test (each skips on a machine without a GPU; here none may skip)
timeout 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_run_device.py tests/test_cuda*.py 2>&1 | tee "$OUT/cuda_tests.log"
# 2. the table on the GPU: every in-ViT method, batch 1 and 32, three dtypes (JSON: rows + checks)
timeout 180 python3 -m patchprune.cli bench speed --methods all --device cuda --batches 1,32 --dtype fp32,fp16,bf16 --json \
    > "$OUT/speed_cuda.json" 2>> "$OUT/stderr.log"; echo "bench speed rc $?"
# 3. the selectors alone (EVTP paper's setting, 4 x 729 x 1152) and the LLaVA-style prefill on the GPU
timeout 40 python3 -m patchprune.cli bench select --device cuda --json > "$OUT/select_cuda.json" 2>> "$OUT/stderr.log"; echo "bench select rc $?"
timeout 90 python3 -m patchprune.cli bench mllm --device cuda --json > "$OUT/mllm_cuda.json" 2>> "$OUT/stderr.log"; echo "bench mllm rc $?"
# the farthest-first engine's matrix mode (host chain) against plain steps on the device
timeout 50 python3 benchmarks/gpu/strategies.py --device cuda > "$OUT/strategies_cuda.json" 2>> "$OUT/stderr.log"; echo "strategies rc $?"
# 4. which ragged form a GPU wants (samples keeping different counts at batch 32)
timeout 60 python3 -m patchprune.cli bench speed --device cuda --batch 32 --policy random-bernoulli --spread 0.5 --ragged split,pack,pad \
    2>&1 | tee "$OUT/ragged_cuda.txt"
