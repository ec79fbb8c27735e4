"""Audio tokenizers (codecs) and vocoders: one interface (:class:`.base.AudioTokenizer`), the mel VQ-VAE."""
