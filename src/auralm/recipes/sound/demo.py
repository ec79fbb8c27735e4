"""``auralm sound demo``: sound out of tokens, end to end on the embedded spoken digits, on a CPU.

Steps (under ``cfg.out``, default ``runs/sound-demo``):

1. ``corpus/``: "zero".."nine" rendered by espeak-ng and flite (:func:`auralm.recipes.sound.data.make_digit_corpus`);
   held-out voices form the ``test`` split.
2. ``tokenizer/``: the mel VQ-VAE (:func:`auralm.recipes.sound.train_tokenizer.train_tokenizer`).
3. ``vocoder/``: the neural vocoder (:func:`auralm.recipes.sound.train_vocoder.train_vocoder`).
4. ``tokens/``: every clip encoded; ``gpt/``: the class-conditioned token GPT.
5. ``vae-ae/`` (stage 1), then stage 2 from it twice: ``vae/`` with free bits, ``vae-nofb/`` without.
6. ``checkpoint/``: the bundle (tokenizer, vocoder, gpt, vae + config.yaml) that
   ``auralm sound generate`` and ``auralm sound interpolate`` take.
7. :func:`evaluate_bundle`: the Whisper tiny.en judge on real held-out clips (the ceiling), on
   tokenizer reconstructions and on generations, each with the neural vocoder and Griffin-Lim; the
   vocoders alone on real mels; Frechet distances (with n); codebook usage; the latent reports;
   ``interpolation/`` WAVs and PNGs. Everything lands in ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.config import Config, help_field, save_config
from auralm.core.errors import ConfigError
from auralm.core.io import atomic_dir, atomic_write_json


@dataclasses.dataclass
class SoundDemoConfig(Config):
    """Settings of ``auralm sound demo`` (presets ``sound-demo`` and ``sound-tiny``)."""

    out: str = help_field("runs/sound-demo", "output folder")
    seed: int = help_field(0, "seed of corpus and training")
    n_per_class: int = help_field(40, "clips per digit word from the training voices")
    n_test_per_class: int = help_field(9, "clips per digit word from the held-out voices")
    tokenizer: dict = help_field({}, "TokenizerTrainConfig settings (manifest and out are set by the demo)")
    vocoder: dict = help_field({}, "VocoderTrainConfig settings (manifest and out are set by the demo)")
    gpt: dict = help_field({}, "TrainGPTConfig settings of the class GPT")
    vae: dict = help_field({}, "TrainGPTConfig settings shared by both GPT-VAE stages")
    vae_ae_steps: int = help_field(600, "GPT-VAE stage-1 (autoencoder) steps")
    vae_steps: int = help_field(600, "GPT-VAE stage-2 (VAE) steps")
    n_generate_per_class: int = help_field(10, "generated clips per label that the judge hears")
    temperature: float = help_field(0.8, "sampling temperature of the generations")
    top_k: int = help_field(0, "top-k of the generations (0: off)")
    top_p: float = help_field(0.9, "nucleus mass of the generations (1: off)")
    guidance_scale: float = help_field(1.0, "classifier-free guidance of the generations (1: off)")
    max_eval_clips: int = help_field(0, "held-out clips judged (0: all)")
    interpolate_steps: int = help_field(5, "points of the interpolation")

    def validate(self) -> None:
        if self.n_per_class < 2 or self.n_test_per_class < 1 or self.n_generate_per_class < 2:
            raise ConfigError("n_per_class and n_generate_per_class must be >= 2, n_test_per_class >= 1")
        if self.interpolate_steps < 2:
            raise ConfigError("interpolate_steps must be at least 2")


def _log(msg: str) -> None:
    print(f"[sound demo] {msg}", file=sys.stderr, flush=True)


def make_bundle(folder: Path, tokenizer: Path, vocoder: Path | None, gpt: Path | None, vae: Path | None) -> Path:
    """Copy the parts into one folder with a ``kind: bundle`` config.yaml (atomically)."""
    from auralm.recipes.sound.pipeline import SoundBundle

    with atomic_dir(folder) as tmp:
        names = {}
        for name, src in (("tokenizer", tokenizer), ("vocoder", vocoder), ("gpt", gpt), ("vae", vae)):
            names[name] = ""
            if src is not None:
                shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("trainer_state.pt", "tb"))
                names[name] = name
        save_config(SoundBundle(**names), tmp)
    return folder


def evaluate_bundle(bundle: str | Path, manifest: str | Path, out: str | Path, *, n_per_class: int = 10,
                    sampling=None, max_eval_clips: int = 0, seed: int = 0) -> dict[str, Any]:
    """Judge a bundle on a labelled manifest's ``test`` split; write generations under ``out/generated``.

    * ``ceiling``: the judge on the real held-out clips;
    * ``vocoder_on_real_mels``: the neural vocoder and Griffin-Lim on the same clips' mels (accuracy, mel L1);
    * ``reconstruction`` and ``generation``: decoded with the bundle's vocoder (Griffin-Lim when it has none);
    * ``frechet``: generated and reconstructed clips vs the real ones, with the number of clips;
    * ``codebook_usage_test``: of the held-out clips' codes.
    """
    import torch

    from auralm.components.codecs.vocoder import GriffinLim, load_vocoder
    from auralm.data.audio import write_wav
    from auralm.metrics.audio import codebook_usage, frechet_distance, judge_accuracy, mel_error
    from auralm.recipes.sound.data import load_clips
    from auralm.recipes.sound.pipeline import generate_sounds, load_parts_tokenizer, resolve_bundle

    parts = resolve_bundle(bundle)
    tok = load_parts_tokenizer(parts)  # with the bundle's vocoder
    sr = tok.sample_rate
    wavs, labels, _ = load_clips(manifest, "test", sr, max_eval_clips or None)
    m: dict[str, Any] = {"n_test_clips": len(wavs), "vocoder": "neural" if parts.vocoder else "griffin_lim"}
    _log(f"judging {len(wavs)} real held-out clips (the ceiling)")
    m["ceiling"] = _short(judge_accuracy(wavs, labels, sr))
    vocoders = {"griffin_lim": GriffinLim(tok.mel_config)}
    neural = parts.vocoder or _sibling_vocoder(bundle)
    if neural is not None:
        vocoders = {"neural": load_vocoder(neural, tok.mel_config), **vocoders}
    m["vocoder_on_real_mels"] = {}
    for name, voc in vocoders.items():
        _log(f"vocoder {name} on the real clips' mels")
        with torch.no_grad():
            out_wavs = [voc(tok.mel(w))[0].clamp(-1, 1).numpy() for w in wavs]
        m["vocoder_on_real_mels"][name] = {**_short(judge_accuracy(out_wavs, labels, sr)),
                                           "mel_l1": _mean(mel_error(a, b, tok.mel_config) for a, b in zip(out_wavs, wavs))}
    _log("tokenizer reconstructions")
    codes = [tok.encode(w)[0] for w in wavs]
    m["codebook_usage_test"] = codebook_usage(torch.cat(codes), tok.codebook_size)
    rec = [tok.decode(c)[0] for c in codes]
    m["reconstruction"] = {**_short(judge_accuracy(rec, labels, sr)),
                           "mel_l1": _mean(mel_error(a, b, tok.mel_config) for a, b in zip(rec, wavs))}
    gen_labels = [lab for lab in sorted(set(labels)) for _ in range(n_per_class)]
    _log(f"{len(gen_labels)} generations")
    gens: list[np.ndarray] = []
    for lab in sorted(set(labels)):
        g, _, _ = generate_sounds(bundle, lab, n_per_class, sampling, seed)
        gens += g
        for i, w in enumerate(g):
            write_wav(Path(out) / "generated" / f"{lab}_{i:03d}.wav", w, sr)
    m["generation"] = _short(judge_accuracy(gens, gen_labels, sr))
    ceiling = m["ceiling"]["accuracy"]
    m["generation_over_ceiling"] = round(m["generation"]["accuracy"] / ceiling, 4) if ceiling else None
    m["generation_over_reconstruction"] = (round(m["generation"]["accuracy"] / m["reconstruction"]["accuracy"], 4)
                                           if m["reconstruction"]["accuracy"] else None)
    _log("Frechet distances in Whisper tiny.en encoder space")
    m["frechet"] = {"generated_vs_real": frechet_distance(gens, wavs), "reconstructed_vs_real": frechet_distance(rec, wavs)}
    return m


def _sibling_vocoder(bundle: str | Path) -> Path | None:
    """A neural vocoder kept beside a bundle that chose Griffin-Lim (the run ``<bundle>/../vocoder``'s latest)."""
    from auralm.training.checkpoint import latest_checkpoint

    cand = latest_checkpoint(Path(bundle).parent / "vocoder")
    return cand if cand is not None and (cand / "weights.safetensors").is_file() else None


def choose_vocoder(vocoder_ckpt: Path) -> tuple[bool, dict]:
    """Use the neural vocoder only when its validation mel error beats Griffin-Lim's (its trainer's metrics.json)."""
    valid = json.loads((vocoder_ckpt / "metrics.json").read_text()).get("valid", {})
    neural, gl = valid.get("mel_l1_hifigan"), valid.get("mel_l1_griffin_lim")
    use = neural is not None and gl is not None and neural < gl
    return use, {"valid_mel_l1_neural": neural, "valid_mel_l1_griffin_lim": gl, "bundle_vocoder": "neural" if use else "griffin_lim"}


def _short(judged: dict) -> dict:
    return {k: judged[k] for k in ("accuracy", "n", "per_class")}


def _mean(values) -> float:  # noqa: ANN001
    return round(float(np.mean(list(values))), 4)


def run(cfg: SoundDemoConfig) -> dict:
    """The whole chain; returns (and writes) the metrics."""
    from auralm.recipes.sound.data import make_digit_corpus
    from auralm.recipes.sound.gpt import SamplingConfig
    from auralm.recipes.sound.pipeline import tokenize_manifest
    from auralm.recipes.sound.train_gpt import TrainGPTConfig, load_token_model, train_gpt, vae_report
    from auralm.recipes.sound.train_tokenizer import TokenizerTrainConfig, train_tokenizer
    from auralm.recipes.sound.train_vocoder import VocoderTrainConfig, train_vocoder
    from auralm.training.checkpoint import guard_cut, stop_record
    from auralm.training.config import merge_dicts

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {"config": cfg.to_dict(), "seconds": {}}

    def lap(name: str, start: float) -> None:
        metrics["seconds"][name] = round(time.perf_counter() - start, 1)

    _log("1/7 rendering the spoken-digit corpus")
    t = time.perf_counter()
    manifest = make_digit_corpus(out / "corpus", n_per_class=cfg.n_per_class, seed=cfg.seed,
                                 n_test_per_class=cfg.n_test_per_class)
    lap("corpus", t)

    _log("2/7 training the mel VQ-VAE tokenizer")
    t = time.perf_counter()
    seed = {"optim": {"seed": cfg.seed}}
    tok_ckpt = train_tokenizer(TokenizerTrainConfig.from_dict(
        merge_dicts(seed, cfg.tokenizer, {"manifest": str(manifest), "out": str(out / "tokenizer")})))
    lap("tokenizer", t)

    _log("3/7 training the neural vocoder")
    t = time.perf_counter()
    voc_dir = train_vocoder(VocoderTrainConfig.from_dict(
        merge_dicts(seed, cfg.vocoder, {"manifest": str(manifest), "out": str(out / "vocoder")})))
    lap("vocoder", t)

    _log("4/7 tokenizing the corpus and training the class-conditioned token GPT")
    t = time.perf_counter()
    tokens = tokenize_manifest(tok_ckpt, manifest, out / "tokens")
    metrics["tokens"] = {"clips": len(tokens.ids), "labels": tokens.label_names, "codebook_size": tokens.codebook_size,
                         "tokens_per_clip": {"min": int(tokens.lengths.min()), "max": int(tokens.lengths.max()),
                                             "mean": round(float(tokens.lengths.float().mean()), 2)}}
    gpt_cfg = TrainGPTConfig.from_dict(merge_dicts(seed, cfg.gpt, {"kind": "class", "out": str(out / "gpt")}))
    gpt_ckpt = train_gpt(gpt_cfg, tokens)
    metrics["gpt"] = json.loads((gpt_ckpt / "meta.json").read_text())["metrics"]
    lap("gpt", t)

    _log("5/7 GPT-VAE: stage 1 (autoencoder), then stage 2 with and without free bits")
    t = time.perf_counter()
    base = merge_dicts(seed, cfg.vae, {"kind": "vae"})
    ae = train_gpt(TrainGPTConfig.from_dict(merge_dicts(base, {"stage": "ae", "optim": {"max_steps": cfg.vae_ae_steps},
                                                               "out": str(out / "vae-ae")})), tokens)
    stage2 = merge_dicts(base, {"stage": "vae", "optim": {"max_steps": cfg.vae_steps}, "init_from": str(ae)})
    vae = train_gpt(TrainGPTConfig.from_dict({**stage2, "out": str(out / "vae")}), tokens)
    nofb = train_gpt(TrainGPTConfig.from_dict({**stage2, "free_bits": "none", "out": str(out / "vae-nofb")}), tokens)
    test_rows = tokens.rows("test")
    metrics["gpt_vae"] = {}
    for name, ckpt in (("stage1_ae", ae), ("vae_free_bits", vae), ("vae_no_free_bits", nofb)):
        model, vcfg, meta = load_token_model(ckpt)
        rep = vae_report(vcfg, model, tokens, test_rows)
        rep.update(free_bits=vcfg.free_bits if vcfg.stage == "vae" else None, target=vcfg.free_bits_target,
                   beta=vcfg.beta, val=meta["metrics"].get("val"))
        metrics["gpt_vae"][name] = rep
        _log(f"   {name}: active units {rep['active_units']}/{rep['latent_dim']}, KL {rep['kl_total']:.3f} nats")
    lap("gpt_vae", t)
    metrics["stages"] = {}
    for name, ckpt in (("tokenizer", tok_ckpt), ("vocoder", voc_dir), ("gpt", gpt_ckpt), ("vae_ae", ae), ("vae", vae),
                       ("vae_no_free_bits", nofb)):
        metrics["stages"][name] = stop_record(ckpt)  # a run is its steps; a cut by a time guard is said loudly
        if cut := guard_cut(name, metrics["stages"][name]):
            _log(f"WARNING: {cut}: this run is not the shipped recipe")

    _log("6/7 writing the bundle checkpoint")
    use_neural, metrics["vocoder_choice"] = choose_vocoder(Path(voc_dir))
    _log(f"   vocoder of the bundle: {metrics['vocoder_choice']}")
    bundle = make_bundle(out / "checkpoint", tok_ckpt, Path(voc_dir) if use_neural else None, gpt_ckpt, vae)

    _log("7/7 evaluation with the Whisper tiny.en judge")
    t = time.perf_counter()
    sampling = SamplingConfig(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                              guidance_scale=cfg.guidance_scale)
    metrics["eval"] = evaluate_bundle(bundle, manifest, out, n_per_class=cfg.n_generate_per_class, sampling=sampling,
                                      max_eval_clips=cfg.max_eval_clips, seed=cfg.seed)
    written = _interpolation(bundle, manifest, cfg.interpolate_steps, out / "interpolation")
    metrics["interpolation"] = written
    _log_generated(bundle, out, gpt_cfg.optim.max_steps)
    lap("eval", t)
    metrics["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _interpolation(bundle: Path, manifest: Path, steps: int, out: Path) -> dict:
    """Interpolate between the first held-out "one" and the first held-out "seven"."""
    from auralm.data.manifest import read_manifest
    from auralm.recipes.sound.pipeline import interpolate_sounds

    test = [r for r in read_manifest(manifest) if r.split == "test"]
    a = next((r for r in test if r.label == "one"), test[0])
    b = next((r for r in test if r.label == "seven"), test[-1])
    written = interpolate_sounds(bundle, a.audio_path(), b.audio_path(), steps, out)
    return {"from": a.id, "to": b.id, "wavs": [str(p) for p in written],
            "pngs": [str(p.with_suffix(".png")) for p in written]}


def _log_generated(bundle: Path, out: Path, step: int) -> None:
    """One generation per label into the class GPT's TensorBoard (audio and mel images)."""
    from auralm.data.audio import load_audio
    from auralm.recipes.sound.pipeline import load_parts_tokenizer, log_sounds, resolve_bundle

    gen_dir = out / "generated"
    tok = load_parts_tokenizer(resolve_bundle(bundle))
    wavs = [load_audio(p, tok.sample_rate)[0] for p in sorted(gen_dir.glob("*_000.wav"))]
    log_sounds(out / "gpt" / "tb", "generated", wavs, tok.sample_rate, tok, step)


def summary(m: dict) -> dict:
    """The headline figures."""
    e = m["eval"]
    return {
        "judged_accuracy": {"ceiling_real": e["ceiling"]["accuracy"], "reconstruction": e["reconstruction"]["accuracy"],
                            "generation": e["generation"]["accuracy"], "generation_over_ceiling": e["generation_over_ceiling"],
                            "vocoder": e["vocoder"], "n": [e["ceiling"]["n"], e["generation"]["n"]]},
        "vocoder_on_real_mels": {k: {"accuracy": v["accuracy"], "mel_l1": v["mel_l1"]}
                                 for k, v in e["vocoder_on_real_mels"].items()},
        "frechet": {k: {"fd": v["fd"], "n": [v["n_a"], v["n_b"]]} for k, v in e["frechet"].items()},
        "gpt_vae": {k: {"active_units": f"{v['active_units']}/{v['latent_dim']}", "kl_total": v["kl_total"]}
                    for k, v in m["gpt_vae"].items()},
        "stages": m.get("stages"),
        "seconds": m["seconds"],
    }
