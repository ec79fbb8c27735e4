#!/usr/bin/env bash
# Probe 14 of docs/s1-alignment.md (run from the repository root after `make demo`): stage 1 with the pooled-run
# alignment beside the CTC loss (model.pool_align_weight=W: 1 - cos(each CTC run's mean frame, its token's
# embedding)), so that the continuous feed starts from frames near the hard tokens' embeddings; then the demo's
# 160 stage-2 steps from it, continuous (ctc_pool) and hard tokens, each scored as the demo scores.
#   bash experiments/s1_stage1_align.sh [DEMO=runs/demo] [OUT=runs/align1] [W=1] [stage1|stage2-pool|stage2-hard|all]
set -euo pipefail
export HF_HUB_OFFLINE=1 PYTHONPATH=src AURALM_PROGRESS=0
D=${1:-runs/demo}; OUT=${2:-runs/align1}; W=${3:-1}; WHAT=${4:-all}
M=$D/corpus/manifest.jsonl; C=$D/embeddings
A=".venv/bin/python -m auralm"
data="data.manifest=$M data.cache_dir=$C optim.max_minutes=60 save_every=1000"
if [[ $WHAT == stage1 || $WHAT == all ]]; then
  $A hear train --preset hear-demo-stage1 --out $OUT/s1 $data model.feed=ctc_pool model.pool_align_weight=$W
fi
S1=$OUT/s1/checkpoints/step-002000
if [[ $WHAT == stage2-pool || $WHAT == all ]]; then
  $A hear train --preset hear-demo-stage2 --out $OUT/pool $data init_from=$S1 eval_every=1000 \
    model.feed=ctc_pool model.audio_norm=embedding optim.connector_lr_scale=1.0 model.pool_align_weight=$W
  $A hear eval --checkpoint $OUT/pool/checkpoints/step-000160 --manifest $M --limit 100 --no-whisper --copy-bias 2 > $OUT/pool-eval.json
fi
if [[ $WHAT == stage2-hard || $WHAT == all ]]; then
  $A hear train --preset hear-demo-stage2 --out $OUT/hard $data init_from=$S1 eval_every=1000
  $A hear eval --checkpoint $OUT/hard/checkpoints/step-000160 --manifest $M --limit 100 --no-whisper --copy-bias 2 > $OUT/hard-eval.json
fi
