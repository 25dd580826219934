"""The DAG of a variant that pre-trains on HowTo100M + YouTube-8M: generated, then extracted
(decoded, with the HowTo100M vocabulary) or packed, as `features.format` says."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cmgh import layout
from cmgh.data import datasets
from tests.e2e.dag import planned_jobs, snakemake, tiny_configfile

MIXED = {"pretrain": {"corpora": [{"dataset": "howto100m"}, {"dataset": "youtube8m", "weight": 0.5}]}}


def mixed_configfile(tmp_path: Path, *extra: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tiny_configfile(tmp_path, "data.synth.youtube8m.videos=8", "sweep.run=false", *extra)
    tree = yaml.safe_load(path.read_text())
    tree["variants"]["yt8m"] = MIXED
    path.write_text(yaml.safe_dump(tree))
    return path


def jobs(output: str) -> dict[str, dict[str, str]]:
    """``rule:dataset`` -> the job's printed fields (input, output, ...) from a dry run's output."""
    found = {}
    for block in re.split(r"\n(?=(?:rule|checkpoint) \w+:)", output):
        head = re.match(r"(?:rule|checkpoint) (\w+):", block)
        dataset = re.search(r"wildcards: .*?dataset=(\w+)", block)
        if head and dataset:
            found[f"{head.group(1)}:{dataset.group(1)}"] = dict(re.findall(r"^\s+(\w+): (.*)$", block, re.M))
    return found


def test_dry_run_lists_the_youtube8m_jobs_of_either_format(tmp_path: Path) -> None:
    for fmt, job in (("decoded", "extract"), ("packed", "pack")):
        configfile = mixed_configfile(tmp_path / fmt, f"features.format={fmt}")
        result = snakemake(tmp_path / fmt, "--configfile", str(configfile), "-n")
        assert result.returncode == 0, result.stderr[-2000:]
        planned = jobs(result.stdout + result.stderr)
        assert {"synth:youtube8m", f"{job}:youtube8m"} <= set(planned)
        assert ("extract:youtube8m" in planned) == (fmt == "decoded") and ("pack:howto100m" in planned) == (fmt == "packed")
        assert planned_jobs(result)["pretrain"] == 3  # baseline, gr_gcl, yt8m (one seed)


def test_extracting_youtube8m_waits_for_the_howto100m_vocabulary(tmp_path: Path) -> None:
    configfile = mixed_configfile(tmp_path)
    data = Path("out", "data")  # as the rules declare it: relative to the working directory
    first = snakemake(tmp_path, str(layout.stamp(data, "youtube8m")), str(layout.stamp(data, "howto100m")), "--configfile", str(configfile))
    assert first.returncode == 0, first.stderr[-2000:]
    result = snakemake(tmp_path, "--configfile", str(configfile), "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    extract = jobs(result.stdout + result.stderr)["extract:youtube8m"]
    inputs = set(extract["input"].split(", "))
    root = tmp_path / layout.dataset_dir(data, "youtube8m")
    expected = {*map(str, datasets.get("youtube8m").annotation_files(data)), str(layout.stamp(data, "youtube8m")), str(layout.vocab(Path("out", "features")))}
    assert inputs == expected and (root / layout.YOUTUBE8M_CAPTIONS).is_file()
