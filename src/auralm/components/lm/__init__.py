"""Causal LMs for S1: load one by name, mark audio placeholders, and build training examples.

Public API::

    AUDIO_TOKEN = "<|audio|>"
    load_lm(name, dtype=torch.float32, seed=0) -> (model, tokenizer)   # hub name or "tiny-gpt2"/"tiny-llama"
    lm_revision(name, seed=0) -> str                                    # hub revision, or a hash for tiny LMs
    add_audio_token(tokenizer) -> int                                   # idempotent; the placeholder's id
    end_token_id(tokenizer) -> int                                      # <|im_end|> with a ChatML template, else eos
    build_example(tokenizer, prompt, n_audio, answer=None, system=None) -> (input_ids, labels)
    text_ids(tokenizer, text) -> list[int]                              # mid-sentence ids (CTC targets)
    decoder_layers(model) -> nn.ModuleList                              # the LM's decoder blocks, in order
    pad_ids(seqs, value, left) -> (B, L) long tensor                    # right (training) or left (generation) padding
    sequence_logprobs(lm, seqs, start_id) -> list[float]                # log p of each id sequence after start_id
    LoraConfig, inject_lora(lm, lora)                                   # peft LoRA adapters, in place (lora.py)
    adapters_off(lm)                                                    # a block where the LM runs as its frozen base

The audio placeholder is added to the *tokenizer* as a special token but the LM's embedding matrix is
**not** resized: its id may be >= the LM's vocabulary. :class:`auralm.recipes.hear.model.AudioLM` replaces placeholder
ids before the embedding lookup and overwrites those positions with projected audio frames.

Tiny LMs are built from code with fixed seeds (no download): ``tiny-gpt2`` (GPT-2, 2 layers, width 64,
the real GPT-2 BPE tokenizer, plain prompts) and ``tiny-llama`` (Llama, 2 layers, width 64, the GPT-2 BPE
plus ``<|im_start|>``/``<|im_end|>`` and a ChatML chat template), so both prompt formats are tested.
They are initialised with std 0.2 (not transformers' 0.02): with 0.02 and tied embeddings a frozen
random LM's logits differ by at most ~2, so no connector could ever make it fit an answer.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from typing import Any

import torch
from torch import nn

from auralm.components.lm.lora import (
    LoraConfig,
    adapters_off,
    check_quantize,
    inject_lora,
    merge_lora,
    quantize_lm,
)
from auralm.core.errors import ConfigError, ModelNotFoundError

__all__ = [
    "AUDIO_TOKEN",
    "TINY_LMS",
    "LoraConfig",
    "PlaceholderError",
    "adapters_off",
    "add_audio_token",
    "check_quantize",
    "build_example",
    "decoder_layers",
    "end_token_id",
    "inject_lora",
    "lm_revision",
    "load_lm",
    "merge_lora",
    "pad_ids",
    "quantize_lm",
    "sequence_logprobs",
    "text_ids",
]

AUDIO_TOKEN = "<|audio|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class PlaceholderError(ConfigError, ValueError):
    """A prompt whose audio placeholders do not match the audio given with it."""


# -- tiny LMs built from code -------------------------------------------------------------------------
TINY_LMS: dict[str, dict[str, Any]] = {
    "tiny-gpt2": {"arch": "gpt2", "layers": 2, "width": 64, "heads": 4, "positions": 1024, "chat": False,
                  "init": 0.2},
    "tiny-llama": {"arch": "llama", "layers": 2, "width": 64, "heads": 4, "kv_heads": 2, "ffn": 128,
                   "positions": 1024, "chat": True, "init": 0.2},
}


@functools.lru_cache(maxsize=1)
def _gpt2_tokenizer() -> Any:
    from auralm.hub import load_tokenizer

    return load_tokenizer("gpt2")


def _tiny_tokenizer(chat: bool) -> Any:
    tok = copy.deepcopy(_gpt2_tokenizer())
    if chat:
        tok.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
        tok.chat_template = CHATML_TEMPLATE
        tok.eos_token = "<|im_end|>"
    tok.pad_token = tok.eos_token
    return tok


def _tiny_lm(name: str, seed: int) -> tuple[nn.Module, Any]:
    spec = TINY_LMS[name]
    tok = _tiny_tokenizer(spec["chat"])
    vocab = len(tok)  # before the audio placeholder is added: its id falls outside the LM's vocabulary
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    if spec["arch"] == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=vocab, n_positions=spec["positions"], n_embd=spec["width"], n_layer=spec["layers"],
            n_head=spec["heads"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, initializer_range=spec["init"],
        )
        cls: Any = GPT2LMHeadModel
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=vocab, hidden_size=spec["width"], intermediate_size=spec["ffn"],
            num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"],
            num_key_value_heads=spec["kv_heads"], max_position_embeddings=spec["positions"],
            tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
            initializer_range=spec["init"],
        )
        cls = LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    return model.eval(), tok


def lm_revision(name: str, seed: int = 0) -> str:
    """The revision of an LM: the hub's for real models; for tiny LMs a hash of their config and seed."""
    if name in TINY_LMS:
        blob = json.dumps({"name": name, "seed": seed, **TINY_LMS[name]}, sort_keys=True).encode()
        return "tiny-" + hashlib.sha256(blob).hexdigest()[:16]
    from auralm.hub import revision

    return revision(name)


def load_lm(name: str, dtype: torch.dtype | str | None = torch.float32, seed: int = 0) -> tuple[nn.Module, Any]:
    """``(causal LM in eval mode, tokenizer with the audio placeholder)`` for a hub name or a tiny LM.

    ``seed`` only affects the tiny random LMs. The model gets ``auralm_name`` and ``auralm_revision``
    attributes (what a checkpoint records as the frozen LM it was trained on).
    """
    if name in TINY_LMS:
        model, tok = _tiny_lm(name, seed)
        if dtype is not None:
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    else:
        from auralm.hub import load_causal_lm

        try:
            model, tok = load_causal_lm(name, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot load causal LM {name!r}: {exc} (tiny LMs: {', '.join(TINY_LMS)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    add_audio_token(tok)
    model.auralm_name = name
    model.auralm_revision = lm_revision(name, seed)
    return model, tok


@dataclasses.dataclass
class FrozenLM:
    """A causal LM as a recipe model holds it: frozen, in eval mode, with the facts the model needs."""

    lm: nn.Module
    tokenizer: Any
    revision: str  # what a checkpoint records as the frozen LM it was trained on
    end_token_id: int  # ends an answer (<|im_end|> under ChatML, else eos)
    pad_token_id: int
    vocab_size: int  # V: rows of the input embeddings
    dim: int  # H: the hidden width


def frozen_lm(name: str, lm: nn.Module | None = None, tokenizer: Any = None, owner: str = "the model") -> FrozenLM:
    """Load ``name`` (:func:`load_lm`), or take the given ``lm`` and its ``tokenizer``; freeze it.

    The revision is the hub's (``auralm_revision``) or, for a module built elsewhere, a hash of its weights.
    """
    if lm is None:
        lm, tokenizer = load_lm(name)
    elif tokenizer is None:
        raise ConfigError(f"{owner}: an lm given without its tokenizer")
    from auralm.components.encoders import weights_revision

    revision = getattr(lm, "auralm_revision", None) or weights_revision(lm)
    lm.eval().requires_grad_(False)
    end = end_token_id(tokenizer)
    vocab, dim = lm.get_input_embeddings().weight.shape
    return FrozenLM(lm, tokenizer, revision, end, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end,
                    int(vocab), int(dim))  # fmt: skip


# -- tokens and examples --------------------------------------------------------------------------------
def add_audio_token(tokenizer: Any) -> int:
    """Add :data:`AUDIO_TOKEN` as a special token (once) and return its id. The LM is not resized."""
    added = tokenizer.get_added_vocab()  # cheap, unlike get_vocab()
    if AUDIO_TOKEN not in added:
        tokenizer.add_tokens([AUDIO_TOKEN], special_tokens=True)
        added = tokenizer.get_added_vocab()
    return int(added[AUDIO_TOKEN])


def _is_chat(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def end_token_id(tokenizer: Any) -> int:
    """The token that ends an answer: ``<|im_end|>`` for a ChatML template, otherwise eos."""
    if _is_chat(tokenizer):
        im_end = tokenizer.get_added_vocab().get("<|im_end|>")
        if im_end is None and tokenizer.convert_tokens_to_ids("<|im_end|>") not in (None, tokenizer.unk_token_id):
            im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if im_end is not None:
            return int(im_end)
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no end-of-sequence token; cannot mark where an answer ends")
    return int(tokenizer.eos_token_id)


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as the LM sees it mid-sentence (a leading space, no special tokens)."""
    return list(tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"])


def build_example(
    tokenizer: Any, prompt: str, n_audio: int, answer: str | None = None, system: str | None = None
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one example: the prompt with ``n_audio`` audio placeholders, then the answer.

    The prompt may hold one :data:`AUDIO_TOKEN` where the clip goes; without one the clip goes first
    (``"<|audio|>\\n" + prompt``). That single placeholder becomes ``n_audio`` placeholder ids, one per
    projected audio frame. ``n_audio=0`` (cross-attention family) puts no placeholder in the text.
    With a chat template the prompt is the user turn and the answer the assistant turn; otherwise the
    text is ``prompt + "\\n" + answer``. Labels are -100 everywhere except the answer tokens and the
    end token (:func:`end_token_id`). ``answer=None`` gives the generation prompt (labels all -100).
    ``system`` is the chat's system message (``None``: the template's own default, e.g. SmolLM2's
    20-token persona; ``""`` an empty one).
    """
    count = prompt.count(AUDIO_TOKEN)
    if count > 1 or (count and n_audio == 0):
        raise PlaceholderError(
            f"the prompt has {count} audio placeholder(s) {AUDIO_TOKEN} but "
            f"{'1 audio clip goes' if n_audio else 'no audio is spliced'} into it: {prompt!r}"
        )
    if n_audio > 0 and count == 0:
        prompt = f"{AUDIO_TOKEN}\n{prompt}"
    if _is_chat(tokenizer):
        turns = ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    else:
        text = prompt + "\n"
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    audio_id = add_audio_token(tokenizer)
    if n_audio > 0:
        at = ids.index(audio_id)
        ids = ids[:at] + [audio_id] * n_audio + ids[at + 1 :]
    labels = [-100] * len(ids)
    if answer is not None:
        answer_ids = list(tokenizer(answer.strip(), add_special_tokens=False)["input_ids"]) + [end_token_id(tokenizer)]
        ids += answer_ids
        labels += answer_ids
    return ids, labels


@torch.no_grad()
def sequence_logprobs(lm: nn.Module, seqs: list[list[int]], start_id: int, batch_size: int = 16) -> list[float]:
    """The LM's log-probability of each token sequence, read after ``start_id`` (sum over its tokens; an empty
    sequence scores 0)."""
    out: list[float] = []
    device = next(lm.parameters()).device
    for i in range(0, len(seqs), batch_size):
        chunk = [[start_id] + list(s) for s in seqs[i : i + batch_size]]
        ids = pad_ids(chunk, start_id, left=False).to(device)  # b, L
        mask = pad_ids([[1] * len(s) for s in chunk], 0, left=False).to(device)  # b, L
        logp = lm(input_ids=ids, attention_mask=mask, use_cache=False).logits.float().log_softmax(-1)  # b, L, V
        got = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]  # b, L-1
        out += got.sum(1).tolist()
    return out


def pad_ids(seqs: list[list[int]], value: int, left: bool) -> torch.Tensor:
    """Pad lists of ids to one ``(B, L)`` long tensor, on the left or the right."""
    L = max(len(s) for s in seqs)
    rows = [[value] * (L - len(s)) + s if left else s + [value] * (L - len(s)) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM (GPT-2 ``transformer.h``, Llama ``model.layers`` ...)."""
    candidates: list[Any] = []
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            dec = get_decoder()
            candidates += [getattr(dec, "layers", None), getattr(dec, "h", None)]
        except (AttributeError, NotImplementedError, TypeError):
            pass
    for path in ("transformer.h", "model.layers", "model.decoder.layers", "gpt_neox.layers", "transformer.blocks"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        candidates.append(obj)
    for obj in candidates:
        if isinstance(obj, nn.ModuleList) and len(obj):
            return obj
    raise ConfigError(f"cannot find the decoder layers of {type(model).__name__} (looked for transformer.h, model.layers)")
