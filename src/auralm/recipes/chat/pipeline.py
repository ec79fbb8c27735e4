"""The S3 inference API that the CLI, the evaluation and the server call: :class:`ChatPipeline` (what
``auralm.load()`` returns for a chat checkpoint).

``pipe.chat(messages, images=[...], audio=[...])`` answers the last user turn of an OpenAI-shaped
conversation whose user turns hold ``<|image|>`` / ``<|audio|>`` placeholders, one per item given, in
order; ``pipe.reply(images=..., audio=..., prompt=...)`` is one turn (placeholders added in front of the
prompt when it has none: images first, then clips; a spoken question alone needs no prompt). Images are
paths, bytes or PIL images; audio is paths or 16 kHz float arrays (decoded with soundfile, resampled with
soxr). Every bad item raises an error naming it. ``pipe.export(out)`` merges LoRA into the LM and writes a
plain Hugging Face folder plus the projectors.

Importing this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from auralm.core.constants import SAMPLE_RATE
from auralm.core.errors import AudioError, ConfigError

IMAGE = "<|image|>"
AUDIO = "<|audio|>"


def load_checkpoint(path: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """``(ChatLM in eval mode, TrainConfig)`` from a checkpoint folder (or a run folder whose ``latest`` names one)."""
    import yaml

    from auralm.recipes.chat.config import TrainConfig
    from auralm.recipes.chat.model import ChatLM
    from auralm.training.checkpoint import load_trainable, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    cfg = TrainConfig.from_dict(yaml.safe_load((ckpt / "config.yaml").read_text()) or {})
    model = ChatLM(cfg.model)
    load_trainable(model, ckpt)
    if device:
        model.to(device)
    return model.eval(), cfg


def _audio_item(item: Any, index: int) -> dict[str, Any]:
    import numpy as np

    from auralm.data.audio import load_audio

    if isinstance(item, (str, Path)):
        if not Path(item).is_file():
            raise AudioError(f"audio {index}: {item} does not exist")
        wav, _ = load_audio(item, SAMPLE_RATE)
    else:
        wav = np.asarray(item, dtype=np.float32)
        if wav.ndim != 1:
            raise AudioError(f"audio {index}: expected a mono waveform (1-D), got shape {wav.shape}")
    if len(wav) == 0:
        raise AudioError(f"audio {index}: the clip has zero samples")
    return {"kind": "audio", "wav": wav}


def _image_item(item: Any, index: int) -> dict[str, Any]:
    from auralm.components.encoders import load_images

    try:
        (image,) = load_images([item])
    except Exception as exc:  # noqa: BLE001 - re-raised below naming the item
        from auralm.core.errors import ImageError

        if isinstance(exc, ImageError):
            raise ImageError(f"image {index}: {exc}") from None
        raise
    return {"kind": "image", "image": image}


class ChatPipeline:
    """A chat checkpoint, ready to answer (:meth:`chat`, :meth:`reply`) or be exported (:meth:`export`)."""

    recipe = "chat"

    def __init__(self, model: Any, config: Any = None, path: str | Path | None = None):
        from auralm.components.generation import GenerationConfig

        self.model, self.config, self.path = model, config, path
        self.generation = GenerationConfig(strategy="greedy", max_new_tokens=32)  # the server's defaults

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None, **_: Any) -> ChatPipeline:
        model, cfg = load_checkpoint(path, device)
        return cls(model, cfg, path)

    def chat(self, messages: list[dict[str, str]], images: Sequence[Any] = (), audio: Sequence[Any] = (),
             max_new_tokens: int = 32, gen: Any = None, on_delta: Callable[[str], None] | None = None) -> str:  # fmt: skip
        """The assistant's reply to the last user turn (placeholders in the turns, one per item, in order)."""
        from auralm.components.lm.chat import check_messages, media_order

        check_messages(messages, {"image": len(images), "audio": len(audio)})
        if messages[-1]["role"] != "user":
            raise ConfigError("the last message must be a user turn (the reply answers it)")
        imgs = iter([_image_item(x, i) for i, x in enumerate(images)])
        clips = iter([_audio_item(x, i) for i, x in enumerate(audio)])
        media = [next(imgs) if kind == "image" else next(clips) for kind in media_order(messages)]
        gen = gen or self.generation.replace(max_new_tokens=max_new_tokens)
        stream = (lambda row, text: on_delta(text)) if on_delta else None
        return self.model.generate({"messages": [messages], "media": [media]}, gen, on_delta=stream)[0]

    def reply(self, images: Sequence[Any] = (), audio: Sequence[Any] = (), prompt: str = "", **kwargs: Any) -> str:
        """One turn: the images and clips, then the prompt (optional when there is audio)."""
        prompt = prompt or ""
        if not prompt.strip() and not audio and not images:
            raise ConfigError("nothing to answer: give a prompt, an image or an audio clip")
        if IMAGE not in prompt and AUDIO not in prompt:
            head = IMAGE * len(images) + AUDIO * len(audio)
            prompt = f"{head}\n{prompt}".strip() if head else prompt
        return self.chat([{"role": "user", "content": prompt}], images, audio, **kwargs)

    def export(self, out: str | Path) -> Path:
        """Merge LoRA into the LM; write ``out/lm/`` (a plain HF model + tokenizer), ``out/projectors.safetensors``
        and ``out/config.yaml`` (what the projectors need: encoders, widths, feed)."""
        import copy

        from safetensors.torch import save_file

        from auralm.components.lm import merge_lora
        from auralm.core.config import save_config

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        lm = merge_lora(copy.deepcopy(self.model.lm)) if self.model.has_lora else self.model.lm
        lm.save_pretrained(out / "lm")
        self.model.tokenizer.save_pretrained(out / "lm")
        state = {k: v for k, v in self.model.trainable_state_dict().items() if "lora_" not in k}
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "projectors.safetensors"))
        if self.config is not None:
            save_config(self.config, out)
        return out
