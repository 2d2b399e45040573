"""Evaluation: the native scoring engine (``scorer``, ``tasks``) and the lm-eval adapter."""
