"""The S3 chat model: images, audio clips and text in one multi-turn conversation, read top to bottom.

::

    image ──image encoder (frozen)──► states (N, Di)  (EfficientNet-Lite0: 7 x 7 = 49 tokens)
          ──ImageProjector (pool p x p, LayerNorm, MLP)──► (N / p^2, H)  [──ImageContext (Transformer)──►]
          image_feed=raw: those tokens; image_feed=ctc_soft: the image CTC head's words (blank-dropped,
          runs merged, each its top token's input embedding), trained against the scene's canonical caption
    clip  ──audio encoder (frozen)──► states (T, Da) + length
          ──StackProjector (stack S)──► (T / S, H)
          feed=ctc_soft: CTC-compressed frames, each its top token's input embedding (S1's hard-token path)
          feed=raw: the projector's frames as they are (the continuous path)
    conversation ──chat template (components.lm.chat)──► ids with one placeholder id per media position
          ──LM embeddings, media spliced in order (splice_media)──► LM (frozen, + LoRA in stage 2)
          ──► loss on the assistant replies only (+ ctc_weight * CTC of each clip against its transcript,
              + image_ctc_weight * CTC of each picture against its description)

A batch is ``{"messages": [conversation, ...], "media": [[item, ...], ...]}``: per conversation, one item
per placeholder in order of appearance; an image item is ``{"kind": "image", "states": (N, Di)}`` (cached)
or ``{"kind": "image", "image": path | PIL}``, an audio item ``{"kind": "audio", "states": (T, Da)}`` or
``{"kind": "audio", "wav": float32 array}``, optionally with ``"text"`` (its transcript, for the CTC loss; a
picture's ``"text"``: its description, for the image CTC loss).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from auralm.components.connectors import StackProjector, splice_media
from auralm.components.ctc import CTCHead
from auralm.components.encoders import EfficientNetLiteEncoder, build_audio_encoder, build_image_encoder
from auralm.components.lm import (
    LoraConfig,
    PlaceholderError,
    check_quantize,
    frozen_lm,
    inject_lora,
    pad_ids,
    quantize_lm,
    text_ids,
)
from auralm.components.lm.chat import add_media_tokens, build_conversation, check_messages, media_order
from auralm.core.config import Config, help_field
from auralm.core.errors import AudioError, ConfigError
from auralm.training.checkpoint import copy_trained

TRAINABLE_PREFIXES = ("image_proj.", "image_ctx.", "image_ctc.", "audio_proj.", "ctc.")
FEEDS = ("ctc_soft", "raw")
VOCABS = ("ctc.vocab", "image_ctc.vocab")  # CTC class vocabularies: saved with the trained weights


@dataclasses.dataclass
class ChatModelConfig(Config):
    """The S3 model: encoders, LM, projectors and how the LM reads audio."""

    image_encoder: str = help_field("efficientnet-lite0", "image encoder (auralm.components.encoders), e.g. "
                                                          "efficientnet-lite0, openai/clip-vit-base-patch32")  # fmt: skip
    image_size: int = help_field(224, "side the image encoder reads, in pixels (EfficientNet: ceil(side / stride)^2 tokens)")
    image_stride: int = help_field(32, "EfficientNet's feature map: 32 (the final 1280-wide map) or 16 / 8 (the last "
                                       "block at that stride: finer, closer to the pixels; colour survives there)")
    image_colour: bool = help_field(False, "append each image token's patch colour (mean and std of R, G, B) to the "
                                           "encoder's features (PatchColour)")  # fmt: skip
    audio_encoder: str = help_field("whisper-tiny.en", "audio encoder name, e.g. whisper-tiny.en, conv-tiny")
    lm: str = help_field("smollm2-135m-instruct", "causal LM: hub name, or tiny-gpt2 / tiny-llama (random, for tests)")
    image_pool: int = help_field(1, "merge p x p neighbouring image tokens into one LM position (1: every token)")
    image_hidden: int = help_field(0, "hidden width of the image projector's MLP (0: the LM width)")
    audio_stack: int = help_field(4, "audio frames stacked into one LM position")
    feed: str = help_field("ctc_soft", "how the LM reads audio: ctc_soft (CTC-compressed frames as token embeddings, "
                                       "S1's hard-token path) or raw (the projector's frames, continuous)")  # fmt: skip
    ctc_weight: float = help_field(1.0, "weight of the CTC loss of each clip against its transcript (0: off; "
                                        "feed=ctc_soft needs it)")  # fmt: skip
    ctc_negatives: int = help_field(0, "training only: sampled CTC softmax (0: every class)")
    image_context: int = help_field(0, "Transformer layers over the projected image tokens (learned grid positions; "
                                       "0: none): lets any position speak of any part of the picture")  # fmt: skip
    image_context_width: int = help_field(256, "width the image context layers work at")
    image_feed: str = help_field("raw", "how the LM reads a picture: raw (the projected tokens) or ctc_soft (the "
                                        "image CTC head's words: a picture read as its description's tokens)")  # fmt: skip
    image_ctc_weight: float = help_field(0.0, "weight of the CTC loss of each picture's tokens against its scene's "
                                              "canonical caption (0: off; image_feed=ctc_soft needs it)")  # fmt: skip
    system: str | None = help_field("", "system message (null: the chat template's default; '' an empty one)")
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig, metadata={"help": "LoRA (stage 2)"})

    def validate(self) -> None:
        if self.image_size < 32:
            raise ConfigError(f"image_size must be at least 32 pixels, got {self.image_size}")
        if self.image_stride not in EfficientNetLiteEncoder.STRIDES:
            raise ConfigError(f"image_stride must be one of {EfficientNetLiteEncoder.STRIDES}, got {self.image_stride}")
        if self.image_pool < 1 or self.audio_stack < 1:
            raise ConfigError(f"image_pool and audio_stack must be >= 1, got {self.image_pool}, {self.audio_stack}")
        if self.feed not in FEEDS:
            raise ConfigError(f"feed must be one of {', '.join(FEEDS)}, got {self.feed!r}")
        if self.feed == "ctc_soft" and self.ctc_weight <= 0:
            raise ConfigError("feed=ctc_soft reads the CTC head's output: set ctc_weight > 0")
        if self.image_feed not in FEEDS:
            raise ConfigError(f"image_feed must be one of {', '.join(FEEDS)}, got {self.image_feed!r}")
        if self.image_feed == "ctc_soft" and self.image_ctc_weight <= 0:
            raise ConfigError("image_feed=ctc_soft reads the image CTC head's output: set image_ctc_weight > 0")
        if self.image_context < 0 or self.image_ctc_weight < 0 or self.image_context_width < 1:
            raise ConfigError(f"image_context and image_ctc_weight must be >= 0 and image_context_width >= 1, got "
                              f"{self.image_context}, {self.image_ctc_weight}, {self.image_context_width}")  # fmt: skip
        if self.ctc_weight < 0 or self.ctc_negatives < 0:
            raise ConfigError(f"ctc_weight and ctc_negatives must be >= 0, got {self.ctc_weight}, {self.ctc_negatives}")


def image_encoder_from(cfg: ChatModelConfig) -> Any:
    """The frozen image encoder a config names; ``efficientnet-tiny`` is a small random one for tests."""
    from auralm.components.encoders import EfficientNetLiteConfig

    kw = {"stride": cfg.image_stride, "patch_colour": cfg.image_colour}
    if cfg.image_encoder == "efficientnet-tiny":
        return build_image_encoder(EfficientNetLiteConfig(image_size=cfg.image_size, width=0.25, depth=0.25), **kw)
    if cfg.image_encoder.startswith("efficientnet"):
        return build_image_encoder(cfg.image_encoder, image_size=cfg.image_size, **kw)
    return build_image_encoder(cfg.image_encoder, **kw)


class ImageProjector(nn.Module):
    """``(M, N, D)`` image tokens on a ``rows x cols`` grid -> ``(M, N', H)``: p x p neighbours concatenated
    (the grid padded to a multiple of p), LayerNorm, 2-layer MLP (GELU), as LLaVA-1.5's projector."""

    def __init__(self, dim: int, lm_dim: int, grid: tuple[int, int], pool: int = 1, hidden: int = 0):
        super().__init__()
        self.dim, self.grid, self.pool = int(dim), (int(grid[0]), int(grid[1])), int(pool)
        width = hidden or lm_dim
        self.norm = nn.LayerNorm(dim * pool * pool)
        self.net = nn.Sequential(nn.Linear(dim * pool * pool, width), nn.GELU(), nn.Linear(width, lm_dim))

    @property
    def num_tokens(self) -> int:
        p = self.pool
        return -(-self.grid[0] // p) * -(-self.grid[1] // p)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        M, N, D = states.shape
        rows, cols = self.grid
        if N != rows * cols or D != self.dim:
            raise ConfigError(f"image states are {N} x {D}, but the projector was built for {rows * cols} x {self.dim}")
        p = self.pool
        x = states.to(self.norm.weight.dtype).reshape(M, rows, cols, D)  # M, R, C, D
        if p > 1:
            x = F.pad(x, (0, 0, 0, (-cols) % p, 0, (-rows) % p))  # M, R', C', D
            R, C = x.shape[1] // p, x.shape[2] // p
            x = x.reshape(M, R, p, C, p, D).permute(0, 1, 3, 2, 4, 5).reshape(M, R, C, p * p * D)  # M, R/p, C/p, p*p*D
        x = x.reshape(M, -1, x.shape[-1])  # M, N', p*p*D
        return self.net(self.norm(x))  # M, N', H


class ImageContext(nn.Module):
    """``(M, N, H)`` projected image tokens -> the same: down to ``width``, learned grid positions, a pre-norm
    Transformer encoder (``layers`` layers, GELU, feed-forward 2 x width), back up to H. Each position sees
    the whole picture, so the image CTC head can say the description in order, wherever the shapes lie."""

    def __init__(self, dim: int, n_tokens: int, layers: int, width: int = 256, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        heads = next(h for h in range(min(heads, width), 0, -1) if width % h == 0)  # the most heads <= asked that divide it
        self.down = nn.Linear(dim, width)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)  # fmt: skip
        self.net = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.down(tokens) + self.pos.to(tokens.dtype)  # M, N, W
        return self.up(self.norm(self.net(x)))  # M, N, H


class ChatLM(nn.Module):
    """Image encoder + audio encoder (frozen) + two projectors (trained) + causal LM (frozen; LoRA optional)."""

    def __init__(self, cfg: ChatModelConfig, image_encoder: Any = None, audio_encoder: Any = None,
                 lm: nn.Module | None = None, tokenizer: Any = None):  # fmt: skip
        super().__init__()
        self.config = cfg
        self.image_encoder = image_encoder if image_encoder is not None else image_encoder_from(cfg)
        self.audio_encoder = audio_encoder if audio_encoder is not None else build_audio_encoder(cfg.audio_encoder)
        f = frozen_lm(cfg.lm, lm, tokenizer, owner="ChatLM")
        self.lm, self.tokenizer, self.lm_revision = f.lm, f.tokenizer, f.revision
        self.end_token_id, self.pad_token_id, self.vocab_size, self.lm_dim = f.end_token_id, f.pad_token_id, f.vocab_size, f.dim
        self.media_ids = add_media_tokens(self.tokenizer)
        lm = self.lm
        enc = self.image_encoder
        self.image_proj = ImageProjector(enc.dim, self.lm_dim, enc.grid, cfg.image_pool, cfg.image_hidden)
        self.image_ctx = ImageContext(self.lm_dim, self.image_proj.num_tokens, cfg.image_context,
                                      cfg.image_context_width) if cfg.image_context else None  # fmt: skip
        self.image_ctc = CTCHead(lm.get_input_embeddings()) if cfg.image_ctc_weight > 0 else None
        self.audio_proj = StackProjector(self.audio_encoder.dim, self.lm_dim, cfg.audio_stack, "mlp")
        self.ctc = CTCHead(lm.get_input_embeddings(), None, cfg.ctc_negatives) if cfg.ctc_weight > 0 else None
        self.has_lora = False
        if cfg.lora.r > 0:
            self.add_lora(cfg.lora)

    # -- parts ------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> ChatLM:
        super().train(mode)
        self.lm.train(mode and self.has_lora)
        self.image_encoder.train(False)
        self.audio_encoder.train(False)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.image_proj.parameters()).device

    def frozen_parts(self) -> dict[str, dict[str, str]]:
        """What the trained weights depend on: the encoders' and the LM's names and revisions."""
        return {
            "image_encoder": {"name": self.image_encoder.name, "revision": self.image_encoder.revision},
            "audio_encoder": {"name": self.audio_encoder.name, "revision": self.audio_encoder.revision},
            "lm": {"name": getattr(self.lm, "auralm_name", self.config.lm), "revision": self.lm_revision},
        }

    def add_lora(self, lora: LoraConfig) -> None:
        """Stage 2: peft LoRA adapters on the LM (QLoRA: its base in 4-bit NF4 first, CUDA only)."""
        if self.has_lora:
            raise ConfigError("the LM already has LoRA adapters")
        if lora.quantize != "none":
            check_quantize(lora.quantize)
            quantize_lm(self.lm, lora.quantize)
        inject_lora(self.lm, lora)
        self.config = self.config.replace(lora=lora)
        self.has_lora = True
        self.train(self.training)

    def set_ctc_vocab(self, texts: list[str], head: str = "ctc") -> None:
        """The CTC classes of ``head`` (``ctc``: the audio's; ``image_ctc``: the pictures'): the tokens of the
        training transcripts (questions, number words) or captions."""
        ctc = getattr(self, head)
        if ctc is None:
            raise ConfigError(f"this model has no {head} head (its weight is 0)")
        rows = [text_ids(self.tokenizer, t) for t in texts]
        ids = sorted({i for r in rows for i in r})
        if not ids:
            raise ConfigError(f"no tokens in the texts for the {head} vocabulary")
        if head == "image_ctc":  # CTC needs a position per token (+ one between repeats): a picture has N' of them
            need = max(len(r) + sum(a == b for a, b in zip(r, r[1:])) for r in rows)
            if need > self.image_proj.num_tokens:
                raise ConfigError(f"the picture descriptions need up to {need} positions, but a picture has "
                                  f"{self.image_proj.num_tokens}: raise model.image_size or lower model.image_stride "
                                  f"/ model.image_pool")  # fmt: skip
        ctc.set_vocab(ids)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights only: projectors, CTC blanks (+ their vocabularies), LoRA; detached copies."""
        state = {k: v.detach().clone() for k, v in self.named_parameters() if k.startswith(TRAINABLE_PREFIXES) or "lora_" in k}
        for key in VOCABS:
            head = getattr(self, key.split(".")[0])
            if head is not None:
                state[key] = head.vocab.detach().clone()
        return state

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        state = dict(state)
        for key in VOCABS:
            head = getattr(self, key.split(".")[0])
            if head is not None and key in state:
                head.set_vocab(state.pop(key))
        own = {k: v for k, v in self.named_parameters() if k.startswith(TRAINABLE_PREFIXES) or "lora_" in k}
        copy_trained(own, state, strict, f"LM {self.config.lm}")

    # -- media ------------------------------------------------------------------------------------
    def _image_states(self, items: list[dict[str, Any]]) -> torch.Tensor:
        """``(M, N, Di)``: cached states as they are, images through the frozen encoder."""
        out: list[torch.Tensor | None] = [it.get("states") for it in items]
        todo = [i for i, s in enumerate(out) if s is None]
        if todo:
            states, _ = self.image_encoder([items[i]["image"] for i in todo])
            for i, s in zip(todo, states):
                out[i] = s
        return torch.stack([s.to(self.device, torch.float32) for s in out])  # type: ignore[union-attr]

    def _audio_states(self, items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, T, Da)`` padded + lengths ``(A,)``."""
        out: list[torch.Tensor | None] = [it.get("states") for it in items]
        todo = [i for i, s in enumerate(out) if s is None]
        if todo:
            wavs = [items[i]["wav"] for i in todo]
            for i, w in zip(todo, wavs):
                if w is None or len(w) == 0:
                    raise AudioError(f"audio item {i} is empty (zero samples)")
            states, lengths = self.audio_encoder(wavs)
            for i, s, n in zip(todo, states, lengths.tolist()):
                out[i] = s[:n]
        lengths = torch.tensor([s.shape[0] for s in out], device=self.device)  # type: ignore[union-attr]
        if (lengths <= 0).any():
            raise AudioError(f"an audio clip has no frames (lengths {lengths.tolist()})")
        T = int(lengths.max())
        padded = torch.zeros(len(out), T, out[0].shape[-1], device=self.device)  # type: ignore[union-attr]
        for i, s in enumerate(out):
            padded[i, : s.shape[0]] = s.to(self.device, torch.float32)  # type: ignore[union-attr]
        return padded, lengths

    def project_images(self, items: list[dict[str, Any]], feed: bool = True) -> dict[str, Any]:
        """Projected pictures ``(M, N', H)`` (after the context layers), and (``feed``) what the LM reads (``lm``,
        ``lm_lengths``: every picture N' tokens, or with ``image_feed=ctc_soft`` its CTC-compressed words)."""
        tokens = self.image_proj(self._image_states(items))  # M, N', H
        if self.image_ctx is not None:
            tokens = self.image_ctx(tokens)
        lengths = torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device)
        if not feed:
            return {"tokens": tokens, "lengths": lengths}
        if self.config.image_feed == "ctc_soft":
            lm, lm_lengths, _ = self.image_ctc.compress(tokens, lengths, 1)  # M, G, H
        else:
            lm, lm_lengths = tokens, lengths
        return {"tokens": tokens, "lengths": lengths, "lm": lm, "lm_lengths": lm_lengths}

    def image_ctc_loss(self, img: dict[str, Any], items: list[dict[str, Any]]) -> torch.Tensor | None:
        """CTC of the pictures that carry a description (``"text"``), against its mid-sentence LM token ids."""
        have = [i for i, it in enumerate(items) if it.get("text")]
        if not have or self.image_ctc is None:
            return None
        idx = torch.tensor(have, device=img["tokens"].device)
        targets = [text_ids(self.tokenizer, items[i]["text"]) for i in have]
        return self.image_ctc.loss(img["tokens"][idx], img["lengths"][idx], targets)

    @torch.no_grad()
    def describe(self, items: list[dict[str, Any]]) -> list[str]:
        """What the image CTC head reads in each picture (greedy): the words ``image_feed=ctc_soft`` gives the LM."""
        if self.image_ctc is None:
            raise ConfigError("this model has no image CTC head (image_ctc_weight is 0)")
        img = self.project_images(items, feed=False)
        rows = self.image_ctc.greedy_decode(img["tokens"], img["lengths"])
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]

    def project_audio(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Projected clips ``(A, T', H)`` + lengths, and what the LM reads (``lm``, ``lm_lengths``, ``ids``)."""
        states, lengths = self._audio_states(items)
        audio, audio_lengths = self.audio_proj(states, lengths)  # A, T', H ; A
        fed_ids = None
        if self.config.feed == "ctc_soft":
            lm_audio, lm_lengths, fed_ids = self.ctc.compress(audio, audio_lengths, 1)  # A, G, H
        else:
            lm_audio, lm_lengths = audio, audio_lengths
        return {"audio": audio, "lengths": audio_lengths, "lm": lm_audio, "lm_lengths": lm_lengths, "ids": fed_ids}

    def build_inputs(self, batch: dict[str, Any], answers: bool = True, left_pad: bool = False) -> dict[str, Any]:
        """Token embeddings with every image and clip in place, attention mask from lengths, labels.

        ``answers=False``: each conversation ends with a user turn and gets the assistant header (decoding)."""
        convs, media = batch["messages"], batch.get("media") or [[] for _ in batch["messages"]]
        if len(media) != len(convs):
            raise PlaceholderError(f"{len(convs)} conversations but media for {len(media)}")
        images, clips = [], []
        for b, (msgs, items) in enumerate(zip(convs, media)):
            check_messages(msgs, {"image": sum(it["kind"] == "image" for it in items),
                                  "audio": sum(it["kind"] == "audio" for it in items)}, where=f"conversation {b}")  # fmt: skip
            order = media_order(msgs)
            kinds = [it["kind"] for it in items]
            if kinds != order:
                raise PlaceholderError(f"conversation {b}: placeholders in the order {order} but media {kinds}")
            images += [it for it in items if it["kind"] == "image"]
            clips += [it for it in items if it["kind"] == "audio"]
        img = self.project_images(images) if images else None
        aud = self.project_audio(clips) if clips else None
        img_lengths = iter(img["lm_lengths"].tolist() if img is not None else [])
        aud_lengths = iter(aud["lm_lengths"].tolist() if aud is not None else [])
        examples = []
        for msgs, items in zip(convs, media):
            lengths = [next(img_lengths) if it["kind"] == "image" else next(aud_lengths) for it in items]
            examples.append(build_conversation(self.tokenizer, msgs, lengths, self.config.system, not answers))
        ids = pad_ids([e[0] for e in examples], self.pad_token_id, left_pad).to(self.device)  # B, L
        labels = pad_ids([e[1] for e in examples], -100, left_pad).to(self.device)  # B, L
        mask = pad_ids([[1] * len(e[0]) for e in examples], 0, left_pad).to(self.device)  # B, L
        media_pos = (ids == self.media_ids["image"]) | (ids == self.media_ids["audio"]) | (ids >= self.vocab_size)
        embeds = self.lm.get_input_embeddings()(ids.masked_fill(media_pos, self.pad_token_id))  # B, L, H
        if img is not None:
            embeds = splice_media(embeds, ids, img["lm"], img["lm_lengths"], self.media_ids["image"], "image")
        if aud is not None:
            embeds = splice_media(embeds, ids, aud["lm"], aud["lm_lengths"], self.media_ids["audio"], "audio")
        return {"embeds": embeds, "mask": mask, "labels": labels, "clips": clips, "aud": aud, "images": images, "img": img,
                "audio": None, "audio_lengths": None, "lm_audio_lengths": [], "lm_audio_ids": None}  # fmt: skip

    def audio_context(self, audio: Any, lengths: Any) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # prefix family: the media are in the embeddings

    # -- training ---------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"loss", "lm_loss", "n_tokens"}`` (+ ``"ctc_loss"``): means over reply tokens."""
        x = self.build_inputs(batch, answers=True)
        targets = x["labels"][:, 1:]  # B, L-1: token t is predicted at position t-1
        keep = (targets != -100).any(0).nonzero().squeeze(1)  # K columns with a reply token: the head runs there only
        logits = self.lm(inputs_embeds=x["embeds"], attention_mask=x["mask"], use_cache=False,
                         logits_to_keep=keep).logits  # B, K, V
        targets = targets[:, keep]  # B, K
        n_tokens = (targets != -100).sum()
        lm_loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                                  reduction="sum") / n_tokens.clamp(min=1)  # fmt: skip
        out = {"lm_loss": lm_loss, "n_tokens": n_tokens, "loss": lm_loss}
        if self.ctc is not None and x["aud"] is not None:
            ctc = self.ctc_loss(x["aud"], x["clips"])
            if ctc is not None:
                out["ctc_loss"] = ctc
                out["loss"] = out["loss"] + self.config.ctc_weight * ctc
        if self.image_ctc is not None and x["img"] is not None:
            ictc = self.image_ctc_loss(x["img"], x["images"])
            if ictc is not None:
                out["image_ctc_loss"] = ictc
                out["loss"] = out["loss"] + self.config.image_ctc_weight * ictc
        return out

    def ctc_loss(self, aud: dict[str, Any], clips: list[dict[str, Any]]) -> torch.Tensor | None:
        """CTC of the clips that carry a transcript, against its mid-sentence LM token ids."""
        have = [i for i, c in enumerate(clips) if c.get("text")]
        if not have:
            return None
        idx = torch.tensor(have, device=aud["audio"].device)
        targets = [text_ids(self.tokenizer, clips[i]["text"]) for i in have]
        return self.ctc.loss(aud["audio"][idx], aud["lengths"][idx], targets)

    def image_ctc_only_loss(self, pictures: list[dict[str, Any]]) -> torch.Tensor:
        """The image warm-up: the CTC loss of pictures against their descriptions alone (the LM does not run)."""
        return self.image_ctc_loss(self.project_images(pictures, feed=False), pictures)

    def ctc_only_loss(self, clips: list[dict[str, Any]]) -> torch.Tensor:
        """Stage 1's audio warm-up: the CTC loss of clips alone (the LM does not run)."""
        states, lengths = self._audio_states(clips)
        audio, audio_lengths = self.audio_proj(states, lengths)
        return self.ctc_loss({"audio": audio, "lengths": audio_lengths}, clips)

    @torch.no_grad()
    def transcribe(self, clips: list[dict[str, Any]]) -> list[str]:
        """The audio projector's own greedy CTC transcripts."""
        if self.ctc is None:
            raise ConfigError("this model has no CTC head (ctc_weight is 0)")
        states, lengths = self._audio_states(clips)
        rows = self.ctc.greedy_decode(*self.audio_proj(states, lengths))
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]

    def generate(self, batch: dict[str, Any], gen: Any = None, on_delta: Any = None) -> list[str]:
        """The next assistant reply of each conversation (greedy unless ``gen`` says otherwise)."""
        from auralm.components.generation import generate

        return generate(self, batch, gen, on_delta=on_delta)
