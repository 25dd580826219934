"""cmgh: VATT-style multimodal pre-training with Cross-Modality Gradient Harmonization."""

from cmgh.errors import CmghError, ConfigError, DataError

__version__ = "0.1.0"
__all__ = ["CmghError", "ConfigError", "DataError", "__version__"]
