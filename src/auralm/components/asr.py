"""Whisper's own decoder as the reference transcriber: the baseline every speech recipe is compared with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auralm.core.progress import progress


class WhisperBaseline:
    """Greedy transcription with a Whisper model from the hub (loaded once)."""

    def __init__(self, name: str = "whisper-tiny.en", max_new_tokens: int = 96) -> None:
        from transformers.utils import logging as hf_logging

        from auralm.hub import load_whisper

        hf_logging.set_verbosity_error()  # transformers' own deprecation notices from Whisper.generate
        hf_logging.disable_progress_bar()
        self.name = name
        self.model, self.processor = load_whisper(name)
        self.model.eval()
        self.max_new_tokens = max_new_tokens

    def transcribe(self, wavs: Sequence[np.ndarray], batch_size: int = 8, desc: str = "whisper") -> list[str]:
        """Transcribe 16 kHz mono clips (each at most 30 s); returns one text per clip."""
        import torch

        extractor = self.processor.feature_extractor
        texts: list[str] = []
        starts = range(0, len(wavs), batch_size)
        for start in progress(starts, desc=desc, total=len(starts)):
            batch = [np.asarray(w, dtype=np.float32) for w in wavs[start : start + batch_size]]
            # the decoder was trained on 30 s windows: pad the features to 30 s (the extractor's default)
            features = extractor(batch, sampling_rate=extractor.sampling_rate, return_tensors="pt").input_features
            with torch.inference_mode():
                ids = self.model.generate(features, max_new_tokens=self.max_new_tokens)
            texts += [t.strip() for t in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return texts
