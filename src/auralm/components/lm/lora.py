"""LoRA on a frozen causal LM (peft adapters injected in place: the LM's class and ``generate`` stay).

``quantize: nf4`` is QLoRA: the frozen base's linear layers become bitsandbytes 4-bit NF4 layers (CUDA
only; :func:`check_quantize` says so clearly elsewhere). :func:`merge_lora` folds trained adapters back
into plain linear layers (``auralm chat export`` writes the merged LM as an ordinary HF folder).
:func:`adapters_off` runs the base LM for a while (the S1 recipe scores transcripts with the LM's own prior).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from torch import nn

from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError

QUANTIZE = ("none", "nf4")


@dataclasses.dataclass
class LoraConfig(Config):
    """LoRA on the LM; ``r = 0`` turns it off."""

    r: int = help_field(0, "LoRA rank (0 = no LoRA)")
    alpha: float = help_field(16.0, "LoRA scaling numerator (scale = alpha / r)")
    dropout: float = help_field(0.05, "dropout on the LoRA input")
    targets: Any = help_field("auto", "module names to adapt, e.g. [q_proj, v_proj]; auto = q_proj+v_proj or GPT-2's c_attn")
    quantize: str = help_field("none", "none, or nf4: QLoRA, the frozen base in 4-bit NF4 through bitsandbytes (CUDA only)")

    def validate(self) -> None:
        if self.r < 0 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora: need r >= 0, alpha > 0, 0 <= dropout < 1; got {self.r}, {self.alpha}, {self.dropout}")
        if self.targets != "auto" and (not isinstance(self.targets, list) or not all(isinstance(t, str) for t in self.targets)):
            raise ConfigError(f"lora.targets must be 'auto' or a list of module names, got {self.targets!r}")
        if self.quantize not in QUANTIZE:
            raise ConfigError(f"lora.quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}")


def inject_lora(lm: nn.Module, lora: LoraConfig) -> None:
    """Add LoRA adapters (``lora.r > 0``) to ``lm`` in place; afterwards only the ``lora_`` weights train."""
    if lora.r <= 0:
        raise ConfigError(f"LoRA needs lora.r > 0, got {lora.r}")
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    names = {name.rsplit(".", 1)[-1] for name, _ in lm.named_modules()}
    targets = lora.targets
    if targets == "auto":
        targets = ["q_proj", "v_proj"] if {"q_proj", "v_proj"} <= names else ["c_attn"] if "c_attn" in names else []
    missing = [t for t in targets if t not in names]
    if not targets or missing:
        raise ConfigError(f"lora.targets {targets or lora.targets!r}: no such modules in {type(lm).__name__} ({missing})")
    peft_cfg = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(targets),
                              fan_in_fan_out="c_attn" in targets)
    inject_adapter_in_model(peft_cfg, lm)
    for name, p in lm.named_parameters():
        p.requires_grad_("lora_" in name)


@contextlib.contextmanager
def adapters_off(lm: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``lm`` computes as its frozen base: every injected LoRA adapter is switched off, then
    back on (an LM without adapters is unchanged)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no peft: no adapters were injected
        yield lm
        return
    layers = [m for m in lm.modules() if isinstance(m, BaseTunerLayer) and not m.disable_adapters]
    grads = {p: p.requires_grad for m in layers for p in m.parameters()}  # peft's switch also sets these
    for m in layers:
        m.enable_adapters(False)
    try:
        yield lm
    finally:
        for m in layers:
            m.enable_adapters(True)
        for p, g in grads.items():
            p.requires_grad_(g)


def check_quantize(quantize: str, device: Any = None) -> None:
    """Raise a clear :class:`ConfigError` where 4-bit QLoRA cannot run (no CUDA device, no bitsandbytes)."""
    if quantize == "none":
        return
    import torch

    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        raise ConfigError(f"lora.quantize={quantize} (QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit layers do not run "
                          f"on {'this machine (no CUDA device)' if not torch.cuda.is_available() else torch.device(device)}; "
                          "set model.lora.quantize=none to train LoRA on the full-precision LM")  # fmt: skip
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("lora.quantize=nf4 (QLoRA) needs bitsandbytes: pip install bitsandbytes") from None


def quantize_lm(lm: nn.Module, quantize: str, compute_dtype: Any = None) -> nn.Module:
    """QLoRA's base: every ``nn.Linear`` of the LM's blocks (not the output head) as a bitsandbytes
    ``Linear4bit`` (NF4, double quantisation), moved to CUDA. Call before :func:`inject_lora`."""
    check_quantize(quantize)
    import bitsandbytes as bnb
    import torch

    compute_dtype = compute_dtype or torch.bfloat16
    head = lm.get_output_embeddings()
    for name, module in list(lm.named_modules()):
        if not isinstance(module, nn.Linear) or module is head:
            continue
        q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                              compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=True)  # fmt: skip
        q.weight = bnb.nn.Params4bit(module.weight.data.cpu(), requires_grad=False, quant_type="nf4",
                                     compress_statistics=True)  # fmt: skip
        if module.bias is not None:
            q.bias = nn.Parameter(module.bias.data.clone(), requires_grad=False)
        parent_name, _, child = name.rpartition(".")
        setattr(lm.get_submodule(parent_name) if parent_name else lm, child, q)
    return lm.to("cuda")  # Params4bit quantises as it moves to the GPU


def merge_lora(lm: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and put the plain layer back (in place; returns ``lm``)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(lm.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(lm.get_submodule(parent_name) if parent_name else lm, child, module.get_base_layer())
    return lm
