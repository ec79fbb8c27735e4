"""The S4 models: the aligner (audio-encoder states -> a text encoder's token states), the small text-conditioned
diffusion model (diffusers ``UNet2DConditionModel`` + DDPM/DDIM schedulers) and the judge (a small CNN that
reads colour, shape and count off a drawn scene).

The aligner, read top to bottom::

    audio states (B, F, Da), lengths (B,)            # a frozen audio encoder's output (Whisper: 50 frames/s)
    -> conv adapter: 2 x [Conv1d(k=3, s=2) + GELU]   # (B, F, Da) -> (B, F/4, H)   (the seed's adapter)
    -> N learned queries (+ position) cross-attend to it (key padding masked), self-attend, L layers
                                                     # (B, N, H)
    -> Linear(H, Dt)                                 # (B, N, Dt): exactly the text encoder's token count N
    -> length head on the masked mean of the adapter # (B, N + 1) logits: how many of the N tokens are real

So audio of any length gives exactly ``N = text_encoder.max_length`` tokens, and the predicted length gives the
attention mask the generator honours (as the text encoder's lengths do for text).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError


# -- the aligner ----------------------------------------------------------------------------------
@dataclasses.dataclass
class AlignerConfig(Config):
    """Shape of the aligner. ``audio_dim``, ``text_dim`` and ``tokens`` come from the encoders it joins."""

    audio_encoder: str = help_field("whisper-tiny.en", "audio encoder name (auralm.components.encoders)")
    text_encoder: str = help_field("all-minilm-l6-v2", "text encoder name (auralm.components.encoders.text)")
    audio_dim: int = help_field(384, "width of the audio encoder's states (Da)")
    text_dim: int = help_field(384, "width of the text encoder's states (Dt)")
    tokens: int = help_field(40, "token count N (the text encoder's max_length)")
    hidden: int = help_field(128, "adapter / query width H")
    conv_layers: int = help_field(2, "stride-2 conv layers of the adapter (kernel 3)")
    layers: int = help_field(2, "query transformer layers (self-attention + cross-attention + MLP)")
    heads: int = help_field(4, "attention heads")
    dropout: float = help_field(0.1, "dropout in the query transformer")

    def validate(self) -> None:
        for name in ("audio_dim", "text_dim", "tokens", "hidden", "layers", "heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"AlignerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ConfigError(f"AlignerConfig.hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if not 0 <= self.conv_layers <= 4:
            raise ConfigError(f"AlignerConfig.conv_layers must be in 0..4, got {self.conv_layers}")


class ConvAdapter(nn.Module):
    """``(B, F, Da) -> (B, ceil(F / 2**L), H)``: L stride-2 convolutions (kernel 3, padding 1), padding re-zeroed."""

    def __init__(self, audio_dim: int, hidden: int, layers: int):
        super().__init__()
        dims = [audio_dim] + [hidden] * max(layers, 1)
        self.proj = nn.Linear(audio_dim, hidden) if layers == 0 else None
        self.convs = nn.ModuleList(nn.Conv1d(dims[i], dims[i + 1], 3, stride=2, padding=1) for i in range(layers))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.proj is not None:
            return self.proj(x), lengths
        x = x.transpose(1, 2)  # B, Da, F
        for conv in self.convs:
            x = x * _mask(lengths, x.shape[2])[:, None, :].to(x)
            x = F.gelu(conv(x))  # B, H, ceil(F/2)
            lengths = (lengths + 1) // 2
        x = x * _mask(lengths, x.shape[2])[:, None, :].to(x)
        return x.transpose(1, 2), lengths  # B, F', H


def _mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    return torch.arange(size, device=lengths.device)[None, :] < lengths.to(torch.long)[:, None]


class Aligner(nn.Module):
    """Audio-encoder states -> ``(B, N, Dt)`` text-encoder-like token states and ``(B, N + 1)`` length logits."""

    def __init__(self, cfg: AlignerConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.adapter = ConvAdapter(cfg.audio_dim, h, cfg.conv_layers)
        self.queries = nn.Parameter(torch.randn(cfg.tokens, h) * 0.02)
        self.audio_pos = nn.Parameter(torch.randn(4096, h) * 0.02)  # adapter frames (4096 x 80 ms: 5.5 min at 50 Hz)
        layer = nn.TransformerDecoderLayer(h, cfg.heads, 4 * h, cfg.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)  # fmt: skip
        self.decoder = nn.TransformerDecoder(layer, cfg.layers)
        self.norm = nn.LayerNorm(h)
        self.out = nn.Linear(h, cfg.text_dim)
        self.length_head = nn.Linear(h, cfg.tokens + 1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats (B, F, Da)``, ``lengths (B,)`` -> ``states (B, N, Dt)``, ``length_logits (B, N + 1)``."""
        if feats.shape[-1] != self.cfg.audio_dim:
            raise ConfigError(f"the aligner takes {self.cfg.audio_dim}-wide audio states ({self.cfg.audio_encoder}), "
                              f"got {feats.shape[-1]}")  # fmt: skip
        lengths = lengths.to(feats.device)
        x, lens = self.adapter(feats, lengths)  # B, F', H
        if x.shape[1] > self.audio_pos.shape[0]:
            raise ConfigError(f"audio too long for the aligner: {x.shape[1]} adapter frames, at most {self.audio_pos.shape[0]}")
        x = x + self.audio_pos[: x.shape[1]]
        pad = ~_mask(lens, x.shape[1])  # B, F': True = padding
        q = self.queries[None].expand(x.shape[0], -1, -1)  # B, N, H
        y = self.norm(self.decoder(q, x, memory_key_padding_mask=pad))  # B, N, H
        keep = (~pad).to(x)[:, :, None]
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1)  # B, H
        return self.out(y), self.length_head(pooled)

    @torch.no_grad()
    def predict(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states and the predicted real-token counts (at least 2: a start and an end token)."""
        states, logits = self(feats, lengths)
        return states, logits.argmax(-1).clamp(min=2)


# -- the diffusion model --------------------------------------------------------------------------
@dataclasses.dataclass
class DiffusionConfig(Config):
    """A small ``UNet2DConditionModel`` cross-attending to text-encoder states, and its noise schedule."""

    image_size: int = help_field(32, "side of the generated images in pixels")
    cond_dim: int = help_field(384, "width of the conditioning states (the text encoder's)")
    channels: list = help_field([32, 64, 64], "block_out_channels of the UNet")
    layers_per_block: int = help_field(1, "resnet layers per UNet block")
    head_dim: int = help_field(32, "attention head width")
    attention_levels: int = help_field(1, "resolution levels (from the coarsest) whose blocks cross-attend to the states")
    pooled: bool = help_field(True, "also add an attention-pooled summary of the states to the time embedding "
                                    "(diffusers addition_embed_type='text'): global conditioning, learnt sooner")
    train_timesteps: int = help_field(1000, "DDPM training timesteps")
    beta_schedule: str = help_field("squaredcos_cap_v2", "DDPM beta schedule (diffusers name)")
    prediction_type: str = help_field("epsilon", "epsilon or v_prediction")

    def validate(self) -> None:
        if self.image_size < 8 or self.image_size % (2 ** (len(self.channels) - 1)):
            raise ConfigError(f"DiffusionConfig.image_size ({self.image_size}) must be >= 8 and divisible by "
                              f"2**(len(channels) - 1) = {2 ** (len(self.channels) - 1)}")  # fmt: skip
        if not self.channels or any(not isinstance(c, int) or c <= 0 or c % 32 for c in self.channels):
            raise ConfigError(f"DiffusionConfig.channels must be positive multiples of 32 (group norm), got {self.channels}")
        if not 1 <= self.attention_levels <= len(self.channels):
            raise ConfigError(f"DiffusionConfig.attention_levels must be in 1..{len(self.channels)}, got {self.attention_levels}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"DiffusionConfig.prediction_type must be epsilon or v_prediction, got {self.prediction_type!r}")


def build_unet(cfg: DiffusionConfig) -> Any:
    """The ``UNet2DConditionModel``: the coarsest ``attention_levels`` blocks (and the middle block) cross-attend."""
    from diffusers import UNet2DConditionModel

    n, a = len(cfg.channels), cfg.attention_levels
    down = ["DownBlock2D"] * (n - a) + ["CrossAttnDownBlock2D"] * a
    up = ["CrossAttnUpBlock2D"] * a + ["UpBlock2D"] * (n - a)
    return UNet2DConditionModel(
        sample_size=cfg.image_size, in_channels=3, out_channels=3, layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.channels), down_block_types=tuple(down), up_block_types=tuple(up),
        cross_attention_dim=cfg.cond_dim, attention_head_dim=cfg.head_dim, norm_num_groups=32,
        addition_embed_type="text" if cfg.pooled else None, addition_embed_type_num_heads=max(1, cfg.cond_dim // 64),
    )  # fmt: skip


def build_scheduler(cfg: DiffusionConfig, kind: str = "ddim") -> Any:
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}.get(kind)
    if cls is None:
        raise ConfigError(f"unknown scheduler {kind!r}; known: ddim, ddpm")
    extra = {"clip_sample": True} if kind == "ddpm" else {"clip_sample": True, "set_alpha_to_one": True}
    return cls(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
               prediction_type=cfg.prediction_type, **extra)  # fmt: skip


def null_condition(batch: int, tokens: int, dim: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The unconditional input of classifier-free guidance: zero states, only the first position attended."""
    mask = torch.zeros(batch, tokens, dtype=torch.long, device=device)
    mask[:, 0] = 1
    return torch.zeros(batch, tokens, dim, device=device), mask


def diffusion_loss(unet: Any, scheduler: Any, images: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                   gen: torch.Generator, *, snr_gamma: float = 0.0, t_min: int = 0) -> torch.Tensor:  # fmt: skip
    """The DDPM training loss: noise ``images`` (B, 3, S, S in [-1, 1]) at random timesteps in
    ``[t_min, T)``, predict the noise (or v) from the states (B, N, D) with their mask (B, N).

    ``snr_gamma > 0`` weights each item by Min-SNR-gamma (Hang et al. 2023): ``min(SNR, gamma) / SNR`` for epsilon
    (``/ (SNR + 1)`` for v), so the nearly clean timesteps, where the condition hardly matters, stop dominating.
    """
    b = images.shape[0]
    noise = torch.randn(images.shape, generator=gen).to(images)
    t = torch.randint(t_min, scheduler.config.num_train_timesteps, (b,), generator=gen).to(images.device)
    noisy = scheduler.add_noise(images, noise, t)
    eps = scheduler.config.prediction_type == "epsilon"
    target = noise if eps else scheduler.get_velocity(images, noise, t)
    states = states * mask[:, :, None].to(states)  # padding states zeroed: the pooled summary sees real tokens only
    pred = unet(noisy, t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
    per_item = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    if snr_gamma > 0:
        from diffusers.training_utils import compute_snr

        snr = compute_snr(scheduler, t).float()
        per_item = per_item * snr.clamp(max=snr_gamma) / (snr if eps else snr + 1)
    return per_item.mean()


@torch.no_grad()
def denoise(unet: Any, scheduler: Any, states: torch.Tensor, mask: torch.Tensor | None, shape: tuple[int, ...], *,
            steps: int, guidance: float, seed: int, null: tuple[torch.Tensor, torch.Tensor | None] | None = None,
            init_sigma: float = 1.0) -> torch.Tensor:  # fmt: skip
    """The sampling loop shared by the pixel UNet and Stable Diffusion's latent UNet.

    ``states (B, N, D)`` with ``mask (B, N)`` (1 = attend; None = every position) condition ``unet``;
    ``null`` = (states, mask) of one unconditional input ``(1, N, D)`` for classifier-free guidance (used when
    ``guidance != 1``). Item ``b`` starts from the noise of ``seed + b`` (shape ``shape`` per item), so an
    image depends on its own seed only. Returns the final sample ``(B, *shape)`` on the UNet's device.
    """
    dev = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    b = states.shape[0]
    gens = [torch.Generator().manual_seed(seed + i) for i in range(b)]  # one stream per item (noise and steps)
    x = torch.stack([torch.randn(shape, generator=g) for g in gens])
    x = (x * init_sigma).to(dev, dtype)
    stochastic = "generator" in inspect.signature(scheduler.step).parameters
    scheduler.set_timesteps(steps)
    states = states.to(dev, dtype)
    mask = None if mask is None else mask.to(dev)
    guided = guidance != 1.0 and null is not None
    if guided:
        ns, nm = null
        cond_s = torch.cat([ns.to(dev, dtype).expand(b, -1, -1), states])
        if mask is None and nm is None:
            cond_m = None
        else:
            ones = torch.ones(b, states.shape[1], dtype=torch.long, device=dev)
            nm = ones if nm is None else nm.to(dev).expand(b, -1)
            cond_m = torch.cat([nm, ones if mask is None else mask])
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        if guided:
            out = unet(torch.cat([inp, inp]), t, encoder_hidden_states=cond_s, encoder_attention_mask=cond_m).sample
            uncond, cond = out.chunk(2)
            eps = uncond + guidance * (cond - uncond)
        else:
            eps = unet(inp, t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
        if stochastic:  # ancestral samplers (DDPM) draw noise each step: from the items' own streams, on the CPU
            x = scheduler.step(eps.cpu().float(), t, x.cpu().float(), generator=gens).prev_sample.to(dev, dtype)
        else:
            x = scheduler.step(eps, t, x).prev_sample
    return x


@torch.no_grad()
def sample_images(unet: Any, scheduler: Any, states: torch.Tensor, mask: torch.Tensor, *, steps: int = 50,
                  guidance: float = 3.0, seed: int = 0) -> torch.Tensor:  # fmt: skip
    """Sampling of the pixel UNet (``scheduler``: DDIM, or DDPM's ancestral sampler) with classifier-free guidance
    (the null condition):
    ``(B, N, D)`` states -> ``(B, 3, S, S)`` images in [0, 1] (on the CPU)."""
    size = unet.config.sample_size
    states = states * mask[:, :, None].to(states)  # as in training: padding states zeroed
    null = null_condition(1, states.shape[1], states.shape[2])
    x = denoise(unet, scheduler, states, mask, (3, size, size), steps=steps, guidance=guidance, seed=seed, null=null)
    return ((x.float().clamp(-1, 1) + 1) / 2).cpu()


# -- the judge ------------------------------------------------------------------------------------
@dataclasses.dataclass
class JudgeConfig(Config):
    """A small CNN with three heads: colour and shape of the main object (the first in reading order, the one
    the canonical caption names first) and the number of objects."""

    image_size: int = help_field(32, "input side in pixels")
    colours: list = help_field(["red", "green", "blue", "yellow", "purple", "orange"], "colour classes")
    shapes: list = help_field(["circle", "square", "triangle"], "shape classes")
    max_count: int = help_field(3, "counts 1..max_count")
    width: int = help_field(32, "channels of the first conv stage (doubled per stage)")

    def validate(self) -> None:
        if not self.colours or not self.shapes or self.max_count < 1 or self.width < 4:
            raise ConfigError("JudgeConfig: colours and shapes must be non-empty, max_count >= 1, width >= 4")

    def heads(self) -> dict[str, list]:
        return {"colour": list(self.colours), "shape": list(self.shapes),
                "count": [str(i) for i in range(1, self.max_count + 1)]}  # fmt: skip


class Judge(nn.Module):
    """``(B, 3, S, S)`` images in [0, 1] -> logits per attribute (``colour``, ``shape``, ``count``)."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        stages = max(2, int(math.log2(cfg.image_size)) - 2)
        layers, c_in = [], 3
        for i in range(stages):
            c_out = w * 2 ** min(i, 2)
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]  # fmt: skip
            c_in = c_out
        self.features = nn.Sequential(*layers)
        side = cfg.image_size // 2**stages
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, 256), nn.ReLU(), nn.Dropout(0.2))
        self.outs = nn.ModuleDict({k: nn.Linear(256, len(v)) for k, v in cfg.heads().items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.head(self.features(images * 2 - 1))
        return {k: head(h) for k, head in self.outs.items()}


def scene_labels(scene: dict[str, Any], cfg: JudgeConfig) -> dict[str, int]:
    """The judge's targets of a scene record: class indices of the main object's colour and shape and the count."""
    main = scene["objects"][0]
    heads = cfg.heads()
    try:
        return {"colour": heads["colour"].index(main["colour"]), "shape": heads["shape"].index(main["shape"]),
                "count": heads["count"].index(str(len(scene["objects"])))}  # fmt: skip
    except ValueError:
        raise ConfigError(f"scene {scene.get('id')}: {main['colour']} {main['shape']} x {len(scene['objects'])} is "
                          f"outside the judge's classes {heads}") from None  # fmt: skip
