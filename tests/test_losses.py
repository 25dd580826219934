"""NCE and MIL-NCE per sample against hand-computed values (VATT Sec. 3.3, Miech et al. 2020 Eq. 1)."""

from __future__ import annotations

import math

import torch

from cmgh import losses


def _lse(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def test_nce_hand_computed() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalises to e1, e2
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # e1, (e1+e2)/sqrt2
    tau = 0.5
    r = 1 / math.sqrt(2)
    s = [[1 / tau, r / tau], [0.0, r / tau]]  # s[i][j] = <a_i, b_j>/tau
    expect = []
    for i in range(2):
        row = _lse([s[i][0], s[i][1]]) - s[i][i]
        col = _lse([s[0][i], s[1][i]]) - s[i][i]
        expect.append(0.5 * (row + col))
    torch.testing.assert_close(losses.nce(a, b, tau), torch.tensor(expect))


def test_nce_valid_mask_equals_subset() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    valid = torch.tensor([True, False, True, True, False])
    out = losses.nce(a, b, 0.1, valid)
    torch.testing.assert_close(out[valid], losses.nce(a[valid], b[valid], 0.1))
    assert (out[~valid] == 0).all()


def _mil_nce_reference(v: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, tau: float) -> list[float]:
    """Literal loops over Miech et al.'s formula (both halves of the denominator)."""
    v = torch.nn.functional.normalize(v, dim=-1)
    t = torch.nn.functional.normalize(t, dim=-1)
    b, k = mask.shape
    out = []
    for i in range(b):
        pos = [float(v[i] @ t[i, p]) / tau for p in range(k) if mask[i, p]]
        den = [float(v[i] @ t[j, p]) / tau for j in range(b) for p in range(k) if mask[j, p]]
        den += [float(v[j] @ t[i, p]) / tau for j in range(b) for p in range(k) if mask[i, p]]
        out.append(_lse(den) - _lse(pos))
    return out


def test_mil_nce_hand_computed() -> None:
    g = torch.Generator().manual_seed(1)
    v, t = torch.randn(3, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    mask = torch.tensor([[True, True], [True, False], [False, True]])
    out = losses.mil_nce(v, t, mask, 0.2)
    torch.testing.assert_close(out, torch.tensor(_mil_nce_reference(v, t, mask, 0.2)))


def test_mil_nce_tiny_closed_form() -> None:
    # B=1, K=2, both valid: l = lse(2 copies of positives) - lse(positives) = log 2.
    v, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    torch.testing.assert_close(losses.mil_nce(v, t, torch.ones(1, 2, dtype=torch.bool), 1.0), torch.tensor([math.log(2)]))


def test_mil_nce_rows_without_text() -> None:
    g = torch.Generator().manual_seed(2)
    v, t = torch.randn(5, 4, generator=g), torch.randn(5, 3, 4, generator=g)
    mask = torch.ones(5, 3, dtype=torch.bool)
    mask[3] = False  # no candidate at all
    has_text = torch.tensor([True, False, True, True, True])
    v.requires_grad_(True)
    out = losses.mil_nce(v, t, mask, 0.1, valid=has_text)
    ok = losses.text_valid(mask, has_text)
    assert ok.tolist() == [True, False, True, False, True]
    assert (out[~ok] == 0).all() and torch.isfinite(out).all()
    torch.testing.assert_close(out[ok], losses.mil_nce(v[ok], t[ok], mask[ok], 0.1))
    out.sum().backward()  # rows without text get no video-text gradient at all
    assert (v.grad[~ok] == 0).all() and torch.isfinite(v.grad).all()


def test_objective_reduction() -> None:
    l_va, l_vt = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 0.0, 4.0, 6.0])
    valid = torch.tensor([True, False, True, True])
    obj = losses.objective(l_va, l_vt, valid, 0.5)
    assert float(obj.va) == 2.5 and float(obj.vt) == 4.0 and float(obj.total) == 2.5 + 0.5 * 4.0
    w = torch.tensor([1.0, 1.0, 0.0, 1.0])
    obj = losses.objective(l_va, l_vt, valid, 1.0, w_va=w, w_vt=w)
    assert math.isclose(float(obj.va), 7 / 3, rel_tol=1e-6) and float(obj.vt) == 4.0
    none = losses.objective(l_va, l_vt, torch.zeros(4, dtype=torch.bool), 1.0)
    assert float(none.vt) == 0.0 and float(none.total) == 2.5
