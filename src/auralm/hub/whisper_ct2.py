"""CTranslate2 Whisper ``model.bin`` <-> transformers ``WhisperForConditionalGeneration``.

The CTranslate2 (CT2) model file (format version 6) is little-endian:

* ``uint32`` format version, a *string* spec name (``"WhisperSpec"``), ``uint32`` spec revision;
* ``uint32`` number of variables, then for each: *string* name, ``uint8`` rank, ``rank x uint32``
  shape, ``uint8`` dtype id (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16),
  ``uint32`` byte count and the raw row-major bytes;
* ``uint32`` number of aliases, then pairs of *strings* (alias, target).

A *string* is a ``uint16`` byte count (including a trailing NUL) and the bytes.

Layout differences from transformers handled here:

* self-attention ``q/k/v`` projections are fused in one ``linear_0`` of shape ``[3*d, d]``;
  cross-attention ``linear_0`` is ``q`` and ``linear_1`` fuses ``k/v`` as ``[2*d, d]``;
* the fused biases hold a zero block for ``k`` (Whisper's ``k_proj`` has no bias). Dropping it is
  exact either way: a bias on keys adds ``q.b`` to every logit of a query row, which softmax cancels;
* layer norms are ``gamma``/``beta``; the output projection is an alias of the token embedding;
* int8-quantised weights (``weight`` int8 + ``weight_scale``) are dequantised on read.

Nothing here imports ctranslate2.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CT2_DTYPES: dict[int, torch.dtype] = {
    0: torch.float32,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.float16,
    5: torch.bfloat16,
}
_DTYPE_IDS = {v: k for k, v in CT2_DTYPES.items()}
_NUMPY = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.int16}
CT2_ACTIVATION_GELU = 3


@dataclass
class CT2Model:
    """A parsed CT2 model: its spec name, revision, variables (by name) and aliases."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str] = field(default_factory=dict)
    version: int = 6

    def get(self, name: str) -> torch.Tensor:
        """The variable ``name`` (following aliases), int8 weights dequantised to float32."""
        name = self.aliases.get(name, name)
        value = self.variables[name]
        scale = self.variables.get(f"{name}_scale")
        if value.dtype == torch.int8 and scale is not None and value.dim() == 2:
            return value.float() / scale.float().reshape(-1, 1)  # [out, in] / [out, 1]
        return value

    def scalar(self, name: str, default: int | None = None) -> int | None:
        if name not in self.variables:
            return default
        return int(self.variables[name].reshape(-1)[0])


# -- reading / writing ------------------------------------------------------------------------------


def read_ct2(path: str | Path) -> CT2Model:
    """Parse a CT2 ``model.bin`` into tensors (one copy of the file in memory)."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = buf[pos : pos + n].rstrip(b"\0").decode("utf-8")
        pos += n
        return text

    version = take("I")
    if version < 5:
        raise ValueError(f"{path}: CT2 format version {version} is too old (need >= 5)")
    spec = string()
    revision = take("I")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        type_id = take("B")
        nbytes = take("I")
        if type_id not in CT2_DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        arr = np.frombuffer(buf, dtype=_NUMPY[type_id], count=int(np.prod(shape, dtype=np.int64)), offset=pos)
        tensor = torch.from_numpy(arr.copy()).reshape(shape)
        if type_id == 5:  # bfloat16 travels as raw 16-bit words
            tensor = tensor.view(torch.bfloat16)
        if tensor.numel() * tensor.element_size() != nbytes:
            raise ValueError(f"{path}: variable {name!r} byte count {nbytes} does not match shape {shape}")
        variables[name] = tensor
        pos += nbytes
    aliases = {}
    for _ in range(take("I")):
        alias = string()
        aliases[alias] = string()
    if pos != len(buf):
        raise ValueError(f"{path}: {len(buf) - pos} trailing bytes after the aliases")
    return CT2Model(spec=spec, revision=revision, variables=variables, aliases=aliases, version=version)


def write_ct2(path: str | Path, model: CT2Model) -> None:
    """Write ``model`` in CT2 format version 6 (variables in name order, as CT2 writes them)."""

    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    parts = [struct.pack("<I", 6), string(model.spec), struct.pack("<I", model.revision)]
    parts.append(struct.pack("<I", len(model.variables)))
    for name in sorted(model.variables):
        tensor = model.variables[name].contiguous()
        raw = (tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor).numpy().tobytes()
        parts += [
            string(name),
            struct.pack("<B", tensor.dim()),
            struct.pack(f"<{tensor.dim()}I", *tensor.shape),
        ]
        parts += [struct.pack("<B", _DTYPE_IDS[tensor.dtype]), struct.pack("<I", len(raw)), raw]
    parts.append(struct.pack("<I", len(model.aliases)))
    for alias, target in model.aliases.items():
        parts += [string(alias), string(target)]
    Path(path).write_bytes(b"".join(parts))


# -- name mapping ---------------------------------------------------------------------------------


def _layer_count(ct2: CT2Model, side: str) -> int:
    found = {int(m.group(1)) for n in ct2.variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    return max(found) + 1 if found else 0


def _norm(prefix: str, hf: str) -> list[tuple[str, str]]:
    return [(f"{prefix}/gamma", f"{hf}.weight"), (f"{prefix}/beta", f"{hf}.bias")]


def _linear(prefix: str, hf: str) -> list[tuple[str, str]]:
    return [(f"{prefix}/weight", f"{hf}.weight"), (f"{prefix}/bias", f"{hf}.bias")]


def _plain_pairs(n_enc: int, n_dec: int) -> list[tuple[str, str]]:
    """(CT2 name, HF state-dict key) for every weight that maps one to one."""
    e, d = "model.encoder", "model.decoder"
    pairs = _linear("encoder/conv1", f"{e}.conv1") + _linear("encoder/conv2", f"{e}.conv2")
    pairs += [("encoder/position_encodings/encodings", f"{e}.embed_positions.weight")]
    pairs += _norm("encoder/layer_norm", f"{e}.layer_norm")
    for i in range(n_enc):
        ct, hf = f"encoder/layer_{i}", f"{e}.layers.{i}"
        pairs += _norm(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        pairs += _linear(f"{ct}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        pairs += _norm(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")
        pairs += _linear(f"{ct}/ffn/linear_0", f"{hf}.fc1") + _linear(f"{ct}/ffn/linear_1", f"{hf}.fc2")
    pairs += [("decoder/embeddings/weight", f"{d}.embed_tokens.weight")]
    pairs += [("decoder/position_encodings/encodings", f"{d}.embed_positions.weight")]
    pairs += _norm("decoder/layer_norm", f"{d}.layer_norm")
    for i in range(n_dec):
        ct, hf = f"decoder/layer_{i}", f"{d}.layers.{i}"
        pairs += _norm(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        pairs += _linear(f"{ct}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        pairs += _norm(f"{ct}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        pairs += _linear(f"{ct}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        pairs += _linear(f"{ct}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        pairs += _norm(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")
        pairs += _linear(f"{ct}/ffn/linear_0", f"{hf}.fc1") + _linear(f"{ct}/ffn/linear_1", f"{hf}.fc2")
    return pairs


def _fused(n_enc: int, n_dec: int) -> list[tuple[str, str, tuple[str, ...]]]:
    """(CT2 linear prefix, HF attention prefix, projections fused in order)."""
    out = [
        (f"encoder/layer_{i}/self_attention/linear_0", f"model.encoder.layers.{i}.self_attn", ("q", "k", "v"))
        for i in range(n_enc)
    ]
    for i in range(n_dec):
        out.append(
            (
                f"decoder/layer_{i}/self_attention/linear_0",
                f"model.decoder.layers.{i}.self_attn",
                ("q", "k", "v"),
            )
        )
        out.append(
            (f"decoder/layer_{i}/attention/linear_1", f"model.decoder.layers.{i}.encoder_attn", ("k", "v"))
        )
    return out


def ct2_to_whisper_state_dict(ct2: CT2Model) -> dict[str, torch.Tensor]:
    """Unfuse and rename CT2 Whisper variables into a transformers Whisper state dict."""
    n_enc, n_dec = _layer_count(ct2, "encoder"), _layer_count(ct2, "decoder")
    state = {hf: ct2.get(ct) for ct, hf in _plain_pairs(n_enc, n_dec)}
    for ct, hf, projs in _fused(n_enc, n_dec):
        weights = ct2.get(f"{ct}/weight").chunk(len(projs), dim=0)  # [n*d, d] -> n x [d, d]
        biases = ct2.get(f"{ct}/bias").chunk(len(projs), dim=0)  # [n*d] -> n x [d]
        for proj, w, b in zip(projs, weights, biases):
            state[f"{hf}.{proj}_proj.weight"] = w.clone()
            if proj != "k":  # k has no bias in Whisper (CT2 stores zeros; softmax ignores it anyway)
                state[f"{hf}.{proj}_proj.bias"] = b.clone()
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def whisper_to_ct2(model: torch.nn.Module, alignment_heads: int = 1) -> CT2Model:
    """Export a transformers Whisper model to the CT2 variable layout (the inverse of the above)."""
    cfg = model.config
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    variables = {ct: sd[hf] for ct, hf in _plain_pairs(cfg.encoder_layers, cfg.decoder_layers)}
    for ct, hf, projs in _fused(cfg.encoder_layers, cfg.decoder_layers):
        variables[f"{ct}/weight"] = torch.cat([sd[f"{hf}.{p}_proj.weight"] for p in projs])
        variables[f"{ct}/bias"] = torch.cat(
            [sd.get(f"{hf}.{p}_proj.bias", torch.zeros_like(sd[f"{hf}.q_proj.bias"])) for p in projs]
        )
    int8, int16 = torch.int8, torch.int16
    variables.update(
        {
            "decoder/activation": torch.tensor(CT2_ACTIVATION_GELU, dtype=int8),
            "decoder/alibi": torch.tensor(0, dtype=int8),
            "decoder/alignment_heads": torch.tensor(alignment_heads, dtype=int16),
            "decoder/alignment_layer": torch.tensor(-1, dtype=int16),
            "decoder/num_heads": torch.tensor(cfg.decoder_attention_heads, dtype=int16),
            "decoder/pre_norm": torch.tensor(1, dtype=int8),
            "decoder/scale_embeddings": torch.tensor(int(cfg.scale_embedding), dtype=int8),
            "decoder/start_from_zero_embedding": torch.tensor(0, dtype=int8),
            "encoder/num_heads": torch.tensor(cfg.encoder_attention_heads, dtype=int16),
        }
    )
    return CT2Model("WhisperSpec", 3, variables, {"decoder/projection/weight": "decoder/embeddings/weight"})


# -- configuration ---------------------------------------------------------------------------------


def whisper_config_from_ct2(ct2: CT2Model, special: dict[str, int], extra: dict | None = None):
    """A ``WhisperConfig`` whose sizes come from the CT2 tensor shapes.

    ``special`` maps special-token strings to ids (from tokenizer.json); ``extra`` is the CT2
    ``config.json`` (suppress ids, alignment heads).
    """
    from transformers import WhisperConfig

    extra = extra or {}
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"not a Whisper CT2 model (spec {ct2.spec!r})")
    if ct2.scalar("decoder/activation", CT2_ACTIVATION_GELU) != CT2_ACTIVATION_GELU:
        raise ValueError("only GELU Whisper models are supported")
    vocab, d_model = ct2.get("decoder/embeddings/weight").shape
    eot = special.get("<|endoftext|>", 50256)
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=ct2.get("encoder/conv1/weight").shape[1],  # conv1: [d, mels, 3]
        d_model=d_model,
        encoder_layers=_layer_count(ct2, "encoder"),
        decoder_layers=_layer_count(ct2, "decoder"),
        encoder_attention_heads=ct2.scalar("encoder/num_heads"),
        decoder_attention_heads=ct2.scalar("decoder/num_heads"),
        encoder_ffn_dim=ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=ct2.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=ct2.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=ct2.get("decoder/position_encodings/encodings").shape[0],
        scale_embedding=bool(ct2.scalar("decoder/scale_embeddings", 0)),
        decoder_start_token_id=special.get("<|startoftranscript|>", 50257),
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        suppress_tokens=list(extra.get("suppress_ids", [])),
        begin_suppress_tokens=list(extra.get("suppress_ids_begin", [220, eot])),
        tie_word_embeddings=True,
    )


def whisper_generation_config(config, special: dict[str, int], extra: dict | None = None):
    """Generation settings for plain transcription without timestamps (English for ``.en``)."""
    from transformers import GenerationConfig

    extra = extra or {}
    multilingual = config.vocab_size >= 51865
    sot, translate = special["<|startoftranscript|>"], special.get("<|translate|>")
    langs = {t: i for t, i in special.items() if translate and sot < i < translate} if multilingual else {}
    gen = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=special["<|endoftext|>"],
        eos_token_id=special["<|endoftext|>"],
        pad_token_id=special["<|endoftext|>"],
        no_timestamps_token_id=special["<|notimestamps|>"],
        prev_sot_token_id=special.get("<|startofprev|>"),
        suppress_tokens=list(config.suppress_tokens or []),
        begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        max_initial_timestamp_index=50,
        max_length=config.max_target_positions,
        return_timestamps=False,
        is_multilingual=multilingual,
        task_to_id={"transcribe": special["<|transcribe|>"], "translate": translate},
        alignment_heads=[list(h) for h in extra.get("alignment_heads", [])],
    )
    if multilingual:
        gen.lang_to_id = langs
    return gen


def _special_tokens(tokenizer_json: Path) -> dict[str, int]:
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    return {t["content"]: t["id"] for t in data.get("added_tokens", [])}


# -- conversion --------------------------------------------------------------------------------------


def convert_whisper_ct2(src: str | Path, dst: str | Path) -> None:
    """Convert a CT2 Whisper folder (model.bin, config.json, tokenizer.json) into a transformers folder.

    ``src`` is the folder or its ``model.bin``. ``dst`` receives config.json, generation_config.json,
    model.safetensors (in the stored dtype: float16 for the packaged tiny.en), the tokenizer files and
    processor/preprocessor configs (the 80-mel 16 kHz ``WhisperFeatureExtractor``).
    """
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    src, dst = Path(src), Path(dst)
    if src.is_file():  # the model.bin itself
        src = src.parent
    extra_path = src / "config.json"
    extra = json.loads(extra_path.read_text()) if extra_path.exists() else {}
    special = _special_tokens(src / "tokenizer.json")
    ct2 = read_ct2(src / "model.bin")
    config = whisper_config_from_ct2(ct2, special, extra)
    state = ct2_to_whisper_state_dict(ct2)
    dtype = state["model.decoder.embed_tokens.weight"].dtype
    if not dtype.is_floating_point:
        dtype = torch.float32
    # proj_out is tied to the token embedding: store it once, like save_pretrained does.
    tensors = {k: v.to(dtype).contiguous() for k, v in state.items() if k != "proj_out.weight"}
    dst.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config.dtype = "float32"  # weights stay in their stored dtype; a plain from_pretrained upcasts exactly
    config.save_pretrained(dst)
    whisper_generation_config(config, special, extra).save_pretrained(dst)
    tokenizer = WhisperTokenizer(
        tokenizer_object=Tokenizer.from_file(str(src / "tokenizer.json")),
        model_max_length=config.max_target_positions,
    )
    features = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=16000)
    WhisperProcessor(features, tokenizer).save_pretrained(dst)
    features.save_pretrained(dst)  # preprocessor_config.json too, for tools that read only that
