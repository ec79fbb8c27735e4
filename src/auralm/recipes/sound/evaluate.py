"""The S5 evaluation harness (``auralm sound eval``) and TensorBoard media; the metric functions live in
:mod:`auralm.metrics.audio`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from auralm.components.codecs.mel import MelConfig, MelFrontend
from auralm.core.errors import AudioError
from auralm.metrics.audio import codebook_usage, frechet_distance, judge_accuracy, mel_error

# ---------------------------------------------------------------------------------------------------
# TensorBoard media


def mel_image(mels: Sequence[torch.Tensor], titles: Sequence[str]) -> np.ndarray:
    """Log-mels ``(M, F)`` side by side as one RGB image ``(H, W, 3)`` uint8 (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(mels), figsize=(3.2 * len(mels), 2.6), squeeze=False)
    lo = min(float(m.min()) for m in mels)
    hi = max(float(m.max()) for m in mels)
    for ax, m, title in zip(axes[0], mels, titles):
        ax.imshow(np.asarray(m.detach().cpu()), origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("frame", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def log_media(writer: Any, tag: str, target: torch.Tensor, recon: torch.Tensor, mel_config: MelConfig, step: int,
              wav: torch.Tensor | None = None) -> None:  # fmt: skip
    """Write a mel image (target | reconstruction) and the reconstruction's audio (Griffin-Lim unless ``wav``)."""
    from auralm.components.codecs.vocoder import GriffinLim

    n = min(target.shape[-1], recon.shape[-1])
    writer.add_image(f"{tag}/mel", mel_image([target[:, :n], recon[:, :n]], ["input", "reconstruction"]), step,
                     dataformats="HWC")  # fmt: skip
    audio = wav if wav is not None else GriffinLim(mel_config, n_iter=32)(recon)
    writer.add_audio(f"{tag}/audio", audio.reshape(1, -1).clamp(-1, 1), step, sample_rate=mel_config.sample_rate)


# ---------------------------------------------------------------------------------------------------
# auralm sound eval


def evaluate_sound(manifest: str, split: str = "test", tokenizer: str | None = None, vocoder: str | None = None,
                   generated: str | None = None, max_clips: int = 0) -> dict[str, Any]:  # fmt: skip
    """Judge the real clips of ``split`` (the ceiling); with ``tokenizer``: reconstruction mel L1, judge
    accuracy and codebook usage; with ``vocoder``: the vocoder on the real mels; with ``generated`` (a
    folder of ``LABEL_NNN.wav``): judge accuracy and Frechet distance to the real clips."""
    from pathlib import Path

    from auralm.data.audio import load_audio
    from auralm.recipes.sound.data import load_clips

    wavs, labels, _ = load_clips(manifest, split, 16000, max_clips or None)
    labels = [lab or "" for lab in labels]
    out: dict[str, Any] = {"manifest": str(manifest), "split": split, "n_clips": len(wavs)}
    out["ceiling"] = {k: v for k, v in judge_accuracy(wavs, labels).items() if k != "transcripts"}
    if tokenizer:
        from auralm.components.codecs.mel_vq import load_codec

        tok = load_codec(tokenizer, vocoder)
        codes = tok.encode_many(wavs)
        rec = [tok.decode(c)[0] for c in codes]
        out["reconstruction"] = {k: v for k, v in judge_accuracy(rec, labels).items() if k != "transcripts"}
        out["reconstruction"]["mel_l1"] = round(float(np.mean([mel_error(a, b) for a, b in zip(rec, wavs)])), 4)
        out["codebook_usage"] = codebook_usage(torch.cat(codes), tok.codebook_size)
    if vocoder:
        from auralm.components.codecs.vocoder import load_vocoder

        voc, front = load_vocoder(vocoder, MelConfig()), MelFrontend()
        vw = [voc(front.mel(w)).clamp(-1, 1).numpy() for w in wavs]
        out["vocoder"] = {"name": str(vocoder), "mel_l1": round(float(np.mean([mel_error(a, b) for a, b in zip(vw, wavs)])), 4)}
        out["vocoder"].update({k: v for k, v in judge_accuracy(vw, labels).items() if k != "transcripts"})
    if generated:
        files = sorted(Path(generated).glob("*.wav"))
        if len(files) < 2:
            raise AudioError(f"{generated}: needs at least 2 generated WAV files named LABEL_NNN.wav")
        gen = [load_audio(f, 16000)[0] for f in files]
        glabels = [f.stem.rsplit("_", 1)[0] for f in files]
        out["generation"] = {k: v for k, v in judge_accuracy(gen, glabels).items() if k != "transcripts"}
        out["frechet_generated_vs_real"] = frechet_distance(gen, wavs)
    return out
