"""``auralm caption demo``: the S2 chain end to end on the embedded default, and the measurements of issue 12.

1. ``auralm synth music`` renders the corpus into ``OUT/music`` (held-out playlists hold held-out tracks).
2. The audio encoder's states of every track go into the embedding cache once (``OUT/music/cache``).
3. The main model trains (``train``: the complete TrainConfig of the run) -> ``OUT/checkpoint``.
4. Held-out playlists are captioned (beam search) and scored beside the nearest-neighbour baseline and the
   shuffled branches; held-out tracks are captioned and their attributes checked (:mod:`.evaluate`).
5. Same data and budget (``study_steps``): one run per gate (``gates``) and per training fraction
   (``fractions``), each scored by CIDEr-D on the held-out playlists.

``OUT/metrics.json`` names every figure (``model``, ``nearest_neighbour``, ``shuffled_<branch>``, ``shuffled_all``,
``gate_<name>``, ``fraction_<p>``, ``tracks``) with the hypotheses and references it scored (``captions``);
``OUT/report.md`` puts them in a table beside the targets (CIDEr-D >= 1.2 x nearest neighbour; all-shuffled
<= half the model's).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from auralm.core.config import Config, apply_overrides, help_field, load_preset, save_config
from auralm.core.errors import ConfigError
from auralm.core.io import atomic_write_text
from auralm.recipes.caption.config import TrainConfig


def _default_train() -> TrainConfig:
    return TrainConfig()


@dataclasses.dataclass
class CaptionDemoConfig(Config):
    """Settings of ``auralm caption demo`` (``presets/caption-demo.yaml`` is the shipped run)."""

    out: str = help_field("runs/caption-demo", "output folder: music/, runs/, checkpoint/, metrics.json, report.md")
    music: dict = help_field({}, "MusicConfig fields of the corpus (out is OUT/music)")
    train: TrainConfig = dataclasses.field(default_factory=_default_train, metadata={"help": "the main run"})
    study_steps: int = help_field(0, "steps of each gate / fraction run (0: the main run's optim.max_steps)")
    gates: list = help_field(["resurrect", "tanh", "sum"], "gates compared at study_steps (empty: none)")
    fractions: list = help_field([0.1, 0.25, 0.5, 1.0], "training fractions compared at study_steps (empty: none)")
    study_beams: int = help_field(1, "beams when scoring the study runs (1: greedy, cheaper)")
    similarity: bool = help_field(True, "also report the MiniLM sentence-embedding similarity")
    max_tracks: int = help_field(0, "held-out tracks captioned for the attribute accuracy (0: all)")
    main: bool = help_field(True, "train and evaluate the main model (false: only the gate / fraction study, "
                                  "added to OUT/metrics.json of an earlier run)")

    def validate(self) -> None:
        if self.study_steps < 0 or self.study_beams < 1 or self.max_tracks < 0:
            raise ConfigError("need study_steps >= 0, study_beams >= 1, max_tracks >= 0")
        if any(not 0 < float(f) <= 1 for f in self.fractions):
            raise ConfigError(f"fractions must be in (0, 1], got {self.fractions}")


def demo_config(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> CaptionDemoConfig:
    return apply_overrides(CaptionDemoConfig.from_dict(load_preset(preset)), list(overrides))


def log(msg: str) -> None:
    print(f"[caption demo] {msg}", file=sys.stderr, flush=True)


def _study(cfg: CaptionDemoConfig, base: TrainConfig, name: str, feat: Any, examples: Any, **changes: Any) -> dict[str, Any]:
    """Train one comparison run at study_steps and score it (CIDEr-D etc., no controls) on held-out playlists."""
    from auralm.recipes.caption.evaluate import score
    from auralm.recipes.caption.pipeline import CaptionPipeline
    from auralm.recipes.caption.train import train
    from auralm.training.checkpoint import stop_record

    steps = cfg.study_steps or base.optim.max_steps
    run = base.replace(out=str(Path(cfg.out) / "runs" / name), optim=base.optim.replace(max_steps=steps), **changes)
    t0 = time.perf_counter()
    ckpt = train(run, feat, examples)
    pipe = CaptionPipeline.from_checkpoint(ckpt)
    test = examples["test"]["playlists"]
    gen = run.generation.replace(strategy="beam" if cfg.study_beams > 1 else "greedy", num_beams=cfg.study_beams)
    hyps = pipe.caption_examples(test, gen)
    train_caps = [c for e in examples["train"]["playlists"] for c in e["captions"]]
    res = score(hyps, [e["captions"] for e in test], train_caps, similarity=False)
    res.update(steps=steps, minutes=round((time.perf_counter() - t0) / 60, 2), **stop_record(ckpt))
    log(f"{name}: CIDEr-D {res['cider_d']:.3f} ({res['minutes']} min)")
    return {"scores": res, "hypotheses": hyps}


def run_demo(cfg: CaptionDemoConfig) -> dict[str, Any]:
    import json

    from auralm.data.music import MusicConfig, synth_music
    from auralm.recipes.caption.data import Featurizer, load_examples
    from auralm.recipes.caption.evaluate import evaluate, headline, write_eval
    from auralm.recipes.caption.pipeline import CaptionPipeline
    from auralm.recipes.caption.train import train
    from auralm.training.checkpoint import stop_record

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out, "demo_config.yaml")
    t_start = time.perf_counter()
    timing: dict[str, float] = {}

    t = time.perf_counter()
    synth_music(MusicConfig.from_dict({**cfg.music, "out": str(out / "music")}))
    base = cfg.train.replace(data=cfg.train.data.replace(corpus=str(out / "music")))
    feat = Featurizer(base.model)
    examples = load_examples(base.data.corpus, feat, base.model, base.data.cache_dir or None)
    timing["data_minutes"] = (time.perf_counter() - t) / 60

    if cfg.main:
        t = time.perf_counter()
        main_run = base.replace(out=str(out / "runs" / "main"))
        ckpt = train(main_run, feat, examples)
        timing["train_minutes"] = (time.perf_counter() - t) / 60
        final = out / "checkpoint"
        tmp = out / ".checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ckpt, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)

        t = time.perf_counter()
        pipe = CaptionPipeline.from_checkpoint(final)
        results = evaluate(pipe, examples, "test", None, controls=True, max_tracks=cfg.max_tracks,
                           similarity=cfg.similarity)
        results["main_run"] = {"steps": main_run.optim.max_steps, "gate": main_run.model.gate,
                               "decoding": pipe.generation.to_dict(), **stop_record(ckpt)}
        timing["eval_minutes"] = (time.perf_counter() - t) / 60
        write_eval(results, out / "metrics.json")
    elif (out / "metrics.json").is_file():
        results = json.loads((out / "metrics.json").read_text())
        timing.update({k: v for k, v in results.get("timing", {}).items() if k != "total_minutes"})
    else:  # the study alone
        results = {}

    t = time.perf_counter()
    study: dict[str, Any] = {}
    if cfg.gates or cfg.fractions:
        results["study"] = {"steps": cfg.study_steps or base.optim.max_steps, "beams": cfg.study_beams}
    for gate in cfg.gates:
        study[f"gate_{gate}"] = _study(cfg, base, f"gate-{gate}", feat, examples,
                                       model=base.model.replace(gate=gate))
        results[f"gate_{gate}"] = study[f"gate_{gate}"]["scores"]
        write_eval(results, out / "metrics.json")
    for frac in cfg.fractions:
        key = f"fraction_{float(frac):g}"
        same = f"gate_{base.model.gate}"
        if float(frac) == 1.0 and same in study:  # the same run as the main gate's study run
            study[key] = study[same]
        else:
            study[key] = _study(cfg, base, f"fraction-{float(frac):g}", feat, examples,
                                data=base.data.replace(fraction=float(frac)))
        results[key] = study[key]["scores"]
        write_eval(results, out / "metrics.json")
    if study:
        timing["study_minutes"] = (time.perf_counter() - t) / 60
    for k, v in study.items():
        results.setdefault("captions", {}).setdefault("hypotheses", {})[k] = v["hypotheses"]
    timing["total_minutes"] = (time.perf_counter() - t_start) / 60
    results["timing"] = {k: round(v, 2) for k, v in timing.items()}
    cider = headline(results)
    results["targets"] = {
        "cider_d_vs_nearest_neighbour": cider.get("model", 0) / max(cider.get("nearest_neighbour", 0), 1e-9),
        "shuffled_all_vs_model": cider.get("shuffled_all", 0) / max(cider.get("model", 0), 1e-9),
        "wanted": "model >= 1.2 x nearest_neighbour; shuffled_all <= 0.5 x model",
    }
    results["targets"]["met"] = bool(results["targets"]["cider_d_vs_nearest_neighbour"] >= 1.2
                                     and results["targets"]["shuffled_all_vs_model"] <= 0.5)
    write_eval(results, out / "metrics.json")
    atomic_write_text(out / "report.md", report(cfg, results))
    log(f"done in {timing['total_minutes']:.1f} min: {json.dumps({k: round(v, 3) for k, v in cider.items()})}")
    return results


def report(cfg: CaptionDemoConfig, r: dict[str, Any]) -> str:
    """The demo's figures as markdown."""
    cols = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider_d", "minilm_similarity", "vocab_size", "novel")
    lines = ["# S2 caption demo", "", f"Held-out playlists: {r.get('n_playlists')}; main run: {r.get('main_run')}; "
             f"study: {r.get('study')}.", "",
             "| system | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, v in r.items():
        if isinstance(v, dict) and "cider_d" in v and name != "tracks":
            lines.append(f"| {name} | " + " | ".join(f"{v[c]:.3f}" if isinstance(v.get(c), float) else str(v.get(c, ""))
                                                     for c in cols) + " |")
    t = r.get("targets", {})
    lines += ["", f"Targets ({t.get('wanted')}): model / nearest neighbour = {t.get('cider_d_vs_nearest_neighbour', 0):.2f}, "
                  f"shuffled_all / model = {t.get('shuffled_all_vs_model', 0):.2f}; met: {t.get('met')}.", ""]
    if "tracks" in r:
        tr = r["tracks"]
        lines += [f"Held-out tracks ({tr['n']}): attribute accuracy {tr['accuracy']} "
                  f"(audio shuffled: {tr.get('accuracy_shuffled_audio')}); CIDEr-D {tr['cider_d']:.3f}.", ""]
    lines += [f"SPICE/SPIDEr: {(r.get('model') or {}).get('unavailable_reason', 'computed')}.", "",
              f"Timing (minutes): {r.get('timing')}.", ""]
    return "\n".join(lines)
