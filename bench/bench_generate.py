"""Generation tokens per second with and without the KV cache after the audio prefix.

Our :class:`auralm.recipes.hear.model.AudioLM` (prefix family, Whisper tiny.en states) generates exactly
``--new-tokens`` tokens per clip greedily, once reusing the LM's KV cache after the prompt (what
``auralm hear generate`` does) and once recomputing the whole sequence, audio prefix included, at every step.
It prints both rates and their ratio::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/bench_generate.py [--lm tiny-gpt2] [--seconds 20]
"""

from __future__ import annotations

import argparse
import time

import torch


def cached(model, x: dict, new_tokens: int) -> int:
    """What `auralm hear generate` runs: the LM's own generate, KV cache reused after the prompt."""
    from auralm.components.generation import GenerationConfig, hf_generation_config

    cfg = hf_generation_config(GenerationConfig(max_new_tokens=new_tokens), model.end_token_id, model.pad_token_id)
    cfg.min_new_tokens = new_tokens  # exactly this many tokens, so both runs do the same work
    out = model.lm.generate(inputs_embeds=x["embeds"], attention_mask=x["mask"], generation_config=cfg)
    return out.numel()


def recomputed(model, x: dict, new_tokens: int) -> int:
    """Greedy decoding that runs the LM over the whole sequence (audio prefix included) for every token.

    Written out by hand: transformers 5's ``generate`` keeps using its cache even with ``use_cache=False``.
    """
    embeds, mask = x["embeds"], x["mask"]
    table = model.lm.get_input_embeddings()
    for _ in range(new_tokens):
        logits = model.lm(inputs_embeds=embeds, attention_mask=mask, use_cache=False, logits_to_keep=1).logits[:, -1]
        nxt = logits.argmax(-1)  # B
        embeds = torch.cat([embeds, table(nxt)[:, None]], 1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
    return embeds.shape[0] * new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lm", default="tiny-gpt2")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per clip (longer: more prefix to reuse)")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    from auralm.recipes.hear.model import AudioLM, HearConfig

    torch.manual_seed(0)
    model = AudioLM(HearConfig.from_dict({"encoder": "whisper-tiny.en", "lm": args.lm})).eval()
    frames = int(args.seconds * 50)
    batch = {"states": torch.randn(args.clips, frames, model.encoder.dim), "lengths": torch.full((args.clips,), frames),
             "prompts": ["Transcribe the audio."] * args.clips}
    rates = {}
    with torch.no_grad():
        x = model.build_inputs(batch, answers=False, left_pad=True)
        for use_cache in (True, False):
            run = cached if use_cache else recomputed
            run(model, x, 2)  # warm-up
            t = time.perf_counter()
            n = run(model, x, args.new_tokens)
            seconds = time.perf_counter() - t
            rates[use_cache] = n / seconds
            print(f"use_cache={use_cache!s:5}: {n} tokens in {seconds:.2f} s = {rates[use_cache]:.1f} tok/s "
                  f"(prompt {x['embeds'].shape[1]} positions)")
    print(f"KV cache speed-up: {rates[True] / rates[False]:.2f}x")


if __name__ == "__main__":
    main()
