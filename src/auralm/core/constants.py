"""Constants shared across the package."""

SAMPLE_RATE = 16000  # Hz: what every speech encoder here takes, and the rate manifests are decoded at
