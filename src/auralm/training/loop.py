"""The one training engine (on Hugging Face Accelerate): :func:`fit` trains a recipe's :class:`Task`.

The engine owns the run: the resume policy, the optimizers (AdamW) and their schedule (:func:`lr_lambda`),
gradient accumulation, the all-reduce over processes, gradient clipping, the time and step caps, the
checkpoints (:mod:`.checkpoint`: weights, optimizers, schedulers, RNG states and the recipe's extra state),
the logger (:class:`~auralm.training.logger.Logger`) and validation cadence. A recipe supplies a
:class:`Task`: its model, its parameter groups, the global batch of a step and the loss of a part of it (or
a whole step function, as a GAN needs), a validation function and how its weights are written.

What one optimizer step does (the default step), on each of N processes::

    examples = task.global_batch(step)          # B examples, the same on every process (a pure function of
                                                # the step and the recipe's seeded generators)
    this process's share = examples[rank*B/N : (rank+1)*B/N], cut into grad_accum micro-batches
    for each micro-batch: r = task.loss(part); backward(r["loss"] * r["n"])       # sums, so accumulation is exact
    all-reduce the summed gradients and weights n over processes (one flat tensor)
    grad /= total n  -> the n-weighted mean loss of the whole global batch, whatever N and grad_accum are
    clip, optimizer step(s), schedule step(s), task.end_step(step)

With a custom step (``task.train_step(step, ctx)``, e.g. a GAN's two updates) the recipe does the updates
itself with ``ctx.optimizers``, ``ctx.shard`` (its share of a global batch) and ``ctx.sync_grads`` (average
gradients over processes); the engine still steps the schedules and saves every optimizer.

A run is defined by its step counts: it ends at ``optim.max_steps`` (or ``optim.stop_after``).
``optim.max_minutes`` is a guard: when it cuts a run short the engine says so on stderr
(``WARNING ... stopped by max_minutes at step N of M``) and in the checkpoint's metrics.json
(``stopped_by``, ``steps_done``, ``steps_planned``).
"""

from __future__ import annotations

import contextlib
import random
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auralm.core.config import save_config
from auralm.core.errors import AuralmError, ConfigError
from auralm.core.progress import progress
from auralm.training.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from auralm.training.config import RunConfig, config_differences
from auralm.training.logger import Logger
from auralm.training.schedule import index_stream, lr_lambda

__all__ = ["StepContext", "Task", "autocast_dtype", "check_resume", "fit", "index_stream", "lr_lambda"]

clock = time.perf_counter  # the engine's clock (tests replace it)


# -- what a recipe supplies -----------------------------------------------------------------------
class Task:
    """A recipe's side of training. Subclass it; the engine calls these hooks.

    ``model`` is moved to the device and put in train mode; its trainable parameters (or
    :meth:`parameter_groups`) get AdamW optimizers. ``generators`` (name -> ``torch.Generator``, e.g. the
    data order) are saved and restored with the RNG states. ``sync_buffers``: after each step, copy the
    model's buffers from process 0 to the others (what DDP does; for EMA codebooks).
    """

    model: torch.nn.Module
    generators: dict[str, torch.Generator] = {}
    sync_buffers: bool = False

    def bind(self, ctx: StepContext) -> None:
        """Called once before training with the device, the process geometry and the optimizers-to-be."""

    def parameter_groups(self) -> dict[str, list[dict[str, Any]]]:
        """Optimizer name -> AdamW parameter groups (a group may set its own ``lr``/``weight_decay``)."""
        return {"main": [{"params": [p for p in self.model.parameters() if p.requires_grad]}]}

    def global_batch(self, step: int) -> Sequence[Any]:
        """The ``optim.batch_size`` examples of optimizer step ``step`` (identical on every process)."""
        raise NotImplementedError

    def loss(self, examples: Sequence[Any]) -> dict[str, Any]:
        """Loss of a micro-batch: ``loss`` (the mean over ``n``), ``n`` (its weight: tokens, examples), other
        scalars (logged as n-weighted means ``train/<name>``) and ``count/<name>`` (summed; logged as a rate
        ``train/<name>_per_s``)."""
        raise NotImplementedError

    train_step: Callable[[int, StepContext], dict[str, float]] | None = None  # a whole step (GAN); see the module doc

    def end_step(self, step: int) -> None:
        """After the update of step ``step`` (``step`` steps are done)."""

    def validate(self, step: int, logger: Logger) -> dict[str, float] | None:
        """Main process only, model in the state training left it: ``{"valid/<name>": value}`` or None."""
        return None

    def save_weights(self, folder: Path, step: int) -> None:
        """Write the weights (and whatever the recipe's loaders read) into a checkpoint folder."""
        raise NotImplementedError

    def load_weights(self, folder: Path) -> None:
        """Load what :meth:`save_weights` wrote (resuming)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Extra state a resume needs (e.g. a KL weight, discriminators); saved in trainer_state.pt."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def fingerprint(self) -> str | None:
        """An identity of the training data; resuming a run made on other data is refused."""
        return None


class StepContext:
    """What the engine tells a task: device, processes, the batch geometry, the optimizers."""

    def __init__(self, accelerator: Any, device: torch.device, per_process: int, micro: int,
                 amp: torch.dtype | None, group: Any = None):
        self.accelerator, self.device, self.amp, self.group = accelerator, device, amp, group
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.is_main = accelerator.is_main_process
        self.per_process, self.micro = per_process, micro
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def shard(self, examples: Sequence[Any]) -> Sequence[Any]:
        """This process's share of a global batch."""
        return examples[self.rank * self.per_process : (self.rank + 1) * self.per_process]

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.world > 1:
            red = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
            torch.distributed.all_reduce(tensor, op=red, group=self.group)
        return tensor

    def sync_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Average the gradients of ``params`` over processes (one flat all-reduce); no-op for one process."""
        if self.world == 1:
            return
        params = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.all_reduce(torch.cat([g.reshape(-1).float() for g in grads])) / self.world
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(p).to(p.dtype)
            offset += g.numel()

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()


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


def check_resume(cfg: RunConfig) -> Path | None:
    """The checkpoint this run continues (``cfg.resume``), or None for a fresh run; errors instead of mixing runs.

    ``auto``: continue a run in ``out`` made with the same config (the keys in ``type(cfg).RESUMABLE`` may
    differ); ``true``: like auto, but ``out`` must hold one; ``false``: refuse an ``out`` that holds a run.
    """
    import yaml

    out = Path(cfg.out)
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        if cfg.resume == "true":
            raise ConfigError(f"resume=true but {out} has no checkpoint to resume from")
        return None
    if cfg.resume == "false":
        raise ConfigError(f"{out} already holds a run (latest: {ckpt.name}); resume=false will not overwrite it: "
                          "pass another out, delete it, or resume=auto to continue it")
    saved = yaml.safe_load((ckpt / "config.yaml").read_text()) or {}
    diffs = config_differences(saved, cfg.to_dict(), getattr(type(cfg), "RESUMABLE", RunConfig.RESUMABLE))
    if diffs:
        raise ConfigError(f"{out} holds a run with another config (differs in {', '.join(diffs)}); "
                          "it cannot be resumed with this one: pass another out")
    return ckpt


def make_accelerator() -> Any:
    """An Accelerator; on a machine without CUDA, `torchrun`/`accelerate launch` workers form a gloo group."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def _stderr(prefix: str, main: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if main:
            print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)

    return log


def _nest(metrics: dict[str, Any], scalars: dict[str, float]) -> None:
    """``{"valid/loss": x}`` -> ``metrics["valid"]["loss"] = x`` (names without "/" stay at the top)."""
    for k, v in scalars.items():
        head, _, tail = k.partition("/")
        if tail:
            metrics.setdefault(head, {})[tail] = v
        else:
            metrics[k] = v


@contextlib.contextmanager
def _rng_untouched(generators: dict[str, torch.Generator]) -> Iterator[None]:
    """Run validation without moving any training random stream (python, numpy, torch, the recipe's)."""
    py, npy, gens = random.getstate(), np.random.get_state(), {k: g.get_state() for k, g in generators.items()}
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(py)
    np.random.set_state(npy)
    for k, g in generators.items():
        g.set_state(gens[k])


def _cpu_group(device: torch.device, world: int) -> Any:
    """A gloo group when the task trains on the CPU but the default group is not gloo (NCCL on a GPU machine)."""
    if world > 1 and device.type == "cpu" and torch.distributed.get_backend() != "gloo":
        return torch.distributed.new_group(backend="gloo")
    return None


# -- the engine -----------------------------------------------------------------------------------
def fit(task: Task, cfg: RunConfig, *, name: str = "train", precision: str = "fp32", device: str = "auto",
        accelerator: Any = None, log: Callable[[str], None] | None = None) -> Path:
    """Train ``task`` as ``cfg`` (a :class:`RunConfig`) says; return the final checkpoint folder.

    ``precision``: ``fp32``, ``bf16`` or ``auto`` (bf16 autocast where it helps). ``device``: ``auto`` (the
    accelerator's) or ``cpu``. Resumes per ``cfg.resume`` (:func:`check_resume`).
    """
    from accelerate.utils import set_seed

    o, out = cfg.optim, Path(cfg.out)
    ckpt = check_resume(cfg)
    accelerator = accelerator or make_accelerator()
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    log = log or _stderr(name, main)
    if o.batch_size % (world * o.grad_accum):
        raise ConfigError(f"optim.batch_size ({o.batch_size}) must be a multiple of processes x grad_accum "
                          f"({world} x {o.grad_accum})")
    custom = task.train_step is not None
    if custom and o.grad_accum != 1:
        raise ConfigError(f"{name}: this recipe runs its own step; optim.grad_accum must be 1, got {o.grad_accum}")
    dev = torch.device("cpu") if device == "cpu" else accelerator.device
    per_process = o.batch_size // world
    ctx = StepContext(accelerator, dev, per_process, per_process // o.grad_accum, autocast_dtype(precision, dev),
                      _cpu_group(dev, world))
    task.model.to(dev)
    task.bind(ctx)
    groups = {k: g for k, g in task.parameter_groups().items() if any(x["params"] for x in g)}
    if not groups:
        raise ConfigError(f"{name}: the model has no trainable parameters")
    optimizers = {k: torch.optim.AdamW([x for x in g if x["params"]], lr=o.lr, betas=tuple(o.betas),
                                       weight_decay=o.weight_decay) for k, g in groups.items()}
    schedule = lambda s: lr_lambda(s, o.warmup_steps, o.max_steps, o.schedule, o.min_lr_frac)  # noqa: E731
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(opt, schedule) for k, opt in optimizers.items()}
    ctx.optimizers = optimizers
    params = [p for opt in optimizers.values() for g in opt.param_groups for p in g["params"]]
    n_trainable = sum(p.numel() for p in params)
    fingerprint = task.fingerprint()

    step, window, elapsed_before = 0, {}, 0.0
    if ckpt is not None:  # weights, optimizers, schedules, step, RNG, the recipe's state, the log window
        state = load_trainer_state(ckpt)
        if fingerprint is not None and state.get("fingerprint") not in (None, fingerprint):
            raise ConfigError(f"{out} holds a run trained on other data than this one; it cannot be resumed "
                              "with it: pass another out")
        task.load_weights(ckpt)
        for k, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
            schedulers[k].load_state_dict(state["schedulers"][k])
        task.load_state_dict(state.get("extra", {}))
        step, window, elapsed_before = state["step"], state.get("window", {}), state.get("elapsed_s", 0.0)
        rngs = state["rng"]
        set_rng_state(rngs[rank] if len(rngs) == world else rngs[0], task.generators)
        log(f"resumed {ckpt} at step {step}")
    else:
        set_seed(o.seed + rank)  # dropout streams differ per process; the data streams are the recipe's
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
    accelerator.wait_for_everyone()

    end = min(o.max_steps, o.stop_after) if o.stop_after else o.max_steps
    steps_planned = end
    log(f"trainable parameters: {n_trainable:,}; {world} process(es) x {o.grad_accum} micro-batch(es) of "
        f"{ctx.micro}; precision {'bf16 autocast' if ctx.amp else 'fp32'}; steps {step} -> {end} of {o.max_steps}"
        + (f"; guard {o.max_minutes:g} min" if o.max_minutes else ""))
    logger = Logger(out, cfg.logger, step, main, cfg.to_dict())
    metrics: dict[str, Any] = {"trainable_params": n_trainable}
    t0 = clock()

    def save(at: int, stopped_by: str | None) -> None:
        from accelerate.utils import gather_object

        rngs = [rng_state(task.generators)]
        if world > 1:
            rngs = gather_object(rngs)
        if main:
            elapsed = elapsed_before + clock() - t0
            record = {**metrics, "elapsed_s": round(elapsed, 3), "stopped_by": stopped_by, "steps_done": at,
                      "steps_planned": steps_planned, "max_steps": o.max_steps}
            state = {"step": at, "optimizers": {k: v.state_dict() for k, v in optimizers.items()},
                     "schedulers": {k: v.state_dict() for k, v in schedulers.items()}, "rng": rngs, "window": window,
                     "num_processes": world, "elapsed_s": elapsed, "extra": task.state_dict(),
                     "fingerprint": fingerprint}
            save_checkpoint(out, at, cfg, lambda folder: task.save_weights(folder, at), state, record, cfg.keep_last)
        accelerator.wait_for_everyone()

    steps = range(step, end)
    bar = progress(steps, desc=name, total=len(steps)) if main else steps
    task.model.train()
    for step in bar:  # noqa: B007 - `step` is the number of steps done before this one
        t_step = clock()
        if custom:
            values = {k if k.startswith("count/") else f"train/{k}": float(v)
                      for k, v in task.train_step(step, ctx).items()}
        else:
            values = _default_step(task, ctx, step, o, params, optimizers)
        values["lr"] = schedulers[next(iter(schedulers))].get_last_lr()[0]
        with warnings.catch_warnings():  # a GAN step may not step every optimizer yet (discriminators start later)
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before `optimizer.step()`"))
            for s in schedulers.values():
                s.step()
        step += 1
        task.end_step(step)
        if world > 1 and task.sync_buffers:
            for b in task.model.buffers():
                torch.distributed.broadcast(b, src=0, group=ctx.group)
        seconds = max(clock() - t_step, 1e-9)
        for k in [k for k in values if k.startswith("count/")]:
            values[f"train/{k[6:]}_per_s"] = values.pop(k) / seconds
        for k, v in values.items():
            window.setdefault(k, []).append(v)
        if main and hasattr(bar, "set_postfix") and "train/loss" in values:
            bar.set_postfix(loss=f"{values['train/loss']:.3f}")
        stopped_by = "max_steps" if step == o.max_steps else "stop_after" if step == end else None
        if stopped_by is None and o.max_minutes:
            late = torch.tensor([float((clock() - t0) / 60 >= o.max_minutes)], device=ctx.device)
            if ctx.all_reduce(late, "max").item():  # every process must agree (clocks differ)
                stopped_by = "max_minutes"
        if step % cfg.log_every == 0 or step == o.max_steps:  # an early stop keeps its window (exact logs on resume)
            means = {k: float(np.mean(v)) for k, v in window.items()}
            logger.log(step, means)
            _nest(metrics, means)
            window = {}
        if stopped_by and window:  # the checkpoint's metrics get the unlogged steps too
            _nest(metrics, {k: float(np.mean(v)) for k, v in window.items()})
        if (cfg.eval_every and step % cfg.eval_every == 0) or stopped_by:
            if main:
                with _rng_untouched(task.generators):
                    scores = task.validate(step, logger)
                task.model.train()
                if scores:
                    scores = {**scores, "time/train_minutes": (elapsed_before + clock() - t0) / 60}
                    logger.log(step, scores)
                    _nest(metrics, scores)
                    log(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
            accelerator.wait_for_everyone()
        if stopped_by == "max_minutes" and main:
            print(f"WARNING [{name}] stopped by max_minutes at step {step} of {steps_planned}: the run was cut by "
                  f"its time guard ({o.max_minutes:g} min); resume it (same command) or give it fewer steps",
                  file=sys.stderr, flush=True)
        if (cfg.save_every and step % cfg.save_every == 0) or stopped_by:
            save(step, stopped_by)
        if stopped_by:
            break
    logger.close()
    accelerator.wait_for_everyone()
    final = latest_checkpoint(out)
    if final is None:
        raise AuralmError(f"{out} has no checkpoint after training")
    return final


def _default_step(task: Task, ctx: StepContext, step: int, o: Any, params: list[torch.nn.Parameter],
                  optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
    """One optimizer step of summed, all-reduced, n-normalised gradients (see the module docstring)."""
    examples = task.global_batch(step)
    if len(examples) != o.batch_size:
        raise AuralmError(f"the recipe gave {len(examples)} examples for step {step}, not optim.batch_size={o.batch_size}")
    mine = ctx.shard(examples)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    for m in range(o.grad_accum):
        with ctx.autocast():
            res = dict(task.loss(mine[m * ctx.micro : (m + 1) * ctx.micro]))
        n = float(res.pop("n", ctx.micro))
        (res["loss"].float() * n).backward()
        for k, v in res.items():
            key = k if k.startswith("count/") else f"train/{k}"
            sums[key] = sums.get(key, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v) * (
                1.0 if k.startswith("count/") else n)
        sums["n"] = sums.get("n", 0.0) + n
    keys = sorted(sums)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if ctx.world > 1:
        stats = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        flat = ctx.all_reduce(torch.cat([g.reshape(-1).float() for g in grads] + [stats.float().to(grads[0].device)]))
        sums = dict(zip(keys, flat[-len(keys):].double().cpu().tolist()))
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(p).to(p.dtype)
            offset += g.numel()
    else:
        for p, g in zip(params, grads):
            p.grad = g
    total = max(sums.pop("n"), 1e-12)
    for p in params:
        p.grad.div_(total)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip if o.grad_clip else float("inf"))
    for opt in optimizers.values():
        opt.step()
    values = {k: (v if k.startswith("count/") else v / total) for k, v in sums.items()}
    values["train/grad_norm"] = float(grad_norm)
    return values
