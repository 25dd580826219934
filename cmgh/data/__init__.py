"""Data: the four datasets' real formats, the mini-world generator, media decoding and features.

Kept import-free so that ``import cmgh.data.formats`` does not pull in PyAV or torch, and so that
the CLI can name the datasets without importing pandas.
"""

DATASETS = ("howto100m", "kinetics", "audioset", "msrvtt")
