"""Download the wheels ``benchmarks/gpu_check.py`` needs on a bare GPU machine and pack them into one bundle under 64 MiB.

Why: the GPU machines this project is checked on run their own Python 3.12 with torch 2.11.0,
torchvision 0.26.0 and torchaudio 2.11.0 (hence numpy and pillow) and nothing else, have no
network, and take at most 64 MiB together with the working tree. The check imports PyAV, pandas,
pyarrow, PyYAML, jsonschema, tqdm, google-crc32c and protobuf (and their dependencies), never
mlflow, optuna, scipy or matplotlib (tracking off; the evaluation it runs fits no probe). Those wheels are 95.6 MiB,
so they are unpacked, the parts no cmgh path loads are left out (:data:`TRIM`: pyarrow's Flight
RPC library, the packages' test suites, C++ headers and Cython sources, duplicate copies of
shared libraries under their unversioned names), and the rest is packed as one xz archive:

    gpu-wheels/download/*.whl                  the wheels as downloaded (git-ignored, NOT carried)
    gpu-wheels/bundle/site-packages.tar.xz     what the check unpacks and puts on sys.path (carried)
    gpu-wheels/bundle/manifest.json            distributions, versions, what was left out, sizes

Each top-level requirement is pinned to the version installed in the Python that runs this script
(the project's venv: the versions the tests ran with). The script prints the bundle's size, the
working tree's (tracked and untracked, not ignored) and their sum, and exits 1 over the limit.

Usage: make gpu-wheels    (= .venv/bin/python benchmarks/gpu_wheels.py [--with numpy] [--verify PYTHON3.12])
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.gpu.bundle import ARCHIVE, MANIFEST, NEEDED  # noqa: E402

# What cmgh imports on the check's paths (google-crc32c and protobuf: the dataset registry loads the YouTube-8M record reader).
ROOTS = ("av", "pandas", "pyarrow", "PyYAML", "jsonschema", "tqdm", "google-crc32c", "protobuf")
# On the GPU machine already: torch's, torchvision's and torchaudio's own dependencies (normalized names and prefixes).
PROVIDED = ("numpy", "pillow", "typing-extensions", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "filelock", "fsspec",
            "setuptools", "triton", "torch", "torchvision", "torchaudio", "nvidia-*", "cuda-*")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
# Left out of the bundle (paths relative to site-packages): nothing the check runs loads them.
TRIM = (
    "pyarrow/libarrow_flight.so*", "pyarrow/libarrow_python_flight.so*", "pyarrow/_flight.*.so",  # Arrow Flight RPC (30 MB)
    "pyarrow/_pyarrow_cpp_tests.*.so", "pyarrow/tests/*", "pandas/tests/*",  # test suites
    "pyarrow/include/*", "pyarrow/src/*", "*.pyx", "*.pxd", "*.pxi", "*.h", "*.hpp", "*.cc", "*.cpp",  # headers and sources
)
LIMIT_MIB = 64
MIB = 1 << 20


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def provided(dist: str) -> bool:
    return any(fnmatch.fnmatch(normalized(dist), pattern) for pattern in PROVIDED)


def pinned(names: list[str]) -> list[str]:
    """Each requirement at the version installed here (the venv the tests ran with), else unpinned."""
    out = []
    for name in names:
        try:
            out.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            out.append(name)
    return out


def download(requirements: list[str], folder: Path, python: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    abi = "cp" + python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--abi", abi, "-d", str(folder)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *requirements], check=True)
    return sorted(folder.glob("*.whl"))


def wheel_dist(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return name, version


def shared_library_copies(site: Path) -> list[Path]:
    """``libX.so`` and ``libX.so.N.M.P`` beside ``libX.so.N`` (a wheel stores links as copies; only the soname is loaded)."""
    out = []
    for soname in site.rglob("lib*.so.*"):
        m = re.fullmatch(r"(lib.+\.so)\.(\d+)", soname.name)
        if not m:
            continue
        base = soname.with_name(m.group(1))
        out += [base] if base.is_file() else []
        out += [p for p in soname.parent.glob(f"{soname.name}.*") if p.is_file()]
    return out


def trim(site: Path) -> list[str]:
    removed = set(shared_library_copies(site))
    for path in site.rglob("*"):
        rel = path.relative_to(site).as_posix()
        if path.is_file() and any(fnmatch.fnmatch(rel, pattern) for pattern in TRIM):
            removed.add(path)
    for path in removed:
        path.unlink()
    for folder in sorted((p for p in site.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    return sorted(p.relative_to(site).as_posix() for p in removed)


def working_tree_bytes() -> int:
    """Tracked and untracked, not ignored, files: what travels to the GPU machine besides the bundle."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    return sum((REPO / p).stat().st_size for p in set(listed) if p and (REPO / p).is_file())


def verify(python: str, archive: Path) -> None:
    """Import every needed module with ``python`` from the unpacked bundle alone (no user site, no project venv)."""
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(tmp, filter="data")
        code = "import " + ", ".join(NEEDED) + "; import pyarrow.parquet, pandas; print('imports ok with', pandas.__version__, pyarrow.__version__)"
        subprocess.run([python, "-s", "-c", code], check=True, env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "gpu-wheels", help="folder (git-ignored): download/ and bundle/ below it")
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    parser.add_argument("--with", dest="extra", action="append", default=[], help="also bundle this distribution (e.g. numpy)")
    parser.add_argument("--preset", type=int, default=9, help="xz preset (9: smallest; building takes a few minutes)")
    parser.add_argument("--verify", metavar="PYTHON", help="afterwards, import the needed modules with this interpreter from the bundle alone")
    args = parser.parse_args()

    wheels = download(pinned([*ROOTS, *args.extra]), args.out / "download", args.python)
    keep = [w for w in wheels if not provided(wheel_dist(w)[0]) or normalized(wheel_dist(w)[0]) in map(normalized, args.extra)]
    bundle = args.out / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.mkdir(parents=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        for wheel in keep:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(site)
        unpacked = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        removed = trim(site)
        kept = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        with tarfile.open(bundle / ARCHIVE, "w:xz", preset=args.preset) as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
    archive = (bundle / ARCHIVE).stat().st_size
    manifest = {
        "python": args.python, "platforms": list(PLATFORMS),
        "distributions": {wheel_dist(w)[0]: wheel_dist(w)[1] for w in keep},
        "downloaded_not_bundled": sorted(w.name for w in wheels if w not in keep),
        "wheels_bytes": sum(w.stat().st_size for w in keep), "unpacked_bytes": unpacked, "bundled_bytes": kept,
        "archive_bytes": archive, "left_out": removed,
    }
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tree = working_tree_bytes()
    carried = sum(p.stat().st_size for p in bundle.iterdir())
    print(f"bundled {len(keep)} distributions: " + ", ".join(f"{n} {v}" for n, v in manifest["distributions"].items()))
    print(f"not bundled (on the GPU machine with torch): {', '.join(manifest['downloaded_not_bundled']) or '-'}")
    print(f"wheels {manifest['wheels_bytes'] / MIB:.1f} MiB -> unpacked {unpacked / MIB:.1f} MiB, {kept / MIB:.1f} MiB kept "
          f"({len(removed)} files left out) -> {bundle / ARCHIVE} {archive / MIB:.1f} MiB in {time.perf_counter() - started:.0f} s")
    if args.verify:
        verify(args.verify, bundle / ARCHIVE)
    total = tree + carried
    print(f"to carry: working tree {tree / MIB:.1f} MiB + {bundle.relative_to(REPO) if bundle.is_relative_to(REPO) else bundle} "
          f"{carried / MIB:.1f} MiB = {total / MIB:.1f} MiB (limit {LIMIT_MIB} MiB)")
    if total > LIMIT_MIB * MIB:
        print(f"gpu_wheels: {total / MIB:.1f} MiB is over the {LIMIT_MIB} MiB a GPU machine takes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
