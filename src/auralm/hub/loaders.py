"""Loaders: a name in, ready transformers objects out (resolving and converting on the way).

Every loader calls :func:`auralm.hub.registry.resolve`, which converts an offline package once
into the cache; later calls load the converted folder directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from auralm.hub.gguf_llm import fix_chat_tokens
from auralm.hub.registry import resolve


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
        return value
    return dtype


def load_whisper(name: str = "whisper-tiny.en", dtype: torch.dtype | str | None = None):
    """(``WhisperForConditionalGeneration`` in eval mode, ``WhisperProcessor``) for ``name``.

    The processor holds the feature extractor (16 kHz audio -> ``[B, n_mels, 3000]`` log-mels) and
    the tokenizer; ``model.generate(input_features)`` transcribes (English, no timestamps for
    ``.en``). ``model.model.encoder`` is an ordinary trainable module. Default dtype float32.
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    res = resolve(name)
    model = WhisperForConditionalGeneration.from_pretrained(res.location, dtype=_dtype(dtype))
    processor = WhisperProcessor.from_pretrained(res.location)
    return model.eval(), processor


def load_causal_lm(name: str = "smollm2-135m-instruct", dtype: torch.dtype | str | None = torch.float32):
    """(causal LM in eval mode, tokenizer) for ``name``.

    A ChatML tokenizer gets its chat template and ``<|im_end|>`` as eos, mirrored in the model's
    generation config, so ``generate`` stops at the end of the assistant turn.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = resolve(name)
    tokenizer = AutoTokenizer.from_pretrained(res.location)
    model = AutoModelForCausalLM.from_pretrained(res.location, dtype=_dtype(dtype))
    fix_chat_tokens(tokenizer, model)
    return model.eval(), tokenizer


def load_tokenizer(name: str = "gpt2"):
    """The tokenizer of ``name`` (``"gpt2"``: GPT-2 BPE with ``<|endoftext|>`` = 50256)."""
    from transformers import AutoTokenizer

    res = resolve(name)
    tokenizer = AutoTokenizer.from_pretrained(res.location)
    if res.kind == "causal-lm":
        fix_chat_tokens(tokenizer)
    return tokenizer


def load_text_encoder(name: str = "all-minilm-l6-v2", dtype: torch.dtype | str | None = None):
    """(sentence encoder ``AutoModel`` in eval mode, tokenizer); embed with :func:`encode_sentences`."""
    from transformers import AutoModel, AutoTokenizer

    res = resolve(name)
    tokenizer = AutoTokenizer.from_pretrained(res.location)
    model = AutoModel.from_pretrained(res.location, dtype=_dtype(dtype))
    return model.eval(), tokenizer


@torch.no_grad()
def encode_sentences(
    model, tokenizer, sentences: Sequence[str], batch_size: int = 32, max_length: int = 256
) -> torch.Tensor:
    """Sentence embeddings ``[N, hidden]``: mean of token states over the attention mask, L2-normalised."""
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(
            list(sentences[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        states = model(**batch).last_hidden_state  # [B, T, H]
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)  # [B, T, 1]
        mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, H]
        chunks.append(torch.nn.functional.normalize(mean.float(), p=2, dim=-1))
    if not chunks:
        return torch.zeros(0, model.config.hidden_size)
    return torch.cat(chunks)
