#!/usr/bin/env bash
# The prepared GPU check of issue 16, one short script for a lent GPU machine (run from the repo root
# after scripts/device_prepare.sh here, with the device tool's `carry: [".device"]`):
#   1. the learners' update on the GPU vs the CPU, same batches, same run (bench/device_bench.py), at
#      256 lists a batch for every family and at 1,024 for LDRO and GRPO (a GPU wants larger batches);
#   2. data-parallel LDRO over nccl, 2 ranks vs 1 (bench/ddp_bench.py --device cuda), when the machine
#      has a GPU per rank; otherwise it writes why not.
# Results go to $OUT (the device tool's folder; ./out/device without it). DEVICE=cpu runs the same steps
# on the CPU (what the test of this script does, with BENCH_ARGS making them tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/device}"
device="${DEVICE:-cuda}"
python="${PYTHON:-python3}"
args=(${BENCH_ARGS:---quick})
mkdir -p "$out"
if compgen -G ".device/whl/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/device-site \
        .device/whl/*.whl
    export PYTHONPATH="/tmp/device-site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .device/data ]; then export STREAMRANK_DATA="$PWD/.device/data"; fi
export PYTHONUNBUFFERED=1
{ if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "no nvidia-smi here"; fi; "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.device_count())'; } > "$out/machine.txt"
"$python" bench/device_bench.py --device "$device" "${args[@]}" --json > "$out/device_bench.json"
"$python" bench/device_bench.py --device "$device" "${args[@]}" --models ldro,grpo --lists "${BIG_LISTS:-1024}" --json \
    > "$out/device_bench_big.json"
gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())')
if [ "$device" = cpu ] || [ "$gpus" -ge 2 ]; then
    "$python" bench/ddp_bench.py --ranks 2 --device "$device" ${DDP_ARGS:---quick} --json > "$out/ddp_bench.json"
else
    echo "ddp_bench --device cuda not run: nccl needs one GPU per rank, this machine has $gpus" > "$out/ddp_bench.txt"
fi
ls "$out"
