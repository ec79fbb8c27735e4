"""The model hub: short names -> transformers models, offline when the weights are installed.

Public API::

    resolve(name, *, convert=True) -> Resolved    # where a name resolves (see docs/models.md)
    revision(name) -> str                         # a stable cache key for the weights
    load_whisper(name="whisper-tiny.en", dtype=None) -> (WhisperForConditionalGeneration, WhisperProcessor)
    load_causal_lm(name="smollm2-135m-instruct", dtype=torch.float32) -> (model, tokenizer)
    load_tokenizer(name="gpt2") -> tokenizer
    load_text_encoder(name="all-minilm-l6-v2", dtype=None) -> (AutoModel, tokenizer)
    encode_sentences(model, tokenizer, sentences) -> Tensor[N, H]   # mean pooling + L2 norm
    cli(argv) -> int                              # `auralm models`

Resolution and listing import no torch; the loaders import it when first used.
"""

from __future__ import annotations

from typing import Any

from auralm.hub.cli import cli
from auralm.hub.registry import KNOWN, ModelSpec, Resolved, cache_root, resolve, revision

_LOADERS = ("load_whisper", "load_causal_lm", "load_tokenizer", "load_text_encoder", "encode_sentences")

__all__ = ["KNOWN", "ModelSpec", "Resolved", "cache_root", "cli", "resolve", "revision", *_LOADERS]


def __getattr__(name: str) -> Any:
    if name in _LOADERS:
        from auralm.hub import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'auralm.hub' has no attribute {name!r}")
