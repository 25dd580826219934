"""The Snakemake DAG on a tiny config, as a user runs it (real subprocess, real files)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmgh.config import DEFAULT_CONFIG
from tests.e2e.dag import REPO, SNAKEMAKE, TinyDag, planned_jobs, snakemake, tiny_configfile

@pytest.mark.slow
def test_whole_dag_to_report_then_noop_then_one_branch(tiny_dag: TinyDag, tmp_path: Path) -> None:
    # the fixture ran the DAG after checking its plan: 4 datasets, 1 vocabulary, 1 backbone x 2
    # variants x 1 seed, 4 tasks x (2 variants + random init), noise detection over each run's training, 1 study
    assert tiny_dag.planned == {"all": 1, "evaluate": 8, "evaluate_random_init": 4, "extract": 4, "noise_training": 2, "pretrain": 2,
                                "report": 1, "synth": 4, "sweep": 1, "track_evaluations": 1, "vocab": 1, "total": 29}
    out, workdir = tiny_dag.out, tiny_dag.workdir
    configfile = tmp_path / "changed.yaml"  # the changes below are planned from a copy: the run's own file stays for other tests
    configfile.write_text(tiny_dag.configfile.read_text())
    for name in ("howto100m", "kinetics", "audioset", "msrvtt"):
        assert len(pd.read_parquet(out / "features" / name / "index.parquet")) > 0
        assert (out / "results" / "logs" / "extract" / f"{name}.log").is_file()
    assert (out / "results" / "benchmarks" / "pretrain" / "ms" / "gr_gcl" / "seed0.tsv").is_file()
    for suffix in ("md", "csv", "tex"):
        assert (out / "results" / "tables" / f"ablation.{suffix}").stat().st_size > 0
    assert "gr_gcl" in (out / "results" / "tables" / "ablation.md").read_text()
    assert (out / "results" / "figures" / "noise_roc.png").is_file()
    assert all((out / "results" / "figures" / f"noise_over_training_ms_{v}.png").is_file() for v in ("baseline", "gr_gcl"))
    assert (out / "results" / "mlflow.db").is_file()
    best = yaml.safe_load((out / "results" / "sweep" / "default" / "best_params.yaml").read_text())
    assert set(best["params"]) and pd.read_csv(out / "results" / "sweep" / "default" / "trials.csv").shape[0] == 2

    again = snakemake(workdir, "--configfile", str(configfile), "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # Raw files are declared inputs: a changed AudioSet class list reruns what reads it, only that
    # (a changed content, not a touch: Snakemake skips newer inputs whose checksum it knows unchanged).
    classes = out / "data" / "audioset" / "class_labels_indices.csv"
    original, stat = classes.read_bytes(), classes.stat()
    classes.write_bytes(original + b"\n")
    touched = planned_jobs(snakemake(workdir, "--configfile", str(configfile), "-n"))
    assert touched == {"all": 1, "evaluate": 2, "evaluate_random_init": 1, "extract": 1, "report": 1, "track_evaluations": 1, "total": 7}
    classes.write_bytes(original)
    os.utime(classes, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    # The GPU count changes no result (exact data parallelism): no rerun.
    tree = yaml.safe_load(configfile.read_text())
    tree["pretrain"]["gpus"] = 2
    configfile.write_text(yaml.safe_dump(tree))
    gpus = snakemake(workdir, "--configfile", str(configfile), "-n")
    assert gpus.returncode == 0 and "Nothing to be done" in gpus.stdout + gpus.stderr
    tree["pretrain"]["gpus"] = 0

    # Another seed runs that seed only: the existing runs and the sweep stay.
    tree["pretrain"]["seeds"] = [0, 1]
    configfile.write_text(yaml.safe_dump(tree))
    seed = planned_jobs(snakemake(workdir, "--configfile", str(configfile), "-n"))
    assert seed == {"all": 1, "evaluate": 8, "evaluate_random_init": 4, "noise_training": 2, "pretrain": 2, "report": 1, "track_evaluations": 1,
                    "total": 19}
    tree["pretrain"]["seeds"] = [0]

    # A changed hyperparameter of one variant reruns that branch only.
    tree["variants"]["gr_gcl"]["pretrain"]["curriculum"]["end_keep"] = 0.5
    configfile.write_text(yaml.safe_dump(tree))
    branch = planned_jobs(snakemake(workdir, "--configfile", str(configfile), "-n"))
    assert branch == {"all": 1, "evaluate": 4, "noise_training": 1, "pretrain": 1, "report": 1, "track_evaluations": 1, "total": 9}
    tree["variants"]["gr_gcl"]["pretrain"]["curriculum"].pop("end_keep")

    # Another window of noise detection over training reruns those jobs and the report, no other evaluation.
    tree["evaluate"]["noise_training"] = {"window": 2}
    configfile.write_text(yaml.safe_dump(tree))
    window = planned_jobs(snakemake(workdir, "--configfile", str(configfile), "-n"))
    assert window == {"all": 1, "noise_training": 2, "report": 1, "track_evaluations": 1, "total": 5}


@pytest.mark.slow
def test_packed_mixed_corpus_branch_runs_to_the_report(tmp_path: Path) -> None:
    configfile = tiny_configfile(
        tmp_path, "features.format=packed", "features.packed.shuffle_buffer=4", "pretrain.num_workers=2", "pretrain.score_every=1",
        "sweep.run=false", "pretrain.corpora=[{dataset: howto100m, weight: 0.75}, {dataset: audioset, weight: 0.25}]",
    )
    tree = yaml.safe_load(configfile.read_text())
    tree["variants"] = {"gr_gcl": tree["variants"]["gr_gcl"]}
    configfile.write_text(yaml.safe_dump(tree))
    result = snakemake(tmp_path, "--configfile", str(configfile))
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    for corpus in ("howto100m", "audioset"):
        packed = out / "features" / "packed" / corpus
        assert len(pd.read_parquet(packed / "index.parquet")) > 0 and list((packed / "shards").glob("*.tar"))
        assert (out / "results" / "logs" / "pack" / f"{corpus}.log").is_file()
        assert (out / "results" / "benchmarks" / "pack" / f"{corpus}.tsv").is_file()
    run = out / "results" / "pretrain" / "ms" / "gr_gcl" / "seed0"
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 6
    scores = pd.concat([pd.read_csv(f) for f in (run / "scores").glob("step_*.csv")])
    assert set(scores["dataset"]) == {"howto100m", "audioset"}  # both corpora in the batches
    assert (scores.loc[scores["dataset"] == "audioset", "cos"] == 0).all()  # no text: no harmonization
    # The noise ground truth labels the streamed windows (decoded HowTo100M serves only that evaluation).
    assert len(pd.read_csv(out / "results" / "tables" / "noise_over_training.csv")) > 0
    again = snakemake(tmp_path, "--configfile", str(configfile), "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_killed_pretrain_job_resumes_on_rerun(tmp_path: Path) -> None:
    from cmgh import checkpoint as ckpt

    configfile = tiny_configfile(tmp_path, "pretrain.steps=60", "pretrain.checkpoint_every=5")
    run = tmp_path / "out" / "results" / "pretrain" / "ms" / "baseline" / "seed0"
    target = str((run / "summary.json").relative_to(tmp_path))  # as the rules declare it: relative to the working directory
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "2", target, "--configfile", str(configfile)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not ((run / "resume.pt").is_file() and ckpt.load(run)["step"] >= 10):
            assert proc.poll() is None and time.monotonic() < deadline, "pre-training never reached step 10"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the machine dies: Snakemake and its job, no clean-up
        proc.wait()
    killed_at = ckpt.load(run)["step"]
    assert not (run / "checkpoint.pt").exists() and killed_at < 60

    assert snakemake(tmp_path, "--unlock", "--configfile", str(configfile)).returncode == 0
    rerun = snakemake(tmp_path, target, "--rerun-incomplete", "--configfile", str(configfile))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    job_log = (tmp_path / "out" / "results" / "logs" / "pretrain" / "ms" / "baseline" / "seed0.log").read_text()
    resumed = re.findall(r"resuming \S+ from step (\d+)", job_log)
    assert resumed and int(resumed[-1]) >= killed_at >= 10  # not a restart from step 0
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(60))  # every step logged exactly once across the kill
    assert ckpt.load(run / "checkpoint.pt")["step"] == 60 and not (run / "resume.pt").exists()


def dry_run_worlds(tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    """The dry run of config/<name>.yaml with its trees under ``tmp_path/<name>``."""
    overlay = tmp_path / "root.yaml"
    overlay.write_text(yaml.safe_dump({"worlds": {"root": str(tmp_path / name)}}))
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / f"{name}.yaml"), str(overlay))
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_ablation_config_plans_the_full_grid_per_noise_rate(tmp_path: Path) -> None:
    planned = planned_jobs(dry_run_worlds(tmp_path, "ablation"))
    for tree in ("noise0", "noise0_3", "noise0_5"):  # 2 backbones x 4 variants x 3 seeds, 4 tasks each
        assert planned[f"{tree}_pretrain"] == 24 and planned[f"{tree}_evaluate"] == 96 and planned[f"{tree}_report"] == 1
        assert planned[f"{tree}_noise_training"] == 24
    assert planned["worlds"] == 1 and planned["all"] == 1
    assert (tmp_path / "ablation" / "noise0.5" / "config" / "resolved.yaml").is_file()
    tree = yaml.safe_load((tmp_path / "ablation" / "noise0.5" / "config" / "resolved.yaml").read_text())
    assert tree["data"]["noise"]["audio_rate"] == tree["data"]["noise"]["text_rate"] == 0.5
    assert tree["tracking"]["uri"] == f"sqlite:///{tmp_path / 'ablation' / 'mlflow.db'}"  # one store for every tree


def test_study_config_plans_a_tree_per_modality_and_rate_with_one_evaluation_job_per_run(tmp_path: Path) -> None:
    result = dry_run_worlds(tmp_path, "study")
    planned = planned_jobs(result)
    runs = {"noise0": 8, "text0_6": 152, "audio0_6": 72}  # 2 backbones x 4 seeds x 1 (the clean baseline), 19 and 9 variants
    for tree, n in runs.items():  # one evaluation job per run, and per backbone and seed a random-init floor
        assert planned[f"{tree}_pretrain"] == n and planned[f"{tree}_evaluate"] == n and planned[f"{tree}_report"] == 1
        assert f"{tree}_noise_training" not in planned and planned[f"{tree}_evaluate_random_init"] == 8
    assert planned["worlds"] == 1 and sum(n for rule, n in planned.items() if rule.endswith("_pretrain")) == 232
    blocks = planned_blocks(result.stdout)
    run = next(f for rule, f in blocks if rule == "text0_6_evaluate" and f["wildcards"] == "backbone=ms, variant=small_loss, seed=2")
    outputs = run["output"].split(", ")
    base = Path("study", "text0.6", "eval")  # the rules' paths: relative to the working directory (a moved project keeps its records)
    assert outputs == [str(base / t / "ms" / "small_loss" / "seed2" / "metrics.json") for t in ("kinetics", "audioset", "msrvtt", "noise_training")] \
        + [str(base / "noise_training" / "ms" / "small_loss" / "seed2" / "windows.csv")]
    shared = Path("study", "shared")  # the downstream sets once for every world; each world its own corpus
    planned_sets = {rule: {f.get("wildcards") for r, f in blocks if r == rule} for rule in planned}
    assert planned_sets["shared_synth"] == {f"dataset={d}" for d in ("kinetics", "audioset", "msrvtt")}
    assert planned_sets["shared_extract"] == {"dataset=kinetics", "dataset=audioset"}
    for tree in runs:  # each world its own corpus, and MSR-VTT decoded with its own vocabulary (from its own captions)
        assert planned_sets[f"{tree}_synth"] == {"dataset=howto100m"} and planned_sets[f"{tree}_extract"] == {"dataset=howto100m", "dataset=msrvtt"}
    shared_inputs = {str(shared / "features" / d / "index.parquet") for d in ("kinetics", "audioset")} | {str(shared / "data" / "msrvtt" / ".complete")}
    assert shared_inputs <= set(run["input"].split(", "))
    floor = next(f for rule, f in blocks if rule == "audio0_6_evaluate_random_init")
    assert shared_inputs <= set(floor["input"].split(", "))
    assert (tmp_path / "study" / "text0.6" / "features" / "kinetics").readlink() == Path("..", "..", "shared", "features", "kinetics")
    worlds = next(f for rule, f in blocks if rule == "worlds")
    assert str(Path("study", "README.md")) in worlds["output"]
    trees = {}
    for name, audio, text in (("text0.6", 0.0, 0.6), ("audio0.6", 0.6, 0.0), ("noise0", 0.0, 0.0)):
        trees[name] = tree = yaml.safe_load((tmp_path / "study" / name / "config" / "resolved.yaml").read_text())
        assert (tree["data"]["noise"]["audio_rate"], tree["data"]["noise"]["text_rate"]) == (audio, text)
    nine = ["baseline", "gr", "gcl", "gr_gcl", "small_loss", "oracle", "oracle_schedule", "norm_matched", "random_partner"]
    rivals = {"alternate", "famo", "pcgrad_batch", "cagrad_batch", "upgrad_instance", "ncr_mixture", "coteaching"}
    assert list(trees["audio0.6"]["variants"]) == nine
    assert set(trees["text0.6"]["variants"]) == {*nine, "quality65", "quality80", "faithful", *rivals}
    assert list(trees["noise0"]["variants"]) == ["baseline"]
    assert tree["pretrain"]["steps"] == 450 and tree["data"]["synth"]["kinetics"]["val_per_class"] >= 6 and tree["evaluate"]["random_init"]


def planned_blocks(output: str) -> list[tuple[str, dict[str, str]]]:
    """Each planned job of a dry run: its rule and its ``input:``, ``output:``, ``wildcards:`` lines."""
    blocks = []
    for block in re.split(r"^(?=(?:local)?(?:rule|checkpoint) \w+:$)", output, flags=re.M)[1:]:
        rule = block.split(None, 2)[1].rstrip(":")
        fields = dict(re.findall(r"^    (input|output|wildcards): (.*)$", block, flags=re.M))
        blocks.append((rule, fields))
    return blocks


def test_scaling_config_plans_each_method_with_and_without_youtube8m(tmp_path: Path) -> None:
    overlay = tmp_path / "paths.yaml"
    overlay.write_text(yaml.safe_dump({"paths": {name: str(tmp_path / name) for name in ("data", "features", "results")}}))
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / "scaling.yaml"), str(overlay))
    assert result.returncode == 0, result.stderr[-2000:]
    # 2 backbones x 6 variants x 5 seeds; 4 tasks per run and per random init, noise detection over each run's
    # training; five datasets (YouTube-8M too); no sweep
    assert planned_jobs(result) == {"synth": 5, "extract": 5, "vocab": 1, "pretrain": 60, "evaluate": 240, "evaluate_random_init": 40,
                                    "noise_training": 60, "report": 1, "track_evaluations": 1, "all": 1, "total": 414}
    blocks = planned_blocks(result.stdout)
    youtube8m = str(Path("features", "youtube8m", "index.parquet"))  # relative to the working directory, as the rules declare it
    assert any(rule == "extract" and f["output"] == youtube8m for rule, f in blocks)
    assert any(rule == "synth" and f["output"] == str(Path("data", "youtube8m", ".complete")) for rule, f in blocks)
    runs = {f["wildcards"]: youtube8m in f["input"] for rule, f in blocks if rule == "pretrain"}
    assert len(runs) == 60
    assert all(reads == ("_yt8m," in wildcards) for wildcards, reads in runs.items())  # only the *_yt8m variants read it
    report = next(f["output"] for rule, f in blocks if rule == "report")
    for name in ("tables/scaling.md", "tables/scaling.csv", "figures/scaling_gain.png"):
        assert str(Path("results", name)) in report
    variants = [f"{m}{suffix}" for m in ("baseline", "gr_gcl", "small_loss") for suffix in ("", "_yt8m")]
    evaluated = {f["wildcards"] for rule, f in blocks if rule == "evaluate"}
    assert evaluated == {f"task={t}, backbone={b}, variant={v}, seed={s}" for t in ("kinetics", "audioset", "msrvtt", "noise")
                         for b in ("ms", "ma") for v in variants for s in range(5)}


def test_default_config_plans_noise_detection_over_training_once_per_pretraining_run(tmp_path: Path) -> None:
    overlay = tmp_path / "paths.yaml"
    overlay.write_text(yaml.safe_dump({"paths": {name: str(tmp_path / name) for name in ("data", "features", "results")}}))
    result = snakemake(tmp_path, "-n", "--configfile", str(DEFAULT_CONFIG), str(overlay))
    assert result.returncode == 0, result.stderr[-2000:]
    planned = planned_jobs(result)
    assert planned["noise_training"] == planned["pretrain"] == 8  # 1 backbone x 4 variants x 2 seeds; no random init
    blocks = planned_blocks(result.stdout)
    variants = ("baseline", "gr", "gcl", "gr_gcl")
    runs = {f"backbone=ms, variant={v}, seed={s}" for v in variants for s in (0, 1)}
    jobs = {f["wildcards"]: f for rule, f in blocks if rule == "noise_training"}
    assert set(jobs) == runs
    job = jobs["backbone=ms, variant=gr, seed=1"]
    # the rules' paths: relative to the working directory, where the overlay's absolute paths lie
    assert job["output"] == "results/eval/noise_training/ms/gr/seed1/metrics.json, results/eval/noise_training/ms/gr/seed1/windows.csv"
    assert job["input"].endswith(", results/pretrain/ms/gr/seed1/summary.json")
    report = next(f for rule, f in blocks if rule == "report")
    assert all(f"results/eval/noise_training/ms/{v}/seed{s}/metrics.json" in report["input"].split(", ") for v in variants for s in (0, 1))
    for name in ("tables/noise_over_training.md", *(f"figures/noise_over_training_ms_{v}.png" for v in variants)):
        assert f"results/{name}" in report["output"].split(", ")
    # the README's facts about this DAG: its job count and the files it names as the report's and the tracking step's
    readme = (REPO / "README.md").read_text()
    assert f"The default DAG is {planned['total']} jobs" in readme
    outputs = {path for _, f in blocks for path in f.get("output", "").split(", ")}
    for name in ("tables/summary.md", "sweep/default/best_params.yaml", "tracked_evaluations.json",
                 "eval/noise_training/ms/gr/seed1/windows.csv", "pretrain/ms/gr/seed1/summary.json"):
        assert f"results/{name}" in outputs, name
        assert name.rsplit("/", 1)[-1] in readme, name


@pytest.mark.slow
def test_tiny_study_runs_text_and_audio_noise_to_the_results_page(tmp_path: Path) -> None:
    # config/study.yaml at test size: a clean tree and a text-misaligned one (both modalities on one page: report/test_study_page),
    # one job per run for its evaluations
    root = tmp_path / "study"
    configfile = tiny_configfile(tmp_path, "worlds.noise_rates=[0.0, 0.5]", "worlds.modalities=[text]", f"worlds.root={root}",
                                 "sweep.run=false", "evaluate.jobs=per_run", "evaluate.tasks=[kinetics, audioset, msrvtt, noise_training]",
                                 "pretrain.seeds=[0, 1]")
    plan = planned_jobs(snakemake(tmp_path, "--configfile", str(configfile), "-n"))
    assert plan["worlds"] == 1 and plan["text0_5_pretrain"] == 4 and plan["noise0_evaluate"] == 4 and "noise0_noise_training" not in plan
    result = snakemake(tmp_path, "--configfile", str(configfile))
    assert result.returncode == 0, result.stderr[-3000:]
    gain = pd.read_csv(root / "tables" / "noise_gain.csv")
    assert {(m, r) for m, r in zip(gain["modality"], gain["noise_rate"], strict=True)} == {("both", 0.0), ("text", 0.5)}
    assert set(gain["variant"]) == {"gr_gcl"} and set(gain["task"]) == {"kinetics", "audioset", "msrvtt"} and (gain["n"] == 2).all()
    assert (root / "figures" / "noise_gain.png").stat().st_size > 0 and (root / "figures" / "noise_detection.png").stat().st_size > 0
    for name in ("noise0", "text0.5"):
        tree = root / name
        assert (tree / "tables" / "ablation.md").is_file() and not (tree / "eval" / "noise").exists()
        assert (tree / "eval" / "noise_training" / "ms" / "gr_gcl" / "seed1" / "windows.csv").is_file()
    page = (root / "README.md").read_text()
    assert "## Conclusions" in page and "`ms/gr_gcl`" in page and "The conflict cosine" in page
    gains = page.split("## Downstream gain over the baseline")[1].split("## Noise detection")[0]  # the worlds this study ran
    assert "| variant | text 0 | text 0.5 |" in gains and "audio" not in gains
    assert "Kinetics: 4 test clips over 4 classes (one clip = 25.00 points of top-1)" in page
    # a rival added to the finished study: its runs are planned (every world's report table already exists)
    tree = yaml.safe_load(configfile.read_text())
    tree["variants"]["famo"] = {"pretrain": {"balance": {"method": "famo"}}}
    configfile.write_text(yaml.safe_dump(tree))
    plan = planned_jobs(snakemake(tmp_path, "--configfile", str(configfile), "-n"))
    assert plan["text0_5_pretrain"] == 2 and plan["noise0_pretrain"] == 2 and plan["worlds"] == 1


def test_a_world_runs_only_the_variants_named_for_it(tmp_path: Path) -> None:
    configfile = tiny_configfile(tmp_path, "worlds.noise_rates=[0.0, 0.5]", "worlds.modalities=[text]", f"worlds.root={tmp_path / 'study'}",
                                 "sweep.run=false", "evaluate.jobs=per_run", "pretrain.seeds=[0, 1]", "worlds.variants={noise0: [baseline]}")
    plan = planned_jobs(snakemake(tmp_path, "--configfile", str(configfile), "-n"))
    assert plan["noise0_pretrain"] == 2 and plan["text0_5_pretrain"] == 4  # baseline x 2 seeds; baseline and gr_gcl x 2 seeds


def test_bad_config_fails_before_any_job(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: {harmonize: {rule: pcgradd}}\n")
    result = snakemake(tmp_path, "--configfile", str(tiny_configfile(tmp_path)), str(bad), "-n")
    assert result.returncode != 0
    assert "cmgh: config error: pretrain.harmonize.rule: 'pcgradd' is not one of none, cmgh, pcgrad, gradvac" in result.stderr
    assert not (tmp_path / "out" / "data").exists()
    bad.write_text("variants: {typo: {pretrain: {harmonize: {rulee: cmgh}}}}\n")  # a typo inside a variant's entry: one line too
    result = snakemake(tmp_path, "--configfile", str(tiny_configfile(tmp_path)), str(bad), "-n")
    assert result.returncode != 0 and "Traceback" not in result.stderr and 'File "' not in result.stderr
    assert "cmgh: config error: variants.typo: pretrain.harmonize: unknown key 'rulee'" in result.stderr


def test_dotted_overrides_reach_snakemake_as_they_reach_the_cli(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "--configfile", str(tiny_configfile(tmp_path)), "-n", "--config", 'set=["pretrain.seeds=[7]", "model.backbones=[ma]"]')
    assert result.returncode == 0, result.stderr[-2000:]
    runs = {f["wildcards"] for rule, f in planned_blocks(result.stdout) if rule == "pretrain"}
    assert runs and all("backbone=ma" in w and w.endswith("seed=7") for w in runs), runs
    bad = snakemake(tmp_path, "--configfile", str(tiny_configfile(tmp_path)), "-n", "--config", "set=pretrain.stepz=3")
    assert bad.returncode != 0 and "cmgh: config error: pretrain: unknown key 'stepz'" in bad.stderr


def test_a_repeated_key_in_a_configfile_fails_before_any_job(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    twice.write_text("pretrain: {steps: 5}\npretrain: {lr: 0.001}\n")  # Snakemake's own reader would keep the second only
    result = snakemake(tmp_path, "--configfile", str(tiny_configfile(tmp_path)), str(twice), "-n")
    assert result.returncode != 0
    assert f"cmgh: config error: {twice}: line 2: key 'pretrain' repeats the one on line 1" in result.stderr


def test_default_config_dry_run_from_another_directory(tmp_path: Path) -> None:
    default = snakemake(tmp_path, "-n", "--quiet", "rules")
    assert default.returncode == 0, default.stderr[-2000:]
    out = default.stdout + default.stderr
    for rule in ("synth", "vocab", "extract"):
        assert rule in out
