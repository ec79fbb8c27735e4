"""Text encoders behind one interface: strings in, ``(B, T, D)`` token states and ``(B,)`` lengths out.

:func:`build_text_encoder` takes

* ``all-minilm-l6-v2`` (the default; offline through :func:`auralm.hub.load_text_encoder`);
* a CLIP text tower by Hugging Face id (``openai/clip-vit-large-patch14``: Stable Diffusion 1.x's;
  ``stabilityai/stable-diffusion-2-1`` reads its ``text_encoder``/``tokenizer`` subfolders: SD 2.x's), from the
  local Hugging Face cache only (never downloaded here), or a local folder holding such a model;
* a transformers ``BertConfig`` or ``CLIPTextConfig``: random weights of that shape and a small word-level
  tokenizer built here (:func:`word_tokenizer`), for tests and tiny runs.

Every encoder is frozen. ``encode(texts)`` gives the last hidden states (for CLIP: after the final layer
norm, what Stable Diffusion's UNet cross-attends to) padded to the longest item, or to ``max_length`` tokens
with ``pad_to_max=True`` (a fixed token count, what an aligner reproduces: by default CLIP's whole position
table, 77, as Stable Diffusion pads; 32 for BERT-like encoders); ``lengths`` count the real tokens
(special tokens included), so ``states[b, lengths[b]:]`` is padding (left as the model computes it). ``embed(texts)`` is the sentence vector:
the mean of the real token states, L2-normalised (sentence-transformers' pooling for MiniLM).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auralm.components.encoders.audio import weights_revision
from auralm.components.encoders.base import FrozenEncoder
from auralm.core.errors import ConfigError, ModelNotFoundError

DEFAULT_TEXT_ENCODER = "all-minilm-l6-v2"
# short name -> (family, loader argument)
TEXT_ENCODERS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("hub", "all-minilm-l6-v2"),  # offline: auralm.hub (PyPI package)
    "clip-vit-base-patch32": ("clip", "openai/clip-vit-base-patch32"),
    "clip-vit-large-patch14": ("clip", "openai/clip-vit-large-patch14"),  # Stable Diffusion 1.x
    "stable-diffusion-2-1": ("clip", "stabilityai/stable-diffusion-2-1"),  # OpenCLIP ViT-H text tower
}
# words of the drawn scenes (auralm synth scenes) and a little more: the vocabulary of word_tokenizer()
_WORDS = (
    "a an the of and to in on at is are there just one two three four five six seven eight nine zero shape shapes "
    "circle circles square squares triangle triangles star stars diamond diamonds red green blue yellow purple "
    "orange pink brown black white small large big left right top bottom middle centre center upper lower corner "
    "picture drawing image shows coloured colored light background what do you see describe this it"
).split()


def text_encoder_names() -> list[str]:
    """Names :func:`build_text_encoder` knows (Hugging Face ids of CLIP models and local folders work too)."""
    return sorted(TEXT_ENCODERS)


def word_tokenizer(extra_words: Sequence[str] = ()) -> Any:
    """A small BERT-style word-level tokenizer (``[PAD] [UNK] [CLS] [SEP]`` + the scene words), built offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys([*specials, *_WORDS, *extra_words, ".", ",", ":", "?"]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=512)  # fmt: skip


class TextEncoder(FrozenEncoder):
    """A frozen transformers text model + its tokenizer. Attributes: ``name``, ``revision``, ``dim`` (D),
    ``max_length`` (the most tokens one text gives, and the fixed count of ``pad_to_max``), ``kind``
    (``bert`` or ``clip``)."""

    def __init__(self, model: nn.Module, tokenizer: Any, name: str, revision: str, max_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.revision = revision
        self.dim = int(model.config.hidden_size)
        limit = int(getattr(model.config, "max_position_embeddings", max_length))
        if not 2 <= max_length <= limit:
            raise ConfigError(f"{name}: max_length must be in 2..{limit} (its position table), got {max_length}")
        self.max_length = int(max_length)
        self.kind = "clip" if model.config.model_type.startswith("clip") else "bert"
        self.set_trainable(False)

    def tokenize(self, texts: Sequence[str], pad_to_max: bool = False) -> dict[str, torch.Tensor]:
        """Token ids and attention mask ``(B, T)``; texts longer than ``max_length`` tokens raise (never cut silently)."""
        texts = _check_texts(self.name, texts)
        full = self.tokenizer(texts, padding=False, truncation=False)["input_ids"]
        long = [i for i, ids in enumerate(full) if len(ids) > self.max_length]
        if long:
            n = max(len(full[i]) for i in long)
            raise ConfigError(f"{self.name}: text(s) {long} have up to {n} tokens, more than max_length="
                              f"{self.max_length} (first: {texts[long[0]][:60]!r}); shorten them or raise max_length")
        if pad_to_max:
            return self.tokenizer(texts, padding="max_length", max_length=self.max_length, return_tensors="pt")
        return self.tokenizer(texts, padding=True, return_tensors="pt")

    def encode(self, texts: Sequence[str], pad_to_max: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``states (B, T, D)`` and ``lengths (B,)`` (long, on CPU).

        States at padding positions are what the model computes there (for CLIP, what Stable Diffusion
        consumes; they depend on the text before them); ``lengths`` say where each text ends.
        """
        batch = self.tokenize(texts, pad_to_max)
        mask = batch["attention_mask"]
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            out = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask.to(self.device))
        return out.last_hidden_state, mask.sum(1).long()  # B, T, D

    forward = encode

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence vectors ``(B, D)``: the mean of the real token states, L2-normalised."""
        states, lengths = self.encode(texts)
        return pool(states, lengths)


def pool(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Masked mean over the first ``lengths[b]`` tokens, L2-normalised: ``(B, T, D) -> (B, D)``."""
    mask = (torch.arange(states.shape[1], device=states.device)[None] < lengths.to(states.device)[:, None]).to(states)
    mean = (states * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    return nn.functional.normalize(mean.float(), dim=-1)


def _check_texts(name: str, texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ConfigError(f"{name}: no texts to encode")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ConfigError(f"{name}: text(s) {bad} are empty or not strings")
    return texts


def build_text_encoder(name_or_config: Any = DEFAULT_TEXT_ENCODER, *, max_length: int | None = None,
                       tokenizer: Any = None, device: str | None = None, seed: int = 0) -> TextEncoder:  # fmt: skip
    """A frozen :class:`TextEncoder` from a name, a Hugging Face CLIP id, a local folder or a transformers config.

    ``max_length``: the fixed token count of ``encode(..., pad_to_max=True)`` (default: 77 for CLIP, 32
    otherwise). ``tokenizer`` overrides the word-level one given to config-built encoders; ``seed`` fixes their
    random weights.
    """
    if isinstance(name_or_config, str):
        enc = _from_name(name_or_config, max_length)
    else:
        enc = _from_config(name_or_config, max_length, tokenizer, seed)
    if device is not None:
        enc = enc.to(device)
    return enc


def _from_name(name: str, max_length: int | None) -> TextEncoder:
    family, arg = TEXT_ENCODERS.get(name, ("", name))
    if family == "hub":
        from auralm.hub import load_text_encoder, revision

        model, tok = load_text_encoder(arg)
        return TextEncoder(model, tok, name, revision(arg), max_length or 32)
    folder = Path(arg).expanduser()
    if not folder.is_dir():
        if "clip" not in arg.lower() and "stable-diffusion" not in arg.lower():
            raise ModelNotFoundError(f"unknown text encoder {name!r}; known: {', '.join(text_encoder_names())} (also "
                                     "Hugging Face ids of CLIP models or Stable Diffusion repos, or a local folder)")  # fmt: skip
        folder = _hf_snapshot(name, arg)
    return _load_folder(name, folder, max_length)


def _hf_snapshot(name: str, repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        raise ModelNotFoundError(f"{name}: {repo_id} is not in the local Hugging Face cache; fetch it where there is "
                                 f"internet (`huggingface-cli download {repo_id}`) and copy the cache here") from None  # fmt: skip


def _load_folder(name: str, folder: Path, max_length: int | None) -> TextEncoder:
    """A CLIP (or BERT-like) text model in ``folder`` or in its ``text_encoder/`` + ``tokenizer/`` subfolders."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel

    model_dir = folder / "text_encoder" if (folder / "text_encoder").is_dir() else folder
    tok_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder
    cfg = AutoConfig.from_pretrained(model_dir)
    if cfg.model_type == "clip":  # a whole CLIP: its text tower
        model = CLIPTextModel.from_pretrained(model_dir)
    elif cfg.model_type == "clip_text_model":
        model = CLIPTextModel.from_pretrained(model_dir)
    else:
        model = AutoModel.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    limit = getattr(model.config, "max_position_embeddings", 77)
    return TextEncoder(model.eval(), tok, name, folder.name, max_length or (limit if "clip" in cfg.model_type else 32))


def _from_config(cfg: Any, max_length: int | None, tokenizer: Any, seed: int) -> TextEncoder:
    from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

    if not isinstance(cfg, (BertConfig, CLIPTextConfig)):
        raise ConfigError(f"build_text_encoder takes a name, a folder, a BertConfig or a CLIPTextConfig, "
                          f"got {type(cfg).__name__}")  # fmt: skip
    tok = tokenizer or word_tokenizer()
    if len(tok) > cfg.vocab_size:
        raise ConfigError(f"the tokenizer has {len(tok)} tokens but the config's vocab_size is {cfg.vocab_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(cfg, CLIPTextConfig):
            cfg = copy.deepcopy(cfg)
            cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = tok.pad_token_id, tok.cls_token_id, tok.sep_token_id
            model = CLIPTextModel(cfg).eval()
        else:
            model = BertModel(cfg, add_pooling_layer=False).eval()
    kind = "clip" if isinstance(cfg, CLIPTextConfig) else "bert"
    return TextEncoder(model, tok, f"{kind}-random", weights_revision(model),
                       max_length or int(cfg.max_position_embeddings if kind == "clip" else min(32, cfg.max_position_embeddings)))
