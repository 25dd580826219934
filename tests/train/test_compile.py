"""``pretrain.compile``: every backbone x meeting point x rule trains compiled and computes what eager computes.

The grid compiles with ``aot_eager`` (AOTAutograd's forward and backward graphs, the part that
meets the harmonizer's hooks and repeated backward passes, without Inductor's C++ code
generation, which takes minutes a graph on two cores); Inductor, the default backend, runs in
the slow tests. One compiled model per backbone and compile plan serves every case of the grid
(the rules act outside the compiled regions), reset to the same initial state each time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from cmgh import config as config_mod
from cmgh.errors import ConfigError
from cmgh.harmonize import Harmonizer
from cmgh.harmonize.ghost import CompiledSharedPathwayError, GhostGram
from cmgh.models import VATT, ModelInputs, ModelSpec
from cmgh.train.compile import CompilePlan, check_backend, compile_model, plan
from cmgh.train.step import train_step
from tests.harmonize.tiny_vatt import CFG, TAU, make_batch

BACKEND = "aot_eager"
TOL = {"rtol": 1e-4, "atol": 1e-6}  # aot_eager runs eager's kernels; only decompositions may reorder a sum
BF16_TOL = 1e-2  # under bf16 autocast: of each gradient's largest entry (one bf16 rounding of a cast placed differently)
INDUCTOR_TOL = {"rtol": 1e-3, "atol": 1e-5}  # Inductor fuses and reorders fp32 reductions
MODELS = {"waveform": {}, "logmel": {"audio_tokenizer": "logmel"}, "droptoken": {"droptoken": 0.5}, "bf16": {}}
RULES = ("none", "cmgh", "pcgrad", "gradvac", "cagrad", "upgrad", "norm_matched", "random_partner")
MEETING_POINTS = ("representation", "parameters", "all_parameters")
CURRICULUM = ["pretrain.curriculum.rule=cmgh", "pretrain.curriculum.warmup_steps=0", "pretrain.curriculum.start_keep=0.5",
              "pretrain.curriculum.end_keep=0.5"]


def _grid() -> Iterator[object]:
    for backbone in ("ms", "ma"):
        for point in MEETING_POINTS:
            at = f"pretrain.harmonize.meeting_point={point}"
            for rule in RULES:
                if not (rule == "random_partner" and point == "all_parameters"):  # refused by the harmonizer (needs vectors)
                    yield pytest.param(backbone, "waveform", [at, f"pretrain.harmonize.rule={rule}"], id=f"{backbone}-{point}-{rule}")
            yield pytest.param(backbone, "waveform", [at, "pretrain.harmonize.rule=cmgh", *CURRICULUM], id=f"{backbone}-{point}-gr_gcl")
            yield pytest.param(backbone, "waveform", [at, "pretrain.harmonize.per_sample=own"], id=f"{backbone}-{point}-own")
            yield pytest.param(backbone, "droptoken", [at, "pretrain.harmonize.rule=cmgh"], id=f"{backbone}-{point}-droptoken")
        for point in ("representation", "all_parameters"):
            at = f"pretrain.harmonize.meeting_point={point}"
            for rule in ("pcgrad", "cagrad"):
                yield pytest.param(backbone, "waveform", [at, f"pretrain.harmonize.rule={rule}", "pretrain.harmonize.granularity=batch"],
                                   id=f"{backbone}-{point}-{rule}-batch")
            for method in ("alternate", "famo"):
                yield pytest.param(backbone, "waveform", [at, "pretrain.harmonize.rule=cmgh", f"pretrain.balance.method={method}"],
                                   id=f"{backbone}-{point}-{method}")
            yield pytest.param(backbone, "waveform", [at, "pretrain.curriculum.rule=threshold", "pretrain.curriculum.scorer=loss",
                                                      "pretrain.curriculum.granularity=loss", "pretrain.curriculum.warmup_steps=0"],
                               id=f"{backbone}-{point}-loss-curriculum")
            yield pytest.param(backbone, "logmel", [at, "pretrain.harmonize.rule=cmgh"], id=f"{backbone}-{point}-logmel")
        yield pytest.param(backbone, "waveform", ["pretrain.harmonize.rule=upgrad", "pretrain.harmonize.granularity=instance"],
                           id=f"{backbone}-representation-upgrad-instance")
        for point in ("representation", "all_parameters"):  # the paper's precision (bf16 autocast; on CPU here)
            yield pytest.param(backbone, "bf16", [f"pretrain.harmonize.meeting_point={point}", "pretrain.harmonize.rule=cmgh"],
                               id=f"{backbone}-{point}-bf16")


def make_model(backbone: str, variant: str = "waveform", seed: int = 0) -> VATT:
    torch.manual_seed(seed)
    inputs = ModelInputs.from_config({"text": {"max_tokens": 6}}, vocab_size=50)
    return VATT(ModelSpec.from_config({**CFG, **MODELS[variant]}), backbone, inputs)


def harmonizer(overrides: list[str]) -> Harmonizer:
    return Harmonizer.from_config(config_mod.load(overrides=overrides).to_dict()["pretrain"])


_COMPILED: dict[tuple[str, str, CompilePlan], VATT] = {}


def compiled_model(backbone: str, variant: str, h: Harmonizer) -> VATT:
    """A model compiled for ``h``'s plan, shared by the cases with the same backbone, model and plan."""
    model = make_model(backbone, variant)
    key = (backbone, variant, plan(model, h))
    if key not in _COMPILED:
        compile_model(model, h, BACKEND)
        _COMPILED[key] = model
    return _COMPILED[key]


@pytest.fixture(autouse=True)
def strict_dynamo() -> Iterator[None]:
    """A region that stops compiling (recompile limit reached) fails instead of silently running eagerly."""
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield


def step_grads(model: VATT, batch: dict, h: Harmonizer, step: int, precision: str = "fp32") -> tuple[dict[str, torch.Tensor], object]:
    """One trainer step at learning rate 0: the gradients it leaves in ``.grad`` and its statistics."""
    result = train_step(model, batch, torch.optim.SGD(model.parameters(), lr=0.0), None, h, step=step, temperature=TAU, precision=precision)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, result.stats


def assert_same_step(eager: tuple[dict, object], compiled: tuple[dict, object], tol: dict[str, float] | None) -> None:
    """Same gradients, cosines and objective; ``tol`` None: bf16 autocast, each within :data:`BF16_TOL` of its scale."""
    (g0, s0), (g1, s1) = eager, compiled
    assert g0.keys() == g1.keys()  # an objective left out of a step leaves the same parameters without gradient
    for name in g0:
        scale = {"rtol": BF16_TOL, "atol": BF16_TOL * float(g0[name].abs().max())}
        torch.testing.assert_close(g1[name], g0[name], **(tol or scale), msg=lambda m, n=name: f"{n}: {m}")
    tol = tol or {"rtol": BF16_TOL, "atol": BF16_TOL}
    torch.testing.assert_close(s1.cosine, s0.cosine, **tol)
    torch.testing.assert_close(s1.objective.total, s0.objective.total, **tol)


@pytest.mark.parametrize(("backbone", "variant", "overrides"), list(_grid()))
def test_compiled_step_equals_eager(backbone: str, variant: str, overrides: list[str]) -> None:
    """Two trainer steps (the rule's, curriculum's and balancer's state advance) compiled and eager, same gradients."""
    counters.clear()
    h_eager, h_compiled = harmonizer(overrides), harmonizer(overrides)
    eager, compiled = make_model(backbone, variant), compiled_model(backbone, variant, h_compiled)
    compiled.load_state_dict(eager.state_dict())
    batch = make_batch()
    precision = "bf16" if variant == "bf16" else "fp32"
    for step in range(2):
        torch.manual_seed(step)  # DropToken draws (outside the compiled regions) alike
        reference = step_grads(eager, batch, h_eager, step, precision)
        torch.manual_seed(step)
        assert_same_step(reference, step_grads(compiled, batch, h_compiled, step, precision), None if precision == "bf16" else TOL)
    if variant != "logmel":  # torchaudio's spectrogram calls torch.jit.isinstance, which Dynamo does not trace
        assert not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_the_recorded_shared_pathway_stays_eager_and_the_rest_compiles(backbone: str) -> None:
    model = make_model(backbone)
    everything = plan(model, harmonizer([]))
    assert everything.eager == () and set(everything.compiled) >= {"video_tok", "audio_tok", "text_tok"}
    recorded = plan(model, harmonizer(["pretrain.harmonize.meeting_point=all_parameters"]))
    shared_net = "backbone.nets.video" if backbone == "ms" else "backbone.net"
    assert set(recorded.eager) == {"video_tok", shared_net} and "all_parameters" in recorded.reason
    assert set(recorded.compiled) == set(everything.compiled) - set(recorded.eager)
    batch_level = plan(model, harmonizer(["pretrain.harmonize.meeting_point=all_parameters", "pretrain.harmonize.granularity=batch"]))
    assert batch_level.eager == () and batch_level.retains_graph  # two backward passes through the compiled backbone


def test_the_recorder_refuses_a_compiled_shared_pathway() -> None:
    """Compiled whole, the backbone hides its layers' outputs from the cotangent passes: refused, not silently wrong."""
    model = make_model("ms")
    model.backbone.compile(backend=BACKEND)  # (what pretrain.compile did before: the Gram came out wrong in ms)
    with pytest.raises(CompiledSharedPathwayError, match="backbone.*compiled"):
        GhostGram(model)
    model.audio_tok.compile(backend=BACKEND)  # not shared: fine on its own
    GhostGram(make_model("ms"))


def test_a_backend_this_machine_cannot_run_is_refused_in_one_line() -> None:
    from torch._inductor import config as inductor_config

    with inductor_config.patch({"cpp.cxx": ("no-such-c++-compiler",)}), pytest.raises(ConfigError, match="needs a C\\+\\+ compiler") as caught:
        check_backend("inductor", torch.device("cpu"))
    assert "\n" not in str(caught.value) and "compile_backend: aot_eager" in str(caught.value)
    check_backend("aot_eager", torch.device("cpu"))  # no compiler needed
    with pytest.raises(ConfigError, match="pretrain.compile_backend: 'tvm' is not one of"):
        check_backend("tvm", torch.device("cpu"))


def steps_with_inductor(backbone: str, overrides: list[str], n: int = 3) -> None:
    """``n`` real updates (SGD, so that a gradient's rounding moves a parameter by as little), compiled by Inductor and eager."""
    models = {"eager": make_model(backbone), "compiled": make_model(backbone)}
    compile_model(models["compiled"], harmonizer(overrides), "inductor")
    runs = {}
    for mode, model in models.items():
        h, optimizer = harmonizer(overrides), torch.optim.SGD(model.parameters(), lr=0.05)
        losses = []
        for step in range(n):
            torch.manual_seed(step)
            result = train_step(model, make_batch(seed=step), optimizer, None, h, step=step, temperature=TAU)
            losses.append(result.stats.objective.total.detach())
        runs[mode] = (torch.stack(losses), {k: v.detach().clone() for k, v in model.state_dict().items()})
    torch.testing.assert_close(runs["compiled"][0], runs["eager"][0], **INDUCTOR_TOL)
    for name, value in runs["eager"][1].items():
        torch.testing.assert_close(runs["compiled"][1][name], value, **INDUCTOR_TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.slow
def test_inductor_trains_as_eager_does() -> None:
    """ms at the representation (the whole video Transformer compiled); the paper's setting (ma,
    all_parameters, gr_gcl) under Inductor is the next test's, through pretrain()."""
    steps_with_inductor("ms", ["pretrain.harmonize.rule=cmgh", *CURRICULUM])


@pytest.mark.slow
def test_pretrain_compiled_as_a_new_user_runs_it(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    """The issue's command: ``ma``, ``gr_gcl`` at ``all_parameters``, ``compile: true`` (Inductor) for 3 steps, as eager."""
    from cmgh import checkpoint as ckpt
    from cmgh.train.loop import RunSpec, pretrain
    from tests.train.tiny_runs import small

    states = {}
    for compiled in (False, True):
        cfg = small(tiny_world, "pretrain.harmonize.meeting_point=all_parameters", f"pretrain.compile={str(compiled).lower()}")
        out = tmp_path / ("compiled" if compiled else "eager")
        pretrain(cfg, RunSpec("ma", "gr_gcl", 0, out), stop_after=3)
        states[compiled] = ckpt.load(out / "resume.pt")["model"]
    for name, value in states[False].items():
        torch.testing.assert_close(states[True][name], value, **INDUCTOR_TOL, msg=lambda m, n=name: f"{n}: {m}")
    assert not any(re.search("_orig_mod|_compiled", k) for k in states[True])  # checkpoints stay those of the plain model
