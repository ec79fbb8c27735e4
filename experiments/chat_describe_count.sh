#!/usr/bin/env bash
# docs/chat.md, "third pass": both chat demo stages again on the demo's own data, with the presets as they are now
# (data.describe_count: the image CTC description ends with the number of shapes as a word), scored as the demo scores.
# Run from the repository root after `auralm chat demo --out runs/chat-demo3` (its data folder and feature cache).
set -euo pipefail
export HF_HUB_OFFLINE=1 PYTHONPATH=src AURALM_PROGRESS=0
D=${1:-runs/chat-demo3}; OUT=${2:-runs/chat-x/count}
A=".venv/bin/python -m auralm"
$A chat train --preset chat-demo-stage1 --dataset $D/data --out $OUT/stage1 optim.max_minutes=60
S1=$(ls -d $OUT/stage1/checkpoints/step-* | sort | tail -1)
$A chat train --preset chat-demo-stage2 --dataset $D/data --out $OUT/stage2 init_from=$S1 optim.max_minutes=60
S2=$(ls -d $OUT/stage2/checkpoints/step-* | sort | tail -1)
$A chat eval --checkpoint $S2 --dataset $D/data --per-type 30 --out $OUT-eval.json
