"""``auralm chat demo``: the whole S3 chain on the embedded default, on a CPU.

Steps (under ``out``, default ``runs/chat-demo``):

1. ``data/``: :func:`auralm.recipes.chat.data.synth_chat` (scenes, spoken questions, number-word clips).
2. ``stage1/``: projectors (``chat-demo-stage1``); ``stage2/``: LoRA + projectors (``chat-demo-stage2``).
3. ``checkpoint/``: the final weights + config.yaml (``auralm.load()`` takes it).
4. :func:`auralm.recipes.chat.evaluate.evaluate` on the test scenes -> ``metrics.json`` (with each stage's
   minutes), ``report.md`` and ``examples.png`` (a grid of test pictures with questions and replies).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from auralm.core.config import Config, apply_overrides, help_field, load_preset, save_config
from auralm.core.errors import ConfigError
from auralm.core.io import atomic_dir, atomic_write_json, atomic_write_text


@dataclasses.dataclass
class ChatDemoConfig(Config):
    """Settings of ``auralm chat demo`` (presets ``chat-demo`` and ``chat-tiny-demo``)."""

    out: str = help_field("runs/chat-demo", "output folder")
    synth: dict = help_field({}, "ChatSynthConfig settings (out is set by the demo)")
    stage1_preset: str = help_field("chat-demo-stage1", "preset of stage 1 (projectors)")
    stage2_preset: str = help_field("chat-demo-stage2", "preset of stage 2 (LoRA); '' to stop after stage 1")
    stage1: list = help_field([], "key=value overrides of the stage-1 preset")
    stage2: list = help_field([], "key=value overrides of the stage-2 preset")
    per_type: int = help_field(30, "test questions per type in the evaluation (0: all)")
    batch_size: int = help_field(16, "questions decoded at once in the evaluation")
    budget_minutes: float = help_field(30.0, "a guard on the whole demo: the last stage's max_minutes is lowered (loudly) "
                                             "to what is left of it after eval_reserve_minutes; 0: no budget")
    eval_reserve_minutes: float = help_field(5.0, "minutes kept for the evaluation and report out of budget_minutes")

    def validate(self) -> None:
        if self.per_type < 0 or self.batch_size < 1:
            raise ConfigError("per_type must be >= 0 and batch_size >= 1")
        if self.budget_minutes < 0 or self.eval_reserve_minutes < 0:
            raise ConfigError("budget_minutes and eval_reserve_minutes must be >= 0")


def _log(msg: str) -> None:
    print(f"[chat demo] {msg}", file=sys.stderr, flush=True)


def _grid(examples: list[dict[str, Any]], dataset: Path, path: Path, n: int = 8) -> None:
    """A PNG grid: each test picture with its question, the expected answer and the model's reply."""
    from PIL import Image, ImageDraw

    from auralm.recipes.chat.data import normalise

    cells = examples[:n]
    side, text_h = 160, 54
    grid = Image.new("RGB", (side * 4, (side + text_h) * ((len(cells) + 3) // 4)), "white")
    draw = ImageDraw.Draw(grid)
    for k, e in enumerate(cells):
        x, y = (k % 4) * side, (k // 4) * (side + text_h)
        with Image.open(dataset / e["image"]) as im:
            grid.paste(im.convert("RGB").resize((side, side)), (x, y))
        q = e["question"] if len(e["question"]) <= 26 else e["question"][:25] + "…"
        draw.text((x + 3, y + side + 2), q, fill="black")
        draw.text((x + 3, y + side + 18), f"expected: {e['answer']}", fill="black")
        ok = normalise(e["reply"]) == e["answer"]
        reply = e["reply"] if len(e["reply"]) <= 20 else "..." + e["reply"][-17:]  # a reply with its working: its end
        draw.text((x + 3, y + side + 34), f"reply: {reply}", fill="green" if ok else "red")
    grid.save(path)


def _report(metrics: dict[str, Any]) -> str:
    ev = metrics["eval"]
    types = ev["types"]
    conds = list(ev["accuracy"])
    lines = ["# auralm chat demo", "", f"Held-out test scenes (`{ev['split']}`), exact match, questions about the training "
             "vocabulary (those involving a held-out colour-shape combination are the `heldout_combinations` row alone); "
             "chance = the most common answer's rate; chance (choices) = the best guess among the choices a question names "
             "(position: two of four); the other scene's truth = what answering truthfully about the picture of the `other_image` "
             "row scores. `spoken`: the question spoken by a training voice (the scene is new); "
             "`spoken_new_voice`: by a voice never heard in training.", "",
             "| condition | " + " | ".join(types) + " | overall |", "|---|" + "---|" * (len(types) + 1)]  # fmt: skip
    if cut := _cut_stages(metrics):
        lines[2:2] = [f"**WARNING: {c}; these are not the recipe's figures.**" for c in cut] + [""]
    for c in conds:
        row = ev["accuracy"][c]
        lines.append(f"| {c} | " + " | ".join(f"{row[t]:.3f}" if t in row else "" for t in types) + f" | {row['overall']:.3f} |")
    lines.append("| chance | " + " | ".join(f"{ev['chance'][t]:.3f}" for t in types) + " | |")
    lines.append("| chance (choices) | " + " | ".join(f"{ev['chance_choices'][t]:.3f}" for t in types) + " | |")
    truth = ev["other_image_truth"]
    lines.append("| the other scene's truth | " + " | ".join(f"{truth[t]:.3f}" if t in truth else "" for t in types) + " | |")
    lines.append("| n | " + " | ".join(str(ev["counts"][t]) for t in types) + " | |")
    lines += ["", f"Held-out colour-shape combinations: {ev['counts'].get('heldout_combinations', 0)} questions.", "",
              "Minutes per step: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics["minutes"].items()), "",
              "![examples](examples.png)", "", "| question | expected | reply |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {e['question']} | {e['answer']} | {e['reply']} |" for e in ev["examples"]]
    return "\n".join(lines) + "\n"


def _cut_stages(metrics: dict[str, Any]) -> list[str]:
    """A line for each stage its time guard stopped before its last step."""
    from auralm.training.checkpoint import guard_cut

    return [cut for name, m in metrics.get("stages", {}).items() if (cut := guard_cut(name, m))]


def _within_budget(stage: Any, left: float) -> Any:
    """The stage with its guard (``optim.max_minutes``) lowered to the ``left`` minutes of the demo's budget, said
    on stderr; a stage with no time left still runs one minute (its checkpoint is what the evaluation reads)."""
    left = max(1.0, round(left, 1))
    guard = stage.optim.max_minutes
    if guard and guard <= left:
        return stage
    _log(f"WARNING: {left:g} min left of the demo's budget: stage {stage.stage}'s guard lowered from "
         f"{guard or 'none'} to {left:g} min (it may stop before optim.max_steps={stage.optim.max_steps})")  # fmt: skip
    return stage.replace(optim=stage.optim.replace(max_minutes=left))


def run_demo(out: str | None = None, preset: str = "chat-demo", overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the demo; return its metrics (also written to ``out/metrics.json``)."""
    from auralm.recipes.chat.config import TrainConfig
    from auralm.recipes.chat.data import ChatSynthConfig, synth_chat
    from auralm.recipes.chat.evaluate import evaluate
    from auralm.recipes.chat.pipeline import ChatPipeline
    from auralm.recipes.chat.train import train
    from auralm.training.checkpoint import resolve_checkpoint

    cfg = apply_overrides(ChatDemoConfig.from_dict(load_preset(preset)), list(overrides or []))
    if out:
        cfg = cfg.replace(out=out)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root, "demo_config.yaml")
    minutes: dict[str, float] = {}
    t0 = time.perf_counter()
    data = root / "data"
    synth_chat(ChatSynthConfig.from_dict({**cfg.synth, "out": str(data)}))
    minutes["synth"] = (time.perf_counter() - t0) / 60
    stages = [(1, cfg.stage1_preset, cfg.stage1)] + ([(2, cfg.stage2_preset, cfg.stage2)] if cfg.stage2_preset else [])
    last = None
    for number, name, extra in stages:
        t = time.perf_counter()
        stage = apply_overrides(TrainConfig.from_dict(load_preset(name)), list(extra))
        if stage.stage != number:
            raise ConfigError(f"{name} is a stage-{stage.stage} preset, but the demo runs it as stage {number}")
        stage = stage.replace(out=str(root / f"stage{number}"), data=stage.data.replace(dataset=str(data)),
                              init_from=str(last) if last else stage.init_from)  # fmt: skip
        if cfg.budget_minutes and number == stages[-1][0]:
            stage = _within_budget(stage, cfg.budget_minutes - cfg.eval_reserve_minutes - (t - t0) / 60)
        _log(f"stage {number}: {name}")
        last = train(stage)
        minutes[f"stage{number}"] = (time.perf_counter() - t) / 60
    ckpt = resolve_checkpoint(last)
    with atomic_dir(root / "checkpoint") as tmp:
        for f in ckpt.iterdir():
            if f.name != "trainer_state.pt" and f.is_file():
                shutil.copy2(f, tmp / f.name)
    stage_metrics = {f"stage{n}": json.loads((resolve_checkpoint(root / f"stage{n}") / "metrics.json").read_text())
                     for n, _, _ in stages}  # fmt: skip
    t = time.perf_counter()
    pipe = ChatPipeline.from_checkpoint(root / "checkpoint")
    ev = evaluate(pipe, data, "test", per_type=cfg.per_type, batch_size=cfg.batch_size)
    minutes["eval"] = (time.perf_counter() - t) / 60
    minutes["total"] = (time.perf_counter() - t0) / 60
    metrics = {"eval": ev, "stages": stage_metrics, "minutes": minutes}
    atomic_write_json(root / "metrics.json", metrics)
    _grid(ev["examples"], data, root / "examples.png")
    atomic_write_text(root / "report.md", _report(metrics))
    acc = ev["accuracy"]
    _log(f"typed {acc['typed']['overall']:.3f}, spoken {acc.get('spoken', {}).get('overall', float('nan')):.3f}, "
         f"other image {acc.get('other_image', {}).get('overall', float('nan')):.3f} in {minutes['total']:.1f} min; "
         f"wrote {root / 'report.md'}")  # fmt: skip
    for line in _cut_stages(metrics):
        _log(f"WARNING: {line}: the figures above are not the recipe's (the machine was too slow for the budget)")
    return metrics
