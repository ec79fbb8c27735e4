"""Text generation from an :class:`~auralm.recipes.hear.model.AudioLM` through the LM's own Hugging Face ``generate``.

The prompts (with the audio spliced in, for the prefix family) are embedded once, left-padded into
``inputs_embeds (B, L, H)`` with an attention mask from their lengths, and handed to
``lm.generate(inputs_embeds=..., attention_mask=...)``: the LM runs the whole prompt once and then
reuses its KV cache for every new token (``use_cache=False`` recomputes the prefix at every step, for
benchmarks). A row whose last ``p`` tokens (``p <= max_loop_period``) have repeated ``max_repeats`` times
in a row is stopped and the repeats dropped (one copy kept): small LMs fall into loops such as
"successive successive successive ..." that would otherwise run to ``max_new_tokens``. With
``max_new_per_audio`` > 0 each row also ends after that many tokens per audio position the LM reads
(+8): a transcript is about as long as its audio, so a rambling row is cut ("the week one, the week
two, ..." is no exact loop). For the cross family the projected audio is made visible to the hooked cross-attention
blocks for the duration of the call; beam search (batched, ``num_beams`` beams per row, finished beams
ranked by ``sum(log p) / length ** length_penalty``: transformers' beam search) expands the batch by
``num_beams`` and the hooks ``repeat_interleave`` the audio to match; one beam is greedy decoding. Any
model with ``build_inputs(batch, answers=False, left_pad=True)``, ``audio_context(audio, lengths)``,
``lm``, ``tokenizer``, ``end_token_id`` and ``pad_token_id`` decodes here (S1's AudioLM, S2's captioner). Generation stops at the end token (``<|im_end|>`` or eos).

``rescore_beam`` > 0 (S1 models with a CTC head) does not let the LM write a transcript: for rows asking the
model's own prompt (transcription), the model's ``rescore`` picks the best of a head's N-best transcripts by
``log p_CTC + rescore_weight * log p_LM + rescore_length_bonus * length`` (the frozen LM's prior; N-best
rescoring, as ASR systems use an external LM), streamed whole; rows with another instruction go to the LM.
``rescore_head`` says whose N-best: the word CTC head's (``ctc``) or the phone head's through its lexicon
(``phones``).

Greedy decoding of a batch of the prefix family runs :func:`greedy_dropping_finished` instead of
``lm.generate``: the same tokens, but each row leaves the batch (and the KV cache) once it has ended, so
a batch whose answers differ in length no longer runs every row to the longest one (a served batch of
chat and transcription requests, for one).

Streaming: ``generate(..., on_delta=callback)`` calls ``callback(row, text)`` with each row's new text
while the LM decodes (through HF's streamer protocol, :class:`TextDeltas`), and once more at the end
with whatever the returned answer adds, so the pieces of a row join to exactly the answer ``generate``
returns. Text the loop guard could still drop (:func:`stable_length`) is held back until it is final.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError

STRATEGIES = ("greedy", "beam", "sample")
RESCORE_HEADS = ("ctc", "phones")


@dataclasses.dataclass
class GenerationConfig(Config):
    """Decoding settings."""

    strategy: str = help_field("greedy", f"decoding: {', '.join(STRATEGIES)}")
    num_beams: int = help_field(4, "beams (strategy beam)")
    length_penalty: float = help_field(1.0, "strategy beam: a finished beam scores sum(log p) / length ** this "
                                            "(> 0 favours longer answers, < 0 shorter ones)")
    temperature: float = help_field(1.0, "sampling temperature (strategy sample)")
    top_k: int = help_field(0, "sample among the k most likely tokens (0 = all)")
    top_p: float = help_field(1.0, "sample from the smallest set with this probability mass (1 = all)")
    max_new_tokens: int = help_field(128, "longest answer in tokens")
    use_cache: bool = help_field(True, "reuse the KV cache after the prompt (False recomputes it every step)")
    max_repeats: int = help_field(4, "stop a row whose last p tokens repeated this many times in a row, and keep "
                                     "one copy (a loop guard; 0: off)")
    max_loop_period: int = help_field(16, "longest repeated span (tokens) the loop guard looks for")
    copy_bias: float = help_field(0.0, "feed=ctc_soft: add this to the logits of the tokens the LM reads as audio "
                                       "(the projector's transcript), so it copies them rather than paraphrase; 0: off")
    max_new_per_audio: float = help_field(0.0, "cap each row's answer at this many tokens per audio position the "
                                               "LM reads, plus 8 (a transcript is about as long as its audio; "
                                               "0: no cap beyond max_new_tokens)")
    rescore_beam: int = help_field(0, "models with a CTC head (S1): transcribe by rescoring the CTC head's this many "
                                      "best transcripts with the frozen LM instead of letting the LM write; 0: off")
    rescore_weight: float = help_field(0.3, "rescore_beam: the weight of the LM's log-prob beside the CTC's")
    rescore_length_bonus: float = help_field(2.0, "rescore_beam: added per token (ctc) or word (phones) of a transcript "
                                                  "(the LM's log-prob falls with every token, so without it short "
                                                  "transcripts win)")
    rescore_head: str = help_field("ctc", "rescore_beam: whose N-best - ctc (the word CTC head over LM tokens) or phones "
                                          "(the phone head through its pronouncing lexicon: words never heard in "
                                          "training can be written)")
    phone_prior_weight: float = help_field(0.5, "rescore_head=phones: weight of the lexicon words' unigram log-prob "
                                                "inside the beam search")

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.num_beams < 1 or self.max_new_tokens < 1 or self.top_k < 0:
            raise ConfigError(f"need num_beams >= 1, max_new_tokens >= 1, top_k >= 0; got {self.num_beams}, {self.max_new_tokens}, {self.top_k}")
        if self.copy_bias < 0:
            raise ConfigError(f"copy_bias must be >= 0, got {self.copy_bias}")
        if self.max_new_per_audio < 0:
            raise ConfigError(f"max_new_per_audio must be >= 0, got {self.max_new_per_audio}")
        if self.max_repeats < 0 or self.max_loop_period < 1 or self.max_repeats == 1:
            raise ConfigError(f"need max_repeats 0 (off) or >= 2 and max_loop_period >= 1; got {self.max_repeats}, "
                              f"{self.max_loop_period}")
        if self.rescore_head not in RESCORE_HEADS:
            raise ConfigError(f"rescore_head must be one of {', '.join(RESCORE_HEADS)}, got {self.rescore_head!r}")
        if self.rescore_beam < 0 or self.rescore_weight < 0 or self.phone_prior_weight < 0:
            raise ConfigError(f"need rescore_beam, rescore_weight and phone_prior_weight >= 0; got {self.rescore_beam}, "
                              f"{self.rescore_weight}, {self.phone_prior_weight}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"need temperature > 0 and 0 < top_p <= 1; got {self.temperature}, {self.top_p}")


def hf_generation_config(gen: GenerationConfig, eos_id: int, pad_id: int) -> Any:
    """The transformers ``GenerationConfig`` for ``gen`` (only the fields its strategy uses)."""
    import transformers

    kwargs: dict[str, Any] = {
        "max_new_tokens": gen.max_new_tokens, "eos_token_id": eos_id, "pad_token_id": pad_id, "use_cache": gen.use_cache,
        "do_sample": gen.strategy == "sample", "num_beams": gen.num_beams if gen.strategy == "beam" else 1,
    }
    if gen.strategy == "sample":
        kwargs.update(temperature=gen.temperature, top_k=gen.top_k or None, top_p=gen.top_p)
    else:  # neutral values, so transformers does not warn about unused sampling settings
        kwargs.update(temperature=1.0, top_k=None, top_p=1.0)
    if gen.strategy == "beam":
        kwargs.update(early_stopping=True, length_penalty=gen.length_penalty)
    return transformers.GenerationConfig(**kwargs)


def loop_length(row: list[int], repeats: int, max_period: int) -> int:
    """Tokens to drop from the end of ``row``: ``(repeats - 1) * p`` when it ends with ``repeats`` copies of
    one ``p``-token span (the shortest such p), else 0."""
    if repeats < 2:
        return 0
    for p in range(1, max_period + 1):
        if len(row) < repeats * p:
            break
        tail = row[len(row) - p :]
        if all(row[len(row) - (k + 1) * p : len(row) - k * p] == tail for k in range(1, repeats)):
            return (repeats - 1) * p
    return 0


def stable_length(row: list[int], repeats: int, max_period: int) -> int:
    """How many leading tokens of a row still being generated are final: no later token can make the loop
    guard (:func:`loop_length`) drop them. A token at ``i`` can only be dropped as part of a span that
    repeats from ``i`` to the row's current end, so for each period ``p`` the tokens before the row's
    ``p``-periodic tail (after its first copy) are safe."""
    if repeats < 2:
        return len(row)
    safe = len(row)
    for p in range(1, max_period + 1):
        k = 0  # trailing positions j with row[j] == row[j - p]
        while k < len(row) - p and row[len(row) - 1 - k] == row[len(row) - 1 - k - p]:
            k += 1
        safe = min(safe, len(row) - k)
    return safe


class TextDeltas:
    """A transformers streamer (``put(token_ids)``, ``end()``) for a batch: calls ``on_delta(row, text)``
    with the new *final* text of each row as tokens arrive. Held back: the row's last token (a tokenizer's
    clean-up may still join it to the next), tokens the loop guard could drop (:func:`stable_length`),
    trailing whitespace and a trailing partial UTF-8 character. :func:`generate` sends the rest."""

    def __init__(self, tokenizer: Any, gen: GenerationConfig, end_id: int, on_delta: Callable[[int, str], None]):
        self.tokenizer, self.gen, self.end_id, self.on_delta = tokenizer, gen, end_id, on_delta
        self.rows: list[list[int]] = []
        self.done: list[bool] = []
        self.sent: list[str] = []

    def put(self, value: Any) -> None:
        if value.ndim == 2:  # the prompt (B, L); with inputs_embeds it has no tokens
            self.rows = [[] for _ in range(value.shape[0])]
            self.done = [False] * value.shape[0]
            self.sent = [""] * value.shape[0]
            return
        self.put_rows(range(len(value)), value.tolist())  # B new tokens, one per row

    def put_rows(self, rows: Any, tokens: list[int]) -> None:
        """New tokens of the given batch rows (the live rows, when finished ones were dropped)."""
        for b, token in zip(rows, tokens):
            if b >= len(self.rows) or self.done[b]:
                continue
            if token == self.end_id:
                self.done[b] = True
                continue
            self.rows[b].append(token)
            row = self.rows[b]
            safe = min(len(row) - 1, stable_length(row, self.gen.max_repeats, self.gen.max_loop_period))
            text = self.tokenizer.decode(row[: max(0, safe)], skip_special_tokens=True).strip().rstrip("\ufffd").rstrip()
            self.send(b, text)

    def send(self, b: int, text: str) -> None:
        """Send what ``text`` adds to what row ``b`` has sent (nothing unless it extends it)."""
        if len(text) > len(self.sent[b]) and text.startswith(self.sent[b]):
            self.on_delta(b, text[len(self.sent[b]) :])
            self.sent[b] = text

    def end(self) -> None:
        pass


def _guard(gen: GenerationConfig, eos_id: int, budgets: list[int] | None, copy: list[list[int]] | None) -> Any:
    """A transformers logits processor: the end token for rows caught in a loop or over budget, and
    ``copy_bias`` on each row's audio tokens."""
    import torch
    from transformers import LogitsProcessor

    rows = len(budgets) if budgets else len(copy) if copy else 1
    bias = [torch.tensor(sorted(set(ids)), dtype=torch.long) for ids in copy] if copy else None

    class Guard(LogitsProcessor):
        live: list[int] | None = None  # the batch row of each input row, when finished rows were dropped

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            beams = max(1, input_ids.shape[0] // rows) if self.live is None else 1  # beams: rows b*beams ... b*beams+beams-1
            for i, row in enumerate(input_ids.tolist()):  # with inputs_embeds: the generated tokens only
                b = i // beams if self.live is None else self.live[i]
                if bias is not None and len(bias[b]):
                    scores[i, bias[b].to(scores.device)] += gen.copy_bias
                over = budgets is not None and len(row) >= budgets[b]
                if over or loop_length(row, gen.max_repeats, gen.max_loop_period):
                    scores[i] = torch.finfo(scores.dtype).min
                    scores[i, eos_id] = 0.0
            return scores

    return Guard()


def greedy_dropping_finished(lm: Any, x: dict[str, Any], gen: GenerationConfig, end_id: int, guard: Any = None,
                             streamer: TextDeltas | None = None) -> list[list[int]]:
    """Greedy decoding, KV cache reused, that drops each row from the batch (and from the cache) once it has
    ended, so the rows still decoding no longer pay for those done: a batch costs about what its live rows
    cost, where ``lm.generate`` runs every row until the longest ends. The tokens equal ``lm.generate``'s
    greedy tokens (tested); positions follow the left padding as transformers computes them. Only for LMs
    whose inputs are the prompt embeddings alone (the prefix family): hooks that hold per-row state
    would have to drop rows too. Returns each row's new tokens, the end token included where it came."""
    import inspect

    import torch

    # transformers 5.2x names the KV cache `cache` (`past_key_values` before, deprecated since)
    kv = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    mask = x["mask"].long()
    b = mask.shape[0]
    live = list(range(b))
    out: list[list[int]] = [[] for _ in range(b)]
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    step = lm(inputs_embeds=x["embeds"], attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache = getattr(step, kv)
    generated = torch.empty(b, 0, dtype=torch.long, device=mask.device)
    if streamer is not None:
        streamer.put(torch.empty(b, 0, dtype=torch.long))  # starts its rows, as lm.generate does
    for t in range(gen.max_new_tokens):
        scores = step.logits[:, -1, :].float()
        if guard is not None:
            guard.live = live
            scores = guard(generated, scores)
        nxt = scores.argmax(-1)  # live rows
        tokens = nxt.tolist()
        for r, tok in zip(live, tokens):
            out[r].append(tok)
        if streamer is not None:
            streamer.put_rows(live, tokens)
        keep = [i for i, tok in enumerate(tokens) if tok != end_id]
        if not keep or t + 1 == gen.max_new_tokens:
            break
        generated = torch.cat([generated, nxt[:, None]], dim=1)
        if len(keep) < len(live):
            index = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(index)
            mask, generated, nxt = mask[index], generated[index], nxt[index]
            live = [live[i] for i in keep]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        step = lm(input_ids=nxt[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                  use_cache=True, **{kv: cache})
        cache = getattr(step, kv)
    return out


def _rows(batch: dict[str, Any], idx: list[int]) -> dict[str, Any]:
    """The rows ``idx`` of a batch (tensors and lists indexed alike; other values kept)."""
    import torch

    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v[idx]
        elif isinstance(v, (list, tuple)):
            out[k] = [v[i] for i in idx]
        else:
            out[k] = v
    return out


def _rescored(model: Any, batch: dict[str, Any], gen: GenerationConfig,
              on_delta: Callable[[int, str], None] | None) -> list[str]:
    """``rescore_beam``: rows asking the model's own (transcription) prompt get the best of the CTC head's N-best
    by the LM's prior; rows with another instruction are answered by the LM as usual."""
    import torch

    if getattr(model, gen.rescore_head, None) is None or not hasattr(model, "rescore"):  # model.ctc or model.phones
        what = ("a phone head (S1 with phone_weight > 0)" if gen.rescore_head == "phones"
                else "a CTC head (S1 with ctc_weight > 0)")
        raise ConfigError(f"rescore_beam with rescore_head={gen.rescore_head} needs a model with {what}; set rescore_beam=0")
    n = len(batch["lengths"]) if batch.get("lengths") is not None else len(batch["wavs"])
    own_prompt = getattr(model.config, "prompt", None)
    prompts = batch.get("prompts") or [None] * n
    own = [i for i, p in enumerate(prompts) if p in (None, "", own_prompt)]
    others = sorted(set(range(n)) - set(own))
    texts: list[str] = [""] * n
    if own:
        with torch.no_grad():
            for i, text in zip(own, model.rescore(_rows(batch, own) if others else batch, gen)):
                texts[i] = text
                if on_delta is not None:
                    on_delta(i, text)
    if others:
        delta = None if on_delta is None else (lambda row, text: on_delta(others[row], text))
        for i, text in zip(others, generate(model, _rows(batch, others), gen.replace(rescore_beam=0), delta)):
            texts[i] = text
    return texts


def generate(model: Any, batch: dict[str, Any], gen: GenerationConfig | None = None,
             on_delta: Callable[[int, str], None] | None = None) -> list[str]:
    """One answer per item of ``batch`` (``states``+``lengths`` or ``wavs``, optional ``prompts``, optional
    ``max_new``: each row's own token limit, at most ``gen.max_new_tokens``: a row stops there as it would alone);
    ``on_delta(row, text)``: stream each row's text as it is decoded (see the module docstring)."""
    import torch

    gen = gen or GenerationConfig()
    if gen.rescore_beam:
        return _rescored(model, batch, gen, on_delta)
    hf_cfg = hf_generation_config(gen, model.end_token_id, model.pad_token_id)
    streamer = None
    if on_delta is not None:
        streamer = TextDeltas(model.tokenizer, gen, model.end_token_id, on_delta)
    live = {"streamer": streamer} if streamer is not None and gen.strategy != "beam" else {}  # HF streams no beams
    with torch.no_grad():
        x = model.build_inputs(batch, answers=False, left_pad=True)
        context = model.audio_context(x["audio"], x["audio_lengths"])
        with context:
            budgets = ([math.ceil(gen.max_new_per_audio * int(n)) + 8 for n in x["lm_audio_lengths"]]
                       if gen.max_new_per_audio else None)
            caps = batch.get("max_new")  # a row's own max_new_tokens, where rows of one batch ask for different ones
            if caps is not None and any(int(c) < gen.max_new_tokens for c in caps):
                budgets = [min(b, int(c)) for b, c in zip(budgets or [gen.max_new_tokens] * len(caps), caps)]
            copy = x["lm_audio_ids"] if gen.copy_bias and x.get("lm_audio_ids") is not None else None
            guard = [_guard(gen, model.end_token_id, budgets, copy)] if gen.max_repeats or budgets or copy else []
            if gen.strategy == "greedy" and gen.use_cache and isinstance(context, contextlib.nullcontext) and len(x["mask"]) > 1:
                rows = greedy_dropping_finished(model.lm, x, gen, model.end_token_id, guard[0] if guard else None,
                                                streamer)
            else:
                rows = model.lm.generate(inputs_embeds=x["embeds"], attention_mask=x["mask"], generation_config=hf_cfg,
                                         logits_processor=guard, **live).tolist()  # B, new
    texts = []
    for row in rows:
        if model.end_token_id in row:
            row = row[: row.index(model.end_token_id)]
        row = row[: len(row) - loop_length(row, gen.max_repeats, gen.max_loop_period)]
        texts.append(model.tokenizer.decode(row, skip_special_tokens=True).strip())
    if streamer is not None:
        if not streamer.sent:
            streamer.sent = [""] * len(texts)
        for b, text in enumerate(texts):
            streamer.send(b, text)
    return texts


__all__ = ["STRATEGIES", "GenerationConfig", "TextDeltas", "generate", "hf_generation_config", "loop_length",
           "stable_length"]
