#!/usr/bin/env bash
# Probe 12 of docs/s1-alignment.md (run from the repository root after `make demo`, whose stage 1 now has the
# cosine CTC head): the continuous feed (ctc_pool) for the demo's own stage-2 budget (160 steps), without and
# with the alignment loss (model.pool_align_weight: 1 - cos(pooled run, its token's embedding)); the demo's
# stage 2 (hard tokens, same steps) is the row they are measured against.
set -euo pipefail
export HF_HUB_OFFLINE=1 PYTHONPATH=src AURALM_PROGRESS=0
D=${1:-runs/demo}; OUT=${2:-runs/pool}
M=$D/corpus/manifest.jsonl; C=$D/embeddings
A=".venv/bin/python -m auralm"
S1=$(ls -d $D/stage1/checkpoints/step-* | sort | tail -1)
common="data.manifest=$M data.cache_dir=$C init_from=$S1 optim.max_minutes=30 eval_every=1000 save_every=1000
        model.feed=ctc_pool model.audio_norm=embedding optim.connector_lr_scale=1.0"
for w in 0 1; do
  $A hear train --preset hear-demo-stage2 --out $OUT/align$w $common model.pool_align_weight=$w
  $A hear eval --checkpoint $OUT/align$w/checkpoints/step-000160 --manifest $M --limit 100 --no-whisper --copy-bias 2 > $OUT/align$w-eval.txt
done
