#!/usr/bin/env bash
# docs/chat.md, "fifth pass": the cross-modal replies show their working ("I hear three and see two shapes: no.",
# data.cross_working, the default now). A demo's data and stage 1 (DEMO_DIR: `auralm chat demo --out DEMO_DIR`, or
# with `stage2_preset=` to stop after stage 1) are reused: its data is linked into OUT/data and synthesised again,
# which rewrites only examples.jsonl (the cross replies; every draw, picture and clip is the same). Then the demo's
# stage 2 from DEMO_DIR's stage 1, scored as the demo scores, then every test sound and cross question.
# Usage: bash experiments/chat_cross_working.sh [DEMO_DIR] [OUT] [WORKING] [stage-2 overrides...]
#   e.g. bash experiments/chat_cross_working.sh runs/chat-s1 runs/chat-x/working-x4 true 'data.oversample={cross: 4}'
set -euo pipefail
export HF_HUB_OFFLINE=1 PYTHONPATH=src AURALM_PROGRESS=0
D=${1:-runs/chat-demo}; OUT=${2:-runs/chat-x/working}; W=${3:-true}; shift $(( $# < 3 ? $# : 3 ))
A=".venv/bin/python -m auralm"
mkdir -p "$OUT"
rm -rf "$OUT/data" && cp -al "$D/data" "$OUT/data"
.venv/bin/python - "$OUT/data" "$W" <<'PY'
import sys
from auralm.core.config import load_preset
from auralm.recipes.chat.data import ChatSynthConfig, synth_chat
synth_chat(ChatSynthConfig.from_dict({**load_preset("chat-demo")["synth"], "out": sys.argv[1],
                                      "cross_working": sys.argv[2] == "true"}))
PY
S1=$(ls -d "$D"/stage1/checkpoints/step-* | sort | tail -1)
$A chat train --preset chat-demo-stage2 --dataset "$OUT/data" --out "$OUT/stage2" init_from="$S1" optim.max_minutes=60 "$@"
S2=$(ls -d "$OUT"/stage2/checkpoints/step-* | sort | tail -1)
$A chat eval --checkpoint "$S2" --dataset "$OUT/data" --per-type 30 --out "$OUT/eval.json"
$A chat eval --checkpoint "$S2" --dataset "$OUT/data" --per-type 0 --types cross,sound \
  --conditions shuffled_sound,spoken_new_voice --out "$OUT/cross-all.json"
