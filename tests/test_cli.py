"""The `cmgh` command line as users and rules call it, on real files: a real process where the exit
code or a chain of commands is the point, in-process where only what it prints is."""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import cmgh_process, run_cli, tiny_overrides


def cmgh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = cmgh_process(*args)
    if check and result.returncode != 0:
        raise AssertionError(f"cmgh {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def test_bad_config_is_one_line_and_nonzero() -> None:
    result = cmgh("config", "show", "--set", "pretrain.harmonize.rule=pcgradd", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "cmgh: error: pretrain.harmonize.rule: 'pcgradd' is not one of none, cmgh, pcgrad, gradvac, cagrad, upgrad, norm_matched, random_partner"
    assert "Traceback" not in result.stderr
    missing = cmgh("config", "show", "--config", "nope.yaml", check=False)
    assert missing.returncode == 2 and missing.stderr.strip() == "cmgh: error: nope.yaml: config file not found"


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What ``cmgh args`` prints, run in this process; it must succeed."""
    code, out, err = run_cli(capsys, *args)
    assert code == 0, f"cmgh {' '.join(args)} failed ({code}):\n{err}"
    return out


def test_config_show_resolves_variants_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    shown = yaml.safe_load(in_process(capsys, "config", "show", "--variant", "gr_gcl", "--set", "pretrain.steps=9"))
    assert shown["pretrain"]["harmonize"]["rule"] == "cmgh"
    assert shown["pretrain"]["curriculum"]["rule"] == "cmgh"
    assert shown["pretrain"]["steps"] == 9


def test_list_datasets_and_variants(capsys: pytest.CaptureFixture[str]) -> None:
    assert in_process(capsys, "list", "datasets").split() == ["howto100m", "kinetics", "audioset", "msrvtt", "youtube8m"]
    printed = in_process(capsys, "list", "variants")
    assert [line.split(":")[0] for line in printed.splitlines()] == ["baseline", "gr", "gcl", "gr_gcl"]
    assert yaml.safe_load(printed)["gr_gcl"] == {"pretrain": {"harmonize": {"rule": "cmgh"}, "curriculum": {"rule": "cmgh"}}}  # YAML to paste back


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


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    return [leaf for name, sub in subs[0].choices.items() for leaf in _leaf_parsers(sub, (*path, name))]


def test_every_subcommand_help_has_a_description_and_an_example_that_parses() -> None:
    from cmgh.cli import build_parser

    leaves = _leaf_parsers(build_parser())
    assert len(leaves) >= 12
    for path, parser in leaves:
        assert parser.description and parser.epilog and parser.epilog.startswith("example:\n  cmgh "), path
        example = shlex.split(parser.epilog.split("\n", 1)[1].strip())[1:]
        assert tuple(example[: len(path)]) == path, (path, example)
        build_parser().parse_args(example)  # the example is a valid command line (argparse exits on a bad one)
