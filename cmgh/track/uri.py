"""Where tracking and study data live: store URIs and artifact roots from the config.

One rule for local stores, shared by MLflow (``tracking.uri``) and Optuna (``sweep.storage``):
an empty setting means a sqlite file under ``paths.results``, and a relative sqlite path hangs off
the working directory (the project) like every other path in the config. A URI is shown (logs, tags, written
configs) only through :func:`~cmgh.io.redacted`, so a config read back from a run folder holds
``user:***@``: :func:`unmasked` refuses such a URI where it would be used. Import-light: no mlflow, no optuna.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

from cmgh import layout
from cmgh.config import resolve_path
from cmgh.errors import ConfigError
from cmgh.io import is_masked, redacted

__all__ = [
    "SQLITE", "artifact_root", "mlflow_version", "redacted", "resolve_sqlite", "sqlite_path", "sqlite_url", "tracking_uri", "unmasked",
]  # fmt: skip

SQLITE = "sqlite:///"
FILE_STORE_REFUSED_SINCE = (3, 13)  # MLflow raises on a file store from then on (unless MLFLOW_ALLOW_FILE_STORE)


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """``sqlite:///`` + an absolute path (relative paths hang off the working directory: the project)."""
    return f"{SQLITE}{resolve_path(path)}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a sqlite URL (None for other URLs and in-memory databases)."""
    if not url.startswith(SQLITE):
        return None
    rest = url[len(SQLITE) :]
    return None if not rest or rest == ":memory:" else Path(rest)


def resolve_sqlite(url: str) -> str:
    """A sqlite URL with its relative path resolved (``sqlite:///results/x.db``); any other URL as given."""
    path = sqlite_path(url)
    return url if path is None else sqlite_url(path)  # relative or spelled through '..': one URL per file


def unmasked(url: str, key: str, env: str | None = None) -> str:
    """``url`` unless its password is the mask a written config holds (then a one-line ConfigError:
    the real secret must come from the command's own config, ``--set`` or ``env``)."""
    if is_masked(url):
        where = f"--set {key}=..." + (f" or {env}" if env else "")
        raise ConfigError(f"{key}: {url!r} has a masked password (a config.yaml written beside results); expected the real URI ({where})")
    return url


def mlflow_version() -> str | None:
    """The installed MLflow's version, read without importing it (None when it is not installed)."""
    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _is_file_store(uri: str) -> bool:
    return uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks"))


def _supported(uri: str, key: str) -> str:
    """``uri`` unless it is a file store the installed MLflow refuses: then a one-line ConfigError
    naming the fix, raised when the tracker opens, before the run starts (MLflow would fail inside it)."""
    version = mlflow_version()
    allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1")
    if not _is_file_store(uri) or allowed or version is None:
        return uri
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = FILE_STORE_REFUSED_SINCE
    if major_minor < FILE_STORE_REFUSED_SINCE:
        return uri
    raise ConfigError(
        f"{key}: file store {redacted(uri)!r} is not supported by MLflow {version}; expected sqlite:///path/{layout.MLFLOW_DB} "
        f"(empty = sqlite:///<paths.results>/{layout.MLFLOW_DB}) or a tracking server http(s)://host:port"
    )


def tracking_uri(cfg: Any) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri`` (relative sqlite paths hang off the
    working directory), else ``sqlite:///<paths.results>/mlflow.db``. A file store (``file:`` or a
    bare directory such as ``./mlruns``) is refused where the installed MLflow refuses it."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return _supported(env, "MLFLOW_TRACKING_URI")
    uri = unmasked(str(cfg.tracking.uri or "").strip(), "tracking.uri", "MLFLOW_TRACKING_URI")
    if not uri:
        return sqlite_url(cfg.path("results") / layout.MLFLOW_DB)
    if _is_file_store(uri):
        _supported(uri, "tracking.uri")
        return uri if uri.startswith("file:") else resolve_path(uri).as_uri()  # a bare directory: MLflow's file store
    return resolve_sqlite(uri)


def artifact_root(cfg: Any, uri: str) -> str | None:
    """Artifact root of new experiments in a local store (a server decides its own)."""
    if not uri.startswith(("sqlite:", "file:", "postgresql", "mysql", "mssql")):
        return None
    path = str(cfg.tracking.artifacts or "").strip()
    target = resolve_path(path) if path else cfg.path("results") / layout.MLFLOW_ARTIFACTS
    return target.as_uri()
