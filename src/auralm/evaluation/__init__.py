"""Metric functions in one dict and the evaluation harness."""

from auralm.evaluation.metrics import METRICS, cer, edit_distance, normalize_english, wer

__all__ = ["METRICS", "cer", "edit_distance", "normalize_english", "wer"]
