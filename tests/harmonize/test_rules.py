"""Realignment rules: registry, conflict cosine, per-rule properties, row independence."""

from __future__ import annotations

import pytest
import torch

from cmgh.errors import ConfigError
from cmgh.harmonize import conflict_cosine, get, names, pcgrad_tasks, register, rules

ALL = ["none", "cmgh", "pcgrad", "gradvac"]


def grads(b: int = 16, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


def test_registry() -> None:
    assert set(ALL) <= set(names())
    with pytest.raises(ConfigError, match="not one of"):
        get("nope")
    with pytest.raises(ValueError):
        register("cmgh")(lambda a, b, **_: a + b)


def test_conflict_cosine() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [1.0, -1.0], [1.0, 0.0]])
    torch.testing.assert_close(conflict_cosine(a, b), torch.tensor([1.0, -1.0, 0.0, 0.0]))


@pytest.mark.parametrize("name", ALL)
def test_no_change_without_conflict(name: str) -> None:
    g_va, g_vt = grads()
    flip = (g_va * g_vt).sum(-1) < 0
    g_vt = torch.where(flip[:, None], -g_vt, g_vt)  # every cosine >= 0
    torch.testing.assert_close(get(name)(g_va, g_vt), g_va + g_vt)


def test_none_is_sum() -> None:
    g_va, g_vt = grads()
    torch.testing.assert_close(get("none")(g_va, g_vt), g_va + g_vt)


@pytest.mark.parametrize("project", ["both", "vt", "va"])
def test_cmgh_changes_every_conflicting_row(project: str) -> None:
    g_va, g_vt = grads(64)
    conflict = conflict_cosine(g_va, g_vt) < 0
    assert conflict.any() and (~conflict).any()
    out = get("cmgh")(g_va, g_vt, project=project)
    changed = ~torch.isclose(out, g_va + g_vt).all(-1)
    assert torch.equal(changed, conflict)
    if project == "vt":  # the projected video-text part is orthogonal to g_va
        new_vt = out - g_va
        torch.testing.assert_close((new_vt * g_va).sum(-1)[conflict], torch.zeros(int(conflict.sum())), atol=1e-5, rtol=0)
    if project == "va":
        new_va = out - g_vt
        torch.testing.assert_close((new_va * g_vt).sum(-1)[conflict], torch.zeros(int(conflict.sum())), atol=1e-5, rtol=0)


def test_cmgh_rejects_unknown_project() -> None:
    with pytest.raises(ConfigError):
        get("cmgh")(*grads(), project="audio")


def test_pcgrad_non_negative_with_both_originals() -> None:
    g_va, g_vt = grads(256)
    out = get("pcgrad")(g_va, g_vt)
    assert ((out * g_va).sum(-1) >= -1e-5).all()
    assert ((out * g_vt).sum(-1) >= -1e-5).all()


def test_pcgrad_coincides_with_cmgh_both_for_two_objectives() -> None:
    g_va, g_vt = grads(64)
    torch.testing.assert_close(get("pcgrad")(g_va, g_vt), get("cmgh")(g_va, g_vt, project="both"))


def test_pcgrad_tasks_three_tasks() -> None:
    g = torch.Generator().manual_seed(3)
    stack = torch.randn(3, 32, 6, generator=g)
    out = pcgrad_tasks(stack, torch.Generator().manual_seed(0))
    assert out.shape == (32, 6)
    assert torch.isfinite(out).all()
    no_conflict = stack.abs()  # all entries positive: no conflict, plain sum
    torch.testing.assert_close(pcgrad_tasks(no_conflict), no_conflict.sum(0))


def test_gradvac_reaches_target_cosine_and_tracks_ema() -> None:
    g_va, g_vt = grads(64)
    state: dict = {"phi_hat": 0.2}
    phi = conflict_cosine(g_va, g_vt)
    out = get("gradvac")(g_va, g_vt, state=state, gradvac_beta=0.1)
    new_vt = out - g_va
    adjusted = phi < 0.2
    torch.testing.assert_close(conflict_cosine(g_va, new_vt)[adjusted], torch.full((int(adjusted.sum()),), 0.2), atol=1e-5, rtol=0)
    torch.testing.assert_close(new_vt[~adjusted], g_vt[~adjusted])
    assert state["phi_hat"] == pytest.approx(0.9 * 0.2 + 0.1 * float(phi.mean()), rel=1e-5)


def test_gradvac_zero_target_is_projection_of_vt() -> None:
    g_va, g_vt = grads(64)
    torch.testing.assert_close(get("gradvac")(g_va, g_vt), get("cmgh")(g_va, g_vt, project="vt"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_rows_are_independent(name: str) -> None:
    g_va, g_vt = grads(32)
    out = get(name)(g_va, g_vt, project="both")
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(get(name)(g_va[perm], g_vt[perm], project="both"), out[perm])
    other_va, other_vt = grads(32, seed=9)
    other_va[5], other_vt[5] = g_va[5], g_vt[5]  # row 5 shared, every other row different
    torch.testing.assert_close(get(name)(other_va, other_vt, project="both")[5], out[5])


@pytest.mark.parametrize("name", ALL)
def test_rows_without_text_get_g_va(name: str) -> None:
    g_va, g_vt = grads(8)
    g_vt[::2] = 0
    out = get(name)(g_va, g_vt, state={})
    torch.testing.assert_close(out[::2], g_va[::2])


def test_rule_module_exports() -> None:
    assert rules.get is get
