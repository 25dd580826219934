"""Objective balancers: the plain sum, IMP's alternation and FAMO's loss-history weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cmgh import config as config_mod
from cmgh.errors import ConfigError
from cmgh.harmonize import balance
from cmgh.harmonize.balance import Alternate, Famo

# a scripted loss history (l_va, l_vt): both fall, at different rates, with a bump
HISTORY = [(5.0, 3.0), (4.6, 2.9), (4.1, 2.95), (3.9, 2.7), (3.5, 2.72), (3.4, 2.5), (3.0, 2.45)]


def test_registry_and_default() -> None:
    assert balance.names() == ["alternate", "famo", "sum"]
    assert all(line.split(": ", 1)[1] for line in balance.described())
    with pytest.raises(ConfigError, match=r"^pretrain.balance.method: 'nope'"):
        balance.get("nope")
    plain = balance.from_config(config_mod.load().pretrain)
    assert plain.name == "sum" and plain.weights(3, 9.0, 0.1) == (1.0, 1.0) and plain.state_dict() == {}


def reference_famo(history: list[tuple[float, float]], lr: float, decay: float, mins: tuple[float, float], eps: float):
    """FAMO's recurrence written out with plain floats: softmax Jacobian by hand, Adam (L2 decay) by hand."""
    b1, b2, adam_eps, k = 0.9, 0.999, 1e-8, 2
    xi, m, v = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
    out = []
    prev = None
    for t, losses in enumerate(history):
        d = [losses[i] - mins[i] + eps for i in range(2)]
        if prev is not None:
            d_prev = [prev[i] - mins[i] + eps for i in range(2)]
            delta = [math.log(d_prev[i]) - math.log(d[i]) for i in range(2)]
            e = [math.exp(x) for x in xi]
            z = [x / sum(e) for x in e]
            # d z_j / d xi_i = z_j (delta_ij - z_i); gradient_i = sum_j delta_j dz_j/dxi_i
            grad = [sum(delta[j] * z[j] * ((i == j) - z[i]) for j in range(2)) for i in range(2)]
            n = t  # Adam's step count: one update per step after the first
            for i in range(2):
                g = grad[i] + decay * xi[i]
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                m_hat, v_hat = m[i] / (1 - b1**n), v[i] / (1 - b2**n)
                xi[i] -= lr * m_hat / (math.sqrt(v_hat) + adam_eps)
        e = [math.exp(x) for x in xi]
        z = [x / sum(e) for x in e]
        c = sum(z[j] / d[j] for j in range(2))
        out.append((list(xi), [k * z[i] / (c * d[i]) for i in range(2)], c, d))
        prev = losses
    return out


@pytest.mark.parametrize(("lr", "decay", "mins"), [(0.025, 0.001, (0.0, 0.0)), (0.3, 0.05, (1.0, 0.5))])
def test_famo_follows_the_published_recurrence(lr: float, decay: float, mins: tuple[float, float]) -> None:
    famo = Famo(lr=lr, decay=decay, min_loss_va=mins[0], min_loss_vt=mins[1], eps=1e-8)
    expected = reference_famo(HISTORY, lr, decay, mins, 1e-8)
    for step, ((l_va, l_vt), (xi, mult, c, d)) in enumerate(zip(HISTORY, expected, strict=True)):
        got = famo.weights(step, l_va, l_vt)
        assert famo.logits.tolist() == pytest.approx(xi, rel=1e-9, abs=1e-12)
        assert list(got) == pytest.approx(mult, rel=1e-9)
        # the stated identity: sum_i m_i D_i / k = sum_i z_i / c = 1 / c
        assert sum(got[i] * d[i] for i in range(2)) / 2 == pytest.approx(1 / c, rel=1e-9)
    assert famo.logits[0] != famo.logits[1]  # the logits did move
    # the loss that fell faster in log terms gets less weight: va fell 5 -> 3, vt 3 -> 2.45
    assert famo.logits[0] < famo.logits[1]


def test_famo_equal_losses_and_logits_give_the_plain_sum() -> None:
    famo = Famo()
    assert famo.weights(0, 2.0, 2.0) == pytest.approx((1.0, 1.0))
    assert famo.weights(1, 1.5, 1.5) == pytest.approx((1.0, 1.0))  # equal deltas: the Jacobian gives zero gradient
    assert famo.logits.tolist() == [0.0, 0.0]
    # unequal losses at equal logits: m_i proportional to 1 / D_i, normalised so that sum_i m_i D_i / 2 = 1 / c
    m_va, m_vt = Famo().weights(0, 4.0, 1.0)
    assert m_va * 4.0 == pytest.approx(m_vt * 1.0) and (m_va, m_vt) == pytest.approx((0.4, 1.6))


def test_famo_nonfinite_loss_leaves_the_state_untouched() -> None:
    famo = Famo()
    famo.weights(0, 3.0, 2.0)
    famo.weights(1, 2.0, 1.9)
    before = famo.state_dict()
    assert famo.weights(2, float("nan"), 1.0) == (1.0, 1.0)
    after = famo.state_dict()
    assert torch.equal(before["xi"], after["xi"]) and before["prev"] == after["prev"]
    with pytest.raises(ConfigError, match="min_loss"):
        Famo(min_loss_vt=2.0).weights(0, 3.0, 1.0)


def test_famo_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    famo = Famo(lr=0.2)
    for step, (l_va, l_vt) in enumerate(HISTORY[:4]):
        famo.weights(step, l_va, l_vt)
    path = tmp_path / "balancer.pt"
    torch.save({"balancer": famo.state_dict()}, path)
    state = torch.load(path, weights_only=True)["balancer"]
    resumed = Famo(lr=0.2)
    resumed.load_state_dict(state)
    no_moments = Famo(lr=0.2)
    no_moments.load_state_dict({**state, "adam": {}})  # logits and history, but Adam restarted
    fresh, restarted = Famo(lr=0.2).weights(4, *HISTORY[4]), no_moments.weights(4, *HISTORY[4])
    for step in range(4, len(HISTORY)):
        got = resumed.weights(step, *HISTORY[step])
        assert got == famo.weights(step, *HISTORY[step]) and torch.equal(resumed.logits, famo.logits)
        if step == 4:
            assert got != fresh and got != restarted  # every part of the state matters
    # before the first step: nothing to restore but the zero logits
    empty = Famo()
    empty.load_state_dict(Famo().state_dict())
    assert empty.weights(0, 2.0, 1.0) == Famo().weights(0, 2.0, 1.0)


@pytest.mark.parametrize(
    ("share", "pattern"),
    [
        (0.5, ["va", "vt"] * 4),
        (0.25, ["va", "vt", "vt", "vt"] * 2),
        (0.75, ["va", "va", "va", "vt"] * 2),
        (1.0, ["va"] * 8),
        (0.0, ["vt"] * 8),
    ],
)
def test_alternate_cycle_pattern(share: float, pattern: list[str]) -> None:
    alt = Alternate(va_share=share, schedule="cycle")
    got = [alt.weights(step, 1.0, 1.0) for step in range(8)]
    assert got == [(1.0, 0.0) if p == "va" else (0.0, 1.0) for p in pattern]


def test_alternate_cycle_is_evenly_spread_without_drift() -> None:
    alt = Alternate(va_share=0.1)
    va = [alt.is_va(step) for step in range(1000)]
    assert sum(va) == 100 and all(sum(va[i : i + 10]) == 1 for i in range(0, 1000, 10))
    third = Alternate(va_share=1 / 3)
    assert [third.is_va(step) for step in range(6)] == [True, False, False, True, False, False]


def test_alternate_random_is_a_seeded_function_of_the_step() -> None:
    alt = Alternate(va_share=0.3, schedule="random", seed=4)
    seq = [alt.weights(step, 1.0, 1.0) for step in range(2000)]
    assert all(w in {(1.0, 0.0), (0.0, 1.0)} for w in seq)  # never both zero, never both one
    share = sum(w[0] for w in seq) / len(seq)
    assert abs(share - 0.3) < 0.04  # 4 standard deviations (sd ~ 0.0102)
    assert seq == [Alternate(va_share=0.3, schedule="random", seed=4).weights(s, 2.0, 5.0) for s in range(2000)]
    assert alt.weights(7, 1.0, 1.0) == alt.weights(7, 3.0, 0.5) == seq[7]  # step 7 again, after step 1999
    other = [Alternate(va_share=0.3, schedule="random", seed=5).weights(s, 1.0, 1.0) for s in range(2000)]
    assert other != seq
    assert Alternate(va_share=0.3, schedule="cycle").state_dict() == {}


def test_config_keys_validate_and_build_the_balancers() -> None:
    cfg = config_mod.load()
    assert cfg.pretrain.balance.method == "sum"
    famo_cfg = config_mod.with_overrides(cfg, ["pretrain.balance.method=famo", "pretrain.balance.famo.lr=0.1"])
    famo = balance.from_config(famo_cfg.pretrain)
    assert isinstance(famo, Famo) and famo.lr == 0.1 and famo.decay == 0.001
    alt_cfg = config_mod.with_overrides(
        cfg,
        ["pretrain.balance.method=alternate", "pretrain.balance.alternate.schedule=random", "pretrain.balance.alternate.va_share=0.25"],
    )
    alt = balance.from_config(alt_cfg.pretrain)
    assert isinstance(alt, Alternate) and alt.schedule == "random" and alt.va_share == 0.25 and alt.seed == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.balance.alternate.va_share=1.5", "pretrain.balance.alternate.va_share: 1.5 is greater than the maximum of 1"),
        ("pretrain.balance.method=nope", "pretrain.balance.method: 'nope' is not one of sum, alternate, famo"),
        ("pretrain.balance.famo.lr=0", "pretrain.balance.famo.lr: 0"),
        ("pretrain.balance.famo.rate=1", "pretrain.balance.famo: unknown key 'rate'"),
    ],
)
def test_bad_balance_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.load(overrides=[override])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_balancer_constructors_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"^pretrain.balance.alternate.va_share"):
        Alternate(va_share=-0.1)
    with pytest.raises(ConfigError, match=r"^pretrain.balance.alternate.schedule"):
        Alternate(schedule="shuffle")
    with pytest.raises(ConfigError, match=r"^pretrain.balance.famo.lr"):
        Famo(lr=0.0)
