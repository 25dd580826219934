"""Noisy-correspondence sample selection: NCR's loss mixture (scorer ``mixture``) and Co-teaching's small-loss rule with
its forget-rate ramp (rule ``coteaching``); their window state, data parallelism and config."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from cmgh import config, identity
from cmgh.errors import ConfigError
from cmgh.harmonize import curriculum, scorers
from cmgh.harmonize.curriculum import Curriculum
from cmgh.harmonize.scorers import LossWindow, fit_mixture


def two_gaussians(n: int, seed: int, means: tuple[float, float], sds: tuple[float, float], rate: float = 0.3) -> tuple[Tensor, Tensor]:
    """``n`` losses, a share ``rate`` from the noisy (second) Gaussian: (losses, is_noisy)."""
    g = torch.Generator().manual_seed(seed)
    noisy = torch.rand(n, generator=g) < rate
    clean_x, noisy_x = means[0] + sds[0] * torch.randn(n, generator=g), means[1] + sds[1] * torch.randn(n, generator=g)
    return torch.where(noisy, noisy_x, clean_x), noisy


def bayes_accuracy(rate: float, means: tuple[float, float], sds: tuple[float, float]) -> float:
    """``integral max(pi_k N(x; mu_k, sd_k^2)) dx``: the accuracy of the posterior > 1/2 rule with the true parameters."""
    x = torch.linspace(-10.0, 15.0, 500_001, dtype=torch.float64)
    dens = [w * torch.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)) for w, m, s in zip((1 - rate, rate), means, sds, strict=True)]
    return float(torch.maximum(*dens).sum() * (x[1] - x[0]))


@pytest.mark.parametrize(
    ("means", "sds", "iterations"),
    [((1.0, 3.0), (0.1, 0.3), 10), ((1.0, 2.5), (0.5, 0.5), 50)],  # well separated at the default; overlapping (Bayes 94 %)
)
def test_mixture_separates_two_gaussians_at_the_bayes_rate(means: tuple[float, float], sds: tuple[float, float], iterations: int) -> None:
    window = LossWindow(10)
    batches = [two_gaussians(256, seed, means, sds) for seed in range(12)]
    for x, _ in batches:
        window = window.pushed(x, torch.zeros_like(x))
    assert len(window.entries) == 10  # the oldest two batches left the ring
    mix = window.mixture("va", iterations)
    x = torch.cat([b[0] for b in batches[2:]])
    noisy = torch.cat([b[1] for b in batches[2:]])
    accuracy = float(((mix.posterior_high(x) > 0.5) == noisy).float().mean())
    assert accuracy == pytest.approx(bayes_accuracy(0.3, means, sds), abs=0.02)
    assert mix.noise_rate == pytest.approx(0.3, abs=0.05)
    assert mix.mean.tolist() == pytest.approx(list(means), abs=0.1)
    assert window.mixture("va", iterations) is mix  # memoised: co-teaching's estimate reuses the scorer's fit


def test_degenerate_windows_have_no_noisy_component() -> None:
    for x in (torch.zeros(0), torch.full((50,), 2.0), torch.tensor([1.0]), torch.tensor([float("nan"), 3.0])):
        mix = fit_mixture(x, 10)
        assert mix.noise_rate == 0.0 and mix.posterior_high(torch.tensor([0.0, 2.0, 100.0])).tolist() == [0.0, 0.0, 0.0]
    # one outlier among equal values: variances stay floored (finite posteriors), the outlier is the noisy component
    mix = fit_mixture(torch.cat([torch.full((99,), 1.0), torch.tensor([5.0])]), 10)
    assert torch.isfinite(mix.var).all() and (mix.var > 0).all()
    assert mix.posterior_high(torch.tensor([1.0, 5.0])).tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def losses(seed: int, n: int = 64) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A batch whose va and vt losses are noisy independently (30 % each): (l_va, l_vt, noisy_va, noisy_vt)."""
    l_va, noisy_va = two_gaussians(n, 2 * seed, (1.0, 3.0), (0.1, 0.3))
    l_vt, noisy_vt = two_gaussians(n, 2 * seed + 1, (1.0, 3.0), (0.1, 0.3))
    return l_va, l_vt, noisy_va, noisy_vt


def test_a_flagged_sample_loses_exactly_its_noisy_objective() -> None:
    cur = Curriculum("threshold", "mixture", "loss", "constant", 0, threshold=0.5, window_steps=5)
    for step in range(4):
        l_va, l_vt, _, _ = losses(step)
        cur(step, torch.ones(64, dtype=torch.bool), l_va=l_va, l_vt=l_vt)
    # rows: noisy in vt only, in va only, in both, clean, and one without text (huge losses, never scored nor remembered)
    l_va = torch.tensor([1.0, 3.0, 3.1, 0.95, 50.0])
    l_vt = torch.tensor([2.9, 1.05, 3.2, 1.0, 50.0])
    valid = torch.tensor([True, True, True, True, False])
    out = cur(4, valid, l_va=l_va, l_vt=l_vt)
    assert out.w_va.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert out.w_vt.tolist() == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert out.kept.tolist() == [False, False, False, True, True] and out.kept_fraction == 0.25
    assert cur.window is not None and cur.window.entries[-1][0].tolist() == l_va[:4].tolist()  # the row without text stayed out
    assert out.noisiness[4] == 0.0 and (out.noisiness[:3] > 0.99).all() and out.noisiness[3] < 0.01
    # triplet granularity: one mixture on l_va + vt_weight l_vt; any flagged triplet loses both terms
    tri = Curriculum("threshold", "mixture", "triplet", "constant", 0, threshold=0.5, window_steps=5)
    for step in range(4):
        l_va_s, l_vt_s, _, _ = losses(step)
        tri(step, torch.ones(64, dtype=torch.bool), l_va=l_va_s, l_vt=l_vt_s)
    out = tri(4, valid, l_va=l_va, l_vt=l_vt)
    assert out.w_va.tolist() == out.w_vt.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_coteaching_ramp_with_a_fixed_noise_rate_ignores_the_keep_schedule() -> None:
    cur = Curriculum("coteaching", "loss", "loss", "linear", 5, 0.1, 0.1, 100, ramp_steps=10, noise_rate=0.4)
    assert cur.window is None and cur.state_dict() == {}  # a fixed rate needs no window
    l_vt = torch.arange(20, dtype=torch.float32).flip(0)  # row 0 has the largest loss
    for step in (0, 4, 5, 6, 10, 15, 16, 40):
        expected = 1.0 if step < 5 else 1.0 - 0.4 * min((step - 5) / 10, 1.0)
        out = cur(step, torch.ones(20, dtype=torch.bool), l_va=torch.zeros(20), l_vt=l_vt)
        assert out.keep == expected
        n_drop = 20 - math.ceil(expected * 20 - 1e-9)
        assert out.w_vt.tolist() == [0.0] * n_drop + [1.0] * (20 - n_drop)  # the largest losses are forgotten
        assert out.w_va.tolist() == [1.0] * 20
    assert cur.selecting(5) and not cur.selecting(4)


def test_coteaching_auto_noise_rate_follows_the_mixture() -> None:
    cur = Curriculum("coteaching", "loss", "loss", "constant", 2, ramp_steps=4, window_steps=3)
    capped = Curriculum("coteaching", "loss", "loss", "constant", 2, ramp_steps=4, window_steps=3, max_forget=0.2)
    window = LossWindow(3)
    for step in range(8):
        l_va, l_vt, _, _ = losses(step, n=200)
        window = window.pushed(l_va, l_vt)
        out, out_capped = (c(step, torch.ones(200, dtype=torch.bool), l_va=l_va, l_vt=l_vt) for c in (cur, capped))
        tau = window.mixture("vt", 10).noise_rate  # l_vt's mixture: what the loss scorer ranks by under loss granularity
        assert tau == pytest.approx(0.3, abs=0.05) and cur.estimated_noise_rate() == tau
        ramp = 0.0 if step < 2 else min((step - 2) / 4, 1.0)
        assert out.keep == 1.0 - tau * ramp
        assert out_capped.keep == 1.0 - 0.2 * ramp
        assert out.kept_fraction == math.ceil(out.keep * 200 - 1e-9) / 200
    # triplet granularity: the noise rate of the summed loss (about 1 - 0.7^2 noisy in one objective or both)
    tri = Curriculum("coteaching", "loss", "triplet", window_steps=3, max_forget=0.9)
    for step in range(3):
        l_va, l_vt, _, _ = losses(step, n=200)
        tri(step, torch.ones(200, dtype=torch.bool), l_va=l_va, l_vt=l_vt)
    assert tri.estimated_noise_rate() == pytest.approx(0.51, abs=0.07)


def test_state_round_trip_reproduces_the_next_step() -> None:
    def make() -> Curriculum:
        return Curriculum("coteaching", "mixture", "loss", "constant", 1, ramp_steps=2, window_steps=4)

    first = make()
    for step in range(6):
        l_va, l_vt, _, _ = losses(step)
        first(step, torch.ones(64, dtype=torch.bool), l_va=l_va, l_vt=l_vt)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # as a checkpoint stores it, and reads it back (weights only)
    resumed, fresh = make(), make()
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    valid = torch.arange(64) % 7 != 0
    l_va, l_vt, _, _ = losses(6)
    l_va, l_vt = 1.5 * l_va, l_vt + 0.4  # a drift: the fit depends on the window's history
    a, b, c = (cur(6, valid, l_va=l_va, l_vt=l_vt) for cur in (first, resumed, fresh))
    assert torch.equal(a.noisiness, b.noisiness) and torch.equal(a.w_va, b.w_va) and torch.equal(a.w_vt, b.w_vt) and a.keep == b.keep
    assert not torch.equal(a.noisiness, c.noisiness) and a.keep != c.keep  # without the window the step differs
    assert first.state_dict()["window"]["l_va"][-1].numel() == int(valid.sum())


def ranks(rule: str) -> tuple[list[Curriculum], Curriculum]:
    def make() -> Curriculum:
        return Curriculum(rule, "mixture", "loss", "constant", 0, threshold=0.5, window_steps=3, ramp_steps=1)

    return [make(), make()], make()


@pytest.mark.parametrize("rule", ["threshold", "coteaching"])
def test_two_ranks_fit_the_mixture_one_process_fits(rule: str) -> None:
    """Rank 0 holds only clean rows, rank 1 the noisy ones: fitted alone, each would see another mixture."""
    halves = []
    for step in range(5):
        l_va, l_vt, noisy_va, noisy_vt = losses(step, n=128)
        order = torch.argsort((noisy_va | noisy_vt).int(), stable=True)  # clean rows first
        valid = torch.arange(128) % 5 != 1
        halves.append((valid[order], l_va[order], l_vt[order]))

    def contributions(rank: int) -> list[Tensor]:
        """What rank ``rank`` hands to each gather call, in order (read off a recording gather)."""
        sent: list[Tensor] = []
        probe = ranks(rule)[1]
        for valid, l_va, l_vt in halves:
            part = slice(0, 64) if rank == 0 else slice(64, 128)
            probe(0, valid[part], l_va=l_va[part], l_vt=l_vt[part], gather=lambda t: sent.append(t.clone()) or t)
        return sent

    def gather_for(rank: int) -> Callable[[Tensor], Tensor]:
        other = iter(contributions(1 - rank))
        return lambda t: torch.cat([t, next(other)] if rank == 0 else [next(other), t])

    for gathered in (True, False):
        (rank0, rank1), whole = ranks(rule)
        gathers = (gather_for(0), gather_for(1)) if gathered else (None, None)
        differs = False
        for step, (valid, l_va, l_vt) in enumerate(halves):
            one = whole(step, valid, l_va=l_va, l_vt=l_vt)
            parts = [
                cur(step, valid[part], l_va=l_va[part], l_vt=l_vt[part], gather=gather)
                for cur, part, gather in ((rank0, slice(0, 64), gathers[0]), (rank1, slice(64, 128), gathers[1]))
            ]
            w_va, w_vt = torch.cat([p.w_va for p in parts]), torch.cat([p.w_vt for p in parts])
            noisiness = torch.cat([p.noisiness for p in parts])
            same = torch.allclose(noisiness, one.noisiness, atol=1e-6) and parts[0].keep == parts[1].keep == one.keep
            if rule == "threshold":  # per-row decisions; co-teaching ranks each rank's rows against the shared keep
                same = same and torch.equal(w_va, one.w_va) and torch.equal(w_vt, one.w_vt)
            if gathered:
                assert same, step
            differs |= not same
        assert gathered or differs  # the test can fail: ranks fitting their own rows disagree with one process


def test_registry_and_config() -> None:
    assert "coteaching" in curriculum.names() and "mixture" in scorers.names()
    lines = dict(line.split(": ", 1) for line in curriculum.described() + scorers.described())
    assert "Co-teaching" in lines["coteaching"] and "NCR" in lines["mixture"]
    assert scorers.get("mixture").needs_window and not scorers.get("loss").needs_window
    default = config.load()
    for section in ("mixture", "coteaching"):  # at their defaults they stay out of the run identity: existing runs keep theirs
        assert section not in identity.training_inputs(default)["pretrain"]["curriculum"]
    cur = Curriculum.from_config(config.with_overrides(default, ["pretrain.curriculum.rule=coteaching", "pretrain.curriculum.scorer=mixture"]).pretrain)
    assert (cur.window_steps, cur.em_iterations, cur.ramp_steps, cur.noise_rate, cur.max_forget) == (10, 50, 100, "auto", 0.5)
    assert cur.window is not None and cur.window.steps == 10
    cfg = config.with_overrides(
        default,
        [
            "pretrain.curriculum.rule=threshold",
            "pretrain.curriculum.scorer=mixture",
            "pretrain.curriculum.granularity=loss",
            "pretrain.curriculum.threshold=0.5",
            "pretrain.curriculum.mixture.window_steps=4",
            "pretrain.curriculum.coteaching.noise_rate=0.2",
            "pretrain.curriculum.coteaching.ramp_steps=7",
        ],
    )
    assert cfg.pretrain.curriculum.mixture.em_iterations == 50  # the section's other defaults filled in
    cur = Curriculum.from_config(cfg.pretrain)
    assert (cur.window_steps, cur.noise_rate, cur.ramp_steps, cur.threshold) == (4, 0.2, 7, 0.5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.curriculum.coteaching.noise_rate=2", "pretrain.curriculum.coteaching.noise_rate: 2 is greater than or equal to the maximum of 1"),
        ("pretrain.curriculum.coteaching.noise_rate=-0.1", "pretrain.curriculum.coteaching.noise_rate: -0.1 is less than the minimum of 0"),
        ("pretrain.curriculum.coteaching.noise_rate=often", "pretrain.curriculum.coteaching.noise_rate: 'often' is not of the expected form"),
        ("pretrain.curriculum.coteaching.max_forget=1", "pretrain.curriculum.coteaching.max_forget: 1 is greater than or equal to the maximum of 1"),
        ("pretrain.curriculum.coteaching.ramp_steps=0", "pretrain.curriculum.coteaching.ramp_steps: 0 is less than the minimum of 1"),
        ("pretrain.curriculum.mixture.window_steps=0", "pretrain.curriculum.mixture.window_steps: 0 is less than the minimum of 1"),
        ("pretrain.curriculum.mixture.em_iterations=2.5", "pretrain.curriculum.mixture.em_iterations: 2.5 is not of type integer"),
        ("pretrain.curriculum.mixture.window=3", "pretrain.curriculum.mixture: unknown key 'window'"),
        ("pretrain.curriculum.scorer=gmm", "pretrain.curriculum.scorer: 'gmm' is not one of"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.with_overrides(config.load(), [override])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"noise_rate": 1.0}, "noise_rate"),
        ({"noise_rate": "sometimes"}, "noise_rate"),
        ({"window_steps": 0}, "window_steps"),
        ({"max_forget": 1.0}, "max_forget"),
    ],
)
def test_the_constructor_checks_what_the_schema_checks(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^pretrain\.curriculum\.\w+\.{key}: "):
        Curriculum("coteaching", "loss", **kwargs)  # type: ignore[arg-type]
