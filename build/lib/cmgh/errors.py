"""User-facing errors: every one carries a one-line message the CLI prints without a traceback."""


class CmghError(Exception):
    """Base of every error caused by user input (config, data, paths)."""


class ConfigError(CmghError):
    """The configuration is invalid: the message names the key path, the value and what was expected."""


class DataError(CmghError):
    """An input file is malformed: the message names the file, line or field and what was expected."""


class DownloadError(CmghError):
    """Fetching a real dataset failed as a whole (an annotation file, or too few clips available)."""
