"""auralm: give language models ears.

The public API is :func:`load` and ``__version__``. Importing :mod:`auralm` loads no model, imports no
torch and touches no network::

    import auralm
    hear = auralm.load("runs/demo/checkpoint")          # a HearPipeline
    print(hear.transcribe("clip.wav"))
    sound = auralm.load("runs/sound-demo/checkpoint")       # a SoundPipeline
    wavs = sound.generate_sound("seven", n=2, seed=0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path: str | Path, **kwargs: Any) -> Any:
    """The pipeline of a checkpoint folder, chosen by the ``recipe`` field of its ``config.yaml``:
    ``HearPipeline`` (``transcribe``) or ``SoundPipeline`` (``generate_sound``). Raises a clear error for a
    folder with no ``config.yaml``, no ``recipe`` field, or an unknown recipe. ``kwargs`` go to the
    pipeline's ``from_checkpoint`` (e.g. ``device`` for hear, ``vocoder`` for sound)."""
    from auralm.recipes import load as _load

    return _load(path, **kwargs)
