"""S1 alignment probe: how fast can a frozen LM learn to read Whisper states through a projector?

Self-contained on purpose (it predates the recipe code and compares directions quickly):

  phase ``ctc``  trains the stack+MLP projector with a CTC loss whose output layer is the LM's own
                 (frozen, tied) embedding matrix restricted to the tokens seen in training, plus a
                 learned blank; reports the projector's greedy CTC WER on held-out sentences.
  phase ``lm``   feeds the LM (SmolLM2-135M-Instruct) the projector outputs as a prefix, either
                 raw (``--feed raw``) or CTC-compressed into posterior-weighted token embeddings
                 (``--feed soft``: blanks dropped, repeats merged, as Speech-LLaMA's CTC compressor),
                 and trains with the LM loss (+ CTC), optionally with LoRA; reports greedy LM WER
                 and the same with the audio of another row.

Run (after ``auralm synth speech --out runs/s1data --n 3000 --seed 1`` and
``auralm embed --manifest runs/s1data/manifest.jsonl --encoder whisper-tiny.en --out runs/s1emb``):

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python experiments/s1_align.py --minutes 6 --feed soft --lora 8
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from auralm.data.embed_cache import EmbeddingCache
from auralm.data.manifest import read_manifest
from auralm.hub import load_causal_lm, revision
from auralm.metrics.text import wer


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Projector(nn.Module):
    """(B, T, D) -> (B, ceil(T/S), H): stack S frames, 2-layer MLP."""

    def __init__(self, dim: int, width: int, stack: int, hidden: int = 1024):
        super().__init__()
        self.stack = stack
        self.net = nn.Sequential(nn.Linear(dim * stack, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        pad = (-t) % self.stack
        x = F.pad(x, (0, 0, 0, pad))  # B, T+pad, D
        x = x.reshape(b, (t + pad) // self.stack, d * self.stack)  # B, T/S, D*S
        return self.net(x), (lengths + self.stack - 1) // self.stack


def batches(items, size, shuffle, seed):
    order = list(range(len(items)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for i in range(0, len(order), size):
        yield [items[j] for j in order[i : i + size]]


def pad_states(states):
    lengths = torch.tensor([s.shape[0] for s in states])
    out = torch.zeros(len(states), int(lengths.max()), states[0].shape[1])
    for i, s in enumerate(states):
        out[i, : s.shape[0]] = s.float()
    return out, lengths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="runs/s1data/manifest.jsonl")
    ap.add_argument("--cache", default="runs/s1emb")
    ap.add_argument("--stack", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=5.0, help="budget of the ctc phase")
    ap.add_argument("--lm-minutes", type=float, default=0.0, help="budget of the lm phase (0: skip)")
    ap.add_argument("--feed", choices=["raw", "soft"], default="soft")
    ap.add_argument("--lora", type=int, default=0)
    ap.add_argument("--ctc-weight", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-n", type=int, default=80)
    ap.add_argument("--out", default="runs/s1probe")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast only with AVX-512 BF16 or AMX)")
    args = ap.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = read_manifest(args.data)
    cache = EmbeddingCache(args.cache, "whisper-tiny.en", revision("whisper-tiny.en"))
    lm, tok = load_causal_lm("smollm2-135m-instruct")
    for p in lm.parameters():
        p.requires_grad_(False)
    emb = lm.get_input_embeddings().weight  # V, H
    width = emb.shape[1]

    def ids(text):
        return tok(" " + text.strip(), add_special_tokens=False).input_ids

    data = {s: [] for s in ("train", "valid", "test")}
    for r in rows:
        data[r.split].append({"id": r.id, "text": r.text, "states": cache.get(r), "ids": ids(r.text)})
    train_ids = sorted({i for ex in data["train"] for i in ex["ids"]})
    test_tokens = [i for ex in data["test"] for i in ex["ids"]]
    coverage = sum(i in set(train_ids) for i in test_tokens) / len(test_tokens)
    log(f"train {len(data['train'])} valid {len(data['valid'])} test {len(data['test'])}; "
        f"shortlist {len(train_ids)} tokens covers {coverage:.1%} of test tokens")
    short = torch.tensor(train_ids)
    remap = {t: i + 1 for i, t in enumerate(train_ids)}  # 0 = blank

    proj = Projector(data["train"][0]["states"].shape[1], width, args.stack)
    blank = nn.Parameter(torch.zeros(width))
    blank_bias = nn.Parameter(torch.zeros(1))
    scale = nn.Parameter(torch.tensor(1.0))

    def ctc_logits(h):  # B, T', H -> B, T', 1+K
        table = torch.cat([blank[None], emb[short]], 0)  # 1+K, H
        logits = scale * (h @ table.T)
        return logits + torch.cat([blank_bias, torch.zeros(len(train_ids))])

    def ctc_loss(h, hl, exs):
        logp = ctc_logits(h).float().log_softmax(-1).transpose(0, 1)  # T', B, C
        targets = [torch.tensor([remap.get(i, 0) for i in ex["ids"] if i in remap]) for ex in exs]
        tl = torch.tensor([len(t) for t in targets])
        return F.ctc_loss(logp, torch.cat(targets), hl, tl, blank=0, zero_infinity=True)

    def greedy_ctc(h, hl):
        best = ctc_logits(h).argmax(-1)
        texts = []
        for b in range(len(hl)):
            seq, prev = [], 0
            for c in best[b, : hl[b]].tolist():
                if c != prev and c != 0:
                    seq.append(train_ids[c - 1])
                prev = c
            texts.append(tok.decode(seq).strip())
        return texts

    def eval_ctc(split):
        exs = data[split][: args.eval_n]
        hyps = []
        with torch.no_grad():
            for bt in batches(exs, 32, False, 0):
                x, xl = pad_states([e["states"] for e in bt])
                h, hl = proj(x, xl)
                hyps += greedy_ctc(h, hl)
        return wer([e["text"] for e in exs], hyps), hyps

    curve = []
    params = list(proj.parameters()) + [blank, blank_bias, scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    t0, step, epoch = time.time(), 0, 0
    while time.time() - t0 < args.minutes * 60:
        for bt in batches(data["train"], args.batch, True, epoch):
            x, xl = pad_states([e["states"] for e in bt])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                h, hl = proj(x, xl)
                loss = ctc_loss(h, hl, bt)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 50 == 0:
                w, _ = eval_ctc("valid")
                curve.append({"phase": "ctc", "minutes": (time.time() - t0) / 60, "step": step, "loss": loss.item(), "valid_ctc_wer": w})
                log(f"ctc step {step} loss {loss.item():.3f} valid CTC WER {w:.3f}")
            if time.time() - t0 > args.minutes * 60:
                break
        epoch += 1
    w_test, hyps = eval_ctc("test")
    log(f"CTC phase: {step} steps in {(time.time() - t0) / 60:.1f} min; test CTC WER {w_test:.3f}")
    for e, hyp in list(zip(data["test"], hyps))[:5]:
        log(f"  REF {e['text']}\n  HYP {hyp}")
    result = {"args": vars(args), "coverage": coverage, "ctc_steps": step, "test_ctc_wer": w_test, "curve": curve}

    if args.lm_minutes > 0:
        result.update(lm_phase(args, lm, tok, proj, data, ctc_logits, ctc_loss, train_ids, params, curve))
    (out / "result.json").write_text(json.dumps(result, indent=2))


def lm_phase(args, lm, tok, proj, data, ctc_logits, ctc_loss, train_ids, params, curve):
    emb_layer = lm.get_input_embeddings()
    emb = emb_layer.weight
    short = torch.tensor(train_ids)
    if args.lora:
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(lm, LoraConfig(r=args.lora, lora_alpha=2 * args.lora, lora_dropout=0.0,
                                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    lora_params = [p for p in lm.parameters() if p.requires_grad]
    msgs = [{"role": "user", "content": "Transcribe the audio: <AUDIO>"}]
    template = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    before, after = template.split("<AUDIO>")
    pre_ids = tok(before, add_special_tokens=False).input_ids
    post_ids = tok(after, add_special_tokens=False).input_ids
    end_id = tok.convert_tokens_to_ids("<|im_end|>")

    def audio_prefix(h, hl):
        """list of (n_b, H) prefixes: raw projector outputs, or CTC-compressed soft embeddings."""
        if args.feed == "raw":
            return [h[b, : hl[b]] for b in range(len(hl))]
        logits = ctc_logits(h)  # B, T', 1+K
        probs = logits.float().softmax(-1)
        best = logits.argmax(-1)
        table = emb[short].float()  # K, H
        out = []
        for b in range(len(hl)):
            keep, prev = [], 0
            for t, c in enumerate(best[b, : hl[b]].tolist()):
                if c != 0 and c != prev:
                    keep.append([t])
                elif c != 0 and c == prev:
                    keep[-1].append(t)
                prev = c
            if not keep:
                out.append(emb[pre_ids[-1:]].float())
                continue
            vecs = []
            for span in keep:
                p = probs[b, span, 1:].mean(0)  # K: merged frames of one token
                vecs.append((p / p.sum()) @ table)
            out.append(torch.stack(vecs))
        return out

    def build(prefixes, texts):
        seqs, labels = [], []
        for pre, text in zip(prefixes, texts):
            ans = tok(text.strip(), add_special_tokens=False).input_ids + [end_id] if text is not None else []
            e = torch.cat([emb[pre_ids], pre.to(emb.dtype), emb[post_ids], emb[ans] if ans else emb[:0]])
            lab = [-100] * (len(pre_ids) + len(pre) + len(post_ids)) + ans
            seqs.append(e)
            labels.append(torch.tensor(lab))
        n = max(len(s) for s in seqs)
        x = torch.zeros(len(seqs), n, emb.shape[1])
        mask = torch.zeros(len(seqs), n, dtype=torch.long)
        y = torch.full((len(seqs), n), -100)
        for i, (s, lab) in enumerate(zip(seqs, labels)):
            x[i, n - len(s):] = s  # left padding, so generation continues at the end
            mask[i, n - len(s):] = 1
            y[i, n - len(s):] = lab
        return x, mask, y

    def eval_lm(split, shuffle=False):
        exs = data[split][: args.eval_n]
        hyps = []
        with torch.no_grad():
            for bt in batches(exs, 16, False, 0):
                states = [e["states"] for e in bt]
                if shuffle:
                    states = states[1:] + states[:1]
                x, xl = pad_states(states)
                h, hl = proj(x, xl)
                xe, mask, _ = build(audio_prefix(h, hl), [None] * len(bt))
                gen = lm.generate(inputs_embeds=xe, attention_mask=mask, max_new_tokens=48, do_sample=False,
                                  eos_token_id=end_id, pad_token_id=end_id)
                hyps += [t.strip() for t in tok.batch_decode(gen, skip_special_tokens=True)]
        return wer([e["text"] for e in exs], hyps), hyps

    w0, _ = eval_lm("valid")
    log(f"LM phase start: valid LM WER {w0:.3f} (no LM training yet)")
    opt = torch.optim.AdamW([{"params": params, "lr": args.lr}, {"params": lora_params, "lr": 5e-4}], weight_decay=0.0)
    t0, step, epoch = time.time(), 0, 100
    while time.time() - t0 < args.lm_minutes * 60:
        for bt in batches(data["train"], 8, True, epoch):
            x, xl = pad_states([e["states"] for e in bt])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                h, hl = proj(x, xl)
                xe, mask, y = build(audio_prefix(h, hl), [e["text"] for e in bt])
                lm_loss = lm(inputs_embeds=xe, attention_mask=mask, labels=y).loss
                loss = lm_loss + args.ctc_weight * ctc_loss(h, hl, bt)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params + lora_params, 1.0)
            opt.step()
            step += 1
            if step % 25 == 0:
                w, _ = eval_lm("valid")
                curve.append({"phase": "lm", "minutes": (time.time() - t0) / 60, "step": step, "lm_loss": lm_loss.item(), "valid_lm_wer": w})
                log(f"lm step {step} lm_loss {lm_loss.item():.3f} valid LM WER {w:.3f}")
            if time.time() - t0 > args.lm_minutes * 60:
                break
        epoch += 1
    w, hyps = eval_lm("test")
    ws, _ = eval_lm("test", shuffle=True)
    log(f"LM phase: {step} steps; test LM WER {w:.3f}, shuffled audio {ws:.3f}; start {w0:.3f}")
    for e, hyp in list(zip(data["test"], hyps))[:5]:
        log(f"  REF {e['text']}\n  HYP {hyp}")
    return {"lm_steps": step, "test_lm_wer": w, "test_lm_wer_shuffled": ws, "valid_lm_wer_before": w0}


if __name__ == "__main__":
    main()
