#!/usr/bin/env bash
# Probe 11 of docs/s1-alignment.md (run from the repository root after `make demo`): a cosine CTC head in stage 1, then the continuous feed (ctc_pool) for 80 stage-2 steps, on the shipped
# demo's fortune corpus and cache; compare with probe 10 (dot head: hard tokens 0.402, continuous 0.803).
set -euo pipefail
export HF_HUB_OFFLINE=1 PYTHONPATH=src
M=runs/demo/corpus/manifest.jsonl; C=runs/demo/embeddings
A=".venv/bin/python -m auralm"
$A hear train --preset hear-demo-stage1 --out runs/cos/s1 data.manifest=$M data.cache_dir=$C model.ctc_scoring=cosine optim.max_minutes=30
S1=$(ls -d runs/cos/s1/checkpoints/step-* | sort | tail -1)
common="data.manifest=$M data.cache_dir=$C init_from=$S1 optim.max_steps=80 optim.max_minutes=30 eval_every=1000 save_every=1000 model.ctc_scoring=cosine"
$A hear train --preset hear-demo-stage2 --out runs/cos/pool $common model.feed=ctc_pool model.audio_norm=embedding optim.connector_lr_scale=1.0
$A hear eval --checkpoint runs/cos/pool/checkpoints/step-000080 --manifest $M --limit 100 --no-whisper --copy-bias 2 > runs/cos/pool-eval.txt
$A hear train --preset hear-demo-stage2 --out runs/cos/hard $common
$A hear eval --checkpoint runs/cos/hard/checkpoints/step-000080 --manifest $M --limit 100 --no-whisper --copy-bias 2 > runs/cos/hard-eval.txt
