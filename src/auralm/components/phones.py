"""A phone CTC head on the encoder's states, decoded through a pronouncing lexicon.

A word-level CTC head can only write the words it has heard, about ten times each (docs/s1-alignment.md,
probe 9). Phones are what the audio holds, and they are shared by every word: a word never heard in training
is written when its phones are heard and it is in the lexicon (probe 16)::

    states (B, T, D) ──conv k5 ─► conv k5 stride 2 ─► [BiGRU] ─► linear ─► log p (B, T/2, P+1)   (class 0: blank)

* :func:`phonemize`: words -> espeak-ng's phone mnemonics (``espeak-ng -x``, stress marks dropped).
* :class:`Lexicon`: each word's count and phone spelling; a transcript's CTC targets (:meth:`Lexicon.spell`);
  saved as JSON beside the head's weights (``lexicon.json``).
* :class:`PhoneHead`: the network, its CTC loss, the ``beam`` best word sequences of each clip by
  flashlight-text's lexicon decoder (a word unigram prior in the beam: :meth:`PhoneHead.nbest`), and the exact
  CTC log-probability of any transcript (:meth:`PhoneHead.score`) for rescoring.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from auralm.core.errors import ConfigError, ToolMissingError

__all__ = ["Lexicon", "PhoneHead", "phonemize", "words_of", "as_sentence"]

_STRESS = str.maketrans("", "", "',%=")
LEXICON_FILE = "lexicon.json"
MAX_HOMOPHONES = 6  # words a node of flashlight-text's trie holds; the commonest are kept


def words_of(text: str) -> list[str]:
    """A transcript's words as the lexicon spells them: lower case, letters and apostrophes (hyphens split)."""
    return re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split()


def as_sentence(words: str | Sequence[str]) -> str:
    """Lexicon words written as a sentence: first letter capitalised, "i" as "I", a full stop."""
    ws = words.split() if isinstance(words, str) else list(words)
    text = " ".join("I" if w == "i" else w for w in ws)
    return text[:1].upper() + text[1:] + "." if text else ""


def phonemize(words: Sequence[str], voice: str = "en-us", chunk: int = 2000) -> dict[str, list[str]]:
    """Word -> espeak-ng phone mnemonics, stress marks dropped (one espeak-ng call per ``chunk`` words; a word
    espeak-ng says nothing for is left out)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ToolMissingError("the phone lexicon needs espeak-ng (apt install espeak-ng)")

    def run(text: str) -> str:
        return subprocess.run([exe, "-q", "-x", "--sep=_", "-v", voice], input=text, capture_output=True, text=True,
                              check=True).stdout

    out: dict[str, list[str]] = {}
    words = list(words)
    for i in range(0, len(words), chunk):
        part = words[i : i + chunk]
        lines = run("\n".join(part) + "\n").splitlines()
        if len(lines) != len(part):  # espeak-ng joined or split lines: one call per word
            lines = [run(w + "\n").replace("\n", " ") for w in part]
        for w, line in zip(part, lines):
            phones = [p for p in line.translate(_STRESS).replace(" ", "_").split("_") if p]
            if phones:
                out[w] = phones
    return out


class Lexicon:
    """Words with their counts and phone spellings; phone classes are ``1..P`` (``inventory`` order), 0 the blank."""

    def __init__(self, entries: dict[str, tuple[int, list[str]]], inventory: Sequence[str] | None = None):
        if not entries:
            raise ConfigError("an empty lexicon")
        self.entries = dict(entries)
        self.inventory = list(inventory) if inventory is not None else sorted({p for _, ps in entries.values() for p in ps})
        self.index = {p: i + 1 for i, p in enumerate(self.inventory)}
        self.words = sorted(self.entries)
        self.extra: dict[str, list[str]] = {}  # spelt on demand (spell(add_missing=True)): never decoded nor saved

    @classmethod
    def build(cls, texts: Iterable[str], voice: str = "en-us") -> Lexicon:
        """Every word of ``texts``, counted, and pronounced by espeak-ng."""
        counts: Counter = Counter()
        for t in texts:
            counts.update(words_of(t))
        prons = phonemize(sorted(counts), voice)
        return cls({w: (counts[w], prons[w]) for w in prons})

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, word: str) -> bool:
        return word in self.entries

    @property
    def num_classes(self) -> int:
        """Phones + the blank."""
        return len(self.inventory) + 1

    def spell(self, text: str, add_missing: bool = False) -> list[int] | None:
        """The phone classes of a transcript, word after word; None when a word is not in the lexicon (with
        ``add_missing``: espeak-ng pronounces it for spelling only - the words the decoder writes and the saved
        lexicon stay as built - and phones outside the inventory are dropped)."""
        words = words_of(text)
        missing = {w for w in words if w not in self.entries}
        if missing and not add_missing:
            return None
        if new := sorted(missing - set(self.extra)):
            self.extra.update({w: [] for w in new} | phonemize(new))  # [] for a word espeak-ng says nothing for
        prons = [self.entries[w][1] if w in self.entries else self.extra.get(w, []) for w in words]
        return [self.index[p] for ps in prons for p in ps if p in self.index]

    def log_priors(self) -> list[float]:
        """Each word's unigram log-probability (``words`` order; add-one smoothing, so unheard words score too)."""
        total = sum(c for c, _ in self.entries.values()) + len(self.entries)
        return [math.log((self.entries[w][0] + 1) / total) for w in self.words]

    def to_dict(self) -> dict[str, Any]:
        return {"inventory": self.inventory, "words": {w: [c, " ".join(ps)] for w, (c, ps) in sorted(self.entries.items())}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lexicon:
        try:
            return cls({w: (int(c), ps.split()) for w, (c, ps) in data["words"].items()}, data["inventory"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a lexicon ({exc})") from None

    def save(self, path: str | Path) -> None:
        from auralm.core.io import atomic_write_json

        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the lexicon ({exc})") from None


class PhoneHead(nn.Module):
    """Encoder states ``(B, T, D)`` -> phone log-probabilities ``(B, ceil(T / 2), P + 1)`` (class 0: blank)."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 256, rnn_layers: int = 0):
        super().__init__()
        if num_classes < 2 or hidden < 1 or rnn_layers < 0:
            raise ConfigError(f"PhoneHead needs num_classes >= 2, hidden >= 1, rnn_layers >= 0; got {num_classes}, "
                              f"{hidden}, {rnn_layers}")
        self.conv = nn.Sequential(nn.Conv1d(dim, hidden, 5, padding=2), nn.GELU(),
                                  nn.Conv1d(hidden, hidden, 5, stride=2, padding=2), nn.GELU())
        if rnn_layers:
            self.mix: nn.Module = nn.GRU(hidden, hidden // 2, num_layers=rnn_layers, batch_first=True, bidirectional=True)
        else:
            self.mix = nn.Sequential(nn.Conv1d(hidden, hidden, 5, padding=2), nn.GELU())
        self.out = nn.Linear(hidden if not rnn_layers else 2 * (hidden // 2), num_classes)

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``states (B, T, D)``, ``lengths (B,)`` -> ``log p (B, T2, C)``, ``lengths (B,)`` (T2 = ceil(T / 2))."""
        h = self.conv(states.transpose(1, 2))  # B, hidden, T2
        lengths = (lengths - 1) // 2 + 1
        if isinstance(self.mix, nn.GRU):
            packed = nn.utils.rnn.pack_padded_sequence(h.transpose(1, 2), lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(self.mix(packed)[0], batch_first=True, total_length=h.shape[2])
        else:
            h = self.mix(h).transpose(1, 2)  # B, T2, hidden
        return self.out(h).float().log_softmax(-1), lengths

    def loss(self, states: torch.Tensor, lengths: torch.Tensor, targets: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mean CTC loss per target phone (rows with no phones are skipped)."""
        logp, n = self(states, lengths)
        keep = [i for i, t in enumerate(targets) if len(t)]
        if not keep:
            return logp.sum() * 0
        ys = [torch.as_tensor(targets[i], dtype=torch.long) for i in keep]
        tl = torch.tensor([len(y) for y in ys])
        loss = F.ctc_loss(logp[keep].transpose(0, 1), torch.cat(ys).to(logp.device), n[keep], tl,
                          reduction="sum", zero_infinity=True)
        return loss / tl.sum().clamp(min=1)

    @staticmethod
    def score(logp: torch.Tensor, spellings: Sequence[Sequence[int]]) -> list[float]:
        """The exact CTC log-probability of each phone spelling under one clip's ``logp (T, C)`` (every alignment
        summed; -inf for an empty spelling or one too long for the clip)."""
        out = [-math.inf] * len(spellings)
        keep = [i for i, s in enumerate(spellings) if len(s)]
        if not keep:
            return out
        lp = logp[:, None, :].expand(-1, len(keep), -1)  # T, N, C
        tl = torch.tensor([len(spellings[i]) for i in keep])
        nll = F.ctc_loss(lp, torch.cat([torch.as_tensor(spellings[i], dtype=torch.long) for i in keep]),
                         torch.full((len(keep),), logp.shape[0]), tl, reduction="none")
        for i, v in zip(keep, nll.tolist()):
            out[i] = -v
        return out

    @torch.no_grad()
    def nbest(self, states: torch.Tensor, lengths: torch.Tensor, lexicon: Lexicon, beam: int = 16,
              prior_weight: float = 0.5) -> tuple[list[list[str]], torch.Tensor, torch.Tensor]:
        """Each clip's ``beam`` best transcripts (:meth:`decode`), with the clips' ``log p (B, T2, C)`` and lengths
        (for :meth:`score`)."""
        logp, n = self(states, lengths)
        return self.decode(logp, n, lexicon, beam, prior_weight), logp, n

    def decode(self, logp: torch.Tensor, lengths: torch.Tensor, lexicon: Lexicon, beam: int = 16,
               prior_weight: float = 0.5) -> list[list[str]]:
        """Each clip's ``beam`` best transcripts (lexicon words joined by spaces, best first, no repeats) by
        flashlight-text's lexicon-constrained CTC beam search, scored ``log p_CTC + prior_weight * log p_unigram``."""
        key = (id(lexicon), len(lexicon.words), beam, prior_weight)
        if getattr(self, "_decoder", (None,))[0] != key:  # the trie is built once per lexicon and settings
            self._decoder = (key, *_lexicon_decoder(lexicon, beam, prior_weight))
        _, decoder, words, _lm = self._decoder
        lists = []
        for b in range(logp.shape[0]):
            e = logp[b, : int(lengths[b])].float().contiguous().cpu()
            seen: dict[str, None] = {}
            for r in decoder.decode(e.data_ptr(), e.shape[0], e.shape[1]):
                seen.setdefault(" ".join(words[i] for i in r.words if 0 <= i < len(words)), None)
            lists.append([h for h in seen if h][:beam])
        return lists


def _lexicon_decoder(lexicon: Lexicon, beam: int, prior_weight: float) -> tuple[Any, list[str], Any]:
    """flashlight-text's lexicon decoder over ``lexicon`` (a trie of phone spellings, a node keeping its
    ``MAX_HOMOPHONES`` commonest homophones) with a unigram prior whose state is the whole word history (no two histories merge)."""
    try:
        from flashlight.lib.text.decoder import (
            LM,
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            LMState,
            SmearingMode,
            Trie,
        )
    except ImportError:
        raise ToolMissingError("phone decoding needs flashlight-text (pip install flashlight-text)") from None
    words, priors = lexicon.words, lexicon.log_priors()

    class Unigram(LM):
        def __init__(self) -> None:
            LM.__init__(self)
            self.states: list[Any] = []  # keeps the children alive while a clip is decoded

        def start(self, start_with_nothing: bool) -> Any:
            self.states = [LMState()]
            return self.states[0]

        def score(self, state: Any, word: int) -> tuple[Any, float]:
            child = state.child(word)
            self.states.append(child)
            return child, priors[word] if 0 <= word < len(priors) else -math.inf

        def finish(self, state: Any) -> tuple[Any, float]:
            return state, 0.0

    blank = 0
    trie = Trie(lexicon.num_classes, blank)
    homophones: Counter = Counter()
    for i in sorted(range(len(words)), key=lambda i: -priors[i]):
        spelling = [lexicon.index[p] for p in lexicon.entries[words[i]][1] if p in lexicon.index]
        homophones[tuple(spelling)] += 1
        if spelling and homophones[tuple(spelling)] <= MAX_HOMOPHONES:  # flashlight's trie node keeps 6 words
            trie.insert(spelling, i, priors[i])
    trie.smear(SmearingMode.MAX)
    opts = LexiconDecoderOptions(beam_size=beam, beam_size_token=lexicon.num_classes, beam_threshold=30.0,
                                 lm_weight=prior_weight, word_score=0.0, unk_score=-math.inf, sil_score=0.0,
                                 log_add=True, criterion_type=CriterionType.CTC)
    lm = Unigram()
    decoder = LexiconDecoder(opts, trie, lm, blank, blank, len(words), [], False)
    return decoder, words, lm  # the Python LM must outlive the decoder's calls
