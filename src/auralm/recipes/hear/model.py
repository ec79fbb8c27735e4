"""The S1 audio LM: an audio encoder, a connector, and any Hugging Face causal LM, read top to bottom.

::

    wav ──encoder (frozen)──► states (B, T, D) + lengths
        ──connector.project──► audio (B, T', H), T' = ceil(T / stack)
        prefix: spliced over the <|audio|> placeholders of the prompt's token embeddings (B, L, H)
        cross:  keys/values of gated cross-attention blocks hooked in front of every N-th LM layer
        ──LM (frozen, + LoRA in stage 2)──► logits (B, L, V) ──► loss on the answer tokens only
        (+ ctc_weight * CTC of audio @ E^T against the transcript's LM token ids, E = the LM's input embeddings)

``AudioLM.forward(batch)`` takes ``{"states", "lengths"}`` (cached embeddings) or ``{"wavs"}`` plus
``"prompts"`` (optional, default ``config.prompt``) and ``"texts"`` (the answers). See docs/hear.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from auralm.components.connectors import ConnectorConfig, build_connector, splice_audio
from auralm.components.encoders import AudioEncoder, build_audio_encoder, weights_revision
from auralm.components.lm import (
    add_audio_token,
    build_example,
    decoder_layers,
    end_token_id,
    load_lm,
    text_ids,
)
from auralm.core.config import Config, help_field
from auralm.core.errors import AudioError, AuralmError, ConfigError

TRAINABLE_PREFIXES = ("connector.", "ctc_blank.", "ctc_delta", "ctc_bias")
FEEDS = ("raw", "ctc_soft")
CTC_VOCABS = ("all", "train", "common")
CTC_HEADS = ("embeddings", "learned")


class CheckpointMismatchError(AuralmError):
    """Trained weights that do not fit this model (another LM width, encoder, connector or LoRA)."""


@dataclasses.dataclass
class LoraConfig(Config):
    """LoRA on the LM (stage 2); ``r = 0`` turns it off."""

    r: int = help_field(0, "LoRA rank (0 = no LoRA)")
    alpha: float = help_field(16.0, "LoRA scaling numerator (scale = alpha / r)")
    dropout: float = help_field(0.05, "dropout on the LoRA input")
    targets: Any = help_field("auto", "module names to adapt, e.g. [q_proj, v_proj]; auto = q_proj+v_proj or GPT-2's c_attn")

    def validate(self) -> None:
        if self.r < 0 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora: need r >= 0, alpha > 0, 0 <= dropout < 1; got {self.r}, {self.alpha}, {self.dropout}")
        if self.targets != "auto" and (not isinstance(self.targets, list) or not all(isinstance(t, str) for t in self.targets)):
            raise ConfigError(f"lora.targets must be 'auto' or a list of module names, got {self.targets!r}")


@dataclasses.dataclass
class HearConfig(Config):
    """The S1 model: which encoder, LM and connector, and the auxiliary CTC loss."""

    encoder: str = help_field("whisper-tiny.en", "audio encoder name (auralm.components.encoders), e.g. whisper-tiny.en, conv-tiny")
    lm: str = help_field("smollm2-135m-instruct", "causal LM: hub name, or tiny-gpt2 / tiny-llama (random, for tests)")
    connector: ConnectorConfig = dataclasses.field(default_factory=ConnectorConfig, metadata={"help": "connector settings"})
    ctc_weight: float = help_field(0.0, "weight of the auxiliary CTC loss on the projector outputs (0 = off)")
    lm_weight: float = help_field(1.0, "weight of the LM loss; 0 trains the projector on CTC alone and skips the LM (fast warm-up)")
    feed: str = help_field("raw", "prefix: what the LM reads - raw projector outputs, or ctc_soft: CTC-compressed "
                                  "frames (blanks dropped, repeats merged) as posterior-weighted LM token embeddings")
    soft_top_k: int = help_field(16, "ctc_soft: token embeddings mixed per compressed frame (top-k of its posterior)")
    feed_noise: float = help_field(0.0, "ctc_soft, training only: probability that a compressed run is corrupted, "
                                        "half of them by reading its next-best tokens instead, half by dropping it "
                                        "(the LM learns to correct its input, not copy it)")
    ctc_vocab: str = help_field("all", "CTC output classes: all (the LM's whole vocabulary), train (the tokens of the "
                                       "training transcripts: much faster with a large vocabulary; saved in the checkpoint) "
                                       "or common (the ctc_vocab_size most frequent BPE tokens, i.e. the lowest ids; rarer "
                                       "tokens in targets are spelled with them, so unseen words stay reachable)")
    ctc_vocab_size: int = help_field(8192, "ctc_vocab=common: how many of the lowest (most frequent) token ids")
    ctc_head: str = help_field("embeddings", "CTC output layer: embeddings (the LM's own input embeddings of the CTC "
                                             "classes, frozen) or learned (those embeddings plus a trained offset and "
                                             "bias per class, zero at the start; saved with the weights)")
    ctc_negatives: int = help_field(0, "training only: normalise the CTC softmax over the batch's target tokens, the "
                                       "blank and this many other CTC classes drawn at random (sampled softmax, "
                                       "log-corrected for the classes left out): a step costs far less with a large "
                                       "vocabulary. 0: over every class. Decoding always uses every class")
    prompt: str = help_field("Transcribe the audio.", "default instruction given with each clip")
    system: str | None = help_field(None, "chat system message (null: the chat template's default; a short one "
                                          "saves tokens: SmolLM2's default persona is 20 tokens per example)")
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig, metadata={"help": "LoRA settings (stage 2)"})

    def validate(self) -> None:
        if self.ctc_weight < 0 or self.lm_weight < 0:
            raise ConfigError(f"ctc_weight and lm_weight must be >= 0, got {self.ctc_weight}, {self.lm_weight}")
        if self.lm_weight == 0 and self.ctc_weight == 0:
            raise ConfigError("lm_weight = 0 trains on CTC alone: set ctc_weight > 0")
        if self.feed not in FEEDS:
            raise ConfigError(f"feed must be one of {', '.join(FEEDS)}, got {self.feed!r}")
        if self.feed == "ctc_soft" and (self.ctc_weight == 0 or self.connector.kind != "prefix"):
            raise ConfigError("feed=ctc_soft needs the prefix connector and its CTC head (ctc_weight > 0)")
        if self.ctc_vocab not in CTC_VOCABS:
            raise ConfigError(f"ctc_vocab must be one of {', '.join(CTC_VOCABS)}, got {self.ctc_vocab!r}")
        if self.ctc_vocab_size < 2:
            raise ConfigError(f"ctc_vocab_size must be at least 2, got {self.ctc_vocab_size}")
        if self.ctc_head not in CTC_HEADS:
            raise ConfigError(f"ctc_head must be one of {', '.join(CTC_HEADS)}, got {self.ctc_head!r}")
        if self.ctc_negatives < 0:
            raise ConfigError(f"ctc_negatives must be >= 0, got {self.ctc_negatives}")
        if self.soft_top_k < 1:
            raise ConfigError(f"soft_top_k must be >= 1, got {self.soft_top_k}")
        if self.system is not None and not isinstance(self.system, str):
            raise ConfigError(f"system must be a string or null, got {self.system!r}")
        if not 0 <= self.feed_noise < 1:
            raise ConfigError(f"feed_noise must be in [0, 1), got {self.feed_noise}")


def _pad(seqs: list[list[int]], value: int, left: bool) -> torch.Tensor:
    """Pad lists of ids to one ``(B, L)`` long tensor, on the left or the right."""
    L = max(len(s) for s in seqs)
    rows = [[value] * (L - len(s)) + s if left else s + [value] * (L - len(s)) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


class AudioLM(nn.Module):
    """Encoder (frozen) + connector (trained) + causal LM (frozen; LoRA optional)."""

    def __init__(self, cfg: HearConfig, encoder: AudioEncoder | None = None, lm: nn.Module | None = None, tokenizer: Any = None):
        super().__init__()
        self.config = cfg
        self.encoder = encoder if encoder is not None else build_audio_encoder(cfg.encoder)
        if lm is None:
            lm, tokenizer = load_lm(cfg.lm)
        elif tokenizer is None:
            raise ConfigError("AudioLM: an lm given without its tokenizer")
        self.lm_revision = getattr(lm, "auralm_revision", None) or weights_revision(lm)
        self.lm, self.tokenizer = lm.eval(), tokenizer
        self.lm.requires_grad_(False)
        self.audio_token_id = add_audio_token(tokenizer)
        self.end_token_id = end_token_id(tokenizer)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_token_id
        self.vocab_size, self.lm_dim = lm.get_input_embeddings().weight.shape  # V, H
        layers = decoder_layers(lm)
        self.connector = build_connector(cfg.connector, self.encoder.dim, self.lm_dim, len(layers))
        if cfg.connector.kind == "cross":
            self.connector.attach(layers)
        if cfg.ctc_weight > 0:  # the blank's logit: w . audio + b, learned, zero at init
            self.ctc_blank = nn.Linear(self.lm_dim, 1)
            nn.init.zeros_(self.ctc_blank.weight)
            nn.init.zeros_(self.ctc_blank.bias)
            # the LM token ids that are CTC classes (sorted); the blank is one more class after them
            vocab = torch.arange(self.vocab_size) if cfg.ctc_vocab == "all" else torch.empty(0, dtype=torch.long)
            if cfg.ctc_vocab == "common":
                special = set(getattr(tokenizer, "all_special_ids", []) or [])
                vocab = torch.tensor([i for i in range(min(cfg.ctc_vocab_size, self.vocab_size)) if i not in special])
            self.register_buffer("ctc_vocab", vocab)
            self._spellings: dict[int, list[int]] = {}  # out-of-vocabulary token id -> in-vocabulary pieces
            self._make_ctc_head()
        self.has_lora = False
        if cfg.lora.r > 0:
            self.add_lora(cfg.lora)

    # -- parts ------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> AudioLM:
        """The frozen LM stays in eval mode (no dropout) unless LoRA trains it; the encoder decides for itself."""
        super().train(mode)
        self.lm.train(mode and self.has_lora)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.connector.parameters()).device

    def frozen_parts(self) -> dict[str, dict[str, str]]:
        """What the trained weights depend on: the encoder's and the LM's names and revisions."""
        return {
            "encoder": {"name": self.encoder.name, "revision": self.encoder.revision},
            "lm": {"name": getattr(self.lm, "auralm_name", self.config.lm), "revision": self.lm_revision},
        }

    def add_lora(self, lora: LoraConfig) -> None:
        """Stage 2: inject peft LoRA adapters into the LM in place (its class and ``generate`` stay)."""
        if self.has_lora:
            raise ConfigError("the LM already has LoRA adapters")
        if lora.r <= 0:
            raise ConfigError(f"add_lora needs lora.r > 0, got {lora.r}")
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model

        names = {name.rsplit(".", 1)[-1] for name, _ in self.lm.named_modules()}
        targets = lora.targets
        if targets == "auto":
            targets = ["q_proj", "v_proj"] if {"q_proj", "v_proj"} <= names else ["c_attn"] if "c_attn" in names else []
        missing = [t for t in targets if t not in names]
        if not targets or missing:
            raise ConfigError(f"lora.targets {targets or lora.targets!r}: no such modules in {type(self.lm).__name__} ({missing})")
        peft_cfg = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(targets),
                                  fan_in_fan_out="c_attn" in targets)
        inject_adapter_in_model(peft_cfg, self.lm)
        for name, p in self.lm.named_parameters():
            p.requires_grad_("lora_" in name)
        self.config = self.config.replace(lora=lora)
        self.has_lora = True
        self.train(self.training)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights only: connector (+ CTC blank) (+ LoRA), detached copies."""
        state = {k: v.detach().clone() for k, v in self.named_parameters() if k.startswith(TRAINABLE_PREFIXES) or "lora_" in k}
        if hasattr(self, "ctc_vocab"):  # not trained, but part of what the CTC head means
            state["ctc_vocab"] = self.ctc_vocab.detach().clone()
        return state

    def set_ctc_vocab(self, texts: list[str]) -> None:
        """``ctc_vocab: train``: make the tokens of ``texts`` (mid-sentence tokenisation) the CTC classes."""
        ids = sorted({i for t in texts for i in text_ids(self.tokenizer, t)})
        if not ids:
            raise ConfigError("no tokens in the training transcripts for the CTC vocabulary")
        self.ctc_vocab = torch.tensor(ids, dtype=torch.long, device=self.device)
        self._forget_spellings()
        self._make_ctc_head()

    def _make_ctc_head(self) -> None:
        """``ctc_head: learned``: a zero offset (K, H) and bias (K,) per CTC class, made once the classes are known."""
        K = len(self.ctc_vocab)
        if self.config.ctc_head != "learned" or K == 0:
            return
        if getattr(self, "ctc_delta", None) is not None and self.ctc_delta.shape[0] == K:
            return
        self.ctc_delta = nn.Parameter(torch.zeros(K, self.lm_dim, device=self.device))
        self.ctc_bias = nn.Parameter(torch.zeros(K, device=self.device))

    def _forget_spellings(self) -> None:
        self._spellings = {}
        self.__dict__.pop("_piece_ids", None)

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load what :meth:`trainable_state_dict` saved; clear errors for weights of another shape."""
        state = dict(state)
        vocab = state.pop("ctc_vocab", None)
        if vocab is not None and hasattr(self, "ctc_vocab"):
            self.ctc_vocab = vocab.to(self.device, torch.long)
            self._forget_spellings()
            self._make_ctc_head()
        own = {k: v for k, v in self.named_parameters() if k.startswith(TRAINABLE_PREFIXES) or "lora_" in k}
        for key, value in state.items():
            if key in own and tuple(value.shape) != tuple(own[key].shape):
                raise CheckpointMismatchError(
                    f"trained weight {key} has shape {tuple(value.shape)} but this model needs {tuple(own[key].shape)}: "
                    f"it was trained with another LM width, encoder or connector (this model: LM {self.config.lm} "
                    f"width {self.lm_dim}, encoder {self.encoder.name} width {self.encoder.dim})"
                )
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            hint = " (LoRA weights: build the model with the checkpoint's lora.r)" if any("lora_" in k for k in unexpected) else ""
            raise CheckpointMismatchError(f"trained weights do not match this model: missing {missing[:5]}, unexpected {unexpected[:5]}{hint}")
        with torch.no_grad():
            for key in set(own) & set(state):
                own[key].copy_(state[key])

    # -- inputs -----------------------------------------------------------------------------------
    def encode_audio(self, wavs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """16 kHz waveforms -> encoder ``states (B, T, D)`` and ``lengths (B,)`` on the model's device."""
        states, lengths = self.encoder(wavs)
        return states.to(self.device), lengths.to(self.device)

    def _audio(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected audio ``(B, T', H)`` and its lengths, from cached states or waveforms."""
        if batch.get("states") is not None:
            states, lengths = batch["states"].to(self.device), torch.as_tensor(batch["lengths"]).to(self.device)  # B, T, D ; B
        elif batch.get("wavs") is not None:
            states, lengths = self.encode_audio(batch["wavs"])
        else:
            raise ConfigError("a batch needs 'states' + 'lengths' or 'wavs'")
        if states.ndim != 3 or lengths.shape != states.shape[:1]:
            raise AudioError(f"expected states (B, T, D) and lengths (B,), got {tuple(states.shape)} and {tuple(lengths.shape)}")
        if (lengths <= 0).any() or (lengths > states.shape[1]).any():
            raise AudioError(f"audio lengths must be in 1..{states.shape[1]} frames, got {lengths.tolist()} (audio of length zero?)")
        return self.connector.project(states, lengths)  # B, T', H ; B

    def audio_context(self, audio: torch.Tensor, lengths: torch.Tensor) -> contextlib.AbstractContextManager:
        """Cross family: makes the audio visible to the hooked blocks; prefix family: nothing to do."""
        if self.config.connector.kind == "cross":
            return self.connector.audio(audio, lengths)
        return contextlib.nullcontext()

    def build_inputs(self, batch: dict[str, Any], answers: bool, left_pad: bool) -> dict[str, torch.Tensor]:
        """Token embeddings with the audio in place, attention mask from lengths, labels, projected audio."""
        audio, audio_lengths = self._audio(batch)  # B, T', H ; B
        B = audio.shape[0]
        prompts = [p or self.config.prompt for p in (batch.get("prompts") or [None] * B)]
        texts = batch.get("texts") if answers else None
        if answers and texts is None:
            raise ConfigError("training needs batch['texts'] (the answers)")
        if len(prompts) != B or (texts is not None and len(texts) != B):
            raise ConfigError(f"{B} audio clips but {len(prompts)} prompts and {len(texts or [])} texts")
        fed_ids = None
        if self.config.feed == "ctc_soft":
            lm_audio, lm_lengths, fed_ids = self.ctc_compress(audio, audio_lengths, return_ids=True)
        else:
            lm_audio, lm_lengths = audio, audio_lengths
        n_audio = lm_lengths.tolist() if self.config.connector.kind == "prefix" else [0] * B
        examples = [
            build_example(self.tokenizer, p, n, texts[i] if texts is not None else None, self.config.system)
            for i, (p, n) in enumerate(zip(prompts, n_audio))
        ]
        ids = _pad([e[0] for e in examples], self.pad_token_id, left_pad).to(self.device)  # B, L
        labels = _pad([e[1] for e in examples], -100, left_pad).to(self.device)  # B, L
        mask = _pad([[1] * len(e[0]) for e in examples], 0, left_pad).to(self.device)  # B, L (from lengths)
        lookup = ids.masked_fill((ids == self.audio_token_id) | (ids >= self.vocab_size), self.pad_token_id)
        embeds = self.lm.get_input_embeddings()(lookup)  # B, L, H
        if self.config.connector.kind == "prefix":
            embeds = splice_audio(embeds, ids, lm_audio, lm_lengths, self.audio_token_id)  # B, L, H
        return {"embeds": embeds, "mask": mask, "labels": labels, "audio": audio, "audio_lengths": audio_lengths,
                "lm_audio_lengths": lm_lengths, "lm_audio_ids": fed_ids}

    # -- training ---------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"loss", "lm_loss", "n_tokens"}`` (+ ``"ctc_loss"``); losses are means over answer tokens."""
        if self.config.lm_weight == 0:  # CTC warm-up: the LM is not run at all
            audio, audio_lengths = self._audio(batch)
            ctc = self.ctc_loss(audio, audio_lengths, batch["texts"])
            n = torch.tensor(sum(len(text_ids(self.tokenizer, t)) for t in batch["texts"]))
            return {"loss": self.config.ctc_weight * ctc, "ctc_loss": ctc, "n_tokens": n}
        x = self.build_inputs(batch, answers=True, left_pad=False)
        # token t is predicted at position t-1: only positions followed by an answer token need logits,
        # so the LM head (V = 49k for SmolLM2) runs on those columns alone
        targets = x["labels"][:, 1:]  # B, L-1
        keep = (targets != -100).any(0).nonzero().squeeze(1)  # K columns with at least one answer token
        with self.audio_context(x["audio"], x["audio_lengths"]):
            logits = self.lm(inputs_embeds=x["embeds"], attention_mask=x["mask"], use_cache=False,
                             logits_to_keep=keep).logits  # B, K, V
        targets = targets[:, keep]  # B, K
        n_tokens = (targets != -100).sum()
        lm_loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        ) / n_tokens.clamp(min=1)
        out = {"lm_loss": lm_loss, "n_tokens": n_tokens, "loss": self.config.lm_weight * lm_loss}
        if self.config.ctc_weight > 0:
            out["ctc_loss"] = self.ctc_loss(x["audio"], x["audio_lengths"], batch["texts"])
            out["loss"] = out["loss"] + self.config.ctc_weight * out["ctc_loss"]
        return out

    # -- the CTC auxiliary head -------------------------------------------------------------------
    def ctc_log_probs(self, audio: torch.Tensor, classes: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T', H)`` -> ``(B, T', K + 1)`` log-probs: ``audio @ E^T`` (frozen) and the learned blank (last).

        ``classes`` (indices into the CTC vocabulary) restricts the softmax to those classes (then K is
        their count), each logit plus its ``bias``: the sampled softmax of :meth:`ctc_loss`."""
        if not hasattr(self, "ctc_blank"):
            raise ConfigError("this model has no CTC head (ctc_weight is 0)")
        if self.ctc_vocab.numel() == 0:
            raise ConfigError("ctc_vocab=train, but no vocabulary was set (set_ctc_vocab) or loaded from a checkpoint")
        vocab = self.ctc_vocab if classes is None else self.ctc_vocab[classes]
        E = self.lm.get_input_embeddings().weight[vocab]  # K, H (K = V with ctc_vocab=all)
        if getattr(self, "ctc_delta", None) is not None:  # ctc_head: learned
            E = E + (self.ctc_delta if classes is None else self.ctc_delta[classes])
            own = self.ctc_bias if classes is None else self.ctc_bias[classes]
            bias = own if bias is None else bias + own
        tokens = F.linear(audio, E.to(audio.dtype), None if bias is None else bias.to(audio.dtype))
        logits = torch.cat([tokens, self.ctc_blank(audio).to(audio.dtype)], -1)  # B, T', K+1
        return logits.float().log_softmax(-1)

    def _sampled_classes(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``ctc_negatives`` in training: (classes, their logit bias, targets re-indexed into them), or None
        for the full softmax. The classes are every target class of the batch and ``ctc_negatives`` others
        drawn uniformly without replacement; each drawn class stands for ``others / drawn`` classes, so
        its logit gets ``log(others / drawn)`` (the partition function is estimated without bias)."""
        n_neg, K = self.config.ctc_negatives, len(self.ctc_vocab)
        if not (self.training and n_neg > 0):
            return None
        pos = torch.unique(flat)  # sorted
        n_others = K - len(pos)
        if n_others <= n_neg:
            return None
        free = torch.ones(K, dtype=torch.bool, device=flat.device)
        free[pos] = False
        others = free.nonzero().squeeze(1)
        neg = others[torch.randperm(n_others, device=flat.device)[:n_neg]]
        bias = torch.cat([torch.zeros(len(pos)), torch.full((n_neg,), math.log(n_others / n_neg))]).to(flat.device)
        remap = torch.full((K,), -1, dtype=torch.long, device=flat.device)
        remap[pos] = torch.arange(len(pos), device=flat.device)
        return torch.cat([pos, neg]), bias, remap[flat]

    def ctc_loss(self, audio: torch.Tensor, audio_lengths: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """CTC of the projected audio against each transcript's mid-sentence LM token ids (blank = last class)."""
        targets = [self._ctc_classes(text_ids(self.tokenizer, t)) for t in texts]
        flat = torch.cat(targets).to(audio.device)
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long, device=audio.device)
        sampled = self._sampled_classes(flat)
        if sampled is None:
            log_probs = self.ctc_log_probs(audio)
        else:
            classes, bias, flat = sampled
            log_probs = self.ctc_log_probs(audio, classes, bias)
        blank = log_probs.shape[-1] - 1
        return F.ctc_loss(log_probs.transpose(0, 1), flat, audio_lengths, target_lengths, blank=blank, zero_infinity=True)

    def _spell(self, token_id: int) -> list[int]:
        """An out-of-vocabulary token as CTC-vocabulary pieces: greedy longest match over its BPE string
        (byte-level tokens, so single bytes are always pieces when the vocabulary starts at the alphabet)."""
        if token_id not in self._spellings:
            if not hasattr(self, "_piece_ids"):
                vocab = self.ctc_vocab.tolist()
                self._piece_ids = dict(zip(self.tokenizer.convert_ids_to_tokens(vocab), vocab))
                self._max_piece = max(map(len, self._piece_ids))
            s, pieces, i = self.tokenizer.convert_ids_to_tokens(token_id), [], 0
            while i < len(s):
                for j in range(min(len(s), i + self._max_piece), i, -1):
                    if s[i:j] in self._piece_ids:
                        pieces.append(self._piece_ids[s[i:j]])
                        i = j
                        break
                else:  # no piece for this character: drop it
                    i += 1
            self._spellings[token_id] = pieces
        return self._spellings[token_id]

    def _ctc_classes(self, ids: list[int]) -> torch.Tensor:
        """LM token ids -> CTC class indices. Tokens outside the CTC vocabulary are spelled with pieces of
        it (``ctc_vocab: common``) or dropped (``train``)."""
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.ctc_vocab.device)
        pos = torch.searchsorted(self.ctc_vocab, ids_t).clamp(max=max(len(self.ctc_vocab) - 1, 0))
        hit = self.ctc_vocab[pos] == ids_t
        if self.config.ctc_vocab == "common" and not bool(hit.all()):
            return self._ctc_classes([p for i, h in zip(ids, hit.tolist()) for p in ([i] if h else self._spell(i))])
        return pos[hit]

    def ctc_compress(self, audio: torch.Tensor, lengths: torch.Tensor, return_ids: bool = False) -> Any:
        """``(B, T', H)`` -> ``(B, N, H)`` + lengths: CTC-compressed frames as soft LM token embeddings.
        With ``return_ids``, also each row's LM token ids (the most likely token of every run fed).

        Frames whose best CTC class is the blank are dropped and runs of one class are merged (the CTC
        compressor of Speech-LLaMA); each remaining run becomes the mixture of the LM's input embeddings
        of its ``soft_top_k`` most likely tokens, weighted by the run's mean posterior. The LM thus reads
        vectors from its own embedding space, and the LM loss still trains the projector through the
        weights. A clip with no non-blank frame keeps its least blank frame. In training, ``feed_noise``
        corrupts runs at random (next-best tokens instead of the best, or the run dropped).
        """
        logp = self.ctc_log_probs(audio)  # B, T', K+1 (blank last)
        E = self.lm.get_input_embeddings().weight  # V, H
        blank = len(self.ctc_vocab)
        best = logp.argmax(-1)  # B, T'
        out, fed_ids = [], []
        for b, n in enumerate(lengths.tolist()):
            seq = best[b, :n]  # n
            starts = torch.ones_like(seq, dtype=torch.bool)
            starts[1:] = seq[1:] != seq[:-1]
            run = torch.cumsum(starts, 0) - 1  # n: run index of every frame
            keep = seq != blank
            if not keep.any():
                keep = torch.zeros_like(keep)
                keep[logp[b, :n, blank].argmin()] = True
            runs, inverse = torch.unique(run[keep], return_inverse=True)  # G runs kept
            probs = logp[b, :n][keep, :blank].exp()  # F, V (kept frames, blank excluded)
            mean = torch.zeros(len(runs), blank, dtype=probs.dtype, device=probs.device).index_add_(0, inverse, probs)
            k = min(self.config.soft_top_k, blank)
            noise = self.config.feed_noise if self.training else 0.0
            weights, idx = mean.topk(min(k + (noise > 0), blank), dim=-1)  # G, k (+1 when noising)
            if noise > 0:  # corrupt runs as the projector errs on unseen audio: confusions and deletions
                u = torch.rand(len(runs), device=mean.device)
                shift = (u < noise / 2) & (weights.shape[1] > k)
                weights = torch.where(shift[:, None], weights[:, 1:], weights[:, :k])  # a confusion: next-best tokens
                idx = torch.where(shift[:, None], idx[:, 1:], idx[:, :k])
                kept = ~((u >= noise / 2) & (u < noise))  # a deletion
                if kept.any():
                    weights, idx = weights[kept], idx[kept]
            weights = weights / weights.sum(-1, keepdim=True)
            fed_ids.append(self.ctc_vocab[idx[:, 0]].tolist())
            out.append(torch.einsum("gk,gkh->gh", weights.to(E.dtype), E[self.ctc_vocab[idx]]).to(audio.dtype))  # G, H
        new_lengths = torch.tensor([len(o) for o in out], device=audio.device)
        padded = audio.new_zeros(len(out), int(new_lengths.max()), audio.shape[-1])  # B, N, H
        for b, o in enumerate(out):
            padded[b, : len(o)] = o
        return (padded, new_lengths, fed_ids) if return_ids else (padded, new_lengths)

    @torch.no_grad()
    def ctc_greedy_decode(self, batch: dict[str, Any]) -> list[str]:
        """The projector's own transcription: argmax per frame, collapse repeats, drop blanks, detokenise."""
        audio, lengths = self._audio(batch)
        best = self.ctc_log_probs(audio).argmax(-1).tolist()  # B, T'
        vocab, blank = self.ctc_vocab.tolist(), len(self.ctc_vocab)
        out = []
        for row, n in zip(best, lengths.tolist()):
            ids = [vocab[t] for j, t in enumerate(row[:n]) if (j == 0 or t != row[j - 1]) and t != blank]
            out.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        return out

    # -- generation -------------------------------------------------------------------------------
    def generate(self, batch: dict[str, Any], gen: Any = None) -> list[str]:
        """Answers for a batch (``gen``: :class:`auralm.components.generation.GenerationConfig`, default greedy)."""
        from auralm.components.generation import generate

        return generate(self, batch, gen)
