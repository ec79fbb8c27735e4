"""S1 hear: an audio encoder into a causal LM through a projector (prefix) or gated cross-attention."""
