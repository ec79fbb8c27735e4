"""Exceptions that the CLI turns into a one-line message and a non-zero exit, never a traceback."""


class AuralmError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class ConfigError(AuralmError):
    """An invalid or unknown config value."""


class ManifestError(AuralmError):
    """A manifest that cannot be read; the message names every bad line by number."""


class AudioError(AuralmError):
    """Audio that cannot be decoded, is empty, silent, or has an invalid sample rate."""


class ImageError(AuralmError):
    """An image that cannot be read: not an image file, empty, zero-size, or of the wrong shape."""


class ModelNotFoundError(AuralmError):
    """A model name that resolves to nothing on this machine."""


class ToolMissingError(AuralmError):
    """An external program (espeak-ng, ffmpeg, ...) that is needed but not installed."""
