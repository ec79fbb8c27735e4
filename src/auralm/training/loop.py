"""The one training loop (on Hugging Face Accelerate), shared by every stage.

What one optimizer step does, on each of N processes::

    global batch of step s = positions [s*B, (s+1)*B) of the index stream  (permutation of epoch 0, then 1, ...)
    this process's share   = B / N examples, cut into grad_accum micro-batches
    for each micro-batch:  backward(loss * n_tokens)        # sums, so accumulation is exact
    all-reduce the summed gradients and token counts over processes (one flat tensor)
    grad /= total tokens   -> the token-mean loss of the whole global batch, whatever N and grad_accum are
    clip, AdamW step, schedule step

The data position is a function of the step (the index stream is fixed by the seed), so a resumed run
sees exactly the batches the uninterrupted run would have. Losses are logged as the mean of the last
``log_every`` steps (a window, not a running mean since the start) to TensorBoard / wandb and to
``train_log.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auralm.core.errors import ConfigError
from auralm.core.io import atomic_write_text
from auralm.core.progress import progress
from auralm.metrics.text import wer
from auralm.training.checkpoint import (
    latest_checkpoint,
    load_trainable,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    trainable_parameter_count,
)


# -- pieces ---------------------------------------------------------------------------------------
def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where it helps (CUDA with bf16; CPUs with AVX512-BF16/AMX), else None (fp32). Never fp16."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else None


def lr_lambda(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak lr after ``step`` optimizer steps: linear warm-up, then cosine/linear/constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress_ = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress_
    return 0.5 * (1.0 + math.cos(math.pi * progress_))


def index_stream(n: int, seed: int, start: int, count: int, lengths: list[float] | None = None,
                 batch_size: int = 0, pool: int = 50) -> list[int]:
    """Positions ``[start, start+count)`` of the endless stream: a fresh permutation of ``range(n)`` per epoch.

    With ``lengths`` (one per example) and ``batch_size``, each epoch's permutation is grouped by length
    (the ``group_by_length`` of the config): cut into pools of ``pool`` batches, each pool sorted longest
    first and cut into batches, the batches shuffled. Batches then hold clips of similar length, so
    little of a padded batch is padding. Every epoch is still a permutation and a position is still a
    pure function of ``(seed, position)``, so resuming is unchanged.
    """
    out: list[int] = []
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        perm = _epoch_order(n, seed, epoch, lengths, batch_size, pool)
        take = perm[offset : offset + count - len(out)]
        out += take
        pos += len(take)
    return out


def _epoch_order(n: int, seed: int, epoch: int, lengths: list[float] | None, batch_size: int, pool: int) -> list[int]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    if lengths is None or batch_size <= 1:
        return perm
    size = batch_size * max(1, pool)
    grouped = [j for i in range(0, n, size) for j in sorted(perm[i : i + size], key=lambda j: -lengths[j])]
    # the global batches are positions [k*B, (k+1)*B) of the stream; this epoch starts mid-batch when
    # epoch*n is not a multiple of B: its first `head` examples complete the previous epoch's last batch
    head = (-epoch * n) % batch_size
    pieces = [grouped[i : i + batch_size] for i in range(head, n, batch_size)]
    tail = pieces.pop() if pieces and len(pieces[-1]) < batch_size else []  # a partial batch stays last
    shuffle = torch.randperm(len(pieces), generator=torch.Generator().manual_seed(seed * 100003 + epoch + 7919))
    return grouped[:head] + [j for k in shuffle.tolist() for j in pieces[k]] + tail


class Logger:
    """Scalars to train_log.jsonl (always) and TensorBoard or wandb (``cfg.logger``); main process only."""

    def __init__(self, cfg: Any, out: Path, start_step: int, enabled: bool):
        self.enabled, self.path, self.tb, self.wandb = enabled, out / "train_log.jsonl", None, None
        if not enabled:
            return
        if self.path.exists():  # a resumed run: drop records past the checkpoint it resumes from
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= start_step]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))
        if cfg.logger == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if start_step else None)
        elif cfg.logger == "wandb":
            import wandb

            self.wandb = wandb.init(project="auralm", dir=str(out), config=cfg.to_dict(), resume="allow")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
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


def _batch_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def validate(model: Any, dataset: Any, collate: Any, cfg: Any, micro: int, device: torch.device,
             amp: torch.dtype | None) -> dict[str, float]:
    """Token-mean loss (and, with a CTC head, the projector's greedy CTC WER) on the first ``eval_rows`` valid
    rows, and the LM's greedy WER on the first ``eval_wer_rows``."""
    from auralm.components.generation import GenerationConfig

    was_training = model.training
    model.eval()
    py, npy = random.getstate(), np.random.get_state()
    out: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]), _autocast(device, amp):
        n_rows = min(len(dataset), cfg.eval_rows)
        total = tokens = 0.0
        for i in range(0, n_rows, micro):
            res = model(_batch_to(collate([dataset[j] for j in range(i, min(n_rows, i + micro))]), device))
            n = float(res.get("n_tokens", 1))
            total, tokens = total + float(res["loss"]) * n, tokens + n
        out["valid/loss"] = total / max(tokens, 1.0)
        if getattr(model.config, "ctc_weight", 0) > 0:  # the projector's own greedy CTC transcript: cheap, no LM
            refs, hyps = [], []
            for i in range(0, n_rows, micro):
                batch = collate([dataset[j] for j in range(i, min(n_rows, i + micro))])
                refs += batch["texts"]
                hyps += model.ctc_greedy_decode(_batch_to(batch, device))
            with contextlib.suppress(ValueError):  # references empty after normalisation
                out["valid/ctc_wer"] = wer(refs, hyps)
        n_wer = min(len(dataset), cfg.eval_wer_rows)
        if n_wer:
            refs, hyps = [], []
            for i in range(0, n_wer, micro):
                batch = collate([dataset[j] for j in range(i, min(n_wer, i + micro))])
                refs += batch["texts"]
                longest = max(len(model.tokenizer(t or "")["input_ids"]) for t in batch["texts"])
                batch = {**_batch_to(batch, device), "texts": None}
                hyps += model.generate(batch, GenerationConfig(strategy="greedy", max_new_tokens=2 * longest + 8))
            try:
                out["valid/wer"] = wer(refs, hyps)
            except ValueError:  # references empty after normalisation
                pass
    random.setstate(py)
    np.random.set_state(npy)
    model.train(was_training)
    return out


def _autocast(device: torch.device, amp: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


# -- the loop -------------------------------------------------------------------------------------
def parameter_groups(model: Any, lr: float, connector_scale: float) -> list[dict[str, Any]]:
    """AdamW groups: the connector and CTC head at ``lr * connector_scale`` (frozen at 0), the rest (LoRA) at ``lr``."""
    from auralm.recipes.hear.model import TRAINABLE_PREFIXES

    own, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (own if name.startswith(TRAINABLE_PREFIXES) else rest).append(p)
    if connector_scale == 0:
        for p in own:
            p.requires_grad_(False)
        own = []
    return [g for g in ({"params": own, "lr": lr * connector_scale}, {"params": rest, "lr": lr}) if g["params"]]


def fit(model: Any, cfg: Any, train_set: Any, valid_set: Any, collate: Any, accelerator: Any,
        log: Any = print) -> Path:
    """Train ``model`` (an AudioLM, encoder/LM frozen) per ``cfg`` (TrainConfig); return the final checkpoint.

    Resumes from ``cfg.out/latest`` when the stage decided to (``cfg.resume`` resolved by the caller:
    the loop resumes whenever a checkpoint exists in ``out``).
    """
    out = Path(cfg.out)
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    per_process = cfg.optim.batch_size // world
    if cfg.optim.batch_size % (world * cfg.optim.grad_accum):
        raise ConfigError(f"optim.batch_size ({cfg.optim.batch_size}) must be a multiple of processes x grad_accum "
                          f"({world} x {cfg.optim.grad_accum})")
    micro = per_process // cfg.optim.grad_accum
    amp = autocast_dtype(cfg.precision, device)
    model.to(device)
    groups = parameter_groups(model, cfg.optim.lr, cfg.optim.connector_lr_scale)
    if not groups:
        raise ConfigError("the model has no trainable parameters (optim.connector_lr_scale=0 freezes the connector)")
    params = [p for g in groups for p in g["params"]]
    n_trainable = trainable_parameter_count(model)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                  weight_decay=cfg.optim.weight_decay)
    o = cfg.optim
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, o.warmup_steps, o.max_steps, o.schedule))

    step, window, elapsed_before = 0, {}, 0.0
    ckpt = latest_checkpoint(out)
    if ckpt is not None:  # resume: weights, optimizer, schedule, step, RNG, log window
        load_trainable(model, ckpt)
        state = load_trainer_state(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, window, elapsed_before = state["step"], state.get("window", {}), state.get("elapsed_s", 0.0)
        rngs = state["rng"]
        set_rng_state(rngs[rank] if len(rngs) == world else rngs[0])
        log(f"resumed from {ckpt} at step {step}")
    log(f"trainable parameters: {n_trainable:,}; {world} process(es) x {cfg.optim.grad_accum} micro-batch(es) "
        f"of {micro}; precision {'bf16 autocast' if amp else 'fp32'}; "
        f"{'cached embeddings' if getattr(train_set, 'uses_cache', False) else 'encoder on the fly'}")
    main = accelerator.is_main_process
    logger = Logger(cfg, out, step, main)
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {"trainable_params": n_trainable}
    lengths = train_set.lengths() if o.group_by_length and hasattr(train_set, "lengths") else None
    steps = range(step, o.max_steps)
    bar = progress(steps, desc=f"train stage {cfg.stage}", total=len(steps)) if main else steps
    model.train()
    for step in bar:  # noqa: B007 - `step` is the number of steps done before this one
        # -- one optimizer step ------------------------------------------------------------------
        t_step = time.perf_counter()
        order = index_stream(len(train_set), o.seed, step * o.batch_size, o.batch_size, lengths, o.batch_size)
        mine = order[rank * per_process : (rank + 1) * per_process]
        optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(4, dtype=torch.float64)  # loss*n, lm_loss*n, ctc_loss*n, n
        audio_s = 0.0
        for m in range(o.grad_accum):
            batch = collate([train_set[i] for i in mine[m * micro : (m + 1) * micro]])
            audio_s += sum(len(w) for w in batch.get("wavs", [])) / 16000
            with _autocast(device, amp):
                res = model(_batch_to(batch, device))
            n = float(res.get("n_tokens", len(batch["ids"])))
            (res["loss"].float() * n).backward()
            parts = [res["loss"], res.get("lm_loss", res["loss"]), res.get("ctc_loss", torch.zeros(()))]
            sums += torch.tensor([float(x.detach()) * n for x in parts] + [n], dtype=torch.float64)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if world > 1:
            flat = torch.cat([g.reshape(-1).float() for g in grads] + [sums.float().to(device)])
            torch.distributed.all_reduce(flat)
            sums = flat[-4:].double().cpu()
            flat = flat[:-4]
            offset = 0
            for p, g in zip(params, grads):
                p.grad = flat[offset : offset + g.numel()].view_as(p).to(p.dtype)
                offset += g.numel()
        else:
            for p, g in zip(params, grads):
                p.grad = g
        total_tokens = float(sums[3])
        for p in params:
            p.grad.div_(max(total_tokens, 1.0))
        grad_norm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip if o.grad_clip else float("inf"))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        step += 1
        # -- bookkeeping ------------------------------------------------------------------------
        seconds = time.perf_counter() - t_step
        values = {"train/loss": float(sums[0]) / total_tokens, "train/lm_loss": float(sums[1]) / total_tokens,
                  "lr": lr, "train/grad_norm": float(grad_norm), "train/tokens_per_s": total_tokens / seconds}
        if "ctc_loss" in res:
            values["train/ctc_loss"] = float(sums[2]) / total_tokens
        if audio_s:
            values["train/audio_s_per_s"] = audio_s * world / seconds
        for k, v in values.items():
            window.setdefault(k, []).append(v)
        if main and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{values['train/loss']:.3f}")
        if step % cfg.log_every == 0 or step == o.max_steps:
            means = {k: float(np.mean(v)) for k, v in window.items()}
            logger.log(step, means)
            metrics.update({k.replace("/", "_"): v for k, v in means.items()})
            window = {}
        stop = step == o.max_steps or step == o.stop_after
        minutes = (time.perf_counter() - t0) / 60
        if o.max_minutes and minutes >= o.max_minutes:
            stop = True
        if world > 1:  # every process must agree on stopping (clocks differ)
            flag = torch.tensor([float(stop)], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        if (cfg.eval_every and step % cfg.eval_every == 0) or (stop and valid_set is not None):
            if main and valid_set is not None:
                scores = validate(model, valid_set, collate, cfg, micro, device, amp)
                scores["time/train_minutes"] = (elapsed_before + time.perf_counter() - t0) / 60
                logger.log(step, scores)
                metrics.update({k.replace("/", "_"): v for k, v in scores.items()})
                log(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
            accelerator.wait_for_everyone()
        if (cfg.save_every and step % cfg.save_every == 0) or stop:
            _save(model, cfg, out, step, optimizer, scheduler, window, accelerator,
                  {**metrics, "elapsed_s": elapsed_before + time.perf_counter() - t0}, len(train_set))
        if stop:
            break
    logger.close()
    accelerator.wait_for_everyone()
    final = latest_checkpoint(out)
    if final is None:  # nothing to do (a finished run resumed): the latest checkpoint is the answer
        raise ConfigError(f"{out} has no checkpoint after training")
    return final


def _save(model: Any, cfg: Any, out: Path, step: int, optimizer: Any, scheduler: Any, window: dict,
          accelerator: Any, metrics: dict[str, Any], n_rows: int) -> None:
    """Gather every process's RNG state, then the main process writes the checkpoint."""
    from accelerate.utils import gather_object

    rngs = [rng_state()]
    if accelerator.num_processes > 1:
        rngs = gather_object(rngs)
    if accelerator.is_main_process:
        state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": rngs, "window": window, "num_processes": accelerator.num_processes,
                 "data_position": step * cfg.optim.batch_size, "epoch": step * cfg.optim.batch_size // n_rows, "elapsed_s": metrics.get("elapsed_s", 0.0)}
        save_checkpoint(out, step, cfg, model, state, metrics, cfg.keep_last)
    accelerator.wait_for_everyone()
