"""Evaluation: the downstream metrics (classification, multi-label tagging, retrieval, noise detection)."""
