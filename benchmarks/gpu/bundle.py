"""The modules a bare GPU machine lacks, from the bundle ``benchmarks/gpu_wheels.py`` builds (stdlib only).

Why a bundle, not a folder of wheels: a GPU machine of this project brings its own Python 3.12
with torch, torchvision and torchaudio (so numpy and pillow) and nothing else, has no network, and
takes at most 64 MiB with the working tree. The wheels the check needs (PyAV, pandas, pyarrow,
PyYAML, jsonschema, tqdm, google-crc32c, protobuf and their dependencies) are 95.6 MiB as wheels; unpacked, with the parts no
cmgh path loads left out (pyarrow's Flight RPC, test suites, C++ headers), and packed as one
``site-packages.tar.xz`` they are 51.4 MiB. :func:`ensure` unpacks it once into the temporary
folder and puts it first on ``sys.path`` and ``PYTHONPATH`` (for the ``cmgh`` processes the check
starts), and does nothing where the modules are importable already (the project's venv).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "gpu-wheels" / "bundle"  # what `make gpu-wheels` writes; carry this folder to the GPU machine
ARCHIVE = "site-packages.tar.xz"
MANIFEST = "manifest.json"
# Imported on the check's paths (import name): what the bundle must supply where it is missing.
NEEDED = ("av", "pandas", "pyarrow", "yaml", "jsonschema", "tqdm", "google_crc32c", "google.protobuf", "numpy", "torch")


class BundleError(RuntimeError):
    """The check cannot start: a module is missing and no bundle supplies it (one line, with the fix)."""


def importable(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (a dotted name imports its parent package only)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package of a dotted name is missing
        return False


def missing(names: tuple[str, ...] = NEEDED) -> list[str]:
    return [n for n in names if not importable(n)]


def _unpack(archive: Path) -> Path:
    """The archive unpacked under the temporary folder, once per archive content (a stamp marks a whole unpack)."""
    digest = hashlib.sha256()
    with archive.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    target = Path(tempfile.gettempdir()) / f"cmgh-gpu-site-{digest.hexdigest()[:16]}"
    stamp = target / ".complete"
    if stamp.is_file():
        return target
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".part-", dir=target.parent))
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(partial, filter="data")  # no links out of the folder, no devices
    (partial / ".complete").write_text(archive.name + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def ensure(bundle: Path | None = None, names: tuple[str, ...] = NEEDED) -> Path | None:
    """Make ``names`` importable here and in child processes; returns the unpacked folder (None: nothing needed)."""
    lacking = missing(names)
    if not lacking:
        return None
    if "torch" in lacking:
        raise BundleError(f"torch is not importable by {sys.executable}: run the check with the GPU machine's own python3 "
                          "(torch 2.11, torchvision 0.26, torchaudio 2.11), or the project's .venv/bin/python")
    folder = Path(bundle or os.environ.get("CMGH_GPU_BUNDLE") or DEFAULT)
    archive = folder / ARCHIVE
    if not archive.is_file():
        raise BundleError(f"{', '.join(lacking)} not importable by {sys.executable} and no bundle at {archive}: run `make gpu-wheels` "
                          "on a machine with PyPI access and bring gpu-wheels/bundle/ along (README, 'Paper scale')")
    site = _unpack(archive)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    importlib.invalidate_caches()
    still = missing(tuple(lacking))
    if still:
        extra = " --with numpy" if "numpy" in still else ""
        raise BundleError(f"{archive}: does not supply {', '.join(still)}; rebuild it with `.venv/bin/python benchmarks/gpu_wheels.py{extra}` "
                          f"(for Python {sys.version_info.major}.{sys.version_info.minor})")
    return site
