"""Probe texts for the diagnostics tests."""

TEXTS = [
    "The cat sat on the mat.",
    "Quantization adds error to every weight.",
    "2 + 3 = 5",
    "Paris is in France.",
]
