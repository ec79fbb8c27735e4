"""A GGUF causal LM (e.g. SmolLM2 Q4_1) -> a plain transformers folder with float32 safetensors.

transformers reads GGUF itself (``from_pretrained(folder, gguf_file=...)``): it dequantises every
tensor (Q4_1 blocks of 32 weights: ``w = d * q + m``), undoes llama.cpp's q/k row permutation and
builds the tokenizer and chat template from the GGUF metadata. Such a model refuses
``save_pretrained``, so the converter writes the state dict with safetensors itself, drops the
``quantization_config`` from the config, stores a tied output head once, and makes the chat end
token (``<|im_end|>`` for ChatML templates) the tokenizer's and generation config's eos.
Float32 keeps the dequantised values exact (``d`` and ``m`` are float16, their products are not).
"""

from __future__ import annotations

from pathlib import Path

import torch

CHATML_END = "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_end_token(tokenizer) -> str | None:
    """The token that closes a chat turn in ``tokenizer``'s template (``<|im_end|>`` for ChatML)."""
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):  # named templates
        template = template.get("default", "") or next(iter(template.values()), "")
    if CHATML_END in template and tokenizer.convert_tokens_to_ids(CHATML_END) != tokenizer.unk_token_id:
        return CHATML_END
    return None


def fix_chat_tokens(tokenizer, model=None) -> None:
    """Give a ChatML tokenizer its template and make ``<|im_end|>`` the eos (and pad when unset).

    ``model`` (optional) gets the same eos / pad ids in its generation config, so ``generate``
    stops at the end of the assistant's turn.
    """
    vocab = tokenizer.get_vocab()
    if not tokenizer.chat_template and CHATML_END in vocab and "<|im_start|>" in vocab:
        tokenizer.chat_template = CHATML_TEMPLATE
    end = chat_end_token(tokenizer)
    if end is None:
        return
    tokenizer.eos_token = end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = end
    if model is not None:
        gen = model.generation_config
        gen.eos_token_id = tokenizer.convert_tokens_to_ids(end)
        if gen.pad_token_id is None:
            gen.pad_token_id = tokenizer.pad_token_id


def load_gguf(path: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) straight from a GGUF file via transformers (slow: dequantises on load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    return model.eval(), tokenizer


def plain_state_dict(model) -> dict[str, torch.Tensor]:
    """The weights to save: contiguous copies, a tied ``lm_head`` left out (it is rebuilt on load)."""
    state = model.state_dict()
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head is not None and head.weight.data_ptr() == embed.weight.data_ptr()
    if tied != bool(getattr(model.config, "tie_word_embeddings", False)):
        raise ValueError(f"tie_word_embeddings={model.config.tie_word_embeddings} but weights tied={tied}")
    out = {}
    for key, value in state.items():
        if tied and value.data_ptr() == embed.weight.data_ptr() and key != _param_name(model, embed.weight):
            continue
        out[key] = value.detach().contiguous().clone()
    return out


def _param_name(model, param) -> str:
    return next(name for name, p in model.named_parameters(remove_duplicate=False) if p is param)


def convert_gguf_causal_lm(src: str | Path, dst: str | Path) -> None:
    """Convert the GGUF file ``src`` into a transformers folder ``dst`` (config, safetensors, tokenizer)."""
    from safetensors.torch import save_file

    dst = Path(dst)
    model, tokenizer = load_gguf(src, dtype=torch.float32)
    fix_chat_tokens(tokenizer, model)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(plain_state_dict(model), str(dst / "model.safetensors"), metadata={"format": "pt"})
    data = model.config.to_dict()
    data.pop("quantization_config", None)
    data["dtype"] = "float32"
    config = type(model.config).from_dict(data)
    config.save_pretrained(dst)
    model.generation_config.save_pretrained(dst)
    tokenizer.save_pretrained(str(dst))
