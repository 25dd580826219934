"""`config/paper.yaml` plans the real downloads: one `download` job per dataset, feeding extraction."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.e2e.dag import REPO, planned_jobs, snakemake


def test_paper_config_dry_run_lists_a_download_job_per_dataset(tmp_path: Path) -> None:
    tree = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    tree["paths"] = {name: str(tmp_path / "out" / name) for name in ("data", "features", "results")}  # same plan, no writes in the repo
    configfile = tmp_path / "paper.yaml"
    configfile.write_text(yaml.safe_dump(tree))
    result = snakemake(tmp_path, "--configfile", str(configfile), "-n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    planned = planned_jobs(result)
    # Downstream sets decoded; the pre-training corpora packed (no decoded HowTo100M: 53 TB at 8
    # clips per video); no noise evaluation (real data has no ground truth).
    assert planned["download"] == 5 and planned["extract"] == 3 and planned["pack"] == 3 and "synth" not in planned
    blocks = re.split(r"\n(?=(?:localrule|rule|checkpoint) \w+:)", output)
    extracted = sorted(re.search(r"wildcards: dataset=(\w+)", b).group(1) for b in blocks if re.match(r"rule extract:", b))
    assert extracted == ["audioset", "kinetics", "msrvtt"]
    pretrain = {re.search(r"variant=(\w+)", b).group(1): re.search(r"input: (.*)", b).group(1) for b in blocks if re.match(r"rule pretrain:", b)}
    # the rules' paths: relative to the working directory (tmp_path), where the config's absolute paths lie
    for corpus in ("howto100m", "audioset"):
        assert f"out/features/packed/{corpus}/index.parquet" in pretrain["baseline"].split(", ")
    yt8m = "out/features/packed/youtube8m/index.parquet"
    assert yt8m in pretrain["gr_gcl_yt8m"].split(", ") and yt8m in pretrain["baseline_yt8m"].split(", ") and yt8m not in pretrain["gr_gcl"]
    assert "task=noise" not in output and "noise_training" not in planned  # nor noise detection over training
    downloads = [b for b in blocks if re.match(r"(?:localrule|rule|checkpoint) download:", b)]
    datasets = sorted(re.search(r"wildcards: dataset=(\w+)", b).group(1) for b in downloads)
    assert datasets == ["audioset", "howto100m", "kinetics", "msrvtt", "youtube8m"]
    for block in downloads:
        dataset = re.search(r"wildcards: dataset=(\w+)", block).group(1)
        assert f"output: out/data/{dataset}/.complete" in block
        assert f"log: out/results/logs/download/{dataset}.log" in block
    assert not (tmp_path / "out" / "data").exists()  # a dry run fetches nothing
