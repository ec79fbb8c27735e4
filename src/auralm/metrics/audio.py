"""Evaluation of generated sound: judge accuracy, mel error, codebook usage, Frechet distance.

* :func:`judge_accuracy` - Whisper tiny.en's own decoder transcribes each clip after padding it with
  :data:`JUDGE_PAD_SECONDS` of silence on both sides (the same for real and generated audio; the
  judge misses many bare sub-second words). A clip counts as right when the digit words in the
  normalised transcript are exactly ``{label}``: digits map to words ("7" -> "seven") and so do the
  homophones Whisper writes for isolated digits ("to"/"too" -> "two", "for" -> "four", "won" -> "one",
  "ate" -> "eight"). For labels that are not digits, the label must be one of the transcript's words.
* :func:`mel_error` - mean absolute log-mel difference over the common frames.
* :func:`codebook_usage` - perplexity and fraction of codes used.
* :func:`frechet_distance` - between two sets of clips in Whisper tiny.en encoder space (states
  averaged over time), with the number of clips of each set. With fewer clips than dimensions (384)
  the covariances are singular; the distance is still defined, but it is biased upward for small
  sets, so compare distances only at equal ``n``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from auralm.components.codecs.mel import MelConfig, MelFrontend
from auralm.core.errors import AudioError

JUDGE_PAD_SECONDS = 0.7
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_WORD_MAP = {str(i): w for i, w in enumerate(DIGIT_WORDS)}
_WORD_MAP.update({"to": "two", "too": "two", "for": "four", "won": "one", "ate": "eight"})
_JUDGES: dict[str, Any] = {}


def normalize_transcript(text: str) -> list[str]:
    """Lower-case words with punctuation dropped, digits and digit homophones mapped to digit words."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    out = []
    for w in words:
        if w.isdigit() and len(w) > 1:  # "78" -> "seven eight"
            out += [_WORD_MAP[c] for c in w]
        else:
            out.append(_WORD_MAP.get(w, w))
    return out


def judged_correct(transcript: str, label: str) -> bool:
    """Whether ``transcript`` says ``label`` (see the module docstring for the rule)."""
    words = normalize_transcript(transcript)
    label = label.strip().lower()
    if label in DIGIT_WORDS:
        return {w for w in words if w in DIGIT_WORDS} == {label}
    return label in words


def _judge(name: str):  # noqa: ANN202 - a WhisperBaseline, loaded once per process
    if name not in _JUDGES:
        from auralm.components.asr import WhisperBaseline

        _JUDGES[name] = WhisperBaseline(name, max_new_tokens=16)
    return _JUDGES[name]


def judge_accuracy(wavs: Sequence[np.ndarray], labels: Sequence[str], sr: int = 16000, *,
                   judge: str = "whisper-tiny.en", pad_seconds: float = JUDGE_PAD_SECONDS,
                   transcriber: Any = None) -> dict[str, Any]:  # fmt: skip
    """Accuracy of the Whisper judge on ``wavs`` against ``labels``: ``accuracy``, ``n``, ``per_class``
    (accuracy and n of each label) and the ``transcripts``. ``transcriber`` (anything with
    ``transcribe(list_of_16k_wavs) -> list[str]``) replaces the Whisper judge (tests)."""
    from auralm.data.audio import resample

    if len(wavs) != len(labels):
        raise AudioError(f"{len(wavs)} clips but {len(labels)} labels")
    if not wavs:
        raise AudioError("no clips to judge")
    pad = np.zeros(int(round(pad_seconds * 16000)), dtype=np.float32)
    padded = [np.concatenate([pad, resample(np.asarray(w, np.float32), sr, 16000), pad]) for w in wavs]
    texts = (transcriber or _judge(judge)).transcribe(padded, desc="judge")
    right = [judged_correct(t, lab) for t, lab in zip(texts, labels)]
    per_class: dict[str, dict[str, float]] = {}
    for lab in sorted(set(labels)):
        hits = [r for r, lb in zip(right, labels) if lb == lab]
        per_class[lab] = {"accuracy": round(sum(hits) / len(hits), 4), "n": len(hits)}
    return {"accuracy": round(sum(right) / len(right), 4), "n": len(right), "per_class": per_class,
            "judge": judge, "pad_seconds": pad_seconds, "transcripts": texts}  # fmt: skip


def mel_error(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, mel_config: MelConfig | None = None) -> float:
    """Mean |log-mel(a) - log-mel(b)| over the common frames. Waveforms ``(S,)`` are turned into log-mels
    first; 2-D inputs are taken to be log-mels ``(M, F)`` already."""
    front = MelFrontend(mel_config) if any(np.ndim(x) == 1 for x in (a, b)) else None
    ma, mb = (front.mel(x) if np.ndim(x) == 1 else torch.as_tensor(x) for x in (a, b))  # type: ignore[union-attr]
    n = min(ma.shape[-1], mb.shape[-1])
    return float((ma[..., :n] - mb[..., :n]).abs().mean())


def codebook_usage(codes: torch.Tensor | np.ndarray | Sequence[int], k: int) -> dict[str, float]:
    """``perplexity`` (exp entropy of the code histogram, K when uniform), ``usage`` (fraction of the K
    codes used at least once), ``used`` (how many) and ``n_codes`` counted."""
    c = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes).reshape(-1).long()
    if c.numel() == 0:
        raise AudioError("no codes to count")
    if int(c.min()) < 0 or int(c.max()) >= k:
        raise AudioError(f"codes must lie in [0, {k})")
    counts = torch.bincount(c, minlength=k).float()
    p = counts / counts.sum()
    entropy = float(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return {"perplexity": round(float(np.exp(entropy)), 3), "usage": round(float((counts > 0).float().mean()), 4),
            "used": int((counts > 0).sum()), "n_codes": int(c.numel())}  # fmt: skip


@torch.no_grad()
def embed_clips(wavs: Sequence[np.ndarray], encoder: Any = None, batch_size: int = 16) -> torch.Tensor:
    """Time-averaged encoder states ``(N, D)`` of 16 kHz clips (default encoder: Whisper tiny.en)."""
    from auralm.components.encoders import build_audio_encoder

    enc = encoder if encoder is not None else _encoder("whisper-tiny.en", build_audio_encoder)
    out = []
    for i in range(0, len(wavs), batch_size):
        states, lengths = enc(list(wavs[i : i + batch_size]))  # B, T, D ; B
        mask = (torch.arange(states.shape[1])[None, :] < lengths[:, None]).to(states.dtype)  # B, T
        out.append((states * mask[:, :, None]).sum(1) / lengths[:, None].clamp_min(1).to(states.dtype))
    return torch.cat(out).double()


def _encoder(name: str, build: Any) -> Any:
    key = f"encoder:{name}"
    if key not in _JUDGES:
        _JUDGES[key] = build(name)
    return _JUDGES[key]


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (negatives clipped)."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()[None, :]) @ vecs.T


def frechet_from_embeddings(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to ``a (N, D)`` and ``b (M, D)``:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)`` (the symmetric form, so only
    symmetric PSD square roots are needed)."""
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise AudioError(f"the Frechet distance needs at least 2 clips per set, got {a.shape[0]} and {b.shape[0]}")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrt_psd(s_a)
    cross = _sqrt_psd(root_a @ s_b @ root_a)
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * torch.trace(cross))


def frechet_distance(wavs_a: Sequence[np.ndarray], wavs_b: Sequence[np.ndarray], encoder: Any = None) -> dict[str, Any]:
    """Frechet distance between two sets of 16 kHz clips in an encoder's time-averaged state space
    (default Whisper tiny.en): ``fd``, ``n_a``, ``n_b``, ``dim``, ``encoder``."""
    ea, eb = embed_clips(wavs_a, encoder), embed_clips(wavs_b, encoder)
    name = getattr(encoder, "name", "whisper-tiny.en") if encoder is not None else "whisper-tiny.en"
    return {"fd": round(frechet_from_embeddings(ea, eb), 4), "n_a": len(wavs_a), "n_b": len(wavs_b),
            "dim": int(ea.shape[1]), "encoder": name}  # fmt: skip
