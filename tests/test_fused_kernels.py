"""Fused EPI kernels (issue 34): bitwise equal to the eager torch path, and the eager fallback."""
import types
import warnings

import pytest
import torch

from epi_utils.importance.estimators import ImportanceTracker
from epi_utils.isolation import policies as iso
from epi_utils.isolation import state as es
from epi_utils.isolation.distributed import synthetic_task_batches, tiny_gpt2
from epi_utils.lm import fused_kernels as fk
from epi_utils.lm.masked_adamw import MaskedAdamW

SHAPES = [(3, 5), (7,), (13, 11), (1,), (129,), (2, 33)]  # odd sizes, layout offsets not multiples of 8/64


def _named(seed):
    g = torch.Generator().manual_seed(seed)
    return {f"w{i}": torch.nn.Parameter(torch.randn(sh, generator=g)) for i, sh in enumerate(SHAPES)}


def _frozen_mask(seed, n, sizes):
    """Random frozen share ~30%, the 4th tensor (1 element) entirely frozen, the 2nd entirely free."""
    g = torch.Generator().manual_seed(seed)
    frozen = torch.rand(n, generator=g) < 0.3
    starts = torch.tensor([0] + sizes).cumsum(0).tolist()
    frozen[starts[1]:starts[2]] = False
    frozen[starts[3]:starts[4]] = True
    return frozen


def test_kernel_fold_and_zero_by_hand(kern):
    """EMA fold and zeroed frozen gradients against torch's eager ops, tensor by tensor."""
    g = torch.Generator().manual_seed(1)
    sizes = [17, 64, 5, 1000]
    ps = [torch.randn(n, generator=g) for n in sizes]
    gs = [torch.randn(n, generator=g) for n in sizes]
    es_ = [torch.rand(n, generator=g) for n in sizes]
    frozen = torch.rand(sum(sizes), generator=g) < 0.4
    want_e = [e.clone().mul_(0.85).add_(p.mul(gr).abs_(), alpha=1.0 - 0.85) for p, gr, e in zip(ps, gs, es_)]
    want_g = [gr.masked_fill(m, 0.0) for gr, m in zip(gs, torch.split(frozen, sizes))]
    fk.fold_zero(kern, ps, gs, es_, 0.85, es.pack_bits(frozen), sizes)
    for a, b in zip(es_, want_e):
        assert torch.equal(a, b)
    for a, b in zip(gs, want_g):
        assert torch.equal(a, b)
    assert fk.count_frozen(kern, es.pack_bits(frozen), sizes) == [int(m.sum()) for m in torch.split(frozen, sizes)]


def test_patch_bits_kernel_equals_torch(kern, monkeypatch):
    g = torch.Generator().manual_seed(2)
    bits = es.pack_bits(torch.rand(203, generator=g) < 0.5)
    pos = torch.tensor([0, 1, 7, 8, 9, 63, 64, 130, 202])
    val = torch.tensor([True, False, True, False, True, True, False, True, False])
    want = es.unpack_bits(bits, 203).clone()
    want[pos] = val
    got = fk.patch_bits(bits.clone(), pos, val)
    monkeypatch.setenv(fk.ENV, "0")  # torch path
    got_torch = fk.patch_bits(bits.clone(), pos, val)
    assert torch.equal(es.unpack_bits(got, 203), want) and torch.equal(got_torch, got)


def _run(named, frozen, *, fused, steps=3):
    """zero_masked_grads + clipping + masked step with a deferred Taylor importance (the engine's
    order); returns the tracker, optimizer and the zeroed gradients of the last step."""
    sizes = [p.numel() for p in named.values()]
    masks = es.StepMasks(bits=es.pack_bits(frozen), names=list(named), shapes=SHAPES, sizes=sizes)
    opt = MaskedAdamW(named, lr=0.05, weight_decay=0.1, fused=fused)
    tracker = ImportanceTracker(named, beta=0.9)
    g = torch.Generator().manual_seed(7)
    for k in range(steps):
        for i, p in enumerate(named.values()):
            p.grad = None if (k == 1 and i == 2) else torch.randn(p.shape, generator=g)  # a missing gradient
        opt.defer_importance(tracker, "a")
        assert opt.uses_fused(masks) == (fused is not False)
        opt.zero_masked_grads(masks)
        grads = [None if p.grad is None else p.grad.clone() for p in named.values()]
        torch.nn.utils.clip_grad_norm_(list(named.values()), 0.5)
        opt.step(masks)
    return tracker, opt, grads


def test_fused_step_is_bitwise_the_eager_step(kern):
    fused_named, eager_named = _named(0), _named(0)
    sizes = [p.numel() for p in fused_named.values()]
    frozen = _frozen_mask(3, sum(sizes), sizes)
    before = {n: p.detach().clone() for n, p in fused_named.items()}
    tf, of, gf = _run(fused_named, frozen, fused=None)
    te, oe, ge = _run(eager_named, frozen, fused=False)
    assert torch.equal(tf._flat["a"], te._flat["a"]) and tf.n_updates == te.n_updates == {"a": 3}
    for a, b in zip(gf, ge):
        assert (a is None and b is None) or torch.equal(a, b)
    for (n, pf), pe, fz in zip(fused_named.items(), eager_named.values(), torch.split(frozen, sizes)):
        assert torch.equal(pf, pe)
        assert torch.equal(pf.detach().reshape(-1)[fz.reshape(-1)], before[n].reshape(-1)[fz.reshape(-1)])
        sf, se = of.state.get(pf, {}), oe.state.get(pe, {})
        assert sf.keys() == se.keys()  # every tensor has its state on both paths (step 0 where never moved)
        for key in sf:
            assert torch.equal(sf[key], se[key])
    assert float(of.state[fused_named["w3"]]["step"]) == 0.0  # entirely frozen: never stepped
    assert float(of.state[fused_named["w2"]]["step"]) == 2.0  # no gradient at step 2: not stepped


def test_epi_policy_fused_equals_eager(kern, monkeypatch):
    """The EPI policy's default path (fused) and EPI_FUSED_KERNELS=0 (eager) train to the same bits."""
    out = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(fk.ENV, flag)
        model = tiny_gpt2(seed=3)
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        opt = MaskedAdamW(named, lr=1e-2, weight_decay=0.1)
        pol = iso.make_policy("epi", tasks=["a", "b", "c"], isolation_ratio=0.2, mask_update_interval=3,
                              warmup_steps=2)
        state = types.SimpleNamespace(model=model, optimizer=opt, named_params=named, step=0, stage=0,
                                      batch_task=None)
        pol.on_train_begin(state)
        used = []
        for task, batch in synthetic_task_batches(vocab=64, n_steps=10, batch_size=2, seq_len=8,
                                                  tasks=["a", "b", "c"], seed=0):
            state.batch_task = task
            opt.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            pol.after_backward(state)
            masks = pol.update_mask(state) or {}
            used.append(opt.uses_fused(masks))
            opt.zero_masked_grads(masks)
            torch.nn.utils.clip_grad_norm_(list(named.values()), 0.05)
            opt.step(masks)
            state.step += 1
        out[flag] = (model, opt, pol, used)
    (mf, of, pf, uf), (me, oe, pe, ue) = out["1"], out["0"]
    assert any(uf) and not any(ue)
    for a, b in zip(mf.parameters(), me.parameters()):
        assert torch.equal(a, b)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(of.state[a][key], oe.state[b][key])
    for t in ("a", "b", "c"):
        assert torch.equal(pf.tracker._flat[t], pe.tracker._flat[t])
        assert torch.equal(pf._crit_flat[t], pe._crit_flat[t])


def test_unmasked_kernel_step_is_bitwise_the_eager_step(kern):
    """Full SFT's AdamW (no masks) takes the kernels: bitwise torch's eager AdamW, step counts included."""
    runs = {}
    for fused in (None, False):
        named = _named(5)
        opt = MaskedAdamW(named, lr=1e-2, weight_decay=0.1, fused=fused)
        g = torch.Generator().manual_seed(6)
        for _ in range(3):
            for p in named.values():
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        runs[fused] = (named, opt)
    (a, oa), (b, ob) = runs[None], runs[False]
    for name in a:
        assert torch.equal(a[name], b[name])
        sa, sb = oa.state[a[name]], ob.state[b[name]]
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert float(oa.state[a["w0"]]["step"]) == 3.0


@pytest.mark.parametrize("flag", ["1", "0"])
@pytest.mark.parametrize("n, share", [(301, 0.3), (20011, 0.03)])
def test_frozen_bits_equal_frozen_positions(flag, n, share, monkeypatch):
    """Overlap owners written in by the kernel's walk over the packed overlaps, by the kernel at the
    kept overlap positions (sparse sets: int32 positions kept), or by positions."""
    monkeypatch.setenv(fk.ENV, flag)
    g = torch.Generator().manual_seed(5)
    sets = {t: torch.rand(n, generator=g) < share for t in range(3)}
    claims = sum(s.to(torch.int8) for s in sets.values())
    owner = torch.full((n,), -1, dtype=torch.int8)
    for t, s in sets.items():
        owner[s & (claims == 1)] = t
    multi = (claims > 1).nonzero().squeeze(1)
    owner[multi] = torch.randint(-2, 3, (multi.numel(),), generator=g).to(torch.int8)
    co = es.CompactOwners(owner, {t: es.TaskSet.from_mask(s) for t, s in sets.items()})
    assert (co._overlap_idx is not None) == (n > 1000)  # the sparse case reads the kept positions
    for tid in (0, 1, 2, -3):
        want = torch.zeros(n, dtype=torch.bool).index_fill_(0, co.frozen_positions(tid), True)
        assert torch.equal(es.unpack_bits(co.frozen_bits(tid), n), want)


def test_fallback_without_compiler_warns_once_and_runs_eager(monkeypatch):
    monkeypatch.setattr(fk, "_STATE", {})
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert fk.lib() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fk.lib() is None  # once
    named = _named(1)
    sizes = [p.numel() for p in named.values()]
    frozen = _frozen_mask(4, sum(sizes), sizes)
    masks = es.StepMasks(bits=es.pack_bits(frozen), names=list(named), shapes=SHAPES, sizes=sizes)
    opt = MaskedAdamW(named, lr=0.05)
    assert not opt.uses_fused(masks)


def test_kernel_check_follows_parameters_and_gradients(kern):
    """The fitness check is cached per set of parameter / gradient storages, and still sees a
    re-typed parameter and a non-contiguous gradient."""
    named = _named(8)
    opt = MaskedAdamW(named, lr=1e-2)
    for p in named.values():
        p.grad = torch.ones_like(p)
    assert opt._kernels() is kern and opt._kernels() is kern
    named["w2"].grad = torch.ones(named["w2"].shape[::-1]).t()  # same shape, not contiguous
    assert opt._kernels() is None
    named["w2"].grad = torch.ones_like(named["w2"])
    assert opt._kernels() is kern
    named["w0"].data = named["w0"].data.double()
    assert opt._kernels() is None
    named["w0"].data = named["w0"].data.float()
    assert opt._kernels() is kern
