"""The all_parameters meeting point: exact per-sample Gram entries and combined gradients over every shared parameter.

Brute force is ``torch.func.vmap(grad)`` of each sample's representations contracted with the
same seeds the trainer uses, over the model's shared parameters.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from cmgh import losses
from cmgh.harmonize import Harmonizer, forward_losses, rules
from cmgh.harmonize.curriculum import Curriculum
from cmgh.harmonize.ghost import GhostGram, UncoveredParameterError
from cmgh.harmonize.gradients import leaf_gradients, objective_cotangents, per_sample_gradients
from cmgh.models import VATT, ModelInputs, ModelSpec

B, K, L = 6, 2, 5
VIDEO = (4, 32, 32)  # 2 x 4 x 4 = 32 video tokens + [AGG]: at width 64 some layers take the ghost form, some the dense one
AUDIO = 800


def small_model(backbone: str, *, width: int = 64, droptoken: float = 0.0, dtype: torch.dtype = torch.float64) -> VATT:
    torch.manual_seed(0)
    cfg = {"width": width, "depth": 2, "heads": 2, "mlp_ratio": 4.0, "video_patch": (2, 8, 8), "audio_patch": 100,
           "va_dim": 12, "vat_dim": 8, "text_embed_dim": 8, "droptoken": droptoken}
    inputs = ModelInputs(video_shape=VIDEO, audio_samples=AUDIO, audio_sample_rate=8000, max_tokens=L, vocab_size=50)
    return VATT(ModelSpec.from_config(cfg), backbone, inputs).to(dtype)


def small_batch(seed: int = 1, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(2, 50, (B, K, L), generator=g)
    text[:, 1, 3:] = 0  # padded second captions
    has_text = torch.ones(B, dtype=torch.bool)
    has_text[-1] = False  # one triplet without text
    return {
        "video": torch.randint(0, 255, (B, *VIDEO, 3), dtype=torch.uint8, generator=g),
        "audio": (torch.rand(B, AUDIO, generator=g) * 2 - 1).to(dtype),
        "text": text,
        "text_mask": torch.ones(B, K, dtype=torch.bool),
        "has_text": has_text,
    }


class Encoder(nn.Module):
    """One sample's representations, for functional_call under vmap."""

    def __init__(self, model: VATT) -> None:
        super().__init__()
        self.m = model

    def forward(self, video: Tensor, audio: Tensor, text: Tensor) -> dict[str, Tensor]:
        return self.m.encode({"video": video[None], "audio": audio[None], "text": text[None]})


def recorded_step(model: VATT, batch: dict[str, Tensor], hidden_blocks: int = 0) -> tuple[GhostGram, object, dict]:
    ghost = GhostGram(model)
    with ghost.recording(B):
        fwd = forward_losses(model, batch, 0.1, hidden_blocks=hidden_blocks, detach=ghost.meeting_keys)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    seeds = leaf_gradients(fwd.l_va, fwd.l_vt, {k: leaf for k, (_, leaf) in fwd.cut.items()}, c_va, c_vt)
    for objective in ("va", "vt"):
        ghost.cotangents(objective, seeds[objective], {k: a for k, (a, _) in fwd.cut.items()}, retain_graph=True)
    return ghost, fwd, seeds


def brute_force(model: VATT, batch: dict[str, Tensor], seeds: dict) -> dict[str, Tensor]:
    """Per objective, the per-sample gradients ``[B, P]`` over the shared parameters."""
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = False  # vmap has no batching rule for the fused kernel
    enc = Encoder(model)
    shared = {f"m.{name}": p.detach() for name, p in model.shared_parameters().items()}

    def contracted(theta: dict[str, Tensor], video: Tensor, audio: Tensor, text: Tensor, s: dict[str, Tensor]) -> Tensor:
        reps = functional_call(enc, theta, (video, audio, text), strict=False)
        return sum((reps[k][0] * s[k]).sum() for k in s)

    out = {}
    for objective, by_key in seeds.items():
        s = {k: v.detach() for k, v in by_key.items() if v is not None}
        per = vmap(grad(contracted), in_dims=(None, 0, 0, 0, 0))(shared, batch["video"], batch["audio"], batch["text"], s)
        out[objective] = torch.cat([per[n].reshape(B, -1) for n in shared], dim=1).detach()
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = True
    return out


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_gram_equals_brute_force_per_sample_gradients(backbone: str) -> None:
    model, batch = small_model(backbone), small_batch()
    ghost, _, seeds = recorded_step(model, batch)
    gram = ghost.gram()
    strategies = {tap.strategy for tap in ghost.taps if hasattr(tap, "strategy")}
    assert strategies == {"ghost", "dense"}  # the mixed strategy takes both routes on this model
    ref = brute_force(model, batch, seeds)
    expected = rules.Gram.of(ref["va"], ref["vt"])
    for key in ("aa", "ab", "bb"):
        torch.testing.assert_close(getattr(gram, key), getattr(expected, key), rtol=1e-8, atol=1e-14)
    assert (gram.ab[:-1] != 0).all() and gram.bb[-1] == 0  # the triplet without text has no video-text gradient
    if backbone == "ma":  # audio and text sequences contribute to the shared blocks: the video pathway alone differs
        video_only = {o: {"video_rep": s["video_rep"]} for o, s in seeds.items()}
        alone = brute_force(model, batch, video_only)
        assert not torch.allclose(rules.Gram.of(alone["va"], alone["vt"]).ab, gram.ab)


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_split_block_run_gives_the_same_gram(backbone: str) -> None:
    """The noise evaluation runs the video Transformer in two block ranges (for the tail cosine): still one sequence."""
    model, batch = small_model(backbone), small_batch()
    whole = recorded_step(model, batch)[0].gram()
    split = recorded_step(model, batch, hidden_blocks=1)[0].gram()
    for key in ("aa", "ab", "bb"):
        torch.testing.assert_close(getattr(split, key), getattr(whole, key), rtol=1e-10, atol=1e-14)


def test_gram_in_float32_within_1e5() -> None:
    model, batch = small_model("ma", dtype=torch.float32), small_batch(dtype=torch.float32)
    ghost, _, seeds = recorded_step(model, batch)
    gram = ghost.gram()
    ref = brute_force(model, batch, seeds)
    expected = rules.Gram.of(ref["va"].double(), ref["vt"].double())
    for key in ("aa", "ab", "bb"):
        scale = (expected.aa * expected.bb).sqrt() if key == "ab" else getattr(expected, key)
        err = (getattr(gram, key).double() - getattr(expected, key)).abs() / scale.clamp_min(1e-30)
        assert float(err[:-1].max()) < 1e-5, key


@pytest.mark.parametrize("backbone", ["ms", "ma"])
@pytest.mark.parametrize("rule", ["cmgh", "gradvac"])
def test_combined_gradient_equals_brute_force_combination(backbone: str, rule: str) -> None:
    model, batch = small_model(backbone), small_batch()
    ghost, _, seeds = recorded_step(model, batch)
    gram = ghost.gram()
    alpha, beta = rules.get(rule).coefficients(gram, target=0.3)
    assert (alpha != 1).any() or (beta != 1).any()  # the rule changes some triplets on this batch
    ref = brute_force(model, batch, seeds)
    expected = (alpha[:, None] * ref["va"] + beta[:, None] * ref["vt"]).sum(0)
    shared = model.shared_parameters()
    model.zero_grad(set_to_none=True)
    ghost.assemble(alpha, beta)
    got = torch.cat([p.grad.reshape(-1) for p in shared.values()])
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-12)


def plain_gradients(model: VATT, batch: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(batch)
    valid = losses.text_valid(batch["text_mask"], batch["has_text"])
    l_va = losses.nce(out["z_va_video"], out["z_va_audio"], 0.1)
    l_vt = losses.mil_nce(out["z_vat_video"], out["z_vat_text"], batch["text_mask"], 0.1, valid=valid)
    losses.objective(l_va, l_vt, valid, 1.0).total.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_rule_none_equals_plain_backward(backbone: str) -> None:
    """Every parameter (shared, towers, tokenizers, heads) gets exactly the plain gradient; DropToken on."""
    model, batch = small_model(backbone, droptoken=0.5), small_batch()
    expected = plain_gradients(model, batch, seed=7)
    model.zero_grad(set_to_none=True)
    harmonizer = Harmonizer("none", meeting_point="all_parameters")
    torch.manual_seed(7)  # the same DropToken draw
    ghost = harmonizer.ghost_for(model)
    assert ghost is not None
    with ghost.recording(B):
        fwd = forward_losses(model, batch, 0.1, detach=ghost.meeting_keys)
    harmonizer.backward(fwd.video_rep, fwd.meet, fwd.l_va, fwd.l_vt, fwd.valid_vt, ghost=ghost, cut=fwd.cut)
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)
    assert not ghost.taps[1].calls  # released: no reference into the step's graph is kept


def test_unknown_shared_module_is_refused() -> None:
    model = small_model("ms")
    model.backbone.nets["video"].blocks[0].mlp[1] = nn.PReLU(dtype=torch.float64)  # a parameterised activation
    with pytest.raises(UncoveredParameterError, match=r"backbone\.nets\.video\.blocks\.0\.mlp\.1\.weight"):
        GhostGram(model)


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_conflict_curriculum_reweighs_and_the_rule_sees_the_weighted_gram(backbone: str) -> None:
    """The curriculum drops by the whole-network cosine; the rule then combines the weighted objective's gradients."""
    model, batch = small_model(backbone), small_batch()
    unweighted = brute_force(model, batch, recorded_step(model, batch)[2])
    cur = Curriculum("cmgh", "conflict", "triplet", "constant", 0, 0.5, 0.5, 10)
    harmonizer = Harmonizer("cmgh", meeting_point="all_parameters", curriculum=cur)
    ghost = harmonizer.ghost_for(model)
    assert ghost is not None
    model.zero_grad(set_to_none=True)
    with ghost.recording(B):
        fwd = forward_losses(model, batch, 0.1, detach=ghost.meeting_keys)
    stats = harmonizer.backward(fwd.video_rep, fwd.meet, fwd.l_va, fwd.l_vt, fwd.valid_vt, step=3, ghost=ghost, cut=fwd.cut)
    valid = fwd.valid_vt
    torch.testing.assert_close(stats.cosine[valid], rules.Gram.of(unweighted["va"], unweighted["vt"]).cosine()[valid].to(stats.cosine.dtype))
    assert stats.weights is not None and 0 < stats.weights.kept_fraction < 1
    got = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters().values()])

    fresh = forward_losses(model, batch, 0.1, detach=ghost.meeting_keys)
    c_va, c_vt = objective_cotangents(fresh.valid_vt, 1.0, stats.weights.w_va, stats.weights.w_vt)
    seeds = leaf_gradients(fresh.l_va, fresh.l_vt, {k: leaf for k, (_, leaf) in fresh.cut.items()}, c_va, c_vt)
    weighted = brute_force(model, batch, seeds)
    alpha, beta = rules.get("cmgh").coefficients(rules.Gram.of(weighted["va"], weighted["vt"]))
    torch.testing.assert_close(got, (alpha[:, None] * weighted["va"] + beta[:, None] * weighted["vt"]).sum(0), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("rule", ["none", "cmgh", "pcgrad", "gradvac"])
def test_train_step_at_all_parameters(rule: str) -> None:
    """The trainer's step with every rule: a finite update, conflict statistics from the whole-network cosine."""
    from cmgh.train.step import step_metrics, train_step

    model = small_model("ma", dtype=torch.float32, droptoken=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    harmonizer = Harmonizer(rule, meeting_point="all_parameters")
    result = train_step(model, small_batch(dtype=torch.float32), optimizer, None, harmonizer, step=0, temperature=0.1)
    assert result.finite
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert set(model.shared_parameters()) <= set(changed) and any(n.startswith("audio_tok") for n in changed)
    metrics = step_metrics(result, samples_per_s=1.0)
    assert 0 <= metrics["conflict_fraction"] <= 1
    assert not torch.equal(result.stats.cosine, result.stats.cosine_representation)


def test_tokens_droptoken_removed_are_skipped_without_changing_the_gram() -> None:
    """The tokenizer's dropped patches get zero cotangents: leaving them out (half the work at rate 0.5) is exact."""
    model, batch = small_model("ms", droptoken=0.5), small_batch()
    grams = []
    for compact in (True, False):
        torch.manual_seed(3)  # the same DropToken draw
        ghost = recorded_step(model, batch)[0]
        proj = next(tap for tap in ghost.taps if getattr(tap, "module", None) is model.video_tok.proj)
        assert [c.terminal for c in proj.calls] == [True]
        if not compact:
            proj.calls[0].terminal = False
        grams.append(ghost.gram())
        kept = proj.calls[0].x.shape[1]
        assert kept == (16 if compact else 32)  # ceil(0.5 * 32) video tokens survive DropToken
    for key in ("aa", "ab", "bb"):
        torch.testing.assert_close(getattr(grams[0], key), getattr(grams[1], key), rtol=1e-10, atol=1e-14)


def bf16_recorded(model: VATT, batch: dict[str, Tensor]) -> GhostGram:
    """Both cotangent passes of one step recorded under bf16 autocast (the CUDA path, on the CPU)."""
    from cmgh.train.precision import autocast

    ghost = GhostGram(model)
    with autocast(torch.device("cpu"), "bf16"), ghost.recording(B):
        fwd = forward_losses(model, batch, 0.1, detach=ghost.meeting_keys)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    seeds = leaf_gradients(fwd.l_va, fwd.l_vt, {k: leaf for k, (_, leaf) in fwd.cut.items()}, c_va, c_vt)
    for objective in ("va", "vt"):
        ghost.cotangents(objective, seeds[objective], {k: a for k, (a, _) in fwd.cut.items()}, retain_graph=True)
    return ghost


def test_bf16_autocast_stores_bf16_cotangents_and_agrees_with_fp32() -> None:
    """Under bf16 autocast (the CUDA path) cotangents stay bf16 in memory; the Gram is summed in fp32."""
    model, batch = small_model("ms", dtype=torch.float32), small_batch(dtype=torch.float32)
    fp32 = recorded_step(model, batch)[0].gram()
    ghost = bf16_recorded(model, batch)
    qkv = next(tap for tap in ghost.taps if getattr(tap, "module", None) is model.backbone.nets["video"].blocks[0].attn.qkv)
    assert qkv.calls[0].d["va"].dtype == torch.bfloat16
    gram = ghost.gram()
    assert gram.ab.dtype == torch.float32
    # bf16 rounds the whole forward and both passes: cosines agree where both gradients are far from zero
    # (a near-zero video-text gradient, |g|^2 = 0.3 against 7-25 for the others here, has no stable direction)
    sound = fp32.bb > 1
    assert int(sound.sum()) >= 4
    torch.testing.assert_close(gram.cosine()[sound], fp32.cosine()[sound], atol=0.05, rtol=0)


@pytest.mark.parametrize("strategy", ["ghost", "dense"])
def test_bf16_records_give_the_gram_and_gradient_of_what_the_layers_computed(strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bf16 autocast a linear layer records its input as it computed with it (bf16), and the
    Gram's GEMMs run in bf16 (fp32 accumulation inside, products summed in fp32): every layer's
    entries equal a float64 computation from the same bf16 records to bf16's rounding, and the
    assembled gradient with unit coefficients equals the float64 sum of both objectives' weight gradients."""
    from cmgh.harmonize import taps

    monkeypatch.setattr(taps, "linear_strategy", lambda *args: strategy)
    model, batch = small_model("ms", dtype=torch.float32), small_batch(dtype=torch.float32)
    ghost = bf16_recorded(model, batch)
    linear = [tap for tap in ghost.taps if isinstance(tap, taps.LinearTap) and tap.calls]
    assert linear and all(c.x.dtype == torch.bfloat16 for tap in linear for c in tap.calls)
    for tap in linear:
        gram = tap.gram(B)
        assert tap.strategy == strategy
        per = {o: torch.stack([sum(c.d[o][i].double().T @ taps.by_sample(c.x, B)[i].double() for c in tap.calls if o in c.d)
                               for i in range(B)]) for o in ("va", "vt")}
        bias = {o: sum(c.d[o].double().sum(1) for c in tap.calls if o in c.d) for o in ("va", "vt")}
        for key, (u, v) in {"aa": ("va", "va"), "ab": ("va", "vt"), "bb": ("vt", "vt")}.items():
            want = (per[u] * per[v]).sum((1, 2)) + (bias[u] * bias[v]).sum(1)
            torch.testing.assert_close(getattr(gram, key).double(), want, rtol=2e-2, atol=1e-3 * float(want.abs().max()))
        model.zero_grad(set_to_none=True)
        tap.assemble({"va": torch.ones(B), "vt": torch.ones(B)}, B)
        weight = (per["va"] + per["vt"]).sum(0)
        torch.testing.assert_close(tap.module.weight.grad.double(), weight, rtol=2e-2, atol=1e-2 * float(weight.abs().max()))


def test_conflict_curriculum_with_droptoken_reuses_the_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weighted objective's second pair of passes brings full-length cotangents to a compacted tokenizer call."""
    from cmgh.harmonize import taps

    def step(compact: bool) -> dict[str, Tensor]:
        model, batch = small_model("ms", droptoken=0.5), small_batch()
        if not compact:
            monkeypatch.setattr(taps.LinearTap, "_compact", lambda self, batch_size: None)
        harmonizer = Harmonizer("cmgh", meeting_point="all_parameters",
                                curriculum=Curriculum("cmgh", "conflict", "triplet", "constant", 0, 0.5, 0.5, 10))
        ghost = harmonizer.ghost_for(model)
        assert ghost is not None
        torch.manual_seed(5)  # the same DropToken draw
        with ghost.recording(B):
            fwd = forward_losses(model, batch, 0.1, detach=ghost.meeting_keys)
        harmonizer.backward(fwd.video_rep, fwd.meet, fwd.l_va, fwd.l_vt, fwd.valid_vt, step=3, ghost=ghost, cut=fwd.cut)
        monkeypatch.undo()
        return {n: p.grad.clone() for n, p in model.shared_parameters().items()}

    compacted, full = step(True), step(False)
    for name in full:
        torch.testing.assert_close(compacted[name], full[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_own_seeds_give_the_own_gram_and_combination(backbone: str) -> None:
    """per_sample own at all_parameters: the seeds are each triplet's own gradients, and so is the Gram."""
    model, batch = small_model(backbone), small_batch()
    ghost = GhostGram(model)
    with ghost.recording(B):
        fwd = forward_losses(model, batch, 0.1, detach=ghost.meeting_keys)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    g_va, g_vt, gram = ghost.measure(fwd.l_va, fwd.l_vt, fwd.cut, c_va, c_vt, last=False, exact=True)
    own_va, own_vt = per_sample_gradients(fwd.l_va, fwd.l_vt, fwd.meet, c_va, c_vt, exact=True)
    torch.testing.assert_close(g_va, own_va)
    torch.testing.assert_close(g_vt, own_vt)
    seeds = leaf_gradients(fwd.l_va, fwd.l_vt, {k: leaf for k, (_, leaf) in fwd.cut.items()}, c_va, c_vt, exact=True)
    ref = brute_force(model, batch, seeds)
    expected = rules.Gram.of(ref["va"], ref["vt"])
    for key in ("aa", "ab", "bb"):
        torch.testing.assert_close(getattr(gram, key), getattr(expected, key), rtol=1e-8, atol=1e-14)
    cheap = leaf_gradients(fwd.l_va, fwd.l_vt, {k: leaf for k, (_, leaf) in fwd.cut.items()}, c_va, c_vt)
    assert not torch.allclose(cheap["va"]["video_rep"], seeds["va"]["video_rep"])
    alpha, beta = rules.get("cmgh").coefficients(gram)
    model.zero_grad(set_to_none=True)
    ghost.assemble(alpha, beta)
    shared = model.shared_parameters()
    got = torch.cat([p.grad.reshape(-1) for p in shared.values()])
    torch.testing.assert_close(got, (alpha[:, None] * ref["va"] + beta[:, None] * ref["vt"]).sum(0), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(("rule", "per_sample"), [("cmgh", "own"), ("norm_matched", "batch_mixed")])
def test_train_step_at_all_parameters_with_own_gradients_and_the_norm_control(rule: str, per_sample: str) -> None:
    from cmgh.train.step import train_step

    model, batch = small_model("ma"), small_batch()
    harmonizer = Harmonizer(rule, meeting_point="all_parameters", per_sample=per_sample)
    result = train_step(model, batch, torch.optim.SGD(model.parameters(), lr=0.0), None, harmonizer, step=0, temperature=0.1)
    assert result.finite and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
