#!/usr/bin/env bash
# The NMT study at the `base` preset (the paper's size) on the full en-de data, on one GPU, in about 8
# minutes: AR-only, CMLM-only and JANUS, one seed, each arm on a clock (JANUS twice the baselines', the
# release's 2:1), dropout 0.3, scored with its best-dev checkpoint on the whole test split.
#
# Prepared on the CPU machine and not yet run on a GPU. It needs the project's packages importable by
# python3 (torch with CUDA, ray, deepspeed, megatron-core, webdataset, sentencepiece, sacrebleu) and the
# en-de data and tokenizer in $JANUS_CACHE, fetched where the package registries can be reached
# (`janus data fetch nmt` and one CPU study or demo run leave both in ~/.cache/janus-seq).
#
#   JANUS_CACHE=/path/to/cache cluster/gpu/study-base.sh [OUT]
set -euo pipefail
out=${1:-runs/study-gpu-base}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m cluster.cli study nmt --preset base --vocab 8000 --arms ar,cmlm,janus --seeds 0 --workers 1 \
    --budget 1000000 --arm-minutes 1.2 --janus-ratio 2 --eval-every 400 --dev-examples 200 \
    --token-budget 16384 --lr 1e-3 --warmup-steps 400 --dropout 0.3 --out "$out"
