#!/usr/bin/env bash
# docs/chat.md, "fourth pass": stage 2 again from the describe_count run's stage 1 (experiments/chat_describe_count.sh),
# batches grouped by length (optim.group_by_length) and, optionally, cross-modal conversations drawn K times as often;
# scored as the demo scores, then every test sound and cross question (right, shuffled, new-voice clip).
# Usage: bash experiments/chat_cross_group.sh [DEMO_DIR] [OUT] [CROSS_TIMES]
set -euo pipefail
export HF_HUB_OFFLINE=1 PYTHONPATH=src AURALM_PROGRESS=0
D=${1:-runs/chat-demo3}; OUT=${2:-runs/chat-x/group-cross3}; K=${3:-3}
A=".venv/bin/python -m auralm"
S1=$(ls -d runs/chat-x/count/stage1/checkpoints/step-* | sort | tail -1)
$A chat train --preset chat-demo-stage2 --dataset $D/data --out $OUT init_from=$S1 optim.max_minutes=60 \
  optim.group_by_length=true "data.oversample={cross: $K}"
S2=$(ls -d $OUT/checkpoints/step-* | sort | tail -1)
$A chat eval --checkpoint $S2 --dataset $D/data --per-type 30 --out $OUT-eval.json
$A chat eval --checkpoint $S2 --dataset $D/data --per-type 0 --types cross,sound \
  --conditions shuffled_sound,spoken_new_voice --out $OUT-cross-all.json
