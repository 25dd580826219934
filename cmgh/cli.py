"""`cmgh <step> ...`: the entry points used by the Snakemake rules and by users.

Every command takes ``--config FILE`` (repeatable: the files stack in order) and any number of
``--set key.path=value`` overrides, and turns a :class:`~cmgh.errors.CmghError` into a one-line
message and a non-zero exit. Counts and fractions are checked by argparse (exit 2 naming the
option); whatever the CLI prints (messages, log lines) has its URL passwords masked.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cmgh import config as config_mod
from cmgh import layout
from cmgh.console import FRACTION, NON_NEGATIVE, POSITIVE, RedactingFormatter
from cmgh.errors import CmghError, ConfigError
from cmgh.io import redacted
from cmgh.evaluate import RUN_TASKS, TASKS  # import-free: the task names only

log = logging.getLogger("cmgh")

Handler = Callable[[argparse.Namespace], int]


def _load(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(args.config, args.set or ())


def cmd_config_show(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.variant:
        cfg = config_mod.for_variant(cfg, args.variant)
    sys.stdout.write(cfg.to_yaml())
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from cmgh.data.synth.generate import synthesize

    cfg = _load(args)
    roots = synthesize(cfg, datasets=args.dataset or None)
    for name, root in roots.items():
        print(f"{name}: {root}")
    return 0


def cmd_data_vocab(args: argparse.Namespace) -> int:
    from cmgh.data.extract.decoded import build_vocab

    print(build_vocab(_load(args)))
    return 0


def cmd_data_extract(args: argparse.Namespace) -> int:
    from cmgh.data.extract.decoded import extract
    from cmgh.data.extract.packed import pack

    cfg = _load(args)
    for name in args.dataset:
        fmt = args.format or config_mod.corpus_format(cfg, name)
        print((pack if fmt == "packed" else extract)(cfg, name, workers=args.workers))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from cmgh.data.download.run import download
    from cmgh.errors import DownloadError

    cfg = _load(args)
    failures = []
    for name in args.dataset:  # every dataset gets its report, then the first failure decides the exit
        try:
            download(
                cfg, name, limit=args.limit, classes=args.classes or (), dry_run=args.dry_run, annotations_only=args.annotations_only,
                min_available=args.min_available, workers=args.workers, retry_all=args.retry_all,
            )
        except DownloadError as exc:
            failures.append(exc)
            if len(args.dataset) > 1:
                print(f"cmgh: error: {redacted(str(exc))}", file=sys.stderr)
    if failures:
        raise failures[0]
    return 0


def _threads(args: argparse.Namespace) -> None:
    """``--threads``: torch's intra-op threads for this process."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from cmgh.track import open_tracker
    from cmgh.train.run import pretrain_tracked, run_spec

    _threads(args)
    cfg = _load(args)
    spec = run_spec(cfg, args.backbone, args.variant, args.seed, args.out)
    print(pretrain_tracked(cfg, spec, restart=args.restart, stop_after=args.stop_after, open_tracker=open_tracker))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cmgh.evaluate.overrides import check_overrides

    check_overrides(args.checkpoint, args.set or ())
    tasks = list(dict.fromkeys(args.task))
    if args.out and len(tasks) > 1:
        raise ConfigError(f"--out with {len(tasks)} tasks: each task writes its own folder; leave --out out (they go to {layout.eval_dir('<paths.results>', '<task>', '<backbone>', '<variant>', '<seed>')})")
    if args.random_init and (run_tasks := [t for t in tasks if t in RUN_TASKS]):
        raise ConfigError(f"--task {run_tasks[0]} --random-init: {run_tasks[0]} scores what a pre-training run recorded while training; a random init has no training")
    from cmgh.evaluate.run import evaluate_tracked
    from cmgh.track import open_tracker

    _threads(args)
    cfg = _load(args)
    for task in tasks:  # one process for all: the interpreter, torch and MLflow start once
        result, out = evaluate_tracked(cfg, task, args.checkpoint, args.out, random_init=args.random_init, open_tracker=open_tracker)
        print(_evaluation_line(task, result, out))
    return 0


def _evaluation_line(task: str, result: dict[str, Any], out: Path) -> str:
    """What ``cmgh evaluate`` prints for one task: its headline metrics, or a run task's windows."""
    from cmgh.data.extract import shards

    meta = result["meta"]
    params = result.get("params", {})  # left out: items extraction could not offer or the task cannot score (see the manifest)
    run = f"{task} {meta['backbone']}/{meta['variant']}/seed{meta['seed']}: "
    if task in RUN_TASKS:
        return run + (f"skipped: {params['skipped']}" if params.get("skipped") else f"{params.get('windows', 0)} windows -> {out}")
    headline = {k: v for k, v in result.items() if k not in ("meta", "params", "timing") and "/" not in k}
    statuses = f": {shards.describe(params['left_out_statuses'])};" if params.get("left_out_statuses") else ","
    scored = f" ({params['left_out']} left out{statuses} see the feature manifest)" if params.get("left_out") else ""
    return run + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in headline.items()) + scored


def cmd_report(args: argparse.Namespace) -> int:
    from cmgh.report import build_report

    if args.noise_gain:
        from cmgh.report import build_noise_gain

        written = build_noise_gain([Path(tree) for tree in args.noise_gain], Path(args.out or args.noise_gain[0]))
    else:
        results = Path(args.results) if args.results else _load(args).path("results")
        written = build_report(results, compare=args.compare or ())
    for kind, paths in written.items():
        for path in paths:
            print(f"{kind}: {path}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from cmgh.report.from_store import runs_table

    sys.stdout.write(runs_table(_load(args), args.tracking_uri, args.filter or "", args.out))
    return 0


def _harmonizers(args: argparse.Namespace) -> list[str]:
    """The realignment rules (pretrain.harmonize.rule), then the objective balancers (pretrain.balance.method)."""
    from cmgh import harmonize
    from cmgh.harmonize import balance

    return [*harmonize.described(), *(f"balance {line}" for line in balance.described())]


def _curricula(args: argparse.Namespace) -> list[str]:
    from cmgh.harmonize import curriculum

    return curriculum.described()


def _scorers(args: argparse.Namespace) -> list[str]:
    from cmgh.harmonize import scorers

    return scorers.described()


def _variants(args: argparse.Namespace) -> list[str]:
    """One YAML line per variant, to paste back under ``variants:``."""
    import yaml

    return [f"{name}: {yaml.safe_dump(entry, default_flow_style=True, sort_keys=False).strip()}"
            for name, entry in _load(args).to_dict()["variants"].items()]


def _datasets(args: argparse.Namespace) -> list[str]:
    return list(config_mod.choices("data.datasets"))


LISTS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "harmonizers": _harmonizers, "curricula": _curricula, "scorers": _scorers, "variants": _variants, "datasets": _datasets,
}  # fmt: skip


def cmd_list(args: argparse.Namespace) -> int:
    for line in LISTS[args.what](args):
        print(line)
    return 0


def cmd_browse(args: argparse.Namespace) -> int:
    """Where everything is, labelled: the report and tables, the tracked runs, the sweep's dashboard."""
    from cmgh.track.ui import browse

    cfg = _load(args)
    results = cfg.path("results")
    ui = browse(cfg, port=args.port)
    lines = ["results:",
             f"  report (HTML)   {results / layout.REPORT_HTML}",
             f"  summary         {layout.table(results, layout.SUMMARY_TABLE, 'md')}  (every comparison with its interval and verdict)",
             f"  ablation table  {layout.table(results, layout.ABLATION_TABLE, 'md')}",
             "tracked runs (MLflow):"]
    if len(ui) == 2:
        lines.append(f"  start the UI    {ui[0]}")
    lines.append(f"  runs table      {ui[-1]}")
    if cfg.sweep.run:
        from cmgh import sweep

        lines += ["Optuna study:", f"  dashboard       {redacted(sweep.dashboard_command(cfg))}"]
    print("\n".join(lines))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from cmgh import sweep

    _threads(args)
    overrides = list(args.set or ())
    if args.study:
        overrides.append(f"sweep.study={args.study}")
    if args.storage is not None:
        overrides.append(f"sweep.storage={args.storage}")
    cfg = config_mod.load(args.config, overrides)
    study = sweep.run_study(cfg, n_trials=args.n_trials, worker_trials=args.worker_trials)
    out = layout.study_dir(cfg.path("results"), study.study_name)
    finished = sweep.finished_trials(study)
    print(f"study {study.study_name}: {finished} finished trials, best {cfg.sweep.objective}={study.best_value:.4g} (trial {study.best_trial.number})")
    for key, value in study.best_params.items():
        print(f"  {key}={value}")
    tuned, line = sweep.recorded_verdict(out / layout.BEST_PARAMS)
    print(line)  # the best trial against the baseline trial, the random-init floor and the validation resolution
    print(f"outputs: {out}")
    if tuned:
        print(f"tuned variant: --set '{sweep.tuned_set_option(out / layout.BEST_PARAMS)}'")
        print(f"  or: snakemake --configfile cmgh/defaults/config.yaml {out / layout.TUNED_VARIANT}")
    print(f"dashboard: {redacted(sweep.dashboard_command(cfg))}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", action="append", default=None, metavar="FILE",
        help="YAML config (default: the package's cmgh/defaults/config.yaml); repeat to stack files in order, each deep-merged over "
        "the ones before (mappings merge, other values replace), as snakemake --configfile does",
    )
    parser.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")


def _explained(help_text: str, example: str) -> dict[str, Any]:
    """A subcommand's one-line help, repeated as its help page's description, and an example under it."""
    return {"help": help_text, "description": help_text[0].upper() + help_text[1:] + ".", "epilog": f"example:\n  {example}",
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def build_parser() -> argparse.ArgumentParser:
    datasets, backbones = config_mod.choices("data.datasets"), config_mod.choices("model.backbones")
    parser = argparse.ArgumentParser(prog="cmgh", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="inspect the configuration").add_subparsers(dest="action", required=True)
    show = cfg.add_parser("show", **_explained("print the resolved config", 'cmgh config show --variant gr --set pretrain.steps=300'))
    _common(show)
    show.add_argument("--variant", help="resolve a pre-training variant's overrides too")
    show.set_defaults(func=cmd_config_show)

    data = sub.add_parser("data", help="datasets and features").add_subparsers(dest="action", required=True)
    synth = data.add_parser("synth", **_explained("generate the mini datasets in the real formats", 'cmgh data synth --dataset howto100m --dataset kinetics'))
    _common(synth)
    synth.add_argument("--dataset", action="append", choices=datasets)
    synth.set_defaults(func=cmd_data_synth)
    vocab = data.add_parser("vocab", **_explained("build the vocabulary from the pre-training captions", 'cmgh data vocab'))
    _common(vocab)
    vocab.set_defaults(func=cmd_data_vocab)
    extract = data.add_parser("extract", **_explained("decode (or pack) a dataset into shards + index + manifest", 'cmgh data extract --dataset howto100m --workers 2'))
    _common(extract)
    extract.add_argument("--dataset", action="append", required=True, choices=datasets)
    extract.add_argument("--workers", type=NON_NEGATIVE, default=None, help="decoding processes (default: features.workers)")
    extract.add_argument(
        "--format", choices=config_mod.choices("features.format"), default=None,
        help="decoded .npy shards or packed tar shards (default: packed for a pretrain.corpora dataset when features.format is packed)",
    )
    extract.set_defaults(func=cmd_data_extract)

    dl = data.add_parser("download", **_explained("fetch a real dataset into its layout (resumable, with a manifest of failures)",
                                                  'cmgh data download --dataset kinetics --limit 20 --dry-run --config config/paper.yaml'))
    _common(dl)
    dl.add_argument("--dataset", action="append", required=True, choices=datasets)
    dl.add_argument("--limit", type=POSITIVE, default=None, help="at most N clips per split (a slice to try things out)")
    dl.add_argument("--classes", action="append", metavar="NAME",
                    help="only clips of this class (repeatable): a Kinetics label, AudioSet display name or MID, HowTo100M category, MSR-VTT category number")
    dl.add_argument("--dry-run", action="store_true", help="list what would be fetched; write nothing")
    dl.add_argument("--annotations-only", action="store_true", help="fetch the annotation files only (then --dry-run can list the clips)")
    dl.add_argument("--min-available", type=FRACTION, default=None, help="fraction of clips that must end ok (default: data.download.min_available)")
    dl.add_argument("--workers", type=POSITIVE, default=None, help="parallel downloads (default: data.download.workers)")
    dl.add_argument("--retry-all", action="store_true", help="also retry clips an earlier run found unavailable, private or invalid")
    dl.set_defaults(func=cmd_data_download)

    pre = sub.add_parser("pretrain", **_explained("pre-train one variant (resumes from its checkpoint)", 'cmgh pretrain --backbone ms --variant gr --seed 0 --set pretrain.steps=50'))
    _common(pre)
    pre.add_argument("--backbone", choices=backbones, required=True)
    pre.add_argument("--variant", required=True, help="a name under `variants` in the config")
    pre.add_argument("--seed", type=NON_NEGATIVE, default=0)
    pre.add_argument("--out", default=None, help=f"default: {layout.run_dir('results', '{backbone}', '{variant}', '{seed}')}")
    pre.add_argument("--restart", action="store_true", help="replace the run in --out (finished or not, of any configuration) with a new one")
    pre.add_argument("--threads", type=POSITIVE, default=None, help="torch intra-op threads (the rule passes its own)")
    pre.add_argument("--stop-after", type=POSITIVE, default=None, help="stop after this many steps (resumable)")
    pre.set_defaults(func=cmd_pretrain)

    ev = sub.add_parser("evaluate", **_explained("evaluate a checkpoint (or its random init) on downstream tasks",
                                                 'cmgh evaluate --task kinetics --task msrvtt --checkpoint results/pretrain/ms/gr/seed0'))
    _common(ev)
    ev.add_argument("--task", choices=(*TASKS, *RUN_TASKS), required=True, action="append",
                    help=f"repeatable: the tasks run one after the other in this process; {', '.join(RUN_TASKS)}: what the run recorded while training (its score dumps), over training steps")
    ev.add_argument("--checkpoint", required=True, help="a pre-training run folder (checkpoint.pt + config.yaml; summary.json and scores/ for a run task)")
    ev.add_argument("--out", default=None, help=f"default: {layout.eval_dir('results', '{task}', '{backbone}', '{variant}', '{seed}')}")
    ev.add_argument("--random-init", action="store_true", help="evaluate the checkpoint's random initialization (variant 'random')")
    ev.add_argument("--threads", type=POSITIVE, default=None, help="torch intra-op threads")
    ev.set_defaults(func=cmd_evaluate)

    rep = sub.add_parser("report", **_explained("tables, figures and summary from a results folder", 'cmgh report --results results'))
    _common(rep)
    rep.add_argument("--results", default=None, help="results folder (default: paths.results of the config)")
    rep.add_argument("--compare", action="append", metavar="DIR", help="results folder of the same grid at another noise rate (repeatable)")
    rep.add_argument("--noise-gain", nargs="+", metavar="DIR", help="only the gain-vs-noise table and figure over these results trees (one noise rate each)")
    rep.add_argument("--out", default=None, help="with --noise-gain: folder for tables/ and figures/ (default: the first tree)")
    rep.set_defaults(func=cmd_report)

    runs = sub.add_parser("runs", **_explained("the ablation table from the MLflow tracking store (no results folder needed)", 'cmgh runs --filter "tags.variant = \'gr\'"'))
    _common(runs)
    runs.add_argument("--tracking-uri", default=None, help="tracking store or server (default: tracking.uri of the config, MLFLOW_TRACKING_URI when set)")
    runs.add_argument("--filter", default=None, metavar="MLFLOW_FILTER", help="only evaluation runs matching this MLflow filter, e.g. \"tags.out LIKE '/scratch/results/%%'\"")
    runs.add_argument("--out", default=None, metavar="FILE", help="write the table to FILE (.csv: the numbers of tables/ablation.csv; .md: as tables/ablation.md) instead of printing it")
    runs.set_defaults(func=cmd_runs)

    lst = sub.add_parser("list", **_explained("list registered components", 'cmgh list harmonizers'))
    lst.add_argument("what", choices=list(LISTS))
    _common(lst)
    lst.set_defaults(func=cmd_list)

    br = sub.add_parser("browse", **_explained("print where everything is: the report and tables, the `mlflow ui` command and the link to the "
                                               "experiment's runs, the Optuna dashboard", 'cmgh browse --port 5001'))
    _common(br)
    br.add_argument("--port", type=POSITIVE, default=5000, help="port of the MLflow UI")
    br.set_defaults(func=cmd_browse)

    sw = sub.add_parser("sweep", **_explained("run or continue an Optuna study over the harmonization/curriculum hyperparameters", 'cmgh sweep --study lr --n-trials 20'))
    _common(sw)
    sw.add_argument("--study", default=None, help="study name (default: sweep.study)")
    sw.add_argument("--n-trials", type=POSITIVE, default=None, help="finished trials the study should hold (default: sweep.n_trials; resumable)")
    sw.add_argument("--worker-trials", type=POSITIVE, default=None, help="instead: run exactly this many finished trials in this process (many workers)")
    sw.add_argument("--storage", default=None, help=f"Optuna storage URL (default: sweep.storage, i.e. sqlite:///{{results}}/{layout.OPTUNA_DB})")
    sw.add_argument("--threads", type=POSITIVE, default=None, help="torch intra-op threads")
    sw.set_defaults(func=cmd_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    try:
        return args.func(args)
    except CmghError as exc:
        print(f"cmgh: error: {redacted(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cmgh: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
