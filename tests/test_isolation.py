"""Isolation policies: protected parameters bit-identical, planted critical sets, EWC by hand."""
import types

import pytest
import torch

from epi_utils.isolation import policies as iso
from epi_utils.isolation.callback import MaskedStepGuard
from epi_utils.isolation.distributed import hooked_steps, synthetic_task_batches, tiny_gpt2

TASKS = ["a", "b"]


def _probe(seed=7):
    sched = synthetic_task_batches(vocab=64, n_steps=4, batch_size=2, seq_len=8, tasks=TASKS, seed=seed)
    return {t: [b for tt, b in sched if tt == t] for t in TASKS}


class _BitCheck:
    """Hook placed after the policy: snapshots masked elements before the step, compares after."""

    def __init__(self):
        self.n_checked = 0
        self.n_moved_allowed = 0

    def on_train_begin(self, state): ...
    def on_stage_begin(self, state): ...
    def extra_loss(self, state): return None
    def after_backward(self, state): ...
    def on_train_end(self, state): ...

    def update_mask(self, state):
        self.state = state
        return None

    def snapshot(self, step, masks):
        self.masks = masks
        opt = self.state.optimizer
        self.before = {}
        if masks is None:
            return
        for n, p in self.state.named_params.items():
            st = opt.state.get(p, {})
            self.before[n] = (p.detach().clone(), {k: v.clone() for k, v in st.items() if torch.is_tensor(v)
                                                   and v.shape == p.shape})

    def on_step_end(self, state):
        if self.masks is None:
            return
        for n, p in state.named_params.items():
            frozen = ~self.masks[n]
            val, st = self.before[n]
            assert torch.equal(p.detach()[frozen], val[frozen]), n
            for k, v in state.optimizer.state[p].items():
                if torch.is_tensor(v) and v.shape == p.shape:
                    prev = st[k][frozen] if k in st else torch.zeros_like(v[frozen])
                    assert torch.equal(v[frozen], prev), (n, k)
            self.n_checked += int(frozen.sum())
            self.n_moved_allowed += int((p.detach() != val)[~frozen].sum())


@pytest.mark.parametrize("name", ["epi", "static_grad", "static_cpi", "random_mask"])
def test_protected_parameters_bit_identical(name):
    model = tiny_gpt2(seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    kw = dict(tasks=TASKS, isolation_ratio=0.2)
    if name == "epi":
        kw.update(mask_update_interval=2, warmup_steps=2)
    elif name in ("static_grad", "static_cpi"):
        kw.update(probe_data=_probe())
        if name == "static_cpi":
            kw.update(probe_steps=3)
    policy = iso.make_policy(name, **kw)
    check = _BitCheck()
    sched = synthetic_task_batches(vocab=64, n_steps=10, batch_size=2, seq_len=8, tasks=TASKS, seed=0)
    hooked_steps(model, opt, sched, hooks=[policy, check], on_mask=check.snapshot)
    assert check.n_checked > 0 and check.n_moved_allowed > 0
    assert policy.history and policy.history[-1]["protected_share"] > 0


def test_static_cpi_restores_start_weights():
    model = tiny_gpt2(seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pol = iso.make_policy("static_cpi", tasks=TASKS, isolation_ratio=0.1, probe_data=_probe(), probe_steps=2)
    state = types.SimpleNamespace(model=model, step=0, named_params=dict(model.named_parameters()))
    pol.on_train_begin(state)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    for t in TASKS:  # each task's core has the ratio's share
        n = sum(m.numel() for m in pol.critical[t].values())
        assert sum(int(m.sum()) for m in pol.critical[t].values()) == round(0.1 * n)


class _Toy(torch.nn.Module):
    """Two tasks: task 0's loss uses w[:, 0] (features in input_ids), task 1's uses w[:, 1]."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(10, 2))

    def forward(self, input_ids, attention_mask=None, labels=None):
        k = int(attention_mask.reshape(-1)[0])
        pred = input_ids @ self.w[:, k]
        return types.SimpleNamespace(loss=((pred - labels) ** 2).mean())


def _toy_batch(task_id, coords):
    x = torch.zeros(4, 10)
    x[:, coords] = 1.0
    return {"input_ids": x, "attention_mask": torch.full((1,), task_id), "labels": torch.full((4,), 10.0)}


def test_epi_planted_critical_sets_evolve_and_release():
    model = _Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pol = iso.make_policy("epi", tasks=TASKS, isolation_ratio=0.15, mask_update_interval=4, warmup_steps=4,
                          beta=0.5, normalize="none")
    # phase 1: task a uses coords 0-2; phase 2: coords 5-7; task b always 8-9
    sched = [("a", _toy_batch(0, [0, 1, 2])) if s % 2 == 0 else ("b", _toy_batch(1, [8, 9])) for s in range(12)]
    sched += [("a", _toy_batch(0, [5, 6, 7])) if s % 2 == 0 else ("b", _toy_batch(1, [8, 9])) for s in range(16)]
    seen = []
    hooked_steps(model, opt, sched, hooks=[pol], on_mask=lambda step, m: seen.append((step, pol.critical.get("a"))))
    first = next(m for s, m in seen if m is not None)["w"]
    last = pol.critical["a"]["w"]
    # 20 elements, 15% -> 3 critical per task; a's are in column 0, first at rows 0-2, finally at 5-7
    assert first[:, 0].nonzero().flatten().tolist() == [0, 1, 2] and not first[:, 1].any()
    assert last[:, 0].nonzero().flatten().tolist() == [5, 6, 7]  # old ones released, new protected
    assert pol.critical["b"]["w"][8:, 1].all()
    assert any(r.get("turnover", 0) > 0 for r in pol.history)
    # on b's steps a's critical elements cannot move
    allowed_b = pol.allowed_for("b")["w"]
    assert not allowed_b[5:8, 0].any() and allowed_b[:, 1].all()


def test_epi_replay_refreshes_finished_task_without_training():
    model = _Toy()
    replay = {"a": [_toy_batch(0, [3, 4])]}
    pol = iso.make_policy("epi", tasks=TASKS, isolation_ratio=0.1, mask_update_interval=2, warmup_steps=2,
                          beta=0.0, normalize="none", replay=replay)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sched = [("a", _toy_batch(0, [0, 1]))] + [("b", _toy_batch(1, [8, 9]))] * 7  # a finished after step 0
    hooked_steps(model, opt, sched, hooks=[pol])
    # a's EMA (beta 0 = last measurement) now comes from the replay batch: coords 3, 4
    assert pol.critical["a"]["w"][:, 0].nonzero().flatten().tolist() == [3, 4]
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_ewc_penalty_by_hand():
    model = _Toy()
    probe = {"a": [_toy_batch(0, [0])], "b": [_toy_batch(1, [9])]}
    pol = iso.make_policy("ewc", tasks=TASKS, isolation_ratio=0.0, probe_data=probe, ewc_lambda=2.0)
    state = types.SimpleNamespace(model=model, step=0, stage=0, named_params=dict(model.named_parameters()))
    pol.on_train_begin(state)
    # loss_a = (w00 - 10)^2, grad at w=1: -18 -> F = 324 at (0,0); same at (9,1); mean over 2 batches: 162
    f = pol.fisher[0]
    assert f[0, 0] == 162.0 and f[9, 1] == 162.0 and f.sum() == 324.0
    with torch.no_grad():
        model.w[0, 0] += 0.5
    # 0.5 * 2 * 162 * 0.25 = 40.5
    assert float(pol.extra_loss(state)) == pytest.approx(40.5)


def test_guard_fresh_optimizer_state_and_bad_masks():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.tensor([1.0, 1.0, 1.0])
    g = MaskedStepGuard()
    g.before_step(opt, {"p": p}, {"p": torch.tensor([True, False, True])})
    opt.step()
    g.after_step(opt)
    assert p[1] == 1.0 and p[0] != 1.0
    assert opt.state[p]["exp_avg"][1] == 0 and opt.state[p]["exp_avg_sq"][1] == 0
    other = torch.tensor([False, True, True])  # a different mask for the same parameter: no stale cached plan
    frozen0 = p[0].item()
    p.grad = torch.tensor([1.0, 1.0, 1.0])
    g.before_step(opt, {"p": p}, {"p": other})
    opt.step()
    g.after_step(opt)
    assert p[0] == frozen0 and p[1] != 1.0
    with pytest.raises(ValueError, match="shape"):
        g.before_step(opt, {"p": p}, {"p": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="policy must be one of"):
        iso.make_policy("magic", tasks=TASKS)
    with pytest.raises(ValueError, match="probe_data"):
        iso.make_policy("static_cpi", tasks=TASKS)
    pol = iso.make_policy("random_mask", tasks=TASKS, isolation_ratio=0.5)
    pol.set_critical({"a": {"p": torch.rand(3)}})
    with pytest.raises(ValueError, match="task-homogeneous"):
        pol.allowed_for(None)


# ----------------------------------------------------------------------------- stage boundaries, pinned sets
def _two_stages(model, opt, stage0, stage1, hooks):
    """``hooked_steps`` over two stages (``state.stage`` set, ``on_stage_begin`` at each start)."""
    named = dict(model.named_parameters())
    state = types.SimpleNamespace(model=model, optimizer=opt, step=0, stage=0, batch_task=None, batch=None,
                                  named_params=named)
    guard = MaskedStepGuard()
    for h in hooks:
        h.on_train_begin(state)
    for k, sched in enumerate((stage0, stage1)):
        state.stage = k
        for h in hooks:
            h.on_stage_begin(state)
        for task, batch in sched:
            state.batch_task, state.batch = task, batch
            opt.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for h in hooks:
                h.after_backward(state)
            masks = None
            for h in hooks:
                m = h.update_mask(state)
                if m is not None:
                    masks = m if masks is None else {n: masks[n] & m[n] for n in masks}
            guard.before_step(opt, named, masks)
            opt.step()
            guard.after_step(opt)
            state.step += 1
            for h in hooks:
                h.on_step_end(state)
    return state


def _rows(mask):
    return mask[:, 0].nonzero().flatten().tolist()


@pytest.mark.parametrize("name", ["cpi_after_stage", "importance_after_stage", "random_after_stage"])
def test_after_stage_masks_planted_and_pinned(name):
    """Stage 0 trains task a on coordinates 0-2; stage 1 trains b (column 1) and a conflicting copy
    of a under its own label, which moves every free element of column 0. The set measured at the
    end of stage 0 must be the planted one and must not move in stage 1."""
    model = _Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = {"a": [_toy_batch(0, [3, 4])], "b": [_toy_batch(1, [8])], "a~interference": [_toy_batch(0, [5])]}
    kw = dict(tasks=["a", "b", "a~interference"], isolation_ratio=0.15, normalize="none")
    if name == "importance_after_stage":
        kw["probe_data"] = probe
    pol = iso.make_policy(name, **kw)
    s0 = [("a", _toy_batch(0, [0, 1, 2]))] * 4
    s1 = [("b", _toy_batch(1, [8, 9])), ("a~interference", _toy_batch(0, list(range(10))))] * 3
    after0 = {}

    class Snap:
        def __getattr__(self, _):
            return lambda *a, **k: None

        def on_stage_begin(self, state):
            if state.stage == 1:
                after0["w"] = model.w.detach().clone()
    state = _two_stages(model, opt, s0, s1, [pol, Snap()])
    crit = pol.critical["a"]["w"]
    assert int(crit.sum()) == 3 and pol.pinned == {"a"}
    if name == "cpi_after_stage":      # the accumulated update of a lives in rows 0-2 of column 0
        assert _rows(crit) == [0, 1, 2]
    elif name == "importance_after_stage":  # |w * grad| on a's probe batch: rows 3, 4 (plus a zero-score tie)
        assert {3, 4} <= set(_rows(crit))
    assert torch.equal(model.w.detach()[crit], after0["w"][crit])           # protected all of stage 1
    assert not torch.equal(model.w.detach()[:, 0][~crit[:, 0]], after0["w"][:, 0][~crit[:, 0]])  # the rest moved
    assert state.step == 10


def test_pinned_set_wins_overlaps_and_is_not_recomputed():
    pol = iso.make_policy("random_mask", tasks=["a", "b"], isolation_ratio=0.5)
    pol.set_critical({"a": {"p": torch.tensor([4.0, 3.0, 0.0, 0.0])}, "b": {"p": torch.tensor([0.0, 1.0, 2.0, 0.0])}})
    assert pol.owner["p"].tolist() == [0, 0, 1, -1]          # overlap at 1 goes to the higher score (a: 3 > 1)
    pol.pin(["b"])
    pol.set_critical({"a": {"p": torch.tensor([0.0, 1.0, 9.0, 8.0])}, "b": {"p": torch.tensor([9.0, 9.0, 0.0, 0.0])}})
    # b is pinned: its set stays {1, 2} and owns the overlap at 2 although a scores 9 there
    assert pol.critical["b"]["p"].tolist() == [False, True, True, False]
    assert pol.owner["p"].tolist() == [-1, 1, 1, 0]
    with pytest.raises(ValueError, match="without a critical set"):
        pol.pin(["c"])


@pytest.mark.parametrize("finished", ["frozen", "replay", "ema"])
def test_epi_protection_of_a_finished_task(finished):
    """a trains on rows 0-2 in stage 0; its replay batch points at rows 3-4. Frozen keeps rows 0-2
    and they never move; replay re-estimates a from its replay data (rows 3-4 enter the set)."""
    model = _Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    name = {"frozen": "epi_frozen", "replay": "epi_replay", "ema": "epi"}[finished]
    pol = iso.make_policy(name, tasks=TASKS, isolation_ratio=0.15, mask_update_interval=2, warmup_steps=2,
                          beta=0.5, normalize="none", replay={"a": [_toy_batch(0, [3, 4])]})
    s0 = [("a", _toy_batch(0, [0, 1, 2]))] * 6
    s1 = [("b", _toy_batch(1, [8, 9]))] * 8
    _two_stages(model, opt, s0, s1, [pol])
    rows = _rows(pol.critical["a"]["w"])
    if finished == "frozen":
        assert rows == [0, 1, 2] and "a" in pol.pinned
    else:
        assert {3, 4} <= set(rows) and not pol.pinned
    with pytest.raises(ValueError, match="finished"):
        iso.make_policy("epi", tasks=TASKS, finished="sometimes")
    with pytest.raises(ValueError, match="replay"):
        iso.make_policy("epi_replay", tasks=TASKS)
