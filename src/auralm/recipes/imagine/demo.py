"""``auralm imagine demo``: the whole S4 chain, offline, on the embedded default.

Read top to bottom: build the corpus (drawn scenes, spoken captions, cached Whisper tiny.en states), train the
judge on drawings, the aligner (Whisper tiny.en states -> all-MiniLM-L6-v2 token states) and the small pixel
UNet (conditioned on MiniLM states of the captions), bundle the three into ``OUT/checkpoint/`` (loadable by
``auralm.load()``), then evaluate on held-out scenes and write ``OUT/metrics.json`` and ``OUT/report.md`` with a
grid (``OUT/grid.png``: drawing | from the text | from the spoken caption | from another clip's audio).
Every stage resumes: rerunning the command continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from auralm.core.config import Config, help_field, save_config
from auralm.core.errors import ConfigError
from auralm.recipes.imagine.data import CorpusConfig, build_corpus
from auralm.recipes.imagine.train import (
    AlignerTrainConfig,
    DiffusionTrainConfig,
    JudgeTrainConfig,
    train_aligner,
    train_diffusion,
    train_judge,
)


@dataclasses.dataclass
class DemoConfig(Config):
    """Settings of ``auralm imagine demo`` (presets: imagine-demo, imagine-tiny)."""

    out: str = help_field("runs/imagine-demo", "output folder")
    corpus: CorpusConfig = help_field(default_factory=lambda: CorpusConfig(out="corpus"), help="the corpus "
                                      "(its out is relative to the demo's out)")  # fmt: skip
    judge: JudgeTrainConfig = help_field(default_factory=JudgeTrainConfig, help="the judge's training")
    aligner: AlignerTrainConfig = help_field(default_factory=AlignerTrainConfig, help="the aligner's training")
    diffusion: DiffusionTrainConfig = help_field(default_factory=DiffusionTrainConfig, help="the UNet's training")
    n_retrieval: int = help_field(100, "held-out clips of the retrieval scores")
    n_judge: int = help_field(60, "held-out scenes whose generated images are judged")
    steps: int = help_field(50, "DDIM sampling steps")
    guidance: float = help_field(3.0, "classifier-free guidance scale")
    seed: int = help_field(0, "seed of the sampling noise")
    grid_rows: int = help_field(8, "scenes in the report's grid")

    def validate(self) -> None:
        if not self.out:
            raise ConfigError("DemoConfig.out is required")
        if self.n_retrieval < 2 or self.n_judge < 1 or self.steps < 1:
            raise ConfigError("DemoConfig: n_retrieval >= 2, n_judge >= 1 and steps >= 1 are needed")


def _bundle(out: Path, parts: dict[str, Path], cfg: DemoConfig) -> Path:
    """``OUT/checkpoint/``: config.yaml (recipe imagine, kind bundle) + a copy of each part's final checkpoint."""
    from auralm.core.io import atomic_dir
    from auralm.recipes.imagine.pipeline import ImagineBundle

    target = out / "checkpoint"
    with atomic_dir(target) as tmp:
        for name, src in parts.items():
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("trainer_state.pt", "unet_train.safetensors"))
        save_config(ImagineBundle(steps=cfg.steps, guidance=cfg.guidance), tmp)
    return target


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the chain (see the module docstring); return the metrics."""
    import auralm
    from auralm.recipes.imagine.data import Corpus
    from auralm.recipes.imagine.evaluate import evaluate, write_metrics

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    corpus_dir = out / cfg.corpus.out
    build_corpus(cfg.corpus.replace(out=str(corpus_dir)))
    times["corpus"] = time.perf_counter() - t0
    stages = {"judge": (train_judge, cfg.judge), "aligner": (train_aligner, cfg.aligner),
              "diffusion": (train_diffusion, cfg.diffusion)}  # fmt: skip
    parts = {}
    for name, (train, scfg) in stages.items():
        t = time.perf_counter()
        parts[name] = train(scfg.replace(corpus=str(corpus_dir), out=str(out / name)))
        times[name] = time.perf_counter() - t
    bundle = _bundle(out, parts, cfg)
    t = time.perf_counter()
    pipe = auralm.load(bundle)
    metrics = evaluate(pipe, Corpus(corpus_dir), n_retrieval=cfg.n_retrieval, n_judge=cfg.n_judge, steps=cfg.steps,
                       guidance=cfg.guidance, seed=cfg.seed, grid=out / "grid.png", grid_rows=cfg.grid_rows)  # fmt: skip
    times["evaluate"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    metrics["minutes"] = {k: round(v / 60, 2) for k, v in times.items()}
    metrics["training"] = {name: _train_facts(p) for name, p in parts.items()}
    write_metrics(out / "metrics.json", metrics)
    from auralm.core.io import atomic_write_text

    atomic_write_text(out / "report.md", report(metrics, cfg))
    print(f"auralm imagine demo: {times['total'] / 60:.1f} min; judged mean accuracy text "
          f"{metrics.get('judged_text', {}).get('mean', float('nan')):.3f}, audio "
          f"{metrics.get('judged_audio', {}).get('mean', float('nan')):.3f}, other audio "
          f"{metrics.get('judged_other_audio', {}).get('mean', float('nan')):.3f}; R@1 a->t "
          f"{metrics['retrieval']['a2t_r@1']:.3f}; wrote {out}/report.md", file=sys.stderr)  # fmt: skip
    return metrics


def _train_facts(ckpt: Path) -> dict[str, Any]:
    import json

    m = json.loads((ckpt / "metrics.json").read_text())
    return {k: m.get(k) for k in ("steps_done", "steps_planned", "stopped_by", "elapsed_s")}


def _row(name: str, acc: dict[str, float]) -> str:
    return f"| {name} | {acc['colour']:.3f} | {acc['shape']:.3f} | {acc['count']:.3f} | {acc['mean']:.3f} | {acc['all']:.3f} |"


def report(m: dict[str, Any], cfg: DemoConfig) -> str:
    r = m["retrieval"]
    lines = ["# auralm imagine demo", "",
             f"{m['minutes']['total']:.1f} minutes on this machine ({', '.join(f'{k} {v:.1f}' for k, v in m['minutes'].items() if k != 'total')}).",
             "", "## Judged attributes of generated images (held-out scenes)", "",
             f"{m.get('n_judged', 0)} test scenes; the judge (trained on drawings only, never on generated images) reads "
             "the main object's colour and shape and the number of objects.", "",
             "| images | colour | shape | count | mean | all three |", "|---|---|---|---|---|---|"]  # fmt: skip
    if "judged_text" in m:
        lines += [_row("real drawings (ceiling)", m["judge_ceiling"]["real"]),
                  _row("other renderer's drawings", m["judge_ceiling"]["other_renderer"]),
                  _row("from the caption text", m["judged_text"]), _row("from the spoken caption", m["judged_audio"]),
                  _row("from another clip's audio", m["judged_other_audio"]),
                  f"| chance | {m['chance']['colour']:.3f} | {m['chance']['shape']:.3f} | {m['chance']['count']:.3f} | "
                  f"{m['chance']['mean']:.3f} | |", "",
                  f"Spoken / text (mean accuracy): **{m['audio_over_text']:.2f}** (the bar: at least 0.8; it means something "
                  f"only where the text's images beat chance, {m['chance']['mean']:.3f}, and the other clip's audio does "
                  "not).", ""]  # fmt: skip
    lines += ["## Retrieval (the aligner)", "",
              f"Among {int(r['n'])} held-out captions: audio -> text R@1 {r['a2t_r@1']:.3f}, R@5 {r['a2t_r@5']:.3f}, "
              f"R@10 {r['a2t_r@10']:.3f}; text -> audio R@1 {r['t2a_r@1']:.3f}, R@5 {r['t2a_r@5']:.3f}; with another "
              f"clip's audio R@1 {r['a2t_r@1_shuffled']:.3f}. Token cosine {r['cosine']:.3f}, norm ratio "
              f"{r['norm_ratio']:.3f}, token-count accuracy {r['length_acc']:.3f}.", ""]  # fmt: skip
    if "grid_rows" in m:
        lines += ["## Grid", "", "![grid](grid.png)", "",
                  "Columns: the drawing, from the caption text, from the spoken caption, from another clip's audio.", ""]
        lines += [f"{i + 1}. \"{g['spoken']}\" (`{g['audio']}`)" for i, g in enumerate(m["grid_rows"])]
    lines += ["", "## Training", ""]
    lines += [f"- {k}: {v['steps_done']} of {v['steps_planned']} steps ({v['stopped_by']}), {v['elapsed_s'] / 60:.1f} min"
              for k, v in m["training"].items()]
    lines += ["", f"Config: `{Path(cfg.out) / 'config.yaml'}`; checkpoint: `checkpoint/` (auralm.load())."]
    return "\n".join(lines) + "\n"
