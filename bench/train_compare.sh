#!/usr/bin/env bash
# Training throughput of the example GPT, tilegrad vs the same model in PyTorch, in one
# command on one GPU. Usage: bench/train_compare.sh BUILD_DIR [STEPS] (default 120).
# tilegrad-train runs its GPU configuration (6 layers, d_model 384, 6 heads, context 1024,
# batch 16, bf16, block 64, window 4 blocks + 1 global block) and prints its steady-state
# tokens/s, the pool statistics and a kernel profile of TG_PROFILE_STEPS steps (default
# 5; excluded from the steady-state figure); bench/gpt_torch.py runs the same configuration with
# dense causal SDPA, SDPA with the same block mask, FlexAttention with it, and blksprs
# attention with it (when blksprs is importable).
set -uo pipefail
build="${1:?usage: bench/train_compare.sh BUILD_DIR [STEPS]}"
steps="${2:-120}"
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
"$build/examples/tilegrad-train" --device cuda --steps "$steps" --eval-every "$steps" --eval-batches 2 \
  --sample-len 64 --quiet --csv "$tmp/loss.csv" --checkpoint "$tmp/gpt.safetensors" --profile "${TG_PROFILE_STEPS:-5}" |
  awk '/^--- sample ---/ { done = 1 } !done && !/^(loss curve|$)/'
# blksprs for the block-sparse PyTorch twin: BLKSPRS_PATH, else peers/blksprs-src when present.
[ -z "${BLKSPRS_PATH:-}" ] && [ -d "$here/../peers/blksprs-src" ] && export BLKSPRS_PATH="$here/../peers/blksprs-src"
python3 "$here/gpt_torch.py" --dtype bf16 --steps "$(( steps < 60 ? steps : 60 ))" --dropout 0.1 \
  --profile "${TG_PROFILE_STEPS:-5}"
rm -rf "$tmp"
