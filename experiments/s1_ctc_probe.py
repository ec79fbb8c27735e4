"""S1 probe: what the projector's CTC head can learn from the cached Whisper states of a demo folder.

The library's parts (``auralm.components.connectors.StackProjector`` and ``auralm.components.ctc.CTCHead``),
optionally with a context layer between them that the library does not ship (``--arch lstm``: a BiLSTM,
``--arch conv``: a 3-tap convolution, both residual), over either the LM's tokens seen in training
(``--unit token``: SmolLM2's frozen input embeddings, as the demo's stage 1) or 38 characters
(``--unit char``: a learned embedding per character), trained on length-grouped batches for ``--minutes``.
Prints the greedy CTC WER on the first 100 test clips (validation WER every 200 steps)::

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python experiments/s1_ctc_probe.py --run runs/demo --minutes 8 --arch lstm
  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python experiments/s1_ctc_probe.py --run runs/demo --unit char --stack 2

(The demo's own stage 1 with other settings: ``experiments/s1_stage1.py``.)
"""

from __future__ import annotations

import argparse
import random
import re
import time

import torch
from torch import nn

from auralm.components.connectors import StackProjector
from auralm.components.ctc import CTCHead
from auralm.components.encoders import build_audio_encoder
from auralm.components.lm import load_lm, text_ids
from auralm.data.embed_cache import EmbeddingCache
from auralm.data.manifest import read_manifest
from auralm.metrics.text import wer

CHARS = " 'abcdefghijklmnopqrstuvwxyz0123456789"


class Context(nn.Module):
    """A residual context layer over the projected frames (B, T', H): BiLSTM or convolution."""

    def __init__(self, width: int, arch: str):
        super().__init__()
        self.arch = arch
        if arch == "lstm":
            self.rnn = nn.LSTM(width, 256, batch_first=True, bidirectional=True)
            self.rnn_out = nn.Linear(512, width)
        else:
            self.conv = nn.Conv1d(width, width, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.arch == "lstm":
            return h + self.rnn_out(self.rnn(h)[0])  # B, T', H
        return h + self.conv(nn.functional.gelu(h).transpose(1, 2)).transpose(1, 2)  # B, T', H


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--lm", default="smollm2-135m-instruct", help="the LM whose tokens and embeddings are the classes")
    ap.add_argument("--unit", choices=["token", "char"], default="token")
    ap.add_argument("--arch", choices=["mlp", "lstm", "conv"], default="mlp")
    ap.add_argument("--stack", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    print(args, flush=True)
    torch.manual_seed(0)
    rows = read_manifest(f"{args.run}/corpus/manifest.jsonl")
    encoder = build_audio_encoder("whisper-tiny.en")
    cache = EmbeddingCache(f"{args.run}/embeddings", encoder.name, encoder.revision)
    lm, tok = load_lm(args.lm)

    if args.unit == "token":
        def units(text: str) -> list[int]:
            return text_ids(tok, text)

        def spell(ids: list[int]) -> str:
            return tok.decode(ids).strip()
    else:
        def units(text: str) -> list[int]:
            text = re.sub(r" +", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower())).strip()
            return [CHARS.index(c) for c in text]

        def spell(ids: list[int]) -> str:
            return "".join(CHARS[i] for i in ids).strip()

    data: dict[str, list] = {"train": [], "valid": [], "test": []}
    for r in rows:
        data[r.split].append((r.text, cache.get(r).float(), units(r.text)))
    train = data["train"]
    vocab = sorted({u for e in train for u in e[2]})
    if args.unit == "token":
        table = lm.get_input_embeddings()  # frozen; the CTC classes are its rows of the training tokens
    else:
        table = nn.Embedding(len(CHARS), args.hidden)  # learned: the head does not own it, the optimiser gets it
    width = table.weight.shape[1]
    dim = train[0][1].shape[1]
    projector = StackProjector(dim, width, args.stack, "mlp", args.hidden)
    context = Context(width, args.arch) if args.arch != "mlp" else nn.Identity()
    head = CTCHead(table, vocab)
    params = [*projector.parameters(), *context.parameters(), *head.parameters()]
    params += list(table.parameters()) if args.unit == "char" else []

    def pad(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([e[1].shape[0] for e in batch])
        x = torch.zeros(len(batch), int(lengths.max()), dim)  # B, T, D
        for i, e in enumerate(batch):
            x[i, : e[1].shape[0]] = e[1]
        return x, lengths

    def audio(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        h, lengths = projector(*pad(batch))  # B, T', H
        return context(h), lengths

    def evaluate(split: str) -> float:
        for m in (projector, context, head):
            m.eval()
        ex, hyps = data[split][:100], []
        with torch.no_grad():
            for i in range(0, len(ex), 32):
                hyps += [spell(ids) for ids in head.greedy_decode(*audio(ex[i : i + 32]))]
        for m in (projector, context, head):
            m.train()
        return wer([e[0] for e in ex], hyps)

    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    t0, step, epoch = time.time(), 0, 0
    while time.time() - t0 < args.minutes * 60:
        order = list(range(len(train)))
        random.Random(epoch).shuffle(order)
        pool = args.batch * 50  # length-grouped batches, as optim.group_by_length
        order = [j for i in range(0, len(order), pool) for j in sorted(order[i : i + pool], key=lambda j: -train[j][1].shape[0])]
        batches = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
        random.Random(epoch + 99).shuffle(batches)
        for idx in batches:
            batch = [train[j] for j in idx]
            loss = head.loss(*audio(batch), [e[2] for e in batch])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 200 == 0:
                print(f"{(time.time() - t0) / 60:.1f} min step {step} loss {loss.item():.3f} "
                      f"valid WER {evaluate('valid'):.3f}", flush=True)
            if time.time() - t0 > args.minutes * 60:
                break
        epoch += 1
    print(f"steps {step} epochs {epoch}: test WER (first 100 clips) {evaluate('test'):.3f}")


if __name__ == "__main__":
    main()
