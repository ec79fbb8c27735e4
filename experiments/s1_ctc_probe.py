"""S1 probe: what the projector's CTC head can learn from the cached Whisper states of a demo folder.

Trains stack-S + 2-layer MLP (optionally + a BiLSTM or a conv layer) with a CTC head over either the
LM's tokens seen in training (``--unit token``: the output layer is SmolLM2's frozen input embeddings,
as the demo's stage 1) or 38 characters (``--unit char``), on length-grouped batches, for ``--minutes``,
and prints the greedy CTC WER on the first 100 test clips (validation WER every 200 steps)::

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python experiments/s1_ctc_probe.py --run runs/demo6k --minutes 8 --arch lstm
  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python experiments/s1_ctc_probe.py --run runs/demo --unit char --stack 2
"""

from __future__ import annotations

import argparse
import random
import re
import time

import torch
import torch.nn.functional as F
from torch import nn

from auralm.data.embed_cache import EmbeddingCache
from auralm.data.manifest import read_manifest
from auralm.hub import load_causal_lm, revision
from auralm.metrics.text import wer

CHARS = " 'abcdefghijklmnopqrstuvwxyz0123456789"


class Head(nn.Module):
    def __init__(self, dim: int, stack: int, hidden: int, width: int, arch: str, out: torch.Tensor | int):
        super().__init__()
        self.stack, self.arch = stack, arch
        self.norm = nn.LayerNorm(dim * stack)
        self.net = nn.Sequential(nn.Linear(dim * stack, hidden), nn.GELU(), nn.Linear(hidden, width))
        if arch == "lstm":
            self.rnn = nn.LSTM(width, 256, batch_first=True, bidirectional=True)
            self.rnn_out = nn.Linear(512, width)
        elif arch == "conv":
            self.conv = nn.Conv1d(width, width, 3, padding=1)
        if isinstance(out, torch.Tensor):  # frozen LM embeddings of the classes + a learned blank
            self.register_buffer("table", out)
            self.blank = nn.Linear(width, 1)
        else:
            self.table = None
            self.out = nn.Linear(width, out + 1)  # class 0 = blank

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        pad = (-t) % self.stack
        x = F.pad(x, (0, 0, 0, pad)).reshape(b, (t + pad) // self.stack, d * self.stack)
        h = self.net(self.norm(x))
        if self.arch == "lstm":
            h = h + self.rnn_out(self.rnn(h)[0])
        elif self.arch == "conv":
            h = h + self.conv(F.gelu(h).transpose(1, 2)).transpose(1, 2)
        if self.table is not None:
            logits = torch.cat([self.blank(h), h @ self.table.T], -1)  # blank first
        else:
            logits = self.out(h)
        return logits, (lengths + self.stack - 1) // self.stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo")
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
    cache = EmbeddingCache(f"{args.run}/embeddings", "whisper-tiny.en", revision("whisper-tiny.en"))
    lm, tok = load_causal_lm("smollm2-135m-instruct")

    if args.unit == "token":
        def units(text: str) -> list[int]:
            return tok(" " + text.strip(), add_special_tokens=False).input_ids
    else:
        def units(text: str) -> list[int]:
            text = re.sub(r" +", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower())).strip()
            return [CHARS.index(c) for c in text]

    data: dict[str, list] = {"train": [], "valid": [], "test": []}
    for r in rows:
        data[r.split].append((r.text, cache.get(r).float(), units(r.text)))
    train = data["train"]
    if args.unit == "token":
        vocab = sorted({i for e in train for i in e[2]})
        out: torch.Tensor | int = lm.get_input_embeddings().weight.detach()[torch.tensor(vocab)].clone()
        width = out.shape[1]
    else:
        vocab, out, width = list(range(len(CHARS))), len(CHARS), args.hidden
    cls = {u: i + 1 for i, u in enumerate(vocab)}  # 0 = blank
    dim = train[0][1].shape[1]
    model = Head(dim, args.stack, args.hidden, width, args.arch, out)

    def pad(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([e[1].shape[0] for e in batch])
        x = torch.zeros(len(batch), int(lengths.max()), dim)
        for i, e in enumerate(batch):
            x[i, : e[1].shape[0]] = e[1]
        return x, lengths

    def decode(logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        texts = []
        for row, n in zip(logits.argmax(-1).tolist(), lengths.tolist()):
            ids = [vocab[c - 1] for j, c in enumerate(row[:n]) if c and (j == 0 or c != row[j - 1])]
            texts.append(tok.decode(ids).strip() if args.unit == "token" else "".join(CHARS[i] for i in ids).strip())
        return texts

    def evaluate(split: str) -> float:
        model.eval()
        ex, hyps = data[split][:100], []
        with torch.no_grad():
            for i in range(0, len(ex), 32):
                hyps += decode(*model(*pad(ex[i : i + 32])))
        model.train()
        return wer([e[0] for e in ex], hyps)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
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
            logits, lengths = model(*pad(batch))
            targets = [torch.tensor([cls[u] for u in e[2] if u in cls]) for e in batch]
            loss = F.ctc_loss(logits.float().log_softmax(-1).transpose(0, 1), torch.cat(targets), lengths,
                              torch.tensor([len(t) for t in targets]), blank=0, zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
