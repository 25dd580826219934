"""benchmarks/gpu_check.py, the prepared check for a GPU machine: its smoke run on the CPU as a real process
(both reports, every section ran, exit 0), a failing section failing the check, the bundle of the
modules a bare GPU machine lacks, and what benchmarks/gpu_wheels.py leaves out of it."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from benchmarks import gpu_check, gpu_wheels
from benchmarks.gpu import bundle, core, report
from tests.helpers import REPO, untracked_env

SECTIONS = ["throughput", "correctness", "loader", "e2e"]


@pytest.mark.slow
def test_smoke_run_writes_both_reports_with_every_section_ok(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")],
                          cwd=REPO, env=untracked_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / report.JSON_NAME).read_text(encoding="utf-8"))
    assert data["status"] == "ok" and data["smoke"] is True and data["device"] == "cpu"
    assert [s["name"] for s in data["sections"]] == SECTIONS
    assert all(s["status"] == "ok" and not s["problems"] and s["headline"] for s in data["sections"]), data["sections"]
    figures = {s["name"]: s["figures"] for s in data["sections"]}
    for variant in ("baseline", "gr_gcl", "all_parameters", "gr_gcl_all"):
        assert figures["throughput"][f"{variant}/eager"]["samples_s"] > 0
        compiled = figures["throughput"][f"{variant}/compiled"]  # a combination the library refuses in one line is not a failure
        assert compiled["status"] == "ok" and compiled["samples_s"] > 0 or compiled["status"].startswith("refused: ")
    assert figures["correctness"]["none_all_parameters_vs_plain"] <= 1e-3
    assert figures["correctness"]["combined_bf16_rel_error"] < 0.1
    assert figures["loader"]["workers2"]["delivered_samples_s"] > 0 and figures["loader"]["workers0"]["steps"] == 3
    assert figures["e2e"]["pretrain_steps"] == 3 and figures["e2e"]["metrics"]
    text = (out / report.MARKDOWN_NAME).read_text(encoding="utf-8")
    assert text.startswith("# GPU check: OK")
    assert all(f"(`{name}`): ok" in text for name in SECTIONS)
    assert proc.stdout.strip().splitlines()[-1] == "gpu check: OK (throughput ok, correctness ok, loader ok, e2e ok)"


def _fine(ctx: core.Context) -> core.Outcome:
    return core.Outcome(figures={"answer": 42.0}, headline=["fine: 42"])


def _crashes(ctx: core.Context) -> core.Outcome:
    raise RuntimeError("the device fell over")


def _wrong(ctx: core.Context) -> core.Outcome:
    out = core.Outcome()
    out.check(1.0 < 0.5, "relative error 1.0 over the limit 0.5")
    return out


def test_a_failing_section_fails_the_check_and_the_others_still_report(tmp_path: Path) -> None:
    chosen = [core.Section("crashes", "raises", _crashes), core.Section("fine", "measures", _fine), core.Section("wrong", "checks", _wrong)]
    assert gpu_check.main(["--smoke", "--out", str(tmp_path)], chosen=chosen) == 1
    data = json.loads((tmp_path / report.JSON_NAME).read_text(encoding="utf-8"))
    status = {s["name"]: s["status"] for s in data["sections"]}
    assert data["status"] == "failed" and status == {"crashes": "failed", "fine": "ok", "wrong": "failed"}
    problems = {s["name"]: s["problems"] for s in data["sections"]}
    assert problems["crashes"] == ["RuntimeError: the device fell over"]
    assert problems["wrong"] == ["relative error 1.0 over the limit 0.5"]
    assert data["sections"][1]["figures"] == {"answer": 42.0}
    assert (tmp_path / report.MARKDOWN_NAME).read_text(encoding="utf-8").startswith("# GPU check: FAILED")


@pytest.mark.slow
def test_the_full_check_without_a_gpu_says_so_and_exits_2(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the full check would run")
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)], cwd=REPO, env=untracked_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr
    assert "no CUDA device" in json.loads((tmp_path / report.JSON_NAME).read_text(encoding="utf-8"))["error"]


def test_a_missing_module_comes_from_the_bundle_and_its_child_processes_see_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.setattr(bundle.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    name = "cmgh_bundle_probe"
    assert bundle.missing((name, "cmgh_no_parent.protobuf", "json")) == [name, "cmgh_no_parent.protobuf"]  # a dotted name's parent may be missing too
    with pytest.raises(bundle.BundleError, match=r"cmgh_bundle_probe not importable .* no bundle at .*make gpu-wheels"):
        bundle.ensure(tmp_path / "none", names=(name,))
    site = tmp_path / "site" / name
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("VALUE = 7\n", encoding="utf-8")
    folder = tmp_path / "bundle"
    folder.mkdir()
    with tarfile.open(folder / bundle.ARCHIVE, "w:xz") as tar:
        tar.add(site, arcname=name)
    unpacked = bundle.ensure(folder, names=(name,))
    assert unpacked is not None and (unpacked / ".complete").is_file()
    assert __import__(name).VALUE == 7
    child = subprocess.run([sys.executable, "-c", f"import {name}; print({name}.VALUE)"], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "7"
    assert bundle.ensure(folder, names=(name,)) is None  # importable now: nothing to do
    sys.modules.pop(name, None)


def test_the_bundle_leaves_out_flight_tests_and_duplicate_library_copies(tmp_path: Path) -> None:
    files = ["pyarrow/libarrow.so.2500", "pyarrow/libarrow_python.so", "pyarrow/libarrow_python.so.2500", "pyarrow/libarrow_python.so.2500.1.0",
             "pyarrow/libarrow_flight.so.2500", "pyarrow/_flight.cpython-312-x86_64-linux-gnu.so", "pyarrow/lib.pyx", "pyarrow/include/arrow/api.h",
             "pyarrow/parquet/core.py", "pandas/tests/test_x.py", "pandas/core/frame.py", "av.libs/libx264-d6533a8d.so.165"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"x")
    removed = gpu_wheels.trim(tmp_path)
    assert removed == sorted(["pyarrow/libarrow_python.so", "pyarrow/libarrow_python.so.2500.1.0", "pyarrow/libarrow_flight.so.2500",
                              "pyarrow/_flight.cpython-312-x86_64-linux-gnu.so", "pyarrow/lib.pyx", "pyarrow/include/arrow/api.h",
                              "pandas/tests/test_x.py"])
    kept = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert kept == ["av.libs/libx264-d6533a8d.so.165", "pandas/core/frame.py", "pyarrow/libarrow.so.2500", "pyarrow/libarrow_python.so.2500",
                    "pyarrow/parquet/core.py"]
    assert not (tmp_path / "pandas" / "tests").exists()
