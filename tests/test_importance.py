"""Importance estimators, tracker, mask selection and drift metrics with hand-computed numbers."""

import pytest
import torch

from epi_utils.importance import drift as drift
from epi_utils.importance import estimators as imp


def _linear_step(w, x, y):
    """Linear(2 -> 1, no bias), loss = 0.5 (w.x - y)^2; grad = (w.x - y) x."""
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w]))
    loss = 0.5 * (model(torch.tensor([x])) - y).pow(2).sum()
    loss.backward()
    return model


def test_estimators_by_hand():
    # w = [1, -2], x = [3, 1], y = 0: pred = 1, grad = [3, 1]
    m = _linear_step([1.0, -2.0], [3.0, 1.0], 0.0)
    g = m.weight.grad
    assert torch.equal(g, torch.tensor([[3.0, 1.0]]))
    assert torch.allclose(imp.taylor_importance(m.weight, g), torch.tensor([[3.0, 2.0]]))
    assert torch.allclose(imp.fisher_importance(g), torch.tensor([[9.0, 1.0]]))
    theta0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight -= 0.1 * g  # one SGD step, lr 0.1
    assert torch.allclose(imp.update_importance(m.weight, theta0), torch.tensor([[0.3, 0.1]]))


def _two_steps(estimator, **kw):
    m = _linear_step([1.0, -2.0], [3.0, 1.0], 0.0)          # taylor [3, 2], fisher [9, 1]
    tr = imp.ImportanceTracker(dict(m.named_parameters()), estimator=estimator, beta=0.5, beta_unc=0.5,
                               normalize="none", **kw)
    tr.update("a")
    m.weight.grad = None
    loss = 0.5 * (m(torch.tensor([[1.0, 1.0]])) - 0.0).pow(2).sum()  # pred -1, grad [-1, -1]
    loss.backward()                                                  # taylor [1, 2], fisher [1, 1]
    tr.update("a")
    return tr


def test_tracker_ema_taylor_fisher_by_hand():
    tr = _two_steps("taylor")
    # EMA from 0, beta 0.5: [1.5, 1] then 0.5*[1.5, 1] + 0.5*[1, 2] = [1.25, 1.5]
    assert torch.allclose(tr.raw_scores("a")["weight"], torch.tensor([[1.25, 1.5]]))
    tr = _two_steps("fisher")
    # [4.5, 0.5] then [2.25, 0.25] + [0.5, 0.5] = [2.75, 0.75]
    assert torch.allclose(tr.raw_scores("a")["weight"], torch.tensor([[2.75, 0.75]]))
    assert tr.n_updates == {"a": 2} and tr.bytes_per_param() == 4.0


def test_tracker_sensitivity_by_hand():
    tr = _two_steps("sensitivity")
    # Ibar: [1.5, 1] -> [1.25, 1.5]; U: 0.5*|[3,2]-[1.5,1]| = [0.75, 0.5]
    # -> 0.5*[0.75, 0.5] + 0.5*|[1,2]-[1.25,1.5]| = [0.5, 0.5]; score = [0.625, 0.75]
    assert torch.allclose(tr.raw_scores("a")["weight"], torch.tensor([[0.625, 0.75]]))
    assert tr.bytes_per_param() == 8.0


def test_layer_normalisation_and_lean_modes():
    scores = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([10.0, 30.0]), "z": torch.zeros(2)}
    out = imp.normalize_scores(scores, how="layer_mean")
    assert torch.allclose(out["a"], torch.tensor([0.5, 1.5])) and torch.allclose(out["b"], out["a"])
    assert torch.equal(out["z"], torch.zeros(2))
    assert torch.allclose(imp.normalize_scores(scores, how="layer_max")["b"], torch.tensor([1 / 3, 1.0]))
    tr = _two_steps("taylor", state_dtype=torch.bfloat16)
    assert tr.bytes_per_param() == 2.0
    assert torch.allclose(tr.raw_scores("a")["weight"], torch.tensor([[1.25, 1.5]]))  # exact in bf16
    # blocks: 5 elements, block 2 -> means of [0,1], [2,3], [4]
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    p.grad = torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0])
    tb = imp.ImportanceTracker({"p": p}, block_size=2, beta=0.0, normalize="none")
    tb.update("t")
    assert torch.allclose(tb.raw_scores("t")["p"], torch.tensor([1.5, 3.5, 10.0]))
    assert torch.allclose(tb.scores("t")["p"], torch.tensor([1.5, 1.5, 3.5, 3.5, 10.0]))
    assert tb.bytes_per_param() == pytest.approx(3 * 4 / 5)


def test_tracker_bad_input():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="estimator"):
        imp.ImportanceTracker({"p": p}, estimator="magic")
    with pytest.raises(ValueError, match="block_size"):
        imp.ImportanceTracker({"p": p}, block_size=1)
    with pytest.raises(KeyError, match="no importance"):
        imp.ImportanceTracker({"p": p}).raw_scores("x")


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.37, 1.0])
@pytest.mark.parametrize("integer", [False, True])
def test_mask_selection_equals_exact_sort(ratio, integer):
    g = torch.Generator().manual_seed(3)
    shapes = {"a": (7, 5), "b": (13,), "c": (2, 3, 4)}
    if integer:  # many ties
        scores = {n: torch.randint(0, 4, s, generator=g).float() for n, s in shapes.items()}
    else:
        scores = {n: torch.rand(s, generator=g) for n, s in shapes.items()}
    # global
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = round(ratio * flat.numel())
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    expected = torch.zeros(flat.numel(), dtype=torch.bool)
    expected[order] = True
    got = imp.top_share_mask(scores, ratio=ratio, scope="global")
    assert torch.equal(torch.cat([m.reshape(-1) for m in got.values()]), expected)
    # per layer
    got = imp.top_share_mask(scores, ratio=ratio, scope="layer")
    for n, s in scores.items():
        f = s.reshape(-1)
        kk = round(ratio * f.numel())
        exp = torch.zeros(f.numel(), dtype=torch.bool)
        exp[torch.sort(f, descending=True, stable=True).indices[:kk]] = True
        assert torch.equal(got[n].reshape(-1), exp), n


def test_sampled_threshold_share_close():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(200_000, generator=g), "b": torch.rand(100, 1000, generator=g)}
    m = imp.top_share_mask(scores, ratio=0.05, method="sample", sample_size=50_000, generator=g)
    assert abs(imp.mask_share(m) - 0.05) < 0.004  # ~ 4 standard errors of 0.001
    with pytest.raises(ValueError, match="generator"):
        imp.top_share_mask(scores, ratio=0.05, method="sample")


def test_drift_metrics_by_hand():
    a = {"h.0.attn.w": torch.tensor([1, 1, 0, 0], dtype=torch.bool)}
    b = {"h.0.attn.w": torch.tensor([0, 1, 1, 0], dtype=torch.bool)}
    assert drift.jaccard(a, b) == pytest.approx(1 / 3)
    assert drift.turnover(a, b) == {"entering": 0.5, "leaving": 0.5, "turnover": 0.5}
    assert drift.jaccard(a, a) == 1.0 and drift.turnover(a, a)["turnover"] == 0.0
    sa = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    sb = {"w": torch.tensor([1.0, 3.0, 2.0, 4.0])}
    assert drift.spearman(sa, sb) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert drift.spearman(sa, sa) == pytest.approx(1.0)
    mask = {"transformer.h.0.attn.c_attn.weight": torch.tensor([1, 1, 0, 0], dtype=torch.bool),
            "transformer.h.1.mlp.c_fc.weight": torch.tensor([1, 0, 0, 0], dtype=torch.bool),
            "transformer.wte.weight": torch.zeros(4, dtype=torch.bool)}
    ls = drift.layer_shares(mask)
    assert ls["0"] == {"density": 0.5, "of_mask": pytest.approx(2 / 3)}
    assert ls["1"]["density"] == 0.25 and ls["embed"]["of_mask"] == 0.0
    ms = drift.module_shares(mask)
    assert set(ms) == {"attention", "mlp", "embedding"} and ms["mlp"]["of_mask"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="different parameter names"):
        drift.jaccard(a, {"x": a["h.0.attn.w"]})


@pytest.mark.parametrize("estimator", ["taylor", "fisher", "sensitivity"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flat_and_foreach_layouts_agree(estimator, dtype):
    g = torch.Generator().manual_seed(0)
    params = {n: torch.nn.Parameter(torch.randn(s, generator=g)) for n, s in {"a": (4, 3), "b": (7,)}.items()}
    trackers = [imp.ImportanceTracker(params, estimator=estimator, state_dtype=dtype, layout=lay)
                for lay in ("flat", "foreach")]
    for step in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in params.values()]
        for tr in trackers:
            tr.update("t", grads)
    a, b = (tr.raw_scores("t") for tr in trackers)
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    assert all(torch.allclose(a[n], b[n], rtol=tol, atol=tol) for n in params)
    assert trackers[0].bytes_per_param() == trackers[1].bytes_per_param()


def test_two_stage_exact_selection_on_large_tensor():
    g = torch.Generator().manual_seed(1)
    scores = {"a": torch.rand(300_000, generator=g), "b": torch.randint(0, 50, (100_000,), generator=g).float()}
    got = imp.top_share_mask(scores, ratio=0.05)
    flat = torch.cat([s for s in scores.values()])
    exp = torch.zeros(flat.numel(), dtype=torch.bool)
    exp[torch.sort(flat, descending=True, stable=True).indices[:20_000]] = True
    assert torch.equal(torch.cat(list(got.values())), exp)


@pytest.mark.parametrize("normalize", ["layer_mean", "layer_max", "none"])
def test_flat_scores_equal_concatenated_scores_including_zero_tensors(normalize):
    g = torch.Generator().manual_seed(3)
    params = {"a": torch.nn.Parameter(torch.randn(4, 3, generator=g)), "z": torch.nn.Parameter(torch.randn(5, generator=g)),
              "b": torch.nn.Parameter(torch.randn(7, generator=g))}
    tr = imp.ImportanceTracker(params, normalize=normalize)
    for _ in range(3):
        for n, p in params.items():
            p.grad = torch.zeros(p.shape) if n == "z" else torch.randn(p.shape, generator=g)  # "z": all-zero scores
        tr.update("t")
    flat = tr.flat_scores("t")
    assert flat.shape == (24,)
    assert torch.equal(flat, torch.cat([s.reshape(-1) for s in tr.scores("t").values()]))
    assert not flat[12:17].any() and torch.isfinite(flat).all()  # zero tensor scores 0, never NaN
    if normalize == "layer_mean":
        assert float(flat[:12].mean()) == pytest.approx(1.0)


def test_top_share_flat_equals_top_share_mask_both_scopes():
    g = torch.Generator().manual_seed(4)
    scores = {"a": torch.rand(6, 5, generator=g), "b": torch.rand(11, generator=g)}
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    for scope in ("global", "layer"):
        want = torch.cat([m.reshape(-1) for m in imp.top_share_mask(scores, ratio=0.3, scope=scope).values()])
        assert torch.equal(imp.top_share_flat(flat, ratio=0.3, scope=scope, sizes=[30, 11]), want)
    with pytest.raises(ValueError, match="sizes"):
        imp.top_share_flat(flat, ratio=0.3, scope="layer", sizes=[3])


@pytest.mark.parametrize("estimator", ["taylor", "fisher", "sensitivity"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("large", [False, True])
def test_multi_tensor_update_bit_identical_to_per_tensor_update(estimator, dtype, large):
    """``update`` (issue 34: each EMA operation one kernel over the span of the flat state, the
    products of small tensors by one multi-tensor kernel, of large ones in place; sensitivity
    included) gives exactly the values of ``update_param`` one tensor at a time (the path the
    sensitivity estimator took before): same element-wise operations in the same order."""
    g = torch.Generator().manual_seed(3)
    shapes = {"a": (8, 33), "b": (129,), "c": (5, 7), "d": (64, 16)} | ({"e": (301, 203)} if large else {})
    params = {n: torch.nn.Parameter(torch.randn(s, generator=g)) for n, s in shapes.items()}
    fast, ref = (imp.ImportanceTracker(params, estimator=estimator, state_dtype=dtype, beta=0.85, beta_unc=0.7)
                 for _ in range(2))
    for step in range(4):
        task = "xy"[step % 2]
        grads = [torch.randn(p.shape, generator=g) for p in params.values()]
        fast.update(task, grads)
        ref.begin_update(task)
        for i, gr in enumerate(grads):
            ref.update_param(task, i, gr)
        ref.end_update(task)
    for task in ("x", "y"):
        assert all(torch.equal(a, b) for a, b in zip(fast.ema[task], ref.ema[task]))
        assert all(torch.equal(a, b) for a, b in zip(fast.unc.get(task, []), ref.unc.get(task, [])))
        assert torch.equal(fast.flat_scores(task), ref.flat_scores(task))
