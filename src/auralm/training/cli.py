"""``auralm train --preset NAME [--out DIR] [key=value ...]``: resolve a preset, save config.yaml, train.

Resuming (``resume=``): ``auto`` (default) continues the run in ``--out`` when its latest checkpoint was
made with the same config (run-length and logging fields may differ: ``optim.max_steps``,
``optim.max_minutes``, ``optim.stop_after``, ``log_every`` ...), and refuses an ``--out`` holding a run
with another config; ``true`` requires a checkpoint to resume; ``false`` refuses an ``--out`` already used.
A killed run is continued by running the same command again.

The same command runs on N processes: ``accelerate launch --multi_gpu --num_processes 2 -m auralm train ...``
(on a CPU-only machine the workers form a gloo group; ``torchrun --nproc_per_node 2 -m auralm train ...``
works too). ``accelerate launch --cpu --num_processes 2`` starts a single process unless mpirun is set
up (accelerate's multi-CPU launcher); the command warns when it sees that.
"""

from __future__ import annotations

import argparse
import os
import sys

from auralm.config import apply_overrides, load_preset, preset_names


def train_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm train", description="Train an audio LM (stage 1 or 2).")
    parser.add_argument("--preset", required=True, help=f"preset name or YAML file (e.g. {', '.join(n for n in preset_names() if n.startswith('hear'))})")
    parser.add_argument("--out", help="run folder (overrides the preset's `out`)")
    parser.add_argument("--manifest", help="training manifest (same as data.manifest=...)")
    parser.add_argument("overrides", nargs="*", help="config overrides such as optim.lr=3e-4 optim.max_steps=200")
    args = parser.parse_args(argv)
    from auralm.training.config import TrainConfig
    from auralm.training.stages import train

    cfg = apply_overrides(TrainConfig.from_dict(load_preset(args.preset)), list(args.overrides))
    if args.out:
        cfg = cfg.replace(out=args.out)
    if args.manifest:
        cfg = cfg.replace(data=cfg.data.replace(manifest=args.manifest))
    if os.environ.get("MASTER_ADDR") and not os.environ.get("WORLD_SIZE") and os.environ.get("ACCELERATE_USE_CPU") == "True":
        print("[train] warning: `accelerate launch --cpu --num_processes N` started ONE process (accelerate needs "
              "mpirun for that); on a CPU-only machine use `accelerate launch --multi_gpu --num_processes N` "
              "or `torchrun --nproc_per_node N -m auralm train ...`", file=sys.stderr)
    final = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[train] checkpoint: {final}", file=sys.stderr)
    return 0
