"""The S1 audio LM: an audio encoder, a connector, and any Hugging Face causal LM, read top to bottom.

::

    wav ──encoder (frozen)──► states (B, T, D) + lengths
        ──connector.project──► audio (B, T', H), T' = ceil(T / stack)
        prefix: spliced over the <|audio|> placeholders of the prompt's token embeddings (B, L, H)
        (feed=ctc_pool: the CTC runs of the audio, each the mean of its own frames: continuous, no token step;
         audio_norm=embedding: every frame the LM reads rescaled to the mean norm of the LM's input embeddings)
        cross:  keys/values of gated cross-attention blocks hooked in front of every N-th LM layer
        ──LM (frozen, + LoRA in stage 2)──► logits (B, L, V) ──► loss on the answer tokens only
        (+ ctc_weight * CTC of audio @ E^T against the transcript's LM token ids, E = the LM's input embeddings:
         auralm.components.ctc.CTCHead, ``model.ctc``; ``feed=ctc_soft``: the LM reads its compressed output)

``AudioLM.forward(batch)`` takes ``{"states", "lengths"}`` (cached embeddings) or ``{"wavs"}`` plus
``"prompts"`` (optional, default ``config.prompt``) and ``"texts"`` (the answers). See docs/hear.md.

``phone_weight`` > 0 adds a phone CTC head on the encoder's states (``auralm.components.phones``, ``model.phones``)
with its pronouncing lexicon (``model.lexicon``, saved beside the weights as ``lexicon.json``).

Decoding (``auralm.components.generation``): the LM writes the transcript, or, with ``rescore_beam`` > 0,
:meth:`AudioLM.rescore` picks among the best transcripts of the word CTC head (:meth:`AudioLM.ctc_rescore`) or
of the phone head through its lexicon (:meth:`AudioLM.phone_rescore`) by the frozen LM's prior.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from auralm.components.connectors import ConnectorConfig, build_connector, splice_audio
from auralm.components.ctc import CTC_SCORING, CTCHead
from auralm.components.encoders import AudioEncoder, build_audio_encoder
from auralm.components.lm import (
    LoraConfig,
    adapters_off,
    add_audio_token,
    build_example,
    decoder_layers,
    frozen_lm,
    inject_lora,
    pad_ids,
    sequence_logprobs,
    text_ids,
)
from auralm.components.phones import LEXICON_FILE, Lexicon, PhoneHead, as_sentence
from auralm.core.config import Config, help_field
from auralm.core.errors import AudioError, ConfigError
from auralm.training.checkpoint import copy_trained

TRAINABLE_PREFIXES = ("connector.", "ctc.", "phones.")  # the trained weights besides LoRA's (the training engine's groups)
FEEDS = ("raw", "ctc_soft", "ctc_pool")
AUDIO_NORMS = ("none", "embedding")
CTC_VOCABS = ("all", "train")


@dataclasses.dataclass
class HearConfig(Config):
    """The S1 model: which encoder, LM and connector, and the auxiliary CTC loss."""

    encoder: str = help_field("whisper-tiny.en", "audio encoder name (auralm.components.encoders), e.g. whisper-tiny.en, conv-tiny")
    lm: str = help_field("smollm2-135m-instruct", "causal LM: hub name, or tiny-gpt2 / tiny-llama (random, for tests)")
    connector: ConnectorConfig = dataclasses.field(default_factory=ConnectorConfig, metadata={"help": "connector settings"})
    ctc_weight: float = help_field(0.0, "weight of the auxiliary CTC loss on the projector outputs (0 = off)")
    lm_weight: float = help_field(1.0, "weight of the LM loss; 0 trains the projector on CTC alone and skips the LM (fast warm-up)")
    feed: str = help_field("raw", "prefix: what the LM reads - raw projector outputs; ctc_soft: CTC-compressed "
                                  "frames (blanks dropped, repeats merged) as posterior-weighted LM token embeddings; "
                                  "ctc_pool: the same runs, each the mean of its own projector frames (continuous)")
    audio_norm: str = help_field("none", "none, or embedding: rescale each audio frame the LM reads (feed raw or "
                                         "ctc_pool) to the mean norm of the LM's input embeddings")
    pool_align_weight: float = help_field(0.0, "feed=ctc_pool: weight of a loss pulling each pooled run towards its best "
                                               "token's embedding (1 - cosine), so the LM reads frames near its own inputs; "
                                               "also in a CTC-only stage 1 (lm_weight 0)")
    soft_top_k: int = help_field(16, "ctc_soft: token embeddings mixed per compressed frame (top-k of its posterior)")
    ctc_vocab: str = help_field("all", "CTC classes: all (the LM's vocabulary) or train (the training transcripts' tokens: "
                                       "much faster with a large vocabulary; saved with the weights)")
    ctc_negatives: int = help_field(0, "training only: sampled CTC softmax over the batch's target tokens, the blank and "
                                       "this many other classes drawn at random (0: every class; decoding uses every class)")
    ctc_scoring: str = help_field("dot", "CTC logits: dot (audio . embedding) or cosine (a learned scale x the cosine: "
                                         "frames point where their tokens' embeddings point, for a continuous feed)")
    phone_weight: float = help_field(0.0, "weight of the CTC loss of a phone head on the encoder's states, decoded "
                                          "through a pronouncing lexicon (rescore_head=phones); 0 = no phone head")
    phone_hidden: int = help_field(256, "phone head: width of its convolutions")
    phone_rnn_layers: int = help_field(0, "phone head: bidirectional GRU layers after the convolutions (0: a third "
                                          "convolution instead; a GRU is several times slower on a CPU)")
    phone_lexicon: str = help_field("train,wordnet-examples,wordnet-definitions,gcide-quotes",
                                    "the lexicon's words: 'train' (the training transcripts) and text sources "
                                    "(auralm.data.text_sources), comma-separated; sentences of other splits are left out")
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
        if self.feed in ("ctc_soft", "ctc_pool") and (self.ctc_weight == 0 or self.connector.kind != "prefix"):
            raise ConfigError(f"feed={self.feed} needs the prefix connector and its CTC head (ctc_weight > 0)")
        if self.audio_norm not in AUDIO_NORMS:
            raise ConfigError(f"audio_norm must be one of {', '.join(AUDIO_NORMS)}, got {self.audio_norm!r}")
        if self.audio_norm != "none" and (self.feed == "ctc_soft" or self.connector.kind != "prefix"):
            raise ConfigError("audio_norm rescales what the prefix LM reads of the audio: feed raw or ctc_pool")
        if self.pool_align_weight < 0 or (self.pool_align_weight > 0 and self.feed != "ctc_pool"):
            raise ConfigError(f"pool_align_weight must be >= 0 and needs feed=ctc_pool, got {self.pool_align_weight} "
                              f"with feed={self.feed}")
        if self.ctc_vocab not in CTC_VOCABS:
            raise ConfigError(f"ctc_vocab must be one of {', '.join(CTC_VOCABS)}, got {self.ctc_vocab!r}")
        if self.ctc_negatives < 0:
            raise ConfigError(f"ctc_negatives must be >= 0, got {self.ctc_negatives}")
        if self.ctc_scoring not in CTC_SCORING:
            raise ConfigError(f"ctc_scoring must be one of {', '.join(CTC_SCORING)}, got {self.ctc_scoring!r}")
        if self.soft_top_k < 1:
            raise ConfigError(f"soft_top_k must be >= 1, got {self.soft_top_k}")
        if self.phone_weight < 0 or self.phone_hidden < 1 or self.phone_rnn_layers < 0:
            raise ConfigError(f"need phone_weight >= 0, phone_hidden >= 1, phone_rnn_layers >= 0; got {self.phone_weight}, "
                              f"{self.phone_hidden}, {self.phone_rnn_layers}")
        if self.system is not None and not isinstance(self.system, str):
            raise ConfigError(f"system must be a string or null, got {self.system!r}")


class AudioLM(nn.Module):
    """Encoder (frozen) + connector (trained) + causal LM (frozen; LoRA optional)."""

    def __init__(self, cfg: HearConfig, encoder: AudioEncoder | None = None, lm: nn.Module | None = None, tokenizer: Any = None):
        super().__init__()
        self.config = cfg
        self.encoder = encoder if encoder is not None else build_audio_encoder(cfg.encoder)
        f = frozen_lm(cfg.lm, lm, tokenizer, owner="AudioLM")
        self.lm, self.tokenizer, self.lm_revision = f.lm, f.tokenizer, f.revision
        self.end_token_id, self.pad_token_id, self.vocab_size, self.lm_dim = f.end_token_id, f.pad_token_id, f.vocab_size, f.dim
        self.audio_token_id = add_audio_token(self.tokenizer)
        lm = self.lm
        layers = decoder_layers(lm)
        self.connector = build_connector(cfg.connector, self.encoder.dim, self.lm_dim, len(layers))
        if cfg.connector.kind == "cross":
            self.connector.attach(layers)
        # the CTC head over the LM's input embeddings (ctc_vocab=train: the classes are set later, or loaded)
        vocab = range(self.vocab_size) if cfg.ctc_vocab == "all" else None
        self.ctc = CTCHead(lm.get_input_embeddings(), vocab, cfg.ctc_negatives, cfg.ctc_scoring) if cfg.ctc_weight > 0 else None
        self.phones: PhoneHead | None = None  # built with its lexicon (set_lexicon), whose phones are its classes
        self.lexicon: Lexicon | None = None
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
        """Stage 2: peft LoRA adapters on the LM, in place (its class and ``generate`` stay); recorded in the config."""
        if self.has_lora:
            raise ConfigError("the LM already has LoRA adapters")
        inject_lora(self.lm, lora)
        self.config = self.config.replace(lora=lora)
        self.has_lora = True
        self.train(self.training)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights only: connector (+ CTC blank and vocabulary) (+ LoRA), detached copies."""
        state = {k: v.detach().clone() for k, v in self.named_parameters() if k.startswith(TRAINABLE_PREFIXES) or "lora_" in k}
        if self.ctc is not None:  # not trained, but part of what the CTC head means
            state["ctc.vocab"] = self.ctc.vocab.detach().clone()
        return state

    def extra_files(self) -> dict[str, Any]:
        """JSON files saved beside the weights: the phone head's lexicon."""
        return {LEXICON_FILE: self.lexicon.to_dict()} if self.lexicon is not None else {}

    def load_extra_files(self, folder: Any) -> None:
        """Before the weights: a checkpoint's lexicon builds the phone head it was trained with."""
        from pathlib import Path

        if self.config.phone_weight > 0 and (Path(folder) / LEXICON_FILE).is_file():
            self.set_lexicon(Lexicon.load(Path(folder) / LEXICON_FILE))

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load what :meth:`trainable_state_dict` saved; clear errors for weights of another shape."""
        state = dict(state)
        if self.ctc is not None and "ctc.vocab" in state:
            self.ctc.set_vocab(state.pop("ctc.vocab"))
        own = {k: v for k, v in self.named_parameters() if k.startswith(TRAINABLE_PREFIXES) or "lora_" in k}
        copy_trained(own, state, strict, f"LM {self.config.lm} width {self.lm_dim}, encoder {self.encoder.name} "
                                         f"width {self.encoder.dim}")

    # -- inputs -----------------------------------------------------------------------------------
    def encode_audio(self, wavs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """16 kHz waveforms -> encoder ``states (B, T, D)`` and ``lengths (B,)`` on the model's device."""
        states, lengths = self.encoder(wavs)
        return states.to(self.device), lengths.to(self.device)

    def _audio(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected audio ``(B, T', H)`` and its lengths, from cached states or waveforms."""
        return self.connector.project(*self._states(batch))  # B, T', H ; B

    def _states(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's states ``(B, T, D)`` and lengths, from the batch's cached states or its waveforms."""
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
        return states, lengths

    def audio_context(self, audio: torch.Tensor, lengths: torch.Tensor) -> contextlib.AbstractContextManager:
        """Cross family: makes the audio visible to the hooked blocks; prefix family: nothing to do."""
        if self.config.connector.kind == "cross":
            return self.connector.audio(audio, lengths)
        return contextlib.nullcontext()

    def build_inputs(self, batch: dict[str, Any], answers: bool, left_pad: bool) -> dict[str, torch.Tensor]:
        """Token embeddings with the audio in place, attention mask from lengths, labels, projected audio (and the
        encoder's states it was projected from)."""
        states, state_lengths = self._states(batch)  # B, T, D ; B
        audio, audio_lengths = self.connector.project(states, state_lengths)  # B, T', H ; B
        B = audio.shape[0]
        prompts = [p or self.config.prompt for p in (batch.get("prompts") or [None] * B)]
        texts = batch.get("texts") if answers else None
        if answers and texts is None:
            raise ConfigError("training needs batch['texts'] (the answers)")
        if len(prompts) != B or (texts is not None and len(texts) != B):
            raise ConfigError(f"{B} audio clips but {len(prompts)} prompts and {len(texts or [])} texts")
        fed_ids = None
        if self.config.feed == "ctc_soft":
            lm_audio, lm_lengths, fed_ids = self.ctc.compress(audio, audio_lengths, self.config.soft_top_k)  # B, N, H
        elif self.config.feed == "ctc_pool":
            lm_audio, lm_lengths, fed_ids = self.ctc.pool(audio, audio_lengths)  # B, N, H (continuous)
        else:
            lm_audio, lm_lengths = audio, audio_lengths
        if self.config.audio_norm == "embedding":  # B, N, H: each frame at the embeddings' mean norm
            lm_audio = lm_audio * (self._embedding_norm() / lm_audio.norm(dim=-1, keepdim=True).clamp(min=1e-6))
        n_audio = lm_lengths.tolist() if self.config.connector.kind == "prefix" else [0] * B
        examples = [
            build_example(self.tokenizer, p, n, texts[i] if texts is not None else None, self.config.system)
            for i, (p, n) in enumerate(zip(prompts, n_audio))
        ]
        ids = pad_ids([e[0] for e in examples], self.pad_token_id, left_pad).to(self.device)  # B, L
        labels = pad_ids([e[1] for e in examples], -100, left_pad).to(self.device)  # B, L
        mask = pad_ids([[1] * len(e[0]) for e in examples], 0, left_pad).to(self.device)  # B, L (from lengths)
        lookup = ids.masked_fill((ids == self.audio_token_id) | (ids >= self.vocab_size), self.pad_token_id)
        embeds = self.lm.get_input_embeddings()(lookup)  # B, L, H
        if self.config.connector.kind == "prefix":
            embeds = splice_audio(embeds, ids, lm_audio, lm_lengths, self.audio_token_id)  # B, L, H
        return {"embeds": embeds, "mask": mask, "labels": labels, "audio": audio, "audio_lengths": audio_lengths,
                "lm_audio": lm_audio, "lm_audio_lengths": lm_lengths, "lm_audio_ids": fed_ids, "states": states,
                "state_lengths": state_lengths}

    def _embedding_norm(self) -> torch.Tensor:
        """The mean L2 norm of the LM's input-embedding rows (a constant: the embeddings are frozen)."""
        if getattr(self, "_emb_norm", None) is None:
            with torch.no_grad():
                self._emb_norm = self.lm.get_input_embeddings().weight.float().norm(dim=-1).mean()
        return self._emb_norm

    # -- training ---------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"loss", "lm_loss", "n_tokens"}`` (+ ``"ctc_loss"``, ``"pool_align_loss"``, ``"phone_loss"``); losses are
        means over answer tokens, the phone loss over phones (``lm_weight=0``: no LM loss; the pooled-run alignment,
        when weighted, then trains with the CTC; the phone head's loss only while its weights train)."""
        if self.config.lm_weight == 0:  # CTC warm-up: the LM is not run at all
            states, state_lengths = self._states(batch)
            audio, lengths = self.connector.project(states, state_lengths)
            ctc, n = self._ctc_loss(audio, lengths, batch["texts"])
            out = {"loss": self.config.ctc_weight * ctc, "ctc_loss": ctc, "n_tokens": n}
            if self.config.pool_align_weight > 0:  # aim the runs the continuous feed will read at their tokens
                self._add_pool_align(out, *self.ctc.pool(audio, lengths))
            self._add_phone_loss(out, states, state_lengths, batch["texts"])
            return out
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
        if self.ctc is not None:
            out["ctc_loss"], _ = self._ctc_loss(x["audio"], x["audio_lengths"], batch["texts"])
            out["loss"] = out["loss"] + self.config.ctc_weight * out["ctc_loss"]
        if self.config.pool_align_weight > 0:
            self._add_pool_align(out, x["lm_audio"], x["lm_audio_lengths"], x["lm_audio_ids"])
        if self.config.phone_weight > 0 and (self.phones is None or any(p.requires_grad for p in self.phones.parameters())):
            self._add_phone_loss(out, x["states"], x["state_lengths"], batch["texts"])
        return out

    def _add_phone_loss(self, out: dict[str, Any], states: torch.Tensor, lengths: torch.Tensor, texts: list[str]) -> None:
        """``out["phone_loss"]``: the phone head's CTC loss per phone, added to ``out["loss"]`` with ``phone_weight``."""
        if self.config.phone_weight == 0:
            return
        head, lexicon = self._phone_head()
        out["phone_loss"] = head.loss(states, lengths, [lexicon.spell(t, add_missing=True) or [] for t in texts])
        out["loss"] = out["loss"] + self.config.phone_weight * out["phone_loss"]

    def _add_pool_align(self, out: dict[str, Any], pooled: torch.Tensor, lengths: torch.Tensor, ids: list[list[int]]) -> None:
        """``out["pool_align_loss"]``: mean ``1 - cos`` between every pooled run ``(B, N, H)`` and the input embedding
        of its best token, added to ``out["loss"]`` with ``pool_align_weight``."""
        emb = self.lm.get_input_embeddings().weight  # V, H (frozen)
        runs = torch.cat([pooled[b, :n] for b, n in enumerate(lengths.tolist())])  # R, H
        targets = emb[torch.tensor([i for row in ids for i in row], device=emb.device)].to(runs.dtype)  # R, H
        out["pool_align_loss"] = (1 - F.cosine_similarity(runs, targets, dim=-1)).mean()
        out["loss"] = out["loss"] + self.config.pool_align_weight * out["pool_align_loss"]

    # -- the CTC head (auralm.components.ctc) ------------------------------------------------------
    @property
    def ctc_vocab(self) -> torch.Tensor:
        """The LM token ids that are CTC classes (``self.ctc.vocab``; empty until set)."""
        return self._ctc().vocab

    def _ctc(self) -> CTCHead:
        if self.ctc is None:
            raise ConfigError("this model has no CTC head (ctc_weight is 0)")
        return self.ctc

    def _ctc_loss(self, audio: torch.Tensor, lengths: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC loss against the transcripts' mid-sentence LM token ids, and how many ids there are."""
        targets = [text_ids(self.tokenizer, t) for t in texts]
        return self._ctc().loss(audio, lengths, targets), torch.tensor(sum(map(len, targets)))

    def set_ctc_vocab(self, texts: list[str]) -> None:
        """``ctc_vocab: train``: make the tokens of ``texts`` (mid-sentence tokenisation) the CTC classes."""
        ids = sorted({i for t in texts for i in text_ids(self.tokenizer, t)})
        if not ids:
            raise ConfigError("no tokens in the training transcripts for the CTC vocabulary")
        self._ctc().set_vocab(ids)

    @torch.no_grad()
    def ctc_greedy_decode(self, batch: dict[str, Any]) -> list[str]:
        """The projector's own transcription: the CTC head's greedy token ids, detokenised."""
        rows = self._ctc().greedy_decode(*self._audio(batch))  # B lists of LM token ids
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in rows]

    def ctc_rescore(self, batch: dict[str, Any], gen: Any) -> list[str]:
        """``rescore_beam`` decoding: the CTC head's ``gen.rescore_beam`` best transcripts (:meth:`CTCHead.nbest`),
        each scored ``log p_CTC + rescore_weight * log p_LM + rescore_length_bonus * tokens`` with the LM's own
        prior (its adapters off: the frozen base LM reading the text alone), the best one detokenised."""
        beams = self._ctc().nbest(*self._audio(batch), beam=gen.rescore_beam)
        best = self._best_by_prior([[(ids, ac, len(ids)) for ids, ac in hyps] for hyps in beams], gen)
        return [self.tokenizer.decode(hyps[i][0] if i is not None else [], skip_special_tokens=True).strip()
                for hyps, i in zip(beams, best)]

    def _best_by_prior(self, rows: list[list[tuple[list[int], float, int]]], gen: Any) -> list[int | None]:
        """Each row's best candidate ``(LM token ids, acoustic log-prob, length)`` by ``acoustic + rescore_weight *
        log p_LM + rescore_length_bonus * length``, ``log p_LM`` the frozen base LM's prior of the ids (adapters
        off); None for a row without candidates."""
        flat = [ids for row in rows for ids, _, _ in row]
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.end_token_id
        with adapters_off(self.lm):
            lm_scores = sequence_logprobs(self.lm, flat, start) if gen.rescore_weight else [0.0] * len(flat)
        best, k = [], 0
        for row in rows:
            scores = [ac + gen.rescore_weight * lm_scores[k + j] + gen.rescore_length_bonus * n
                      for j, (_, ac, n) in enumerate(row)]  # fmt: skip
            k += len(row)
            best.append(max(range(len(row)), key=scores.__getitem__) if row else None)
        return best

    # -- the phone head (auralm.components.phones) ---------------------------------------------------
    def set_lexicon(self, lexicon: Lexicon) -> None:
        """``phone_weight`` > 0: the pronouncing lexicon, and a phone head over its phones (new weights)."""
        if self.config.phone_weight <= 0:
            raise ConfigError("this model has no phone head (phone_weight is 0)")
        self.lexicon = lexicon
        if self.phones is not None and self.phones.out.out_features == lexicon.num_classes:
            return  # the same phones: keep the head (and the optimizer's hold on its weights), e.g. on resume
        self.phones = PhoneHead(self.encoder.dim, lexicon.num_classes, self.config.phone_hidden,
                                self.config.phone_rnn_layers).to(self.device)

    def _phone_head(self) -> tuple[PhoneHead, Lexicon]:
        if self.phones is None or self.lexicon is None:
            raise ConfigError("this model has no phone head: phone_weight is 0, or its lexicon was never set")
        return self.phones, self.lexicon

    @torch.no_grad()
    def phone_rescore(self, batch: dict[str, Any], gen: Any) -> list[str]:
        """``rescore_head=phones``: the phone head's ``gen.rescore_beam`` best lexicon transcripts
        (:meth:`PhoneHead.nbest`), each scored ``log p_CTC(phones) + rescore_weight * log p_LM + rescore_length_bonus
        * words`` with the frozen LM's prior of it written as a sentence; the best one, written as a sentence."""
        head, lexicon = self._phone_head()
        lists, logp, n = head.nbest(*self._states(batch), lexicon, beam=gen.rescore_beam, prior_weight=gen.phone_prior_weight)
        rows = []
        for b, hyps in enumerate(lists):
            ac = head.score(logp[b, : int(n[b])].cpu(), [lexicon.spell(h) or [] for h in hyps])
            rows.append([(self.tokenizer(as_sentence(h), add_special_tokens=False).input_ids, ac[j], len(h.split()))
                         for j, h in enumerate(hyps)])
        best = self._best_by_prior(rows, gen)
        return [as_sentence(hyps[i]) if i is not None else "" for hyps, i in zip(lists, best)]

    def rescore(self, batch: dict[str, Any], gen: Any) -> list[str]:
        """``rescore_beam`` decoding of a batch's transcripts, by ``gen.rescore_head``: the word CTC head's N-best
        (:meth:`ctc_rescore`) or the phone head's (:meth:`phone_rescore`)."""
        return self.phone_rescore(batch, gen) if gen.rescore_head == "phones" else self.ctc_rescore(batch, gen)

    # -- generation -------------------------------------------------------------------------------
    def generate(self, batch: dict[str, Any], gen: Any = None) -> list[str]:
        """Answers for a batch (``gen``: :class:`auralm.components.generation.GenerationConfig`, default greedy)."""
        from auralm.components.generation import generate

        return generate(self, batch, gen)
