"""The settings of ``auralm serve``: every limit is a field with a safe default and a help text that
``auralm serve --help`` prints. Imports no torch."""

from __future__ import annotations

import dataclasses

from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError


@dataclasses.dataclass
class ServeConfig(Config):
    """Where the server listens, who may call it, and how much one request and the whole server may take."""

    host: str = help_field("127.0.0.1", "address to listen on (0.0.0.0 exposes the server to the network)")
    port: int = help_field(8000, "port to listen on (0: a free one, printed at start)")
    api_key: str = help_field("", "clients must send 'Authorization: Bearer KEY' (compared in constant time); "
                                  "'' = no key (then listen on loopback only)")
    max_body_mb: float = help_field(25.0, "largest request body in MiB (413 above it; OpenAI's upload limit is 25)")
    max_audio_seconds: float = help_field(1200.0, "longest audio in one request, in seconds (413 above it)")
    max_images: int = help_field(4, "most images in one chat request (400 above it)")
    max_tokens: int = help_field(512, "largest max_tokens a request may ask for (400 above it); also the "
                                      "default cap when a request names none")
    max_n: int = help_field(8, "most choices (n) in one chat request")
    max_concurrent: int = help_field(32, "requests worked on at once (reading, decoding, queued for or in a "
                                         "model forward)")
    max_queue: int = help_field(64, "requests waiting for one of those slots; beyond it 429 with Retry-After")
    request_timeout: float = help_field(120.0, "seconds from arrival to answer (504 after it); a streamed "
                                               "answer must start within it and ends with an error event "
                                               "after it")
    body_timeout: float = help_field(30.0, "seconds a request body may take to arrive in full (400 after it: "
                                           "a Content-Length larger than what is sent)")
    batch_size: int = help_field(16, "most audio items in one model forward (1: one request at a time)")
    batch_wait_ms: float = help_field(10.0, "how long the first request of a batch waits for others, in ms")
    batch_refill_ms: float = help_field(250.0, "after a batch, how long the next one waits (ms) for as many "
                                               "requests as it answered plus those queued: under load the "
                                               "clients just answered send again at once (0: no wait)")
    allow_remote_media: bool = help_field(False, "fetch http(s) and file:// image URLs (default: data: URLs only)")
    ui: bool = help_field(False, "mount the Gradio UI at /ui")
    retry_after: int = help_field(1, "seconds the Retry-After header of 429/503 asks clients to wait")

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        positive = ("max_body_mb", "max_audio_seconds", "request_timeout", "body_timeout")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_tokens", "max_n", "max_concurrent", "batch_size", "retry_after"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_images", "max_queue", "batch_wait_ms", "batch_refill_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)
