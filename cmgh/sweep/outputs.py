"""A study's files: trials.csv, best_params.yaml (with the verdict against the baseline),
tuned_variant.yaml and the plots, all atomic, all from one study of one storage (study.yaml records
which, masked) and only once it has a best trial."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from cmgh import config as config_mod
from cmgh import keypaths, layout
from cmgh.config import Config
from cmgh.errors import ConfigError
from cmgh.io import atomic_path, atomic_write_text
from cmgh.sweep.reference import study_verdict
from cmgh.sweep.storage import JOURNAL, SweepError, redacted, storage_url
from cmgh.track.uri import SQLITE

log = logging.getLogger(__name__)


def _record(cfg: Config, name: str) -> dict[str, str]:
    """The study and its storage, masked; a file under the results as ``{paths.results}/...`` so that
    a results tree moved or copied whole still matches its own storage."""
    url, results = redacted(storage_url(cfg)), f"{cfg.path('results')}/"
    for scheme in (SQLITE, JOURNAL):
        if url.startswith(scheme + results):
            url = f"{scheme}{{paths.results}}/{url[len(scheme + results):]}"
    return {"study": name, "storage": url}


def check_study_dir(cfg: Config, name: str) -> Path:
    """The study's folder, unless it holds the outputs of a study in another storage (its study.yaml
    says which): two storages' trials never mix in one folder, checked before either is opened."""
    out = layout.study_dir(cfg.path("results"), name)
    path = out / layout.STUDY_RECORD
    if not path.is_file():
        if (out / layout.TRIALS).exists() or (out / layout.BEST_PARAMS).exists():
            log.warning("%s: outputs without a %s (an older cmgh): assuming they came from %s", out, layout.STUDY_RECORD, _record(cfg, name)["storage"])
        return out
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path}: not a cmgh study record ({type(exc).__name__})") from None
    mine = _record(cfg, name)
    if not isinstance(recorded, dict) or recorded.get("storage") != mine["storage"]:
        theirs = recorded.get("storage") if isinstance(recorded, dict) else None
        raise ConfigError(f"{out}: holds study {name} of storage {theirs}, not {mine['storage']} "
                          "(use another sweep.study, or move the folder away)")
    return out


def record_study_dir(cfg: Config, name: str) -> Path:
    """Claim the study's folder for the study just opened (study.yaml: its name and masked storage)."""
    out = layout.study_dir(cfg.path("results"), name)
    if (out / layout.STUDY_RECORD).is_file():
        return check_study_dir(cfg, name)
    atomic_write_text(out / layout.STUDY_RECORD, yaml.safe_dump(_record(cfg, name), sort_keys=False))
    return out


def write_outputs(cfg: Config, study: optuna.Study) -> Path:
    """trials.csv, best_params.yaml, tuned_variant.yaml and the plots of ``study``, atomically; nothing
    while it has no completed trial (a best trial is what they are about). best_params.yaml carries the
    verdict (:func:`cmgh.sweep.reference.verdict`); unless the best trial beat the baseline by more than
    the validation resolution, tuned_variant.yaml defines no variant but says why (:func:`refused_fragment`)."""
    out = record_study_dir(cfg, study.study_name)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        pruned, failed = (len(study.get_trials(deepcopy=False, states=(state,))) for state in (TrialState.PRUNED, TrialState.FAIL))
        raise SweepError(f"study {study.study_name}: no completed trial ({pruned} pruned, {failed} failed): wrote no outputs to {out}")
    atomic_write_text(out / layout.TRIALS, study.trials_dataframe().to_csv(index=False))
    best = study.best_trial
    base = str(study.user_attrs.get("base_variant", cfg.sweep.base_variant))
    base_entry = copy.deepcopy(cfg.to_dict()["variants"].get(base, {}))
    judged = study_verdict(cfg, study)
    record = {
        "study": study.study_name,
        "storage": _record(cfg, study.study_name)["storage"],
        "objective": str(study.user_attrs.get("objective", cfg.sweep.objective)),
        "direction": study.direction.name.lower(),
        "value": float(best.value),
        "trial": best.number,
        **judged.record(),
        "base_variant": base,
        "base_variant_overrides": base_entry,
        "params": dict(best.params),
        "overrides": [f"{k}={v}" for k, v in best.params.items()],
    }
    atomic_write_text(out / layout.BEST_PARAMS, yaml.safe_dump(record, sort_keys=False))
    if judged.tuned:
        text = yaml.safe_dump({"variants": {layout.TUNED_NAME: tuned_variant(out / layout.BEST_PARAMS)}}, sort_keys=False)
    else:
        text = refused_fragment(judged.line)
    atomic_write_text(out / layout.TUNED_VARIANT, text)
    write_plots(study, out)
    return out


NOT_TUNED = "no tuned variant"


def refused_fragment(line: str) -> str:
    """tuned_variant.yaml of a study without a tuned variant: the rule's output exists, and a config that
    stacks it fails in one line that says why (``variants.tuned: 'no tuned variant: ...' is not of type object``)."""
    return (f"# cmgh sweep: no tuned variant. {line}\n"
            + yaml.safe_dump({"variants": {layout.TUNED_NAME: f"{NOT_TUNED}: {line}"}}, sort_keys=False, width=10**6))


def tuned_variant(best_params_path: str | Path) -> dict[str, Any]:
    """The ``variants.tuned`` entry from a best_params.yaml: the base variant + the best values; a
    SweepError (its verdict) when the best trial did not beat the baseline by more than the resolution."""
    path = Path(best_params_path)
    if not path.is_file():
        raise SweepError(f"{path}: no {layout.BEST_PARAMS} (run cmgh sweep first)")
    record = yaml.safe_load(path.read_text()) or {}
    if "params" not in record:
        raise SweepError(f"{path}: not a cmgh sweep {layout.BEST_PARAMS} (no 'params')")
    if "tuned" not in record:
        raise SweepError(f"{path}: {NOT_TUNED}: written before studies compared their best trial with a baseline (run cmgh sweep again)")
    if record["tuned"] is not True:
        raise SweepError(f"{path}: {NOT_TUNED}: {record.get('verdict', 'the best trial did not beat the baseline')}")
    return config_mod.deep_merge(dict(record.get("base_variant_overrides") or {}), keypaths.unflatten(record["params"]))


def recorded_verdict(best_params_path: str | Path) -> tuple[bool, str]:
    """Whether a best_params.yaml defines a tuned variant, and its verdict line."""
    record = yaml.safe_load(Path(best_params_path).read_text()) or {}
    return record.get("tuned") is True, str(record.get("verdict") or f"{NOT_TUNED}: no verdict recorded")


def tuned_set_option(best_params_path: str | Path) -> str:
    """A ``--set`` argument defining ``variants.tuned`` (one line of flow YAML)."""
    text = yaml.safe_dump(tuned_variant(best_params_path), default_flow_style=True, width=10**6).strip()
    return f"variants.{layout.TUNED_NAME}={text}"


# fANOVA importances from a handful of trials are noise drawn as a ranking: below this, a note instead
MIN_TRIALS_FOR_IMPORTANCE = 10


def write_plots(study: optuna.Study, out: Path) -> dict[str, Path]:
    """One PNG per :data:`cmgh.layout.SWEEP_PLOTS`; a plot Optuna cannot draw yet becomes a note."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    needs = {"param_importances": MIN_TRIALS_FOR_IMPORTANCE}
    makers = {
        "optimization_history": lambda: ovm.plot_optimization_history(study),
        "param_importances": lambda: ovm.plot_param_importances(study) if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE else None,
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study),
    }
    assert tuple(makers) == layout.SWEEP_PLOTS, "every plot in layout.SWEEP_PLOTS needs a maker"
    paths = {}
    for name in layout.SWEEP_PLOTS:
        try:
            with warnings.catch_warnings():  # "experimental" plots, flat axes of constant params
                warnings.simplefilter("ignore")
                ax = makers[name]()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure if ax is not None else None
        except Exception as exc:  # noqa: BLE001 - a plot never fails a study (e.g. one distinct value)
            log.info("plot %s unavailable: %s", name, exc)
            fig = None
        if fig is None:
            fig, axis = plt.subplots(figsize=(6, 2))
            axis.axis("off")
            axis.text(0.5, 0.5, f"{name.replace('_', ' ')}: needs at least {needs.get(name, 2)} completed trials\n"
                      f"with varying parameters ({len(complete)} so far)", ha="center", va="center")
        fig.tight_layout()
        with atomic_path(out / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        paths[name] = out / f"{name}.png"
    return paths
