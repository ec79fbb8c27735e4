"""The S4 imagine pipeline: what ``auralm.load()`` returns for an imagine checkpoint.

A checkpoint is a *bundle* (a folder whose ``config.yaml`` has ``recipe: imagine`` and ``kind: bundle`` and
names its parts relative to itself: ``aligner``, ``diffusion``, ``judge``), as ``auralm imagine demo`` writes,
or an aligner checkpoint alone (its run folder or ``step-N`` folder; ``generator`` then names a diffusers
pipeline). Generators:

* the bundle's own small pixel UNet (offline), conditioned on text-encoder states;
* any diffusers pipeline with ``unet``, ``vae`` and ``scheduler`` (``StableDiffusionPipeline``) by local folder or
  Hugging Face id (local cache only), whose text encoder the aligner was trained to imitate: the aligner's
  states go in as the prompt embeddings, the predicted token count as the cross-attention mask, the empty
  prompt's encoding as the negative, with a seeded generator on the pipeline's device.

``generate(audio=... | text=..., seed=S, steps=K)`` returns PIL images. Audio is checked: empty or silent
audio is refused naming the item; audio longer than the encoder's window is encoded in consecutive windows
whose states are joined (the aligner reads any number of frames), never cut.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from auralm.core.config import Config, check_recipe, help_field, recipe_field
from auralm.core.errors import AudioError, ConfigError, ModelNotFoundError
from auralm.recipes.imagine.data import pad_features
from auralm.recipes.imagine.model import Aligner, Judge, build_scheduler, build_unet, denoise, sample_images


@dataclasses.dataclass
class ImagineBundle(Config):
    """``config.yaml`` of an imagine bundle: the parts, as paths relative to the bundle ("" = absent)."""

    recipe: str = recipe_field("imagine")
    kind: str = help_field("bundle", "always 'bundle'")
    aligner: str = help_field("aligner", "aligner checkpoint folder")
    diffusion: str = help_field("diffusion", "pixel UNet checkpoint folder ('' = use `generator`)")
    judge: str = help_field("judge", "judge checkpoint folder ('' = none)")
    generator: str = help_field("", "a diffusers pipeline (folder or HF id) instead of the pixel UNet")
    sampler: str = help_field("ddpm", "sampler of the pixel UNet: ddpm (ancestral, seeded per item) or ddim")
    steps: int = help_field(50, "default sampling steps")
    guidance: float = help_field(3.0, "default classifier-free guidance scale")

    def validate(self) -> None:
        check_recipe(self, "imagine")
        if self.kind != "bundle":
            raise ConfigError(f"ImagineBundle.kind must be 'bundle', got {self.kind!r}")
        if not self.diffusion and not self.generator:
            raise ConfigError("ImagineBundle: name a diffusion checkpoint or a generator")
        if self.sampler not in ("ddpm", "ddim"):
            raise ConfigError(f"ImagineBundle.sampler must be ddpm or ddim, got {self.sampler!r}")
        if self.steps < 1 or self.guidance < 0:
            raise ConfigError("ImagineBundle: steps must be >= 1 and guidance >= 0")


def _checkpoint(path: str | Path) -> Path:
    from auralm.training.checkpoint import resolve_checkpoint

    return resolve_checkpoint(path)


def _kind(folder: Path) -> dict[str, Any]:
    cfg = folder / "config.yaml"
    if not cfg.is_file():
        raise ModelNotFoundError(f"{folder} is not an imagine checkpoint (no config.yaml)")
    data = yaml.safe_load(cfg.read_text()) or {}
    if data.get("recipe") != "imagine":
        raise ConfigError(f"{cfg}: recipe is {data.get('recipe')!r}, not 'imagine'")
    return data


def load_aligner(path: str | Path) -> tuple[Aligner, Any]:
    """An aligner checkpoint (run or step folder) -> (Aligner in eval mode, its AlignerTrainConfig)."""
    from safetensors.torch import load_file

    from auralm.recipes.imagine.config import AlignerTrainConfig

    folder = _checkpoint(path)
    if _kind(folder).get("kind") != "aligner":
        raise ConfigError(f"{folder} is not an aligner checkpoint (config.yaml kind is not 'aligner')")
    cfg = AlignerTrainConfig.from_yaml(folder / "config.yaml")
    model = Aligner(cfg.model)
    model.load_state_dict(load_file(str(folder / "aligner.safetensors")))
    return model.eval(), cfg


def load_diffusion(path: str | Path) -> tuple[Any, Any]:
    """A diffusion checkpoint -> (UNet2DConditionModel in eval mode, its DiffusionTrainConfig)."""
    from safetensors.torch import load_file

    from auralm.recipes.imagine.config import DiffusionTrainConfig

    folder = _checkpoint(path)
    if _kind(folder).get("kind") != "diffusion":
        raise ConfigError(f"{folder} is not a diffusion checkpoint (config.yaml kind is not 'diffusion')")
    cfg = DiffusionTrainConfig.from_yaml(folder / "config.yaml")
    unet = build_unet(cfg.model)
    unet.load_state_dict(load_file(str(folder / "unet.safetensors")))
    return unet.eval(), cfg


def load_judge(path: str | Path) -> tuple[Judge, Any]:
    from safetensors.torch import load_file

    from auralm.recipes.imagine.config import JudgeTrainConfig

    folder = _checkpoint(path)
    if _kind(folder).get("kind") != "judge":
        raise ConfigError(f"{folder} is not a judge checkpoint (config.yaml kind is not 'judge')")
    cfg = JudgeTrainConfig.from_yaml(folder / "config.yaml")
    judge = Judge(cfg.model)
    judge.load_state_dict(load_file(str(folder / "judge.safetensors")))
    return judge.eval(), cfg


def load_diffusers_pipeline(name_or_pipe: Any, device: str | None = None) -> Any:
    """A diffusers pipeline object, a local folder, or a Hugging Face id in the local cache (never downloaded)."""
    if not isinstance(name_or_pipe, (str, Path)):
        pipe = name_or_pipe
    else:
        from diffusers import DiffusionPipeline

        folder = Path(name_or_pipe).expanduser()
        try:
            pipe = DiffusionPipeline.from_pretrained(str(folder) if folder.is_dir() else str(name_or_pipe),
                                                     local_files_only=True, safety_checker=None)  # fmt: skip
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"{name_or_pipe}: no diffusers pipeline in that folder or in the local Hugging Face "
                                     f"cache ({str(exc)[:120]}); fetch it where there is internet") from None  # fmt: skip
    for part in ("unet", "vae", "scheduler"):
        if getattr(pipe, part, None) is None:
            raise ConfigError(f"the diffusers pipeline has no {part}; a pipeline that takes prompt_embeds "
                              "(StableDiffusionPipeline) is needed")  # fmt: skip
    if device is not None:
        pipe = pipe.to(device)
    return pipe


@torch.no_grad()
def sd_generate(pipe: Any, states: torch.Tensor, mask: torch.Tensor | None, *, seed: int = 0, steps: int = 30,
                guidance: float = 7.5, height: int | None = None, width: int | None = None) -> list[Any]:  # fmt: skip
    """Images from prompt embeddings ``(B, N, D)`` through a diffusers latent pipeline's UNet, scheduler and VAE.

    ``mask (B, N)`` is passed to the UNet's cross-attention (``encoder_attention_mask``); the negative is the
    pipeline's own encoding of the empty prompt (when it has a text encoder; else zeros).
    """
    from diffusers.utils import numpy_to_pil

    unet, vae = pipe.unet, pipe.vae
    if states.shape[-1] != unet.config.cross_attention_dim:
        raise ConfigError(f"the states are {states.shape[-1]} wide; the pipeline's UNet cross-attends to "
                          f"{unet.config.cross_attention_dim}-wide text states (another text encoder?)")  # fmt: skip
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    default = unet.config.sample_size * factor
    height, width = height or default, width or default
    if height % factor or width % factor:
        raise ConfigError(f"height and width must be multiples of {factor}, got {height} x {width}")
    n = states.shape[1]
    if getattr(pipe, "text_encoder", None) is not None and getattr(pipe, "tokenizer", None) is not None:
        ids = pipe.tokenizer([""], padding="max_length", max_length=n, return_tensors="pt").input_ids
        neg = pipe.text_encoder(ids.to(pipe.text_encoder.device))[0]
    else:
        neg = torch.zeros(1, n, states.shape[-1])
    shape = (unet.config.in_channels, height // factor, width // factor)
    latents = denoise(unet, pipe.scheduler, states, mask, shape, steps=steps, guidance=guidance, seed=seed,
                      null=(neg, None), init_sigma=float(getattr(pipe.scheduler, "init_noise_sigma", 1.0)))  # fmt: skip
    images = vae.decode(latents / vae.config.scaling_factor).sample
    arr = ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return numpy_to_pil(arr)


@torch.no_grad()
def align_rows(aligner: Aligner, feats: list[torch.Tensor], batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The aligner's states ``(B, N, Dt)`` and predicted lengths of cached audio states, in batches."""
    aligner.eval()
    dev = next(aligner.parameters()).device
    states, lens = [], []
    for i in range(0, len(feats), batch):
        x, n = pad_features(feats[i : i + batch])
        s, ln = aligner.predict(x.to(dev), n)
        states.append(s.cpu())
        lens.append(ln.cpu())
    return torch.cat(states), torch.cat(lens)



def to_pil(images: torch.Tensor) -> list[Any]:
    """``(B, 3, S, S)`` in [0, 1] -> PIL images."""
    from PIL import Image

    arr = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


class ImaginePipeline:
    """Sound (or text) -> picture. Build with :meth:`from_checkpoint`; see the module docstring."""

    recipe = "imagine"

    def __init__(self, aligner: Aligner, aligner_cfg: Any, *, audio_encoder: Any = None, text_encoder: Any = None,
                 unet: Any = None, diffusers_pipe: Any = None, judge: Any = None, steps: int = 50,
                 guidance: float = 3.0, folder: Path | None = None, diffusion_cfg: Any = None,
                 sampler: str = "ddpm"):  # fmt: skip
        self.aligner, self.aligner_cfg = aligner, aligner_cfg
        self._audio, self._text = audio_encoder, text_encoder
        self.unet, self.pipe, self.judge = unet, diffusers_pipe, judge
        self.steps, self.guidance, self.folder = steps, guidance, folder
        self.scheduler, self.diffusion_cfg = None, diffusion_cfg
        m = aligner_cfg.model
        if text_encoder is not None and text_encoder.dim != m.text_dim:
            raise ConfigError(f"text encoder {text_encoder.name} gives {text_encoder.dim}-wide states, but the aligner"
                              f"{f' in {folder}' if folder else ''} was trained for {m.text_dim}-wide states of "
                              f"{m.text_encoder}")  # fmt: skip
        if text_encoder is not None and text_encoder.max_length != m.tokens:
            raise ConfigError(f"text encoder {text_encoder.name} pads to {text_encoder.max_length} tokens, but the "
                              f"aligner produces {m.tokens}")  # fmt: skip
        if unet is not None:
            if unet.config.cross_attention_dim != m.text_dim:
                raise ConfigError(f"the diffusion UNet cross-attends to {unet.config.cross_attention_dim}-wide states; "
                                  f"the aligner gives {m.text_dim}")  # fmt: skip
            from auralm.recipes.imagine.model import DiffusionConfig

            self.scheduler = build_scheduler(diffusion_cfg or DiffusionConfig(), sampler)
        self.sampler = sampler

    # -- loading ------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, generator: Any = None, text_encoder: Any = None,
                        audio_encoder: Any = None, device: str | None = None) -> ImaginePipeline:  # fmt: skip
        """A bundle or an aligner checkpoint. ``generator`` (a diffusers pipeline or its name) replaces the bundle's
        UNet; ``text_encoder``/``audio_encoder`` (names or objects) replace the ones the aligner was trained with."""
        folder = Path(path)
        data = _kind(folder) if (folder / "config.yaml").is_file() else {}
        unet, judge, dcfg, steps, guidance, sampler = None, None, None, 50, 3.0, "ddpm"
        if data.get("kind") == "bundle":
            b = ImagineBundle.from_yaml(folder / "config.yaml")
            aligner, acfg = load_aligner(folder / b.aligner)
            if b.diffusion and generator is None and not b.generator:
                unet, dcfg = load_diffusion(folder / b.diffusion)
            if b.judge:
                judge, _ = load_judge(folder / b.judge)
            generator = generator or (b.generator or None)
            steps, guidance, sampler = b.steps, b.guidance, b.sampler
        else:
            aligner, acfg = load_aligner(folder)
            if generator is None:
                raise ConfigError(f"{folder} holds an aligner alone; give a generator (a diffusers pipeline) or "
                                  "load a bundle (auralm imagine demo writes one)")  # fmt: skip
        text = _text_encoder(text_encoder or acfg.model.text_encoder, acfg)
        pipe = load_diffusers_pipeline(generator, device) if generator is not None else None
        if device is not None:
            aligner.to(device)
            if unet is not None:
                unet.to(device)
        return cls(aligner, acfg, audio_encoder=audio_encoder, text_encoder=text, unet=unet, diffusers_pipe=pipe,
                   judge=judge, steps=steps, guidance=guidance if pipe is None else 7.5, folder=folder,
                   diffusion_cfg=dcfg.model if dcfg is not None else None, sampler=sampler)  # fmt: skip

    def with_aligner(self, path: str | Path) -> ImaginePipeline:
        """This pipeline (generator, judge, sampling settings) with another aligner checkpoint, and the text encoder
        that aligner was trained against: to compare aligners through the same generator."""
        aligner, acfg = load_aligner(path)
        return type(self)(aligner, acfg, text_encoder=_text_encoder(acfg.model.text_encoder, acfg), unet=self.unet,
                          diffusers_pipe=self.pipe, judge=self.judge, steps=self.steps, guidance=self.guidance,
                          folder=self.folder, diffusion_cfg=self.diffusion_cfg, sampler=self.sampler)  # fmt: skip

    @property
    def audio_encoder(self) -> Any:
        if self._audio is None or isinstance(self._audio, str):
            from auralm.components.encoders import build_audio_encoder

            self._audio = build_audio_encoder(self._audio or self.aligner_cfg.model.audio_encoder)
        if self._audio.dim != self.aligner_cfg.model.audio_dim:
            raise ConfigError(f"audio encoder {self._audio.name} gives {self._audio.dim}-wide states; the aligner was "
                              f"trained on {self.aligner_cfg.model.audio_dim}-wide ones")  # fmt: skip
        return self._audio

    @property
    def text_encoder(self) -> Any:
        return self._text

    # -- encoding -----------------------------------------------------------------------------------
    def audio_features(self, audio: Any) -> list[torch.Tensor]:
        """Files or 16 kHz waveforms -> the audio encoder's ``(F, Da)`` states per item (long audio in windows)."""
        from auralm.data.audio import is_silent, load_audio

        enc = self.audio_encoder
        items = audio if isinstance(audio, (list, tuple)) else [audio]
        if not items:
            raise AudioError("no audio given")
        feats = []
        for i, item in enumerate(items):
            name = str(item) if isinstance(item, (str, Path)) else f"audio item {i}"
            if isinstance(item, (str, Path)):
                wav, _ = load_audio(item, enc.sample_rate)
            else:
                wav = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item, np.float32)
            wav = np.asarray(wav, np.float32)
            if wav.ndim != 1:
                raise AudioError(f"{name}: expected mono samples (1-D), got shape {wav.shape}")
            if wav.size == 0:
                raise AudioError(f"{name}: audio of length zero")
            if is_silent(wav):
                raise AudioError(f"{name}: the audio is silent; there is nothing to picture")
            window = enc.max_samples or len(wav)
            pieces = [wav[s : s + window] for s in range(0, len(wav), window)]
            pieces = [p for p in pieces if len(p) >= 400] or pieces[:1]  # a sliver shorter than one FFT adds nothing
            states, lengths = enc(pieces)
            feats.append(torch.cat([states[j, :n] for j, n in enumerate(lengths.tolist())]).float().cpu())
        return feats

    def audio_states(self, audio: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio -> the aligner's ``(B, N, Dt)`` states and the predicted token counts ``(B,)``."""
        return align_rows(self.aligner, self.audio_features(audio))

    def text_states(self, text: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [text] if isinstance(text, str) else list(text)
        states, lengths = self._text.encode(texts, pad_to_max=True)
        return states, lengths

    # -- generating ---------------------------------------------------------------------------------
    def generate_from_states(self, states: torch.Tensor, lengths: torch.Tensor, *, seed: int = 0,
                             steps: int | None = None, guidance: float | None = None, **kwargs: Any) -> list[Any]:  # fmt: skip
        steps, guidance = steps or self.steps, self.guidance if guidance is None else guidance
        mask = (torch.arange(states.shape[1])[None] < lengths[:, None]).long()
        if self.pipe is not None:
            return sd_generate(self.pipe, states, mask, seed=seed, steps=steps, guidance=guidance, **kwargs)
        if self.unet is None:
            raise ConfigError("this pipeline has no generator")
        images = sample_images(self.unet, self.scheduler, states, mask, steps=steps, guidance=guidance, seed=seed)
        return to_pil(images)

    def generate(self, audio: Any = None, text: str | list[str] | None = None, *, seed: int = 0,
                 steps: int | None = None, guidance: float | None = None, **kwargs: Any) -> list[Any]:  # fmt: skip
        """Pictures of what ``audio`` (files or waveforms) or ``text`` describes: a list of PIL images."""
        if (audio is None) == (text is None):
            raise ConfigError("give audio or text (one of them)")
        states, lengths = self.audio_states(audio) if audio is not None else self.text_states(text)
        return self.generate_from_states(states, lengths, seed=seed, steps=steps, guidance=guidance, **kwargs)


def _text_encoder(spec: Any, acfg: Any) -> Any:
    from auralm.components.encoders import build_text_encoder

    if not isinstance(spec, str):
        return spec
    return build_text_encoder(spec, max_length=acfg.text_max_length)
