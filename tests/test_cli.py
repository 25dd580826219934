"""The `cmgh` command line as users and rules call it: real subprocesses, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[1]


def cmgh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "cmgh", *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"cmgh {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def test_bad_config_is_one_line_and_nonzero() -> None:
    result = cmgh("config", "show", "--set", "pretrain.harmonize.rule=pcgradd", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "cmgh: error: pretrain.harmonize.rule: 'pcgradd' is not one of none, cmgh, pcgrad, gradvac, norm_matched, random_partner"
    assert "Traceback" not in result.stderr
    missing = cmgh("config", "show", "--config", "nope.yaml", check=False)
    assert missing.returncode == 2 and missing.stderr.strip() == "cmgh: error: nope.yaml: config file not found"


def test_config_show_resolves_variants_and_overrides() -> None:
    shown = yaml.safe_load(cmgh("config", "show", "--variant", "gr_gcl", "--set", "pretrain.steps=9").stdout)
    assert shown["pretrain"]["harmonize"]["rule"] == "cmgh"
    assert shown["pretrain"]["curriculum"]["rule"] == "cmgh"
    assert shown["pretrain"]["steps"] == 9


def test_list_datasets_and_variants() -> None:
    assert cmgh("list", "datasets").stdout.split() == ["howto100m", "kinetics", "audioset", "msrvtt", "youtube8m"]
    assert [line.split(":")[0] for line in cmgh("list", "variants").stdout.splitlines()] == ["baseline", "gr", "gcl", "gr_gcl"]


@pytest.mark.slow
def test_synth_vocab_extract_through_the_cli(tmp_path: Path) -> None:
    sets = [arg for o in tiny_overrides(tmp_path) for arg in ("--set", o)]
    cmgh("data", "synth", "--dataset", "howto100m", "--dataset", "kinetics", *sets)
    cmgh("data", "vocab", *sets)
    cmgh("data", "extract", "--dataset", "kinetics", "--dataset", "howto100m", "--workers", "2", *sets)
    for name in ("kinetics", "howto100m"):
        out = tmp_path / "features" / name
        assert (out / "config.yaml").is_file() and (out / "manifest.csv").is_file()
        assert (pd.read_csv(out / "manifest.csv")["status"] == "ok").all()
        resolved = yaml.safe_load((out / "config.yaml").read_text())
        assert resolved["paths"]["features"] == str(tmp_path / "features")
    assert not (tmp_path / "data" / "audioset").exists()
    unknown = cmgh("data", "extract", "--dataset", "msrvtt", *sets, check=False)
    assert unknown.returncode == 2 and "videodatainfo.json" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
