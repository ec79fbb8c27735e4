"""A CTC head whose output layer is a frozen token-embedding matrix, plus a learned blank.

Audio frames ``(B, T', H)`` at the LM width are scored against the embedding rows of a class
vocabulary: ``K`` sorted token ids (``vocab``), class ``k`` being token ``vocab[k]``, and the blank as
class ``K`` (last)::

    logits = audio @ E[vocab]^T  ⊕  blank(audio)        # B, T', K+1   (E: V, H, frozen, not owned)

The only trained weights are the blank's ``nn.Linear(H, 1)`` (zero at the start); ``vocab`` is a buffer,
saved with them. The head pulls the frames towards the embeddings of the tokens spoken, so an LM can
read them (the S1 recipe: docs/hear.md).

``scoring="cosine"`` scores directions instead of dot products::

    logits = s * cos(audio, E[vocab])  ⊕  s * blank(audio / |audio|)      # s = exp(log_scale), learned

so a frame can only win its token by pointing where that token's embedding points (a dot product is also
won by a long frame at a loose angle): what a continuous feed needs, where the LM reads the frames
themselves (``CTCHead.pool``). ``log_scale`` (init log 16) is trained with the blank.

* :meth:`CTCHead.loss`: ``F.ctc_loss`` against each item's token ids (tokens outside the vocabulary are
  dropped); with ``negatives = N > 0``, in training mode, a sampled softmax over the batch's target
  classes, the blank and N other classes drawn uniformly, log-corrected for the ones left out.
* :meth:`CTCHead.greedy_decode`: argmax per frame, repeats collapsed, blanks dropped -> token ids.
* :meth:`CTCHead.nbest`: the ``beam`` most likely label sequences and their log-probabilities (every
  alignment summed), by flashlight-text's CTC prefix beam search with no language model; an LM rescores
  them (the S1 recipe's ``rescore_beam`` decoding).
* :meth:`CTCHead.compress`: the CTC compressor (Speech-LLaMA): blank frames dropped, runs of one class
  merged, each run fed as the posterior-weighted mixture of its ``top_k`` tokens' embeddings.
* :meth:`CTCHead.pool`: the same runs, each fed as the mean of its own frames (the audio itself, no
  token lookup: a continuous compressor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from auralm.core.errors import ConfigError, ToolMissingError

__all__ = ["CTCHead", "CTC_SCORING"]

CTC_SCORING = ("dot", "cosine")


def _collapse(frames: Sequence[int], blank: int) -> list[int]:
    """A CTC frame sequence -> its labels: repeats merged, then blanks dropped."""
    return [c for j, c in enumerate(frames) if (j == 0 or c != frames[j - 1]) and c != blank]


class CTCHead(nn.Module):
    """CTC over ``embeddings.weight[vocab]`` (frozen, owned by the caller) and a learned blank (class K)."""

    def __init__(self, embeddings: nn.Module, vocab: Sequence[int] | torch.Tensor | None = None, negatives: int = 0,
                 scoring: str = "dot"):
        super().__init__()
        if negatives < 0:
            raise ConfigError(f"CTC negatives must be >= 0, got {negatives}")
        if scoring not in CTC_SCORING:
            raise ConfigError(f"CTC scoring must be one of {', '.join(CTC_SCORING)}, got {scoring!r}")
        self.scoring = scoring
        if scoring == "cosine":  # only then: a dot-product head's saved weights stay exactly what they were
            self.log_scale = nn.Parameter(torch.tensor(math.log(16.0)))
        # not registered as a submodule: the LM owns these weights (not trained here, not saved with the head)
        object.__setattr__(self, "embeddings", embeddings)
        dim = embeddings.weight.shape[1]  # H
        self.blank = nn.Linear(dim, 1)  # the blank's logit: w . audio + b, zero at the start
        nn.init.zeros_(self.blank.weight)
        nn.init.zeros_(self.blank.bias)
        self.negatives = int(negatives)
        self.register_buffer("vocab", torch.empty(0, dtype=torch.long))  # K sorted token ids (empty: not set yet)
        if vocab is not None:
            self.set_vocab(vocab)

    @property
    def num_classes(self) -> int:
        """K + 1: the vocabulary and the blank."""
        return len(self.vocab) + 1

    def set_vocab(self, ids: Sequence[int] | torch.Tensor) -> None:
        """Make the token ``ids`` (any order, duplicates allowed) the CTC classes."""
        vocab = torch.unique(torch.as_tensor(ids, dtype=torch.long).reshape(-1))  # K, sorted
        if vocab.numel() == 0:
            raise ConfigError("an empty CTC vocabulary")
        if int(vocab[0]) < 0 or int(vocab[-1]) >= self.embeddings.weight.shape[0]:
            raise ConfigError(f"CTC vocabulary ids must be in 0..{self.embeddings.weight.shape[0] - 1}")
        self.vocab = vocab.to(self.blank.weight.device)

    def classes(self, ids: Sequence[int]) -> torch.Tensor:
        """Token ids -> class indices ``(n,)``; tokens outside the vocabulary are dropped."""
        ids_t = torch.as_tensor(list(ids), dtype=torch.long, device=self.vocab.device)
        pos = torch.searchsorted(self.vocab, ids_t).clamp(max=max(len(self.vocab) - 1, 0))
        return pos[self.vocab[pos] == ids_t]

    def log_probs(self, audio: torch.Tensor, classes: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T', H)`` -> ``(B, T', K + 1)`` float32 log-probs, the blank last.

        ``classes`` (indices into the vocabulary) restricts the softmax to those (then K is their count),
        each logit plus its ``bias``: the sampled softmax of :meth:`loss`."""
        if self.vocab.numel() == 0:
            raise ConfigError("the CTC head has no vocabulary yet: set_vocab, or load one with the trained weights")
        vocab = self.vocab if classes is None else self.vocab[classes]
        E = self.embeddings.weight[vocab]  # K, H
        if self.scoring == "cosine":
            a = F.normalize(audio.float(), dim=-1)  # B, T', H: directions only
            scale = self.log_scale.float().exp()
            tokens = scale * F.linear(a, F.normalize(E.float(), dim=-1))  # B, T', K
            if bias is not None:
                tokens = tokens + bias.float()
            logits = torch.cat([tokens, scale * self.blank(a.to(self.blank.weight.dtype)).float()], -1)
            return logits.log_softmax(-1)
        tokens = F.linear(audio, E.to(audio.dtype), None if bias is None else bias.to(audio.dtype))  # B, T', K
        logits = torch.cat([tokens, self.blank(audio).to(audio.dtype)], -1)  # B, T', K+1
        return logits.float().log_softmax(-1)

    def sampled_classes(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The sampled softmax for targets ``flat`` (class indices): ``(classes, their logit bias, flat
        re-indexed into them)``, or None when ``negatives`` covers every other class.

        The classes are every target class and ``negatives`` others drawn uniformly without replacement;
        each drawn class stands for ``others / drawn`` classes, so its logit gets ``log(others / drawn)``
        (the partition function is estimated without bias)."""
        K, n_neg = len(self.vocab), self.negatives
        pos = torch.unique(flat)  # P target classes, sorted
        n_others = K - len(pos)
        if n_others <= n_neg:
            return None
        free = torch.ones(K, dtype=torch.bool, device=flat.device)
        free[pos] = False
        others = free.nonzero().squeeze(1)  # K - P
        neg = others[torch.randperm(n_others, device=flat.device)[:n_neg]]  # N
        bias = torch.cat([torch.zeros(len(pos)), torch.full((n_neg,), math.log(n_others / n_neg))]).to(flat.device)
        remap = torch.full((K,), -1, dtype=torch.long, device=flat.device)
        remap[pos] = torch.arange(len(pos), device=flat.device)
        return torch.cat([pos, neg]), bias, remap[flat]

    def loss(self, audio: torch.Tensor, lengths: torch.Tensor, targets: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mean CTC loss of ``audio (B, T', H)`` with ``lengths (B,)`` against each item's token ids."""
        classes = [self.classes(ids) for ids in targets]
        flat = torch.cat(classes).to(audio.device)  # sum of target lengths
        target_lengths = torch.tensor([len(c) for c in classes], dtype=torch.long, device=audio.device)  # B
        sampled = self.sampled_classes(flat) if self.training and self.negatives > 0 else None
        if sampled is None:
            log_probs = self.log_probs(audio)  # B, T', K+1
        else:
            subset, bias, flat = sampled
            log_probs = self.log_probs(audio, subset, bias)  # B, T', P+N+1
        blank = log_probs.shape[-1] - 1
        return F.ctc_loss(log_probs.transpose(0, 1), flat, lengths, target_lengths, blank=blank, zero_infinity=True)

    @torch.no_grad()
    def greedy_decode(self, audio: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Each item's token ids: argmax per frame, repeats collapsed, blanks dropped."""
        best = self.log_probs(audio).argmax(-1).tolist()  # B, T'
        vocab, blank = self.vocab.tolist(), len(self.vocab)
        return [[vocab[c] for c in _collapse(row[:n], blank)] for row, n in zip(best, lengths.tolist())]

    @torch.no_grad()
    def nbest(self, audio: torch.Tensor, lengths: torch.Tensor, beam: int,
              per_frame: int = 8) -> list[list[tuple[list[int], float]]]:
        """Each item's ``beam`` best ``(token ids, log p)``, best first: a CTC prefix beam search (flashlight-text's
        lexicon-free decoder, no LM; alignments of one label sequence summed) that extends each prefix by the
        ``per_frame`` most likely classes of every frame."""
        try:
            from flashlight.lib.text.decoder import (
                CriterionType,
                LexiconFreeDecoder,
                LexiconFreeDecoderOptions,
                ZeroLM,
            )
        except ImportError:
            raise ToolMissingError("CTC beam search needs flashlight-text (pip install flashlight-text)") from None
        if beam < 1 or per_frame < 1:
            raise ConfigError(f"need beam >= 1 and per_frame >= 1, got {beam} and {per_frame}")
        logp = self.log_probs(audio).float().cpu().contiguous()  # B, T', K+1
        blank = len(self.vocab)
        options = LexiconFreeDecoderOptions(beam_size=beam, beam_size_token=min(per_frame, blank + 1),
                                            beam_threshold=1e9, lm_weight=0.0, sil_score=0.0, log_add=True,
                                            criterion_type=CriterionType.CTC)  # fmt: skip
        decoder = LexiconFreeDecoder(options, ZeroLM(), blank, blank, [])  # the blank doubles as the silence
        vocab, out = self.vocab.tolist(), []
        for b, n in enumerate(lengths.tolist()):
            item = logp[b, :n].contiguous()
            found = []
            for result in decoder.decode(item.data_ptr(), n, blank + 1):
                found.append(([vocab[c] for c in _collapse(result.tokens, blank) if c >= 0], float(result.score)))
            out.append(found)
        return out

    def _runs(self, logp: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For one item's ``logp (T', K+1)`` and length n: the kept frames' mask ``(n,)`` (best class not the
        blank; a clip with none keeps its least blank frame), their run index among the kept runs ``(F,)``,
        and each kept run's best class ``(G,)``."""
        blank = len(self.vocab)
        seq = logp[:n].argmax(-1)  # n
        starts = torch.ones_like(seq, dtype=torch.bool)
        starts[1:] = seq[1:] != seq[:-1]
        run = torch.cumsum(starts, 0) - 1  # n: run index of every frame
        keep = seq != blank  # n
        if not keep.any():
            keep = torch.zeros_like(keep)
            keep[logp[:n, blank].argmin()] = True
        runs, inverse = torch.unique(run[keep], return_inverse=True)  # G runs kept
        token = logp[:n, :blank].argmax(-1)  # n: the best non-blank class (= seq on the kept frames but a fallback one)
        best = torch.zeros(len(runs), dtype=torch.long, device=seq.device)
        best[inverse] = token[keep]  # G: the frames of one run share their class
        return keep, inverse, best

    def pool(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """``(B, T', H)`` -> ``(B, N, H)`` continuous runs, their lengths ``(B,)`` and each item's token ids
        (the best token of every run, for ``copy_bias``).

        The runs of :meth:`compress` (blank frames dropped, runs of one best class merged), but each run is
        the mean of its own frames: the audio itself, not a token embedding, so whatever the frames carry
        beyond the token passes on, and gradients reach every kept frame."""
        logp = self.log_probs(audio.detach())  # B, T', K+1 (the segmentation is not differentiated)
        out, fed_ids = [], []
        for b, n in enumerate(lengths.tolist()):
            keep, inverse, best = self._runs(logp[b], n)
            frames = audio[b, :n][keep]  # F, H
            sums = frames.new_zeros(len(best), frames.shape[-1]).index_add(0, inverse, frames)  # G, H
            counts = torch.bincount(inverse, minlength=len(best)).to(frames.dtype)  # G
            out.append(sums / counts[:, None])
            fed_ids.append(self.vocab[best].tolist())
        new_lengths = torch.tensor([len(o) for o in out], device=audio.device)  # B
        padded = audio.new_zeros(len(out), int(new_lengths.max()), audio.shape[-1])  # B, N, H
        for b, o in enumerate(out):
            padded[b, : len(o)] = o
        return padded, new_lengths, fed_ids

    def compress(self, audio: torch.Tensor, lengths: torch.Tensor,
                 top_k: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """``(B, T', H)`` -> ``(B, N, H)`` soft token embeddings, their lengths ``(B,)``, and each item's
        token ids (the most likely token of every run).

        Frames whose best class is the blank are dropped and runs of one class merged; each run becomes the
        mixture of the embeddings of its ``top_k`` most likely tokens, weighted by the run's mean posterior
        (``top_k = 1``: the top token's own embedding). Gradients reach ``audio`` through the weights. A clip
        with no non-blank frame keeps its least blank frame."""
        logp = self.log_probs(audio)  # B, T', K+1
        E = self.embeddings.weight  # V, H
        blank = len(self.vocab)
        best = logp.argmax(-1)  # B, T'
        out, fed_ids = [], []
        for b, n in enumerate(lengths.tolist()):
            seq = best[b, :n]  # n
            starts = torch.ones_like(seq, dtype=torch.bool)
            starts[1:] = seq[1:] != seq[:-1]
            run = torch.cumsum(starts, 0) - 1  # n: run index of every frame
            keep = seq != blank  # n
            if not keep.any():
                keep = torch.zeros_like(keep)
                keep[logp[b, :n, blank].argmin()] = True
            runs, inverse = torch.unique(run[keep], return_inverse=True)  # G runs kept
            probs = logp[b, :n][keep, :blank].exp()  # F, K (kept frames, blank excluded)
            mean = torch.zeros(len(runs), blank, dtype=probs.dtype, device=probs.device).index_add_(0, inverse, probs)  # G, K
            weights, idx = mean.topk(min(top_k, blank), dim=-1)  # G, k
            weights = weights / weights.sum(-1, keepdim=True)
            fed_ids.append(self.vocab[idx[:, 0]].tolist())
            out.append(torch.einsum("gk,gkh->gh", weights.to(E.dtype), E[self.vocab[idx]]).to(audio.dtype))  # G, H
        new_lengths = torch.tensor([len(o) for o in out], device=audio.device)  # B
        padded = audio.new_zeros(len(out), int(new_lengths.max()), audio.shape[-1])  # B, N, H
        for b, o in enumerate(out):
            padded[b, : len(o)] = o
        return padded, new_lengths, fed_ids
