"""Metric functions in plain modules: text (WER/CER), audio (judge, Frechet distance, codebook usage)."""
