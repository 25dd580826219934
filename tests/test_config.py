"""Config loading: defaults from the schema, one-line errors with the key path, variants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cmgh import config, identity, keypaths
from cmgh.errors import ConfigError
from tests.helpers import REPO


def test_default_and_paper_configs_validate() -> None:
    default = config.load(config.DEFAULT_CONFIG)
    paper = config.load(REPO / "config" / "paper.yaml")
    assert default.data.source == "synth"
    assert paper.data.source == "download"
    # VATT's published settings (docs/paper-scale.md, "Paper scale").
    assert paper.model.width == 1024 and paper.model.depth == 12 and paper.model.video_patch == [4, 16, 16]
    assert paper.features.video.frames == 32 and paper.features.video.fps == 10 and paper.features.audio.sample_rate == 48000
    assert paper.pretrain.batch_size == 2048 and paper.pretrain.steps == 500000 and paper.pretrain.temperature == 0.07


def test_defaults_come_from_schema(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    cfg = config.load(path)
    schema = config.schema()["properties"]
    assert cfg.pretrain.steps == schema["pretrain"]["properties"]["steps"]["default"]
    assert cfg.pretrain.harmonize.rule == "none"
    assert set(cfg.variants) == {"baseline", "gr", "gcl", "gr_gcl"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.harmonize.rule=pcgradd", "pretrain.harmonize.rule: 'pcgradd' is not one of none, cmgh, pcgrad, gradvac"),
        ("pretrain.stepz=3", "pretrain: unknown key 'stepz'"),
        ("pretrain.steps=abc", "pretrain.steps: 'abc' is not of type integer"),
        ("data.noise.audio_rate=1.5", "data.noise.audio_rate: 1.5 is greater than the maximum of 1"),
        ("model.heads=3", "model.heads: 3 does not divide model.width (64)"),
        ("pretrain.seeds=[]", "pretrain.seeds:"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(overrides=[override])
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_typo_in_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"pretrain": {"batchsize": 8}}))
    with pytest.raises(ConfigError, match=r"^pretrain: unknown key 'batchsize' \(expected one of balance, batch_size"):
        config.load(path)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ not valid YAML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="expected key.path=value"):
        config.load(overrides=["novalue"])


def test_variant_overrides_merge_and_validate() -> None:
    cfg = config.load(overrides=["variants.weird={pretrain: {harmonize: {rule: nope}}}"])
    merged = config.for_variant(cfg, "gr_gcl")
    assert merged.pretrain.harmonize.rule == "cmgh" and merged.pretrain.curriculum.rule == "cmgh"
    assert merged.pretrain.steps == cfg.pretrain.steps
    with pytest.raises(ConfigError, match=r"^variants.weird: pretrain.harmonize.rule: 'nope'"):
        config.for_variant(cfg, "weird")
    with pytest.raises(ConfigError, match="variant 'missing' is not defined"):
        config.for_variant(cfg, "missing")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = config.load(overrides=["pretrain.steps=7", f"paths.results={tmp_path}"])
    written = cfg.write(tmp_path)
    again = config.load(written)
    assert again.to_dict() == cfg.to_dict()
    assert cfg.path("results") == tmp_path
    assert config.load(overrides=["paths.data=rel/dir"]).path("data") == Path.cwd() / "rel" / "dir"  # the working directory's project


def test_flatten_for_trackers() -> None:
    flat = keypaths.flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": "{}"}


def test_config_docs_cover_every_key_and_are_current() -> None:
    import runpy

    module = runpy.run_path(str(REPO / "workflow" / "scripts" / "config_docs.py"), run_name="docs")
    rendered = module["render"]()
    assert (REPO / "config" / "README.md").read_text() == rendered, "regenerate config/README.md"
    undocumented = [line for line in rendered.splitlines() if line.startswith("| `") and line.endswith("|  |")]
    assert not undocumented, undocumented


def test_overrides_parse_yaml_values() -> None:
    cfg = config.load(overrides=["pretrain.lr=2e-3", "pretrain.seeds=[3, 4]", "pretrain.compile=true", "name=abc"])
    assert cfg.pretrain.lr == 0.002 and cfg.pretrain.seeds == [3, 4] and cfg.pretrain.compile is True and cfg.name == "abc"


def test_a_number_parses_alike_as_a_scalar_and_inside_a_collection(tmp_path: Path) -> None:
    cfg = config.load(overrides=["pretrain.lr=1e-3", "evaluate.kinetics.weight_decays=[1e-4, 1e-2]"])
    assert cfg.pretrain.lr == 0.001 and cfg.evaluate.kinetics.weight_decays == [0.0001, 0.01]
    path = tmp_path / "c.yaml"
    path.write_text("pretrain: {lr: 3e-4}\nevaluate:\n  kinetics:\n    weight_decays: [1e-3, 1E-1]\n")
    cfg = config.load(path)
    assert cfg.pretrain.lr == 0.0003 and cfg.evaluate.kinetics.weight_decays == [0.001, 0.1]


def test_a_repeated_key_is_refused_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("pretrain:\n  steps: 5\nmodel: {width: 32}\npretrain:\n  lr: 0.001\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: line 4: key 'pretrain' repeats the one on line 1 \(expected each key once"):
        config.load(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("pretrain:\n  steps: 5\n  batch_size: 8\n  steps: 6\n")  # one level down, and unlisted: a flow mapping
    with pytest.raises(ConfigError, match=r"line 4: key 'steps' repeats the one on line 2"):
        config.load(nested)
    with pytest.raises(ConfigError, match=r"^--set pretrain: line 1: key 'steps' repeats the one on line 1"):
        config.load(overrides=["pretrain={steps: 5, steps: 6}"])


@pytest.mark.parametrize(("override", "message"), [
    ("model.width=1e9", r"model.width: 1000000000.0 is greater than the maximum of 16384"),  # a size that allocates
    ("pretrain.seeds=[18446744073709551615]", r"pretrain.seeds.0: 18446744073709551615 is out of range \(expected at most 2147483647"),
    ("pretrain.corpora=[{dataset: howto100m, weight: 1e308}, {dataset: audioset, weight: 1e308}]",
     r"pretrain.corpora.0.weight: 1e\+308 is out of range \(expected at most 1e\+12"),  # a sum that would overflow
    ("sweep.n_trials=3000000000", r"sweep.n_trials: 3000000000 is out of range"),  # unlisted: any key without a bound of its own
    ("paths.results=' '", r"paths.results: ' ' has a blank folder name"),
    ("paths.data=a/ /b", r"paths.data: 'a/ /b' has a blank folder name"),
    ('worlds.root="a\\0b"', r"worlds.root: 'a\\x00b' holds a NUL byte"),  # unlisted: every folder the workflow creates
])
def test_values_the_code_cannot_use_are_refused_by_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        config.load(overrides=[override])


def test_an_integral_float_at_an_integer_key_is_the_integer() -> None:
    cfg = config.load(overrides=["pretrain.steps=6e0", "pretrain.seeds=[1e0, 2]", "model.video_patch=[2.0, 8, 8]"])
    assert type(cfg.pretrain.steps) is int and cfg.pretrain.seeds == [1, 2] and all(type(v) is int for v in cfg.model.video_patch)
    assert identity.training_inputs(cfg) == identity.training_inputs(config.load(overrides=["pretrain.steps=6", "pretrain.seeds=[1, 2]", "model.video_patch=[2, 8, 8]"]))
    assert config.load(overrides=["pretrain.lr=1e0"]).pretrain.lr == 1.0  # a number key keeps its float


def test_schema_choices_match_the_registries() -> None:
    from cmgh import harmonize
    from cmgh.harmonize import curriculum

    pretrain = config.schema()["properties"]["pretrain"]["properties"]
    assert sorted(pretrain["harmonize"]["properties"]["rule"]["enum"]) == harmonize.names()
    assert sorted(pretrain["curriculum"]["properties"]["rule"]["enum"]) == curriculum.names()


# JSON-schema keywords the config schema uses; any other key in a schema node is a fragment of a
# description that YAML split off at an unquoted comma inside a flow mapping ({..., description: a, b}).
SCHEMA_KEYWORDS = {
    "$schema", "title", "description", "type", "default", "enum", "properties", "additionalProperties",
    "required", "oneOf", "items", "uniqueItems", "minItems", "maxItems", "minProperties", "propertyNames",
    "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "allowNonFinite",
}


def _schema_nodes(node: object, path: str = "") -> list[tuple[str, dict]]:
    """Every schema node (not defaults) with its key path."""
    if not isinstance(node, dict):
        return []
    found = [(path or "<root>", node)]
    for key, sub in node.get("properties", {}).items():
        found += _schema_nodes(sub, f"{path}.{key}" if path else key)
    for keyword in ("items", "additionalProperties", "propertyNames"):
        found += _schema_nodes(node.get(keyword), f"{path}[{keyword}]")
    for i, sub in enumerate(node.get("oneOf", [])):
        found += _schema_nodes(sub, f"{path}[oneOf {i}]")
    return found


def test_every_schema_description_survives_yaml() -> None:
    nodes = _schema_nodes(config.schema())
    stray = {path: sorted(set(node) - SCHEMA_KEYWORDS) for path, node in nodes if set(node) - SCHEMA_KEYWORDS}
    assert not stray, f"unquoted comma in a description splits it into keys: {stray}"
    cut = {path: node["description"] for path, node in nodes if "description" in node and not str(node["description"]).strip().endswith((".", ")"))}
    assert not cut, f"descriptions are whole sentences (an unquoted ' #' starts a comment): {cut}"


def test_a_run_depends_on_the_feature_keys_of_its_format_only() -> None:
    def inputs(*overrides: str) -> dict:
        return identity.training_inputs(config.load(overrides=list(overrides)))

    decoded = inputs()
    assert inputs("features.augment.flip=0.0") == decoded and inputs("features.packed.crf=30") == decoded
    assert inputs("features.clips_per_video=3") != decoded
    packed = inputs("features.format=packed")
    assert packed != decoded
    assert inputs("features.format=packed", "features.augment.flip=0.0") != packed  # the stream's augmentation
    assert inputs("features.format=packed", "features.packed.crf=30") != packed  # the packed files
    assert inputs("features.format=packed", "features.clips_per_video=3") == packed  # decoded windows only
    assert inputs("features.workers=7") == decoded  # how many decoders, not what they write


def test_bad_corpora_get_one_line_errors() -> None:
    cases = {
        "pretrain.corpora=[{dataset: kinetics, weight: 1}]": "pretrain.corpora",
        "pretrain.corpora=[{dataset: howto100m, weight: -1}]": "pretrain.corpora",
        "pretrain.corpora=[{dataset: howto100m, weight: 0}, {dataset: audioset, weight: 0}]": "every weight is 0",
        "pretrain.corpora=[{dataset: howto100m}, {dataset: howto100m}]": "names a dataset twice",
        "pretrain.corpora=[]": "pretrain.corpora",
    }
    for override, expected in cases.items():
        with pytest.raises(ConfigError) as err:
            config.load(overrides=[override])
        message = str(err.value)
        assert expected in message and "\n" not in message, (override, message)
