"""The refresh kernel (issue 34): critical sets, owners and turnover bitwise the eager refresh's."""
import types

import pytest
import torch

from epi_utils.importance.estimators import ImportanceTracker, top_share_flat
from epi_utils.isolation import policies as iso
from epi_utils.isolation import refresh
from epi_utils.isolation import state as es
from epi_utils.isolation.distributed import synthetic_task_batches, tiny_gpt2
from epi_utils.lm import fused_kernels as fk


def _same_set(a: es.TaskSet, b: es.TaskSet) -> None:
    assert (a.n, a.count) == (b.n, b.count)
    assert (a.bits is None) == (b.bits is None)
    if a.bits is not None:
        assert torch.equal(a.bits, b.bits)
    else:
        assert torch.equal(a.idx, b.idx)


def _tied(n, seed, levels=7):
    """Scores on a few levels (many ties at every threshold), with -0.0 beside +0.0 and an inf."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (n,), generator=g).float() * 0.5
    x[torch.rand(n, generator=g) < 0.1] = -0.0
    x[n // 3] = float("inf")
    return x


@pytest.mark.parametrize("n", [1, 7, 64, 1001, 4099, 250_007])
@pytest.mark.parametrize("ratio", [0.0, 0.003, 0.05, 0.5, 1.0])
def test_top_share_set_equals_eager_with_ties(kern, n, ratio):
    """Exact top share with many tied values (ties go to the lower positions), -0 == +0, inf;
    above 200k scores the threshold is bracketed from a sample."""
    x = _tied(n, seed=n)
    want = es.TaskSet.from_mask(top_share_flat(x, ratio=ratio))
    _same_set(refresh.top_share_set(x, ratio=ratio, kern=kern), want)


def test_top_share_set_layer_scope_and_negative_scores(kern):
    sizes = [5, 1, 300, 63, 1000, 2]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sum(sizes), generator=g).round(decimals=1)  # negative scores and ties
    for ratio in (0.05, 0.3):
        for scope in ("global", "layer"):
            want = es.TaskSet.from_mask(top_share_flat(x, ratio=ratio, scope=scope, sizes=sizes))
            _same_set(refresh.top_share_set(x, ratio=ratio, scope=scope, sizes=sizes, kern=kern), want)


def test_nan_scores_take_the_eager_path(kern):
    """A NaN anywhere: the kernel declines and the eager order (torch.kthvalue's) decides."""
    for n in (1000, 300_001):
        x = _tied(n, seed=3)
        x[5::97] = float("nan")
        assert fk.top_k_bits(kern, x, [n], None, n // 20, torch.zeros((n + 7) // 8, dtype=torch.uint8),
                             sample=refresh.sample_size(n)) == 1
        for ratio in (0.05, 0.2):
            want = es.TaskSet.from_mask(top_share_flat(x, ratio=ratio))
            _same_set(refresh.top_share_set(x, ratio=ratio, kern=kern), want)


@pytest.mark.parametrize("sample", [0, 20_000])
def test_top_k_bits_adversarial_brackets(kern, sample):
    """Sorted scores, one huge tie at the threshold, a constant vector, segments that split bytes:
    the sampled bracket misses or degenerates and the exact bracket decides; always a stable
    descending sort's first k."""
    n = 300_003
    cases = [torch.arange(n).float(), torch.arange(n).float().flip(0), torch.full((n,), 2.0),
             torch.cat([torch.zeros(n - 40_000), torch.full((40_000,), 3.0)]),
             torch.cat([torch.full((n // 2,), 1.0), torch.rand(n - n // 2, generator=torch.Generator().manual_seed(0))])]
    for x in cases:
        for k in (1, 15_000, 40_000, n - 1):
            want = torch.zeros(n, dtype=torch.bool)
            want[torch.sort(x, descending=True, stable=True).indices[:k]] = True
            out = torch.zeros((n + 7) // 8, dtype=torch.uint8)
            wide, kb = torch.zeros_like(out), fk.KeyBuffer(kern)
            assert fk.top_k_bits(kern, x, [n], None, k, out, sample=sample, wide=wide, keys=kb) == 0
            assert torch.equal(out, es.pack_bits(want))
            keys = kb.take()
            if k < n:  # the kept scores: a superset of the set, in position order (after any missed bracket)
                w = es.unpack_bits(wide, n)
                assert bool((w | ~want).all()) and keys.numel() == int(w.sum())
                assert torch.equal(keys.view(torch.float32).abs(), x[w])  # order keys of x >= 0
    x = torch.rand(n, generator=torch.Generator().manual_seed(1))
    out = torch.zeros((n + 7) // 8, dtype=torch.uint8)
    for lo, hi in ((0, 13), (13, 100_001), (100_001, n)):  # ranges not on byte boundaries, ORed into one set
        assert fk.top_k_bits(kern, x, [n], None, (hi - lo) // 10, out, lo=lo, hi=hi, sample=sample) == 0
    want = torch.zeros(n, dtype=torch.bool)
    for lo, hi in ((0, 13), (13, 100_001), (100_001, n)):
        want[lo + torch.sort(x[lo:hi], descending=True, stable=True).indices[:(hi - lo) // 10]] = True
    assert torch.equal(out, es.pack_bits(want))


def test_tracker_source_scores_are_flat_scores(kern):
    """The kernel's scores (EMA over the normalisers) are the floats of flat_scores, zero-mean
    tensors included, and Scores[pos] those of LazyFlatScores[pos]."""
    g = torch.Generator().manual_seed(2)
    named = {f"w{i}": torch.nn.Parameter(torch.randn(sh, generator=g)) for i, sh in
             enumerate([(3, 5), (7,), (13, 11), (1,), (129,), (301, 67)])}
    for how in ("layer_mean", "layer_max", "none"):
        tr = ImportanceTracker(named, normalize=how)
        for p in named.values():
            p.grad = torch.randn(p.shape, generator=g)
        named["w1"].grad = torch.zeros(7)  # an all-zero tensor scores 0
        tr.update("a")
        lazy = tr.lazy_flat_scores("a")
        sc = refresh.Scores(lazy, kern)
        flat = tr.flat_scores("a")
        pos = torch.arange(flat.numel())
        assert torch.equal(sc[pos], flat)
        assert torch.equal(sc[pos[::3].contiguous()], lazy[pos[::3].contiguous()])


def test_layer_means_are_torch_means_bit_for_bit(kern):
    """fused_kernels.layer_means (the refresh's normalisers in one call) gives torch's per-tensor
    means to the last bit: sizes around every branch of torch's cascade sum, several scales,
    zeros, -0, inf and NaN; None (torch's means) when torch runs several threads."""
    lanes = fk._mean_lanes(kern)
    if lanes is None:
        pytest.skip("torch's summation order is not reproduced on this CPU: torch's means are used")
    g = torch.Generator().manual_seed(11)
    for trial in range(60):
        nt = int(torch.randint(1, 12, (1,), generator=g))
        top = 1 << int(torch.randint(1, 19, (1,), generator=g))
        sizes = torch.randint(1, top + 1, (nt,), generator=g).tolist()
        n = sum(sizes)
        v = torch.rand(n, generator=g) * torch.randn(n, generator=g).mul_(trial % 7 * 3).exp_()
        if trial % 4 == 1:
            v[torch.rand(n, generator=g) < 0.4] = 0.0
        if trial % 4 == 2:
            v = v.neg_()  # all -0 where zero
        if trial % 10 == 3:
            v[int(torch.randint(0, n, (1,), generator=g))] = float("inf")
        if trial % 10 == 7:
            v[int(torch.randint(0, n, (1,), generator=g))] = float("nan")
        got = torch.empty(nt)  # the kernel itself (layer_means would fall back to torch after a failed check)
        sz = torch.tensor(sizes)
        kern.epi_means(v.data_ptr(), nt, sz.data_ptr(), lanes, got.data_ptr())
        want = torch.stack([x.mean() for x in torch.split(v, sizes)])
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~got.isnan()], want[~want.isnan()]), sizes
    assert torch.equal(fk.layer_means(kern, v[:100], [60, 40]), torch.stack([v[:60].mean(), v[60:100].mean()]))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert fk.layer_means(kern, v, sizes) is None  # torch splits its sums between threads
    finally:
        torch.set_num_threads(threads)


def _policies(tasks, *, ratio, overlap="owner", scope="global", name="epi"):
    model = tiny_gpt2(seed=4, n_embd=48)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = {}
    for fused in (True, False):
        pol = iso.make_policy(name, tasks=list(tasks), isolation_ratio=ratio, mask_update_interval=10 ** 6,
                              warmup_steps=0, overlap=overlap, scope=scope)
        pol.fused_refresh = fused
        pol.on_train_begin(types.SimpleNamespace(named_params=named, model=model, step=0, stage=0))
        out[fused] = pol
    return model, named, out


def _check_equal(a, b, tasks):
    assert list(a._crit_flat) == list(b._crit_flat)
    for t in a._crit_flat:
        _same_set(a._crit_flat.stored(t), b._crit_flat.stored(t))
    oa, ob = a._owner_flat, b._owner_flat
    assert torch.equal(oa.overlap_owner, ob.overlap_owner)
    assert torch.equal(oa._overlap_positions(), ob._overlap_positions())
    assert oa.nbytes == ob.nbytes
    assert torch.equal(oa.to_int8(), ob.to_int8())
    for tid in range(-1, len(tasks)):
        assert torch.equal(oa.frozen_bits(tid), ob.frozen_bits(tid))
    assert repr(a.history) == repr(b.history)  # turnover and protected share, NaN included


@pytest.mark.parametrize("n_tasks", [1, 2, 3, 4])
@pytest.mark.parametrize("overlap", ["owner", "freeze"])
def test_policy_refresh_kernel_equals_eager(kern, n_tasks, overlap):
    """T = 1..4 tasks, several refreshes with changing importance: the same critical sets (both
    stored forms), overlap owners, frozen bitmaps and history rows (turnover, protected share)."""
    tasks = [f"t{i}" for i in range(n_tasks)]
    for ratio in (0.2, 0.01):  # 0.01: sets stored as indices
        model, named, pols = _policies(tasks, ratio=ratio, overlap=overlap)
        sched = synthetic_task_batches(vocab=64, n_steps=6 * n_tasks, batch_size=2, seq_len=8, tasks=tasks, seed=1)
        for i, (task, batch) in enumerate(sched):
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for pol in pols.values():
                pol.tracker.update(task)
            if i % n_tasks == n_tasks - 1:
                for pol in pols.values():
                    tr = pol.tracker
                    pol.set_critical_flat({t: tr.lazy_flat_scores(t) for t in tr.tasks}, names=tr.names,
                                          shapes=[p.shape for p in tr.params], step=i)
                _check_equal(pols[True], pols[False], tasks)
        assert pols[True].n_mask_updates == 6
        if n_tasks > 1:
            assert any(r["turnover"] > 0 for r in pols[True].history[1:])


def test_pinned_tasks_layer_scope_and_plain_scores(kern):
    """A pinned set wins its overlaps; a task without new scores takes the rest; layer scope; plain
    score tensors (StaticGrad/RandomMask style) instead of a tracker."""
    tasks = ["a", "b", "c"]
    model, named, pols = _policies(tasks, ratio=0.3, scope="layer")
    n = sum(p.numel() for p in named.values())
    names, shapes = list(named), [p.shape for p in named.values()]
    g = torch.Generator().manual_seed(9)
    for step in range(4):
        scores = {t: torch.rand(n, generator=g).round(decimals=2) for t in tasks}
        if step == 2:
            for pol in pols.values():
                pol.pin(["a"])
        if step == 3:
            scores.pop("b")  # b keeps its set without new scores
        for pol in pols.values():
            pol.set_critical_flat(scores, names=names, shapes=shapes, step=step)
        _check_equal(pols[True], pols[False], tasks)


def test_without_kernels_the_refresh_is_eager(monkeypatch):
    monkeypatch.setenv(fk.ENV, "0")
    assert refresh.kernel({"a": torch.zeros(3)}) is None
