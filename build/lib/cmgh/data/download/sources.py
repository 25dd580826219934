"""Where a dataset's files come from: the configured sources, checked, and the names derived from them.

The sources are checked where downloads are planned: :func:`cmgh.data.download.run.download`
checks its dataset's before fetching anything, and the workflow checks every dataset's when it
reads a ``data.source: download`` config, before any job starts. Kept free of heavy imports for
that second caller. (The schema checks each URL's shape; whether a dataset has what a download
needs depends on ``data.datasets``, which one schema node cannot see.)
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from cmgh.data import datasets
from cmgh.errors import ConfigError
from cmgh.io import sanitize_id


def check_sources(name: str, spec: dict[str, Any]) -> None:
    """A dataset needs annotation URLs and one way to its clips (one-line ConfigError otherwise)."""
    key = f"data.download.{name}"
    if not spec.get("annotations"):
        raise ConfigError(f"{key}.annotations: empty; downloading {name} needs its annotation URLs (see config/paper.yaml)")
    check_more = datasets.get(name).download_check
    if check_more is not None:
        check_more(key, spec)
    if not spec.get("clip_archives"):
        template = spec.get("clip_url")
        if not template:
            raise ConfigError(f"{key}: neither clip_url nor clip_archives is set; expected one way to the clips")
        if "{id}" not in template or urlsplit(template).scheme not in ("http", "https"):
            raise ConfigError(f"{key}.clip_url: {template!r} is not an http(s) URL template containing {{id}}")


def check_config(cfg: Any) -> None:
    """Every dataset of ``data.datasets`` has its sources, when ``data.source`` is ``download``."""
    data = cfg.to_dict()["data"]
    if data["source"] == "download":
        for name in data["datasets"]:
            check_sources(name, data["download"][name])


def clip_url(template: str, source_id: str) -> str:
    """The clip's page or file URL; the ID is already a safe file name and is quoted once more."""
    return template.replace("{id}", quote(source_id, safe=""))


def url_name(url: str) -> str:
    """The file name at the end of a URL's path, made safe."""
    return sanitize_id(PurePosixPath(urlsplit(url).path).name or "download")


def archive_name(url: str) -> str:
    """A staging file name per archive URL (two sources with the same file name cannot collide)."""
    return f"{hashlib.sha256(url.encode()).hexdigest()[:8]}-{url_name(url)}"


def local_paths(source: dict[str, Any]) -> list[str]:
    """Paths (in the dataset folder) an annotation source provides."""
    return [source["save_as"]] if source.get("save_as") else list(source.get("members", {}).values())


def annotation_id(source: dict[str, Any]) -> str:
    """Manifest ID of an annotation source: its file in the layout, or its archive's name."""
    return source["save_as"] if source.get("save_as") else url_name(source["url"])
