# The noise-rate ablation (config/ablation.yaml): this whole workflow once per injected noise rate,
# as Snakemake modules of the root Snakefile, each with its own results tree; then one rule that
# plots every variant's downstream gain over the baseline against the noise rate.
import sys

from cmgh import config as cmgh_config
from cmgh.errors import ConfigError


include: "commands.smk"


try:
    ABLATION = cmgh_config.from_dict(config)
except ConfigError as exc:
    sys.exit(f"cmgh: config error: {exc}")
ABLATION_ROOT = cmgh_config.resolve_path(ABLATION.ablation.root)


def noise_tree(rate):
    """Folder of one noise rate's tree (``noise0.3``)."""
    return ABLATION_ROOT / f"noise{rate:g}"


def tree_config(rate):
    """The full config of one tree: the ablation config at this noise rate, with its own paths."""
    tree = ABLATION.to_dict()
    tree["ablation"]["noise_rates"] = []
    tree["data"]["noise"].update(audio_rate=float(rate), text_rate=float(rate))
    base = noise_tree(rate)
    tree["paths"] = {"data": str(base / "data"), "features": str(base / "features"), "results": str(base)}
    if not tree["tracking"]["uri"]:  # one store for all trees: the MLflow UI compares across rates
        tree["tracking"]["uri"] = f"sqlite:///{ABLATION_ROOT / 'mlflow.db'}"
        tree["tracking"]["artifacts"] = tree["tracking"]["artifacts"] or str(ABLATION_ROOT / "mlruns")
    return tree


RATES = sorted(float(r) for r in ABLATION.ablation.noise_rates)


def all_targets():
    return [f"{ABLATION_ROOT}/tables/noise_gain.csv"]


# The Python form of `module noiseX: snakefile: ...; config: ...` + `use rule * from noiseX as noiseX_*`
# (the DSL wants literal names; the rates come from the config).
for _rate in RATES:
    _name = f"noise{_rate:g}".replace(".", "_")
    workflow.module(_name, snakefile="../../Snakefile", config=tree_config(_rate))
    workflow.userule(rules=["*"], from_module=_name, exclude_rules=[], name_modifier=f"{_name}_*")(lambda: None)


rule ablation:
    input:
        [f"{noise_tree(rate)}/tables/ablation.md" for rate in RATES],
    output:
        figure=report(f"{ABLATION_ROOT}/figures/noise_gain.png", caption="../report/noise_gain.rst", category="Figures"),
        table=f"{ABLATION_ROOT}/tables/noise_gain.csv",
    log:
        f"{ABLATION_ROOT}/logs/noise_gain.log",
    benchmark:
        f"{ABLATION_ROOT}/benchmarks/noise_gain.tsv"
    run:
        trees = [str(noise_tree(rate)) for rate in RATES]
        run_logged(cmgh_cli("report", "--noise-gain", *trees, "--out", str(ABLATION_ROOT)), log[0], rule="ablation")
