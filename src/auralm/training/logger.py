"""The one training logger: scalars to ``OUT/train_log.jsonl`` (always) and to TensorBoard (``OUT/tb``) or wandb.

Only the main process writes. A resumed run first drops the records past the step it resumes from, so the
log of a resumed run is the log of an uninterrupted one. Recipes write media (images, audio) through
:attr:`Logger.tb` (a ``SummaryWriter`` or None).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auralm.core.io import atomic_write_text


class Logger:
    """``log(step, {name: value})`` to train_log.jsonl and the chosen backend (``tensorboard``, ``wandb``, ``none``)."""

    def __init__(self, out: str | Path, backend: str = "tensorboard", start_step: int = 0, enabled: bool = True,
                 config: dict[str, Any] | None = None):
        out = Path(out)
        self.enabled, self.path, self.tb, self.wandb = enabled, out / "train_log.jsonl", None, None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # a resumed run: drop the records past the checkpoint it resumes from
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= start_step]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))
        if backend == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if start_step else None)
        elif backend == "wandb":
            import wandb

            self.wandb = wandb.init(project="auralm", dir=str(out), config=config or {}, resume="allow")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled or not scalars:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
