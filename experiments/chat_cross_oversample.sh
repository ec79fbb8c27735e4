#!/usr/bin/env bash
# docs/chat.md, "third pass": stage 2 of the chat demo again from the demo's own stage 1, with the conversations that
# hold a cross-modal turn drawn three times as often (data.oversample={cross: 3}); scored as the demo scores.
# Run from the repository root after `auralm chat demo --out runs/chat-demo3`.
set -euo pipefail
export HF_HUB_OFFLINE=1 PYTHONPATH=src AURALM_PROGRESS=0
D=${1:-runs/chat-demo3}; OUT=${2:-runs/chat-x/cross3}
A=".venv/bin/python -m auralm"
S1=$(ls -d $D/stage1/checkpoints/step-* | sort | tail -1)
$A chat train --preset chat-demo-stage2 --dataset $D/data --out $OUT init_from=$S1 "data.oversample={cross: 3}" optim.max_minutes=60
S2=$(ls -d $OUT/checkpoints/step-* | sort | tail -1)
$A chat eval --checkpoint $S2 --dataset $D/data --per-type 30 --out $OUT-eval.json
