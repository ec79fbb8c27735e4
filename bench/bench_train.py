"""Training-step throughput of our prefix and cross models vs the same step written with transformers' modules.

For each family one optimizer step (forward, backward, AdamW) is timed on cached-embedding batches
(``--clips`` clips of ``--seconds`` s of Whisper-tiny-shaped states, transcripts of ~20 tokens):

* prefix: our :class:`auralm.recipes.hear.model.AudioLM` vs a plain reference (``nn.Sequential`` projector and
  ``AutoModelForCausalLM(inputs_embeds=cat(audio, text))``, the way a first attempt would write it);
* cross: our AudioLM (gated cross-attention hooked into the LM) vs ``SpeechEncoderDecoderModel``
  (GPT-2 decoder with ``add_cross_attention``, encoder outputs given) training its cross-attention only.

It prints audio seconds and supervised tokens per second, the ours/reference ratios, and the fraction
of this machine's measured matmul peak (a big ``torch.matmul``, fp32 and bf16) that our step reaches
(FLOPs counted with ``torch.utils.flop_counter``). Runs on a 2-core CPU in one to two minutes::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/bench_train.py [--lm tiny-gpt2] [--steps 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

TEXT = "the quick brown fox jumps over the lazy dog and then it runs back home again"


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 3) -> float:
    """FLOP/s of a big square matmul (best of ``reps``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def time_steps(step, steps: int) -> float:
    """Seconds per step (after one warm-up step)."""
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def ours(kind: str, lm: str, batch: dict) -> tuple[nn.Module, callable]:
    from auralm.recipes.hear.model import AudioLM, HearConfig

    model = AudioLM(HearConfig.from_dict({"encoder": "whisper-tiny.en", "lm": lm, "connector": {"kind": kind}}))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        opt.zero_grad()
        model(batch)["loss"].backward()
        opt.step()

    return model, step


def reference_prefix(model: nn.Module, batch: dict) -> callable:
    """Projector + the LM's own forward on concatenated embeddings (HF modules only)."""
    lm, tok = model.lm, model.tokenizer
    d, h = batch["states"].shape[-1], model.lm_dim
    proj = nn.Sequential(nn.Linear(4 * d, h), nn.GELU(), nn.Linear(h, h))
    ids = torch.tensor([tok(b + " " + TEXT)["input_ids"] for b in batch["prompts"]])
    opt = torch.optim.AdamW(proj.parameters(), lr=1e-4)

    def step():
        opt.zero_grad()
        s = batch["states"]
        s = s[:, : s.shape[1] // 4 * 4].reshape(s.shape[0], -1, 4 * d)  # B, T/4, 4D
        audio = proj(s)
        embeds = torch.cat([audio, lm.get_input_embeddings()(ids)], 1)
        labels = torch.cat([torch.full(audio.shape[:2], -100), ids], 1)
        lm(inputs_embeds=embeds, labels=labels).loss.backward()
        opt.step()

    return step


def reference_cross(model: nn.Module, batch: dict) -> callable:
    """SpeechEncoderDecoderModel: GPT-2 decoder with cross-attention over the given encoder outputs."""
    from transformers import GPT2Config, SpeechEncoderDecoderModel, Wav2Vec2Config

    lm_cfg = model.lm.config
    dec = GPT2Config(vocab_size=lm_cfg.vocab_size, n_embd=lm_cfg.hidden_size, n_layer=lm_cfg.num_hidden_layers,
                     n_head=lm_cfg.num_attention_heads, add_cross_attention=True, is_decoder=True)
    enc = Wav2Vec2Config(hidden_size=batch["states"].shape[-1], num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)
    from transformers import SpeechEncoderDecoderConfig

    sed = SpeechEncoderDecoderModel(SpeechEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec))
    sed.config.decoder_start_token_id = sed.config.pad_token_id = 0
    for name, p in sed.named_parameters():
        p.requires_grad_("crossattention" in name or "ln_cross_attn" in name or "enc_to_dec_proj" in name)
    ids = torch.tensor([model.tokenizer(b + " " + TEXT)["input_ids"] for b in batch["prompts"]])
    opt = torch.optim.AdamW([p for p in sed.parameters() if p.requires_grad], lr=1e-4)
    sed.train()

    def step():
        opt.zero_grad()
        sed(encoder_outputs=(batch["states"],), decoder_input_ids=ids, labels=ids).loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lm", default="tiny-gpt2", help="LM of our models (the cross reference is GPT-2 shaped)")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    frames = int(args.seconds * 50)  # Whisper: 50 frames per second
    batch = {"states": torch.randn(args.clips, frames, 384), "lengths": torch.full((args.clips,), frames),
             "prompts": ["Transcribe the audio."] * args.clips, "texts": [TEXT] * args.clips}
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16, n=512)
    print(f"matmul peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s "
          f"({torch.get_num_threads()} threads){'' if peak16 > peak32 else ': no bf16 speed-up here, steps run fp32'}")
    audio_s = args.clips * args.seconds
    for kind, reference in (("prefix", reference_prefix), ("cross", reference_cross)):
        model, step = ours(kind, args.lm, batch)
        n_tokens = int(model(batch)["n_tokens"])
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        t_ours = time_steps(step, args.steps)
        if kind == "cross" and model.lm.config.model_type != "gpt2":
            t_ref = float("nan")
        else:
            t_ref = time_steps(reference(model, batch), args.steps)
        print(f"{kind:6s} ours: {audio_s / t_ours:8.1f} audio-s/s {n_tokens / t_ours:8.1f} tok/s | "
              f"reference: {audio_s / t_ref:8.1f} audio-s/s | ours/reference speed {t_ref / t_ours:.2f}x | "
              f"{flops / t_ours / 1e9:.2f} GFLOP/s = {flops / t_ours / peak32:.1%} of the fp32 matmul peak")


if __name__ == "__main__":
    main()
