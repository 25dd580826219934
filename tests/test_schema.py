"""The rules every config and command line obeys (issue 13): finite numbers, stacked config files,
no empty or undecodable file, no empty path, counts checked by argparse. Real CLI, real files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from cmgh import cli
from cmgh.errors import ConfigError
from tests.helpers import run_cli


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("where", "key", "value", "shown"),
    [
        ("set", "pretrain.temperature", ".inf", "inf"),
        ("set", "pretrain.lr", ".nan", "nan"),
        ("set", "pretrain.lr", "1e999", "inf"),  # a float that overflows is infinite too
        ("file", "pretrain.betas", "[0.9, .nan]", "nan"),
        ("file", "features.augment.crop_ratio", "[0.75, -.inf]", "-inf"),
        ("file", "data.download.item_timeout_seconds", ".inf", "inf"),  # null means no limit; infinity is not a number
    ],
)
def test_non_finite_numbers_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str, key: str, value: str, shown: str) -> None:
    if where == "set":
        args = ["--set", f"{key}={value}"]
    else:
        *parents, leaf = key.split(".")
        text = "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(parents)) + f"{'  ' * len(parents)}{leaf}: {value}\n"
        (tmp_path / "c.yaml").write_text(text)
        args = ["--config", str(tmp_path / "c.yaml")]
    code, out, err = run_cli(capsys, "config", "show", *args)
    assert code == 2 and out == ""
    index = ".1" if value.startswith("[") else ""
    assert one_line_error(err) == f"cmgh: error: {key}{index}: {shown} is not finite (expected a finite number)"


def test_non_finite_temperature_never_trains(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "pretrain", "--backbone", "ms", "--variant", "baseline", "--out", str(out), "--set", "pretrain.temperature=.inf")
    assert code == 2 and "pretrain.temperature: inf is not finite" in one_line_error(err)
    assert not out.exists()


def test_schema_may_allow_a_non_finite_number() -> None:
    from cmgh import schema

    node = {"type": "object", "properties": {"limit": {"type": "number", "allowNonFinite": True}, "rate": {"type": ["number", "null"]}}}
    schema.validate({"limit": float("inf"), "rate": None}, against=node)
    with pytest.raises(ConfigError, match=r"^rate: nan is not finite"):
        schema.validate({"limit": 1.0, "rate": float("nan")}, against=node)


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for action in subs for child in dict.fromkeys(action.choices.values()) for leaf in _leaf_parsers(child)]


def test_config_files_stack_in_order(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(yaml.safe_dump({"name": "stacked", "pretrain": {"steps": 3, "batch_size": 8}, "variants": {"mine": {}}}))
    second.write_text(yaml.safe_dump({"paths": {"results": str(tmp_path / "out")}, "pretrain": {"steps": 5}, "variants": {"theirs": {}}}))
    code, out, err = run_cli(capsys, "config", "show", "--config", str(first), "--config", str(second))
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert shown["name"] == "stacked" and shown["pretrain"]["batch_size"] == 8  # from the first file
    assert shown["paths"]["results"] == str(tmp_path / "out") and shown["pretrain"]["steps"] == 5  # the second wins
    assert {"mine", "theirs"} <= set(shown["variants"])  # mappings merge
    code, out, _ = run_cli(capsys, "list", "variants", "-c", str(first), "-c", str(second))
    assert code == 0 and {"mine", "theirs"} <= {line.split(":")[0] for line in out.splitlines()}
    # every command stacks: each one's --config appends
    leaves = _leaf_parsers(cli.build_parser())
    with_config = [p for p in leaves if any("--config" in a.option_strings for a in p._actions)]
    assert len(with_config) >= 9
    for parser in with_config:
        (action,) = [a for a in parser._actions if "--config" in a.option_strings]
        assert isinstance(action, argparse._AppendAction), parser.prog
        assert "stack" in (action.help or ""), parser.prog


@pytest.mark.parametrize("content", ["", "# only a comment\n", "---\n"])
def test_empty_config_file_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(content)
    code, out, err = run_cli(capsys, "config", "show", "--config", str(path))
    assert code == 2 and out == ""
    assert one_line_error(err) == f"cmgh: error: {path}: empty (expected a mapping of config keys)"


def test_config_file_not_utf8_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: mini\n# caf\u00e9\n".encode("latin-1"))  # é is byte 0xe9 at offset 16
    code, _, err = run_cli(capsys, "config", "show", "--config", str(path))
    assert code == 2
    assert one_line_error(err) == f"cmgh: error: {path}: not UTF-8 text (byte 16: b'\\xe9'); expected a UTF-8 YAML file"
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("name: mini\n", encoding="utf-16")
    code, _, err = run_cli(capsys, "config", "show", "--config", str(utf16))
    assert code == 2 and f"{utf16}: not UTF-8 text (byte 0:" in one_line_error(err)


@pytest.mark.parametrize("key", ["paths.results", "paths.data", "paths.features", "worlds.root", "data.download.cookies"])
def test_empty_path_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, key: str) -> None:
    code, _, err = run_cli(capsys, "config", "show", "--set", f"{key}=")
    assert code == 2 and one_line_error(err) == f"cmgh: error: {key}: '' is empty (expected a non-empty value)"
    section, leaf = key.rsplit(".", 1)
    (tmp_path / "c.yaml").write_text(f"{section.replace('.', ': {')}: {{{leaf}: ''}}{'}' * section.count('.')}\n")
    code, _, err = run_cli(capsys, "data", "synth", "--config", str(tmp_path / "c.yaml"))
    assert code == 2 and one_line_error(err) == f"cmgh: error: {key}: '' is empty (expected a non-empty value)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrain", "--backbone", "ms", "--variant", "baseline", "--threads", "-2"], "argument --threads: '-2' is not a positive integer"),
        (["pretrain", "--backbone", "ms", "--variant", "baseline", "--stop-after", "0"], "argument --stop-after: '0' is not a positive integer"),
        (["pretrain", "--backbone", "ms", "--variant", "baseline", "--seed", "-1"], "argument --seed: '-1' is not a non-negative integer"),
        (["sweep", "--n-trials", "0"], "argument --n-trials: '0' is not a positive integer"),
        (["sweep", "--worker-trials", "0"], "argument --worker-trials: '0' is not a positive integer"),
        (["sweep", "--threads", "two"], "argument --threads: 'two' is not a positive integer"),
        (["evaluate", "--task", "msrvtt", "--checkpoint", "x", "--threads", "0"], "argument --threads: '0' is not a positive integer"),
        (["data", "extract", "--dataset", "kinetics", "--workers", "-1"], "argument --workers: '-1' is not a non-negative integer"),
        (["data", "download", "--dataset", "kinetics", "--workers", "0"], "argument --workers: '0' is not a positive integer"),
        (["data", "download", "--dataset", "kinetics", "--limit", "0"], "argument --limit: '0' is not a positive integer"),
        (["data", "download", "--dataset", "kinetics", "--min-available", "1.5"], "argument --min-available: '1.5' is not a number in [0, 1]"),
        (["data", "download", "--dataset", "kinetics", "--min-available", "nan"], "argument --min-available: 'nan' is not a number in [0, 1]"),
    ],
)
def test_count_arguments_are_checked_by_argparse(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].endswith(f"error: {message}"), err


def test_meaningful_zero_and_bounds_still_parse() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["data", "extract", "--dataset", "kinetics", "--workers", "0"]).workers == 0
    assert parser.parse_args(["data", "download", "--dataset", "kinetics", "--min-available", "0"]).min_available == 0.0
    assert parser.parse_args(["data", "download", "--dataset", "kinetics", "--min-available", "1"]).min_available == 1.0
    assert parser.parse_args(["pretrain", "--backbone", "ms", "--variant", "gr", "--stop-after", "1", "--seed", "0"]).stop_after == 1


@pytest.mark.parametrize(
    "key",
    ["sweep.n_trials", "sweep.workers", "sweep.steps", "sweep.report_every", "pretrain.steps", "pretrain.checkpoint_every",
     "pretrain.score_every", "data.download.workers", "features.shard_size", "tracking.flush_every", "evaluate.batch_size",
     "evaluate.probe_max_iter", "evaluate.kinetics.finetune_epochs", "evaluate.noise_training.window"],
)
def test_count_keys_where_zero_is_meaningless_are_at_least_one(capsys: pytest.CaptureFixture[str], key: str) -> None:
    code, _, err = run_cli(capsys, "config", "show", "--set", f"{key}=0")
    assert code == 2 and one_line_error(err) == f"cmgh: error: {key}: 0 is less than the minimum of 1"
