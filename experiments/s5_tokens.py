"""S5 probe: which tokenizer and sampling settings let the class GPT's digits be heard?

Runs the part of ``auralm sound demo`` that decides the judged accuracy of generations (corpus,
mel VQ-VAE, tokens, class GPT) with settings given on the command line, then has the Whisper
tiny.en judge hear the tokenizer's reconstructions of the held-out clips and the generations at
each temperature asked for (Griffin-Lim vocoder throughout). Prints and writes ``probe.json``.

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python experiments/s5_tokens.py --out runs/s5x/ds2 \\
      --n-per-class 100 --temperatures 0.6 0.4 tokenizer.model.downsample=2 tokenizer.max_minutes=6

Keys: ``tokenizer.*`` (TokenizerTrainConfig) and ``gpt.*`` (TrainGPTConfig), as dotted overrides.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml


def _nest(pairs: list[str]) -> dict:
    out: dict = {}
    for p in pairs:
        key, _, val = p.partition("=")
        d = out
        *head, last = key.split(".")
        for h in head:
            d = d.setdefault(h, {})
        d[last] = yaml.safe_load(val)
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--n-per-class", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.6])
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0])
    p.add_argument("--n-generate", type=int, default=10, help="generations per class and setting")
    p.add_argument("--sweep-only", action="store_true", help="reuse OUT/bundle: judge generations only")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()

    out = Path(a.out)
    if a.sweep_only:
        res = json.loads((out / "probe.json").read_text())
        _judge_generations(a, out / "bundle", res)
        (out / "probe.json").write_text(json.dumps(res, indent=2))
        return 0

    import torch

    from auralm.core.config import load_preset
    from auralm.metrics.audio import codebook_usage, judge_accuracy
    from auralm.recipes.sound.data import load_clips, make_digit_corpus
    from auralm.recipes.sound.demo import make_bundle
    from auralm.recipes.sound.pipeline import load_parts_tokenizer, resolve_bundle, tokenize_manifest
    from auralm.recipes.sound.train_gpt import TrainGPTConfig, train_gpt
    from auralm.recipes.sound.train_tokenizer import TokenizerTrainConfig, train_tokenizer

    preset = load_preset("sound-demo")
    over = _nest(a.overrides)
    res: dict = {"args": vars(a), "seconds": {}, "generation": {}}
    t = time.perf_counter()
    corpus = Path(out).parent / f"corpus-{a.n_per_class}-{a.seed}"
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file():
        make_digit_corpus(corpus, n_per_class=a.n_per_class, seed=a.seed, n_test_per_class=9)
    res["seconds"]["corpus"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    tcfg = _merge(_merge(preset["tokenizer"], {"optim": {"seed": a.seed}}), over.get("tokenizer", {}))
    tok_ckpt = train_tokenizer(TokenizerTrainConfig.from_dict({**tcfg, "manifest": str(manifest), "out": str(out / "tokenizer")}))
    res["tokenizer_valid"] = json.loads((tok_ckpt / "metrics.json").read_text())
    res["seconds"]["tokenizer"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    tokens = tokenize_manifest(tok_ckpt, manifest, out / "tokens")
    res["tokens_per_clip"] = round(float(tokens.lengths.float().mean()), 2)
    gcfg = _merge(_merge(preset["gpt"], {"optim": {"seed": a.seed}, "logger": "none"}), over.get("gpt", {}))
    gpt = train_gpt(TrainGPTConfig.from_dict({**gcfg, "kind": "class", "out": str(out / "gpt"), "resume": "auto"}), tokens)
    res["gpt_val"] = json.loads((gpt / "meta.json").read_text())["metrics"]
    res["seconds"]["gpt"] = round(time.perf_counter() - t, 1)

    bundle = make_bundle(out / "bundle", tok_ckpt, None, gpt, None)
    t = time.perf_counter()
    tok = load_parts_tokenizer(resolve_bundle(bundle))
    wavs, labels, _ = load_clips(manifest, "test", tok.sample_rate)
    codes = [tok.encode(w)[0] for w in wavs]
    res["codebook_usage_test"] = codebook_usage(torch.cat(codes), tok.codebook_size)
    res["reconstruction"] = judge_accuracy([tok.decode(c)[0] for c in codes], labels)["accuracy"]
    _judge_generations(a, bundle, res)
    res["seconds"]["judge"] = round(time.perf_counter() - t, 1)
    (out / "probe.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "args"}, indent=2))
    return 0


def _judge_generations(a: argparse.Namespace, bundle: Path, res: dict) -> None:
    """Judge ``a.n_generate`` generations per label of the bundle's class GPT for every guidance scale and
    temperature asked for; record each accuracy in ``res["generation"]``."""
    from auralm.metrics.audio import judge_accuracy
    from auralm.recipes.sound.gpt import SamplingConfig
    from auralm.recipes.sound.pipeline import SoundPipeline

    pipe = SoundPipeline.from_checkpoint(bundle)
    labels = pipe.labels
    for g in a.guidance:
        for temp in a.temperatures:
            sc = SamplingConfig(temperature=temp, top_p=a.top_p, guidance_scale=g)
            gens, gl = [], []
            for lab in labels:
                gens += pipe.generate_sound(lab, a.n_generate, a.seed, sc)
                gl += [lab] * a.n_generate
            key = f"T={temp},cfg={g},top_p={a.top_p},n={a.n_generate},seed={a.seed}"
            res["generation"][key] = judge_accuracy(gens, gl)["accuracy"]
            print(f"[probe] {key}: {res['generation'][key]}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
