"""The voices of ``auralm synth speech``: the named voice sets, which of them are installed, and voice names.

A voice is ``engine:name``: ``espeak-ng:en-gb+f2`` (an English espeak-ng language, optionally ``+variant``) or
``flite:slt``. :data:`VOICE_SETS` names the lists ``--voices`` accepts (``default``, ``wide``).
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from functools import cache

from auralm.core.errors import ToolMissingError

ENGINES = ("espeak-ng", "flite")
DEFAULT_VOICES = [
    "espeak-ng:en-us", "espeak-ng:en-us+f3", "espeak-ng:en-us+m3", "espeak-ng:en-gb", "espeak-ng:en-gb+f2",
    "espeak-ng:en-gb-scotland", "espeak-ng:en-gb-scotland+f4", "espeak-ng:en-gb-x-rp", "espeak-ng:en-gb-x-rp+f1",
    "espeak-ng:en-gb-x-gbclan+m2", "espeak-ng:en-029+f5", "espeak-ng:en-us-nyc+m5",
    "flite:kal", "flite:kal16", "flite:awb", "flite:rms", "flite:slt",
]  # fmt: skip
# a wider set: 8 English accents x 20 voice variants of espeak-ng (no robot, whisper or croak variants), 5 flite voices
WIDE_ESPEAK_LANGS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                     "en-us-nyc")  # fmt: skip
WIDE_ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Andy", "Annie",
                        "david", "ed", "linda", "max", "steph")  # fmt: skip
WIDE_VOICES = [f"espeak-ng:{lang}{'+' + var if var else ''}" for lang in WIDE_ESPEAK_LANGS for var in WIDE_ESPEAK_VARIANTS] + [
    "flite:kal", "flite:kal16", "flite:awb", "flite:rms", "flite:slt"]  # fmt: skip
VOICE_SETS = {"default": DEFAULT_VOICES, "wide": WIDE_VOICES}
# approximate natural mean F0 (Hz) of each flite voice; the pitch factor scales it
FLITE_BASE_F0 = {"kal": 95.0, "kal16": 95.0, "awb": 120.0, "rms": 100.0, "slt": 165.0}


def match_voices(name: str, voices: list[str]) -> list[str]:
    """The voices ``name`` means: an exact ``engine:voice``, a bare voice name, or a shell pattern of either
    (``espeak-ng:en-gb-x-gbcwmd*``, ``*+f3``)."""
    return [
        v for v in voices if any(x == name or fnmatch.fnmatchcase(x, name) for x in (v, v.partition(":")[2]))
    ]


@cache
def _espeak_names() -> tuple[frozenset[str], frozenset[str]]:
    """(English voice languages, variant names) that the installed espeak-ng lists."""

    def listing(arg: str, column: int) -> list[str]:
        out = subprocess.run(["espeak-ng", arg], capture_output=True, text=True, check=False).stdout
        return [ln.split()[column] for ln in out.splitlines()[1:] if len(ln.split()) > column]

    langs = frozenset(listing("--voices=en", 1))
    variants = frozenset(f.split("/", 1)[1] for f in listing("--voices=variant", 4) if f.startswith("!v/"))
    return langs, variants


@cache
def _flite_names() -> frozenset[str]:
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
    return frozenset(out.partition(":")[2].split())


def available_voices(voices: list[str]) -> list[str]:
    """The voices whose engine and voice are installed; warns about the rest, errors when none is left."""
    have = {e: shutil.which(e) is not None for e in ENGINES}
    if not any(have[v.partition(":")[0]] for v in voices):
        raise ToolMissingError("synthetic speech needs espeak-ng or flite (apt-get install espeak-ng flite)")
    for engine in ENGINES:
        if not have[engine] and any(v.startswith(engine + ":") for v in voices):
            warn(f"{engine} is not installed; using only the other engine's voices")
    kept = []
    for v in voices:
        engine, _, name = v.partition(":")
        if not have[engine]:
            continue
        if engine == "espeak-ng":
            langs, variants = _espeak_names()
            base, _, variant = name.partition("+")
            ok = base in langs and (not variant or variant in variants)
        else:
            ok = name in _flite_names() and name in FLITE_BASE_F0
        if ok:
            kept.append(v)
        else:
            warn(f"voice {v} is not available here; skipping it")
    if not kept:
        raise ToolMissingError(f"none of the voices {voices} is installed")
    return kept


def qualify_voice(voice: str) -> str:
    """``slt`` -> ``flite:slt``, ``en-gb+f2`` -> ``espeak-ng:en-gb+f2``; full names pass through."""
    if ":" in voice:
        return voice
    return f"flite:{voice}" if voice in FLITE_BASE_F0 else f"espeak-ng:{voice}"


def warn(message: str) -> None:
    print(f"auralm synth speech: warning: {message}", file=sys.stderr)
