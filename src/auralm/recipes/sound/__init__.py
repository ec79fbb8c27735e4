"""S5 sound: mel VQ-VAE tokens, a class-conditioned token GPT, a GPT-VAE and vocoders."""
