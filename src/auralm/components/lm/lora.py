"""LoRA on a frozen causal LM (peft adapters injected in place: the LM's class and ``generate`` stay)."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError


@dataclasses.dataclass
class LoraConfig(Config):
    """LoRA on the LM; ``r = 0`` turns it off."""

    r: int = help_field(0, "LoRA rank (0 = no LoRA)")
    alpha: float = help_field(16.0, "LoRA scaling numerator (scale = alpha / r)")
    dropout: float = help_field(0.05, "dropout on the LoRA input")
    targets: Any = help_field("auto", "module names to adapt, e.g. [q_proj, v_proj]; auto = q_proj+v_proj or GPT-2's c_attn")

    def validate(self) -> None:
        if self.r < 0 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora: need r >= 0, alpha > 0, 0 <= dropout < 1; got {self.r}, {self.alpha}, {self.dropout}")
        if self.targets != "auto" and (not isinstance(self.targets, list) or not all(isinstance(t, str) for t in self.targets)):
            raise ConfigError(f"lora.targets must be 'auto' or a list of module names, got {self.targets!r}")


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
