"""``auralm demo``: the main job (S1) end to end on the embedded default, offline, on a CPU.

Steps (each writes under ``cfg.out``, default ``runs/demo``):

1. ``corpus/``: a synthetic speech corpus (espeak-ng + flite voices; sentences from the text sources
   ``sources`` mixed by weight: fortunes in ``demo``; fortunes, WordNet examples and definitions and
   GCIDE quotations in ``demo-mix``); the split
   is assigned per sentence, so test sentences are never heard in training, and the ``eval_voices``
   speak ``eval_voice_share`` of the test clips and nothing else.
2. ``prepared.jsonl``: ``auralm prepare`` re-reads the corpus folder and checks every file. Its rows
   are split by ``prepare``'s own rule, not per sentence: training and scoring use
   ``corpus/manifest.jsonl``, never this file.
3. ``long/``: the test clips joined into one long recording with an SRT of its sentences, cut by
   ``auralm chunk`` at sentence boundaries; each chunk's text must be exactly its sentences.
4. ``embeddings/``: ``auralm embed`` caches the encoder's states (real length, not 30 s of padding),
   reporting the real-time factor; a second pass must find everything cached.
5. ``stage1/``: ``auralm hear train`` with the ``stage1_preset`` preset (``hear-demo-stage1``: the projector
   learns from the CTC loss against the LM's own embedding matrix; encoder and LM frozen).
6. ``stage2/``: ``stage2_preset`` (``hear-demo-stage2``: the LM reads the CTC-compressed frames, LoRA on),
   initialised from stage 1. The demo passes each stage only its data paths, ``out`` and ``init_from``.
7. ``checkpoint/`` (loadable by ``auralm hear generate`` / ``auralm hear eval``), ``metrics.json`` (held-out WER,
   the same with the audio of another row, Whisper tiny.en's own WER on the same clips, the
   projector's CTC WER, each of them per text source and for held-out and training voices, and the
   minutes of every step: ``timing``), ``report.md`` and ``loss_curves.png``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.config import Config, help_field, save_config
from auralm.core.errors import AuralmError
from auralm.core.io import atomic_write_json, atomic_write_text
from auralm.training.checkpoint import guard_cut, stop_record


@dataclasses.dataclass
class DemoConfig(Config):
    """Settings of ``auralm demo`` (preset ``demo``); each training stage is its own ``auralm hear train`` preset."""

    out: str = help_field("runs/demo", "output folder")
    seed: int = help_field(0, "seed of the synthetic corpus")
    n_clips: int = help_field(6000, "sentence clips in the synthetic corpus")
    sources: dict[str, float] = help_field({"fortunes": 1.0}, "text sources of the corpus and their weights "
                                           "(auralm synth speech: fortunes, wordnet-examples, wordnet-definitions, gcide-quotes)")
    voices: list[str] = help_field(["default"], "voices (engine:voice), or voice sets of auralm synth speech: default, wide")
    eval_voices: list[str] = help_field([], "voices (or patterns) never heard in training; they speak eval_voice_share "
                                            "of the test clips")
    eval_voice_share: float = help_field(0.5, "share of the test clips spoken by the eval_voices")
    flite_share: float | None = help_field(None, "share of the clips spoken by flite voices (null: every voice alike)")
    test_frac: float = help_field(0.1, "fraction of sentences held out for testing")
    valid_frac: float = help_field(0.05, "fraction of sentences held out for validation")
    long_max_seconds: float = help_field(12.0, "longest chunk when cutting the long recording")
    max_eval_clips: int = help_field(100, "held-out clips scored at the end (0: all)")
    jobs: int = help_field(2, "parallel synthesis jobs")
    stage1_preset: str = help_field("hear-demo-stage1", "auralm hear train preset (name or YAML path) of stage 1; "
                                                        "its model.encoder is the one cached")
    stage2_preset: str = help_field("hear-demo-stage2", "preset of stage 2, started from stage 1's checkpoint "
                                                        "(empty: no stage 2)")
    copy_bias: float = help_field(2.0, "decoding of the final scoring: logit bonus on the tokens the LM reads as audio "
                                       "(feed=ctc_soft; `auralm hear eval --copy-bias` gives the same)")
    rescore_beam: int = help_field(32, "decoding of the final scoring: the frozen LM picks among a head's this many "
                                       "best transcripts (0: the LM writes the transcript; both are reported)")
    rescore_weight: float = help_field(1.5, "rescore_beam: weight of the LM's log-prob (picked on validation clips)")
    rescore_length_bonus: float = help_field(-2.0, "rescore_beam: bonus per transcript token or word (picked with it)")
    rescore_head: str = help_field("phones", "rescore_beam: ctc (the word CTC head's N-best) or phones (the phone head's, "
                                          "through its lexicon; the stage-1 preset needs model.phone_weight > 0)")
    phone_prior_weight: float = help_field(0.5, "rescore_head=phones: the lexicon words' unigram prior in the beam")

    def validate(self) -> None:
        from auralm.core.errors import ConfigError

        if self.n_clips < 10:
            raise ConfigError(f"n_clips must be at least 10, got {self.n_clips}")
        if not 0 < self.test_frac < 1:
            raise ConfigError(f"test_frac must be in (0, 1), got {self.test_frac}")
        if self.long_max_seconds <= 1:
            raise ConfigError(f"long_max_seconds must exceed 1, got {self.long_max_seconds}")
        if not self.stage1_preset:
            raise ConfigError("stage1_preset must name an `auralm hear train` preset")
        self.synth_config("unused")  # the corpus settings validate with SynthConfig's rules

    def synth_config(self, out: str) -> Any:
        """The :class:`auralm.data.synth.SynthConfig` of the demo's corpus."""
        from auralm.data.synth import VOICE_SETS, SynthConfig

        voices = [x for v in self.voices for x in VOICE_SETS.get(v, [v])]
        return SynthConfig(out=out, n=self.n_clips, seed=self.seed, test_frac=self.test_frac, valid_frac=self.valid_frac,
                           jobs=self.jobs, sources=dict(self.sources), voices=voices, eval_voices=list(self.eval_voices),
                           eval_voice_share=self.eval_voice_share, flite_share=self.flite_share)  # fmt: skip


def _minutes(since: float) -> float:
    return round((time.perf_counter() - since) / 60, 2)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _make_long_recording(rows, folder: Path, gap: float = 0.4) -> tuple[Path, Path, str]:
    """Join clips with ``gap`` seconds of silence; write the WAV and an SRT with one cue per clip."""
    from auralm.data.audio import load_audio, write_wav

    rate = 16000
    pieces, cues, t = [], [], 0.0
    silence = np.zeros(int(gap * rate), dtype=np.float32)
    for k, row in enumerate(rows, start=1):
        wav, _ = load_audio(row.audio_path(), rate)
        start, end = t, t + len(wav) / rate
        cues.append(f"{k}\n{_srt_time(start)} --> {_srt_time(end)}\n{row.text}\n")
        pieces += [wav, silence]
        t = end + gap
    wav_path, srt_path = folder / "long.wav", folder / "long.srt"
    write_wav(wav_path, np.concatenate(pieces), rate)
    atomic_write_text(srt_path, "\n".join(cues))
    return wav_path, srt_path, " ".join(row.text for row in rows)


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _data_steps(cfg: DemoConfig, out: Path, encoder_name: str, metrics: dict) -> tuple[Path, list]:
    """Steps 1-4: corpus, prepare check, long-recording chunking, embedding cache."""
    from auralm.components.asr import WhisperBaseline
    from auralm.components.encoders import build_audio_encoder
    from auralm.data.audio import load_audio
    from auralm.data.chunk import ChunkConfig
    from auralm.data.chunk import run as chunk_run
    from auralm.data.embed_cache import embed_manifest
    from auralm.data.manifest import read_manifest
    from auralm.data.prepare import prepare
    from auralm.data.synth import synth_speech
    from auralm.metrics.text import cer, wer

    timing = metrics.setdefault("timing", {})
    t = time.perf_counter()
    _log(f"1/7 synthesising {cfg.n_clips} sentence clips into {out / 'corpus'}")
    manifest = synth_speech(cfg.synth_config(str(out / "corpus")))
    timing["synth"] = _minutes(t)
    rows = read_manifest(manifest)
    splits = {s: sum(r.split == s for r in rows) for s in ("train", "valid", "test")}
    train_text = {r.text for r in rows if r.split == "train"}
    test_rows = [r for r in rows if r.split == "test"]
    leaked = sum(r.text in train_text for r in test_rows)
    metrics["corpus"] = {"clips": len(rows), "splits": splits, "audio_seconds": round(sum(r.duration or 0 for r in rows), 1),
                         "test_sentences_also_in_train": leaked, "train_sentences": len(train_text),
                         "text_sources": dict(Counter(r.meta.get("text_source") for r in rows)),
                         "voices": len({(r.meta.get("engine"), r.meta.get("voice")) for r in rows}),
                         "held_out_voice_test_clips": sum(bool(r.meta.get("held_out_voice")) for r in test_rows)}
    _log(f"   {len(rows)} clips, splits {splits}, {leaked} test sentences also in train")

    _log("2/7 checking the corpus folder with `auralm prepare`")
    t = time.perf_counter()
    report = prepare(out / "corpus" / "wavs", None, out / "prepared.jsonl")
    metrics["prepare"] = {"pairs": len(report.rows), "problems": len(report.problems)}
    timing["prepare"] = _minutes(t)
    t = time.perf_counter()

    _log("3/7 joining test clips into one long recording and chunking it at sentence boundaries")
    long_dir = out / "long"
    long_dir.mkdir(exist_ok=True)
    wav_path, srt_path, long_text = _make_long_recording(test_rows[:40], long_dir)
    chunk_run(ChunkConfig(out=str(long_dir / "chunks.jsonl"), audio=str(wav_path), timings=str(srt_path),
                          id="long", max_seconds=cfg.long_max_seconds))
    chunks = read_manifest(long_dir / "chunks.jsonl")
    joined = " ".join(c.text or "" for c in chunks)
    if joined.split() != long_text.split():
        raise AuralmError("chunking lost or repeated words of the long recording")
    chunk_wavs = [load_audio(c.audio_path(), 16000, start=c.start, end=c.end)[0] for c in chunks]
    refs = [c.text or "" for c in chunks]
    hyps = WhisperBaseline("whisper-tiny.en").transcribe(chunk_wavs, desc="whisper (long chunks)")
    metrics["chunk"] = {
        "long_recording_seconds": round(sum(c.duration or 0 for c in chunks), 1),
        "chunks": len(chunks),
        "longest_chunk_seconds": round(max((c.end or 0) - (c.start or 0) for c in chunks), 2),
        "text_exact": True,
        "whisper_wer": wer(refs, hyps), "whisper_cer": cer(refs, hyps),
    }
    timing["long_recording"] = _minutes(t)
    t = time.perf_counter()

    _log(f"4/7 caching {encoder_name} embeddings")
    encoder = build_audio_encoder(encoder_name)
    first = embed_manifest(manifest, encoder, out / "embeddings")
    second = embed_manifest(manifest, encoder, out / "embeddings")
    metrics["embed"] = {
        "encoder": encoder_name, "revision": encoder.revision, "encoded": first.encoded,
        "audio_seconds": round(first.audio_seconds, 1), "real_time_factor": round(first.real_time_factor, 4),
        "second_run_encoded": second.encoded, "second_run_skipped": second.skipped,
    }
    timing["embed"] = _minutes(t)
    _log(f"   real-time factor {first.real_time_factor:.4f} ({first.encoded} clips); "
         f"second run encoded {second.encoded}, skipped {second.skipped}")
    return manifest, test_rows


def _stage_configs(cfg: DemoConfig, out: Path) -> list[Any]:
    """The stages' ``TrainConfig``s, each its preset plus the run's data paths and folder (checked up front)."""
    from auralm.core.errors import ConfigError
    from auralm.recipes.hear.config import config_from_preset

    run = [f"data.manifest={out / 'corpus' / 'manifest.jsonl'}", f"data.cache_dir={out / 'embeddings'}"]
    presets = [cfg.stage1_preset] + ([cfg.stage2_preset] if cfg.stage2_preset else [])
    stages = [config_from_preset(p, [*run, f"out={out / f'stage{i}'}"]) for i, p in enumerate(presets, 1)]
    for i, st in enumerate(stages, 1):
        if st.stage != i:
            raise ConfigError(f"{presets[i - 1]} is a stage-{st.stage} preset, but the demo runs it as stage {i}")
    if len({st.model.encoder for st in stages}) > 1:
        raise ConfigError(f"the stage presets use different encoders: {[st.model.encoder for st in stages]}")
    return stages


def _train_stage(train_cfg: Any, stage: int, init_from: str = "") -> Path:
    from auralm.recipes.hear.train import train

    if init_from:
        train_cfg = train_cfg.replace(init_from=init_from)
    o = train_cfg.optim
    _log(f"{4 + stage}/7 stage {stage}: {o.max_steps} steps (guard {o.max_minutes} min) -> {train_cfg.out}")
    return train(train_cfg)


def _stage_line(name: str, st: dict) -> str:
    """One report line per stage; a stage cut by its time guard is said loudly."""
    line = (f"- {name} (`{st['preset']}`): {st.get('steps_done')} of {st.get('steps_planned')} steps, stopped by "
            f"{st.get('stopped_by')}, done at minute {st['done_at_minute']}")
    if st.get("stopped_by") == "max_minutes":
        line += " - **WARNING: cut short by its time guard; this is not the shipped recipe's result**"
    return line


def _plot(out: Path, logs: list[tuple[str, Path]]) -> Path | None:
    """Losses against steps (left) and validation WER against training minutes (right)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the train extra is not installed
        return None
    fig, (ax, ax_wer) = plt.subplots(1, 2, figsize=(12, 4.5))
    offset, minutes = 0, 0.0
    for name, path in logs:
        if not path.is_file():
            continue
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for key, style in (("train/lm_loss", "-"), ("train/ctc_loss", "--"), ("valid/loss", "o-")):
            pts = [(r["step"] + offset, r[key]) for r in recs if key in r]
            if pts:
                ax.plot(*zip(*pts), style, label=f"{name} {key}")
        for key, label in (("valid/ctc_wer", "projector CTC"), ("valid/wer", "LM greedy")):
            pts = [(r["time/train_minutes"] + minutes, r[key]) for r in recs if key in r and "time/train_minutes" in r]
            if pts:
                ax_wer.plot(*zip(*pts), "o-", label=f"{name}: {label}")
        offset += max((r.get("step", 0) for r in recs), default=0)
        minutes += max((r.get("time/train_minutes", 0.0) for r in recs), default=0.0)
    ax.set_xlabel("optimizer step (stage 2 continues after stage 1)")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax_wer.set_xlabel("training minutes (stage 2 continues after stage 1)")
    ax_wer.set_ylabel("validation WER")
    ax_wer.axhline(0.2, color="grey", ls=":", label="target 0.20")
    ax_wer.legend(fontsize=8)
    ax_wer.grid(alpha=0.3)
    path = out / "loss_curves.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _head(gen: dict) -> tuple[str, str]:
    """Whose N-best the decoding rescores, and the unit its length bonus counts."""
    return ("the phone head's", "word") if gen.get("rescore_head") == "phones" else ("the CTC head's", "token")


def _decoding(gen: dict) -> str:
    return f"the LM rescoring {_head(gen)[0]} {gen['rescore_beam']} best" if gen.get("rescore_beam") else "greedy"


def _report(out: Path, metrics: dict) -> None:
    ev, base = metrics["eval"], metrics["embed"]
    lines = [
        "# auralm demo report", "",
        f"Corpus: {metrics['corpus']['clips']} synthetic clips ({metrics['corpus']['audio_seconds']} s), splits "
        f"{metrics['corpus']['splits']}; {metrics['corpus']['test_sentences_also_in_train']} test sentences also in train.",
        (f"Encoder cache: real-time factor {base['real_time_factor']} for {base['encoder']} ({base['encoded']} clips encoded)."
         if base["encoded"] else f"Encoder cache: every clip was already cached for {base['encoder']}."), "",
        f"| on {ev['n']} held-out clips | WER | CER |", "|---|---|---|",
        f"| this model ({_decoding(ev.get('generation', {}))}) | {ev['wer']:.3f} | {ev['cer']:.3f} |",
        f"| same, audio of another row | {ev['wer_shuffled_audio']:.3f} | {ev['cer_shuffled_audio']:.3f} |",
    ]
    if ev.get("lm_wer") is not None:
        lines.append(f"| the LM writing the transcript itself (greedy) | {ev['lm_wer']:.3f} | {ev['lm_cer']:.3f} |")
    if ev.get("whisper_wer") is not None:
        lines.append(f"| Whisper tiny.en's own decoder | {ev['whisper_wer']:.3f} | {ev['whisper_cer']:.3f} |")
    if metrics.get("ctc_wer") is not None:
        lines.append(f"| the projector's own CTC decoding | {metrics['ctc_wer']:.3f} | - |")
    groups = ev.get("groups", {})
    if groups:
        lines += ["", "| held-out clips by group | n | WER | shuffled audio | the LM writing | Whisper tiny.en | projector CTC |",
                  "|---|---|---|---|---|---|---|"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        for name, g in groups.items():
            lines.append(f"| {name} | {g['n']} | {fmt(g['wer'])} | {fmt(g.get('wer_shuffled_audio'))} | "
                         f"{fmt(g.get('lm_wer'))} | {fmt(g.get('whisper_wer'))} | {fmt(g.get('ctc_wer'))} |")
    timing = metrics.get("timing", {})
    if timing.get("total"):
        lines += ["", "Minutes per step: " + ", ".join(f"{k} {v} ({100 * v / timing['total']:.0f} %)"
                                                      for k, v in timing.items() if k != "total")
                  + f"; total {timing['total']}."]
    gen = ev.get("generation", {})
    rescore = (f"the frozen LM rescoring {_head(gen)[0]} {gen['rescore_beam']} best transcripts (log p_CTC + "
               f"{gen.get('rescore_weight')} log p_LM + {gen.get('rescore_length_bonus')} per {_head(gen)[1]}); the LM "
               "writing: " if gen.get("rescore_beam") else "")
    lines += ["", f"Decoding: {rescore}{gen.get('strategy', 'greedy')}, copy_bias {gen.get('copy_bias', 0)}, at most "
              f"{gen.get('max_new_per_audio', 0)} tokens per audio position + 8. Reproduce with `auralm hear eval "
              f"--checkpoint {out / 'checkpoint'} --manifest {out / 'corpus' / 'manifest.jsonl'} --limit {ev['n']}"
              "` (the checkpoint's generation_config.json holds these settings)."]
    lines += ["", "Training:"] + [_stage_line(name, st) for name, st in metrics["stages"].items()]
    lines += ["", "![loss curves](loss_curves.png)", "", f"Total time: {metrics['seconds']} s."]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def run(cfg: DemoConfig) -> dict:
    from auralm.components.generation import GenerationConfig
    from auralm.core.io import atomic_dir
    from auralm.recipes.hear.evaluate import TRANSCRIPT_TOKENS_PER_AUDIO, evaluate, group_scores, row_groups
    from auralm.recipes.hear.pipeline import HearPipeline, save_generation_config

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    metrics: dict = {"config": cfg.to_dict()}
    t0 = time.perf_counter()
    train_cfgs = _stage_configs(cfg, out)  # before anything slow: a bad preset fails now
    manifest, test_rows = _data_steps(cfg, out, train_cfgs[0].model.encoder, metrics)
    if Path(train_cfgs[0].data.manifest) != manifest:
        raise AuralmError(f"the corpus manifest is {manifest}, not {train_cfgs[0].data.manifest}")

    stages, ckpt = {}, None
    for i, train_cfg in enumerate(train_cfgs, 1):
        t = time.perf_counter()
        ckpt = _train_stage(train_cfg, i, init_from=str(ckpt) if ckpt else "")
        metrics["timing"][f"stage{i}"] = _minutes(t)
        done = stop_record(ckpt)  # the engine's stopped_by, steps_done, steps_planned
        stages[f"stage{i}"] = {"preset": cfg.stage1_preset if i == 1 else cfg.stage2_preset, "checkpoint": str(ckpt),
                               "done_at_minute": round((time.perf_counter() - t0) / 60, 1), **done}
        if cut := guard_cut(f"stage {i}", done):
            _log(f"WARNING: {cut}: this run is not the shipped recipe (see report.md)")
    metrics["stages"] = stages
    # the checkpoint ships the decoding settings the report scores it with: auralm.load(), `auralm hear
    # generate|eval` and the server use them by default
    last = train_cfgs[-1].model  # rescoring reads the N-best of the word CTC head or of the phone head
    has_head = (last.phone_weight if cfg.rescore_head == "phones" else last.ctc_weight) > 0
    gen = GenerationConfig(max_new_per_audio=TRANSCRIPT_TOKENS_PER_AUDIO, copy_bias=cfg.copy_bias,
                           rescore_beam=cfg.rescore_beam if has_head else 0, rescore_weight=cfg.rescore_weight,
                           rescore_length_bonus=cfg.rescore_length_bonus, rescore_head=cfg.rescore_head,
                           phone_prior_weight=cfg.phone_prior_weight)
    with atomic_dir(out / "checkpoint") as tmp:
        shutil.copytree(ckpt, tmp, dirs_exist_ok=True)
        save_generation_config(tmp, gen)

    _log(f"7/7 scoring {out / 'checkpoint'} on up to {cfg.max_eval_clips or 'all'} held-out clips")
    t = time.perf_counter()
    pipe = HearPipeline.from_checkpoint(out / "checkpoint")
    limit = cfg.max_eval_clips or None
    metrics["eval"] = evaluate(pipe, manifest, split="test", limit=limit, gen=pipe.generation)
    model = pipe.model
    if model.config.ctc_weight > 0:
        from auralm.data.audio import load_audio
        from auralm.metrics.text import wer

        rows = test_rows[:limit] if limit else test_rows
        hyps = []
        for i in range(0, len(rows), 16):
            wavs = [load_audio(r.audio_path(), 16000)[0] for r in rows[i : i + 16]]
            hyps += model.ctc_greedy_decode({"wavs": wavs})
        refs = [r.text or "" for r in rows]
        metrics["ctc_wer"] = wer(refs, hyps)
        for name, group in group_scores(refs, row_groups(rows), ctc_wer=hyps).items():
            metrics["eval"].get("groups", {}).get(name, {})["ctc_wer"] = group["ctc_wer"]
    metrics["timing"]["eval"] = _minutes(t)
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    metrics["timing"]["total"] = round(metrics["seconds"] / 60, 2)
    _plot(out, [("stage1", out / "stage1" / "train_log.jsonl"), ("stage2", out / "stage2" / "train_log.jsonl")])
    atomic_write_json(out / "metrics.json", metrics)
    _report(out, metrics)
    ev = metrics["eval"]
    _log(f"done in {metrics['seconds']} s: held-out WER {ev['wer']:.3f} (shuffled audio {ev['wer_shuffled_audio']:.3f}, "
         f"Whisper tiny.en {ev.get('whisper_wer')}) on {ev['n']} clips; wrote {out / 'metrics.json'} and report.md")
    return metrics
