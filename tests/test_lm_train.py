"""SFT engine: masked AdamW bit-exactness, hooks, dynamics records, checkpoint/resume, determinism."""
import copy
import json

import pytest
import torch

from epi_utils.lm.masked_adamw import MaskedAdamW
from epi_utils.lm.train import TrainConfig, TrainHook, format_example, train_sft

DYN_FIELDS = {"sample_id", "task", "stage", "train_stage", "step", "epoch", "loss", "mean_token_prob", "exact_match"}


def test_masked_adamw_keeps_masked_elements_bit_identical():
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, 5, generator=g))
    q = torch.nn.Parameter(torch.randn(4, generator=g))
    opt = MaskedAdamW({"p": p, "q": q}, lr=0.1, weight_decay=0.5)
    mask = torch.rand(6, 5, generator=g) > 0.5
    for step in range(6):
        p.grad = torch.randn(6, 5, generator=g)
        q.grad = torch.randn(4, generator=g)
        before = p.detach().clone()
        st = opt.state.get(p, {})
        m0 = st["exp_avg"].clone() if st else torch.zeros_like(p)
        v0 = st["exp_avg_sq"].clone() if st else torch.zeros_like(p)
        q0 = q.detach().clone()
        opt.step({"p": mask, "q": torch.zeros(4, dtype=torch.bool)})
        assert torch.equal(p.detach()[~mask], before[~mask])          # no gradient step, no weight decay
        assert torch.equal(opt.state[p]["exp_avg"][~mask], m0[~mask])  # moments frozen
        assert torch.equal(opt.state[p]["exp_avg_sq"][~mask], v0[~mask])
        assert not torch.equal(p.detach()[mask], before[mask])        # the rest moves
        assert torch.equal(q.detach(), q0) and q not in opt.state     # fully masked: untouched
    assert torch.equal(opt.state[p]["exp_avg"][~mask], torch.zeros(int((~mask).sum())))


def test_masked_adamw_without_mask_equals_torch_adamw():
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.randn(7, 3))
    b = torch.nn.Parameter(a.detach().clone())
    ours = MaskedAdamW({"a": a}, lr=0.01, weight_decay=0.1, betas=(0.9, 0.99))
    ref = torch.optim.AdamW([b], lr=0.01, weight_decay=0.1, betas=(0.9, 0.99))
    for _ in range(5):
        grad = torch.randn(7, 3)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


class FreezeHook(TrainHook):
    """Freeze the first block entirely and every other row of the token embedding."""

    def __init__(self):
        self.calls = {"after_backward": 0, "on_step_end": 0, "on_stage_begin": 0, "on_evaluate": 0}
        self.grad_seen = False

    def update_mask(self, state):
        masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in state.named_params.items() if ".h.0." in n}
        wte = state.named_params["transformer.wte.weight"]
        m = torch.ones_like(wte, dtype=torch.bool)
        m[::2] = False
        masks["transformer.wte.weight"] = m
        return masks

    def after_backward(self, state):
        self.calls["after_backward"] += 1
        self.grad_seen |= any(p.grad is not None for p in state.named_params.values())

    def on_step_end(self, state):
        self.calls["on_step_end"] += 1

    def on_stage_begin(self, state):
        self.calls["on_stage_begin"] += 1

    def on_evaluate(self, state, records):
        self.calls["on_evaluate"] += 1


def test_update_mask_freezes_parameters_through_sft(fresh_tiny, small_world):
    model, tok = fresh_tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hook = FreezeHook()
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, batch_size=8, max_steps=3, eval_every=0, eval_train=False)
    res = train_sft(model, tok, small_world.stages(), config=cfg, hooks=[hook], progress=False)
    assert res.steps == 6 and [h["stage"] for h in res.history] == [0, 0, 0, 1, 1, 1]
    assert hook.calls["after_backward"] == hook.calls["on_step_end"] == 6 and hook.calls["on_stage_begin"] == 2
    assert hook.grad_seen
    after = dict(model.named_parameters())
    for n, p in before.items():
        if ".h.0." in n:
            assert torch.equal(after[n].detach(), p), n
    wte = after["transformer.wte.weight"].detach()
    assert torch.equal(wte[::2], before["transformer.wte.weight"][::2])
    assert not torch.equal(wte[1::2], before["transformer.wte.weight"][1::2])
    assert not torch.equal(after["transformer.h.1.mlp.c_fc.weight"].detach(), before["transformer.h.1.mlp.c_fc.weight"])


def test_task_homogeneous_batches(fresh_tiny, small_world):
    model, tok = fresh_tiny
    seen = []

    class Rec(TrainHook):
        def after_backward(self, state):
            ids = state.batch["step_sample_ids"]
            seen.append((state.batch_task, {i.split("/")[0] for i in ids}))

    cfg = TrainConfig(batch_size=4, grad_accum=2, max_steps=4, eval_every=0, eval_train=False)
    train_sft(model, tok, small_world.mixed(), config=cfg, hooks=[Rec()], progress=False)
    assert len(seen) == 4 and all(tasks == {task} for task, tasks in seen)


def test_stop_flag_ends_training_and_still_runs_end_hooks(fresh_tiny, small_world):
    """A hook stops training by setting ``state.should_stop`` (no exception): the loop ends after that
    step, and every hook's ``on_train_end`` runs -- an exception raised out of a hook skipped them."""
    model, tok = fresh_tiny
    ended = []

    class StopAt(TrainHook):
        def on_step_end(self, state):
            if state.step == 3:
                state.should_stop = True

    class End(TrainHook):
        def on_train_end(self, state):
            ended.append(state.step)

    cfg = TrainConfig(batch_size=4, max_steps=8, eval_every=0, eval_train=False)
    out = train_sft(model, tok, small_world.mixed(), config=cfg, hooks=[StopAt(), End()], progress=False)
    assert out.steps == 3 and len(out.history) == 3 and out.stopped_early
    assert ended == [3]
    full = train_sft(copy.deepcopy(model), tok, small_world.mixed(), config=cfg, progress=False)
    assert full.steps == 8 and not full.stopped_early


def _params(model):
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


class Crash(TrainHook):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, state):
        if state.step == self.at:
            raise KeyboardInterrupt("simulated kill")


def test_resume_reproduces_uninterrupted_run(small_tiny, small_world, tmp_path):
    base, tok = small_tiny
    stages = small_world.stages()
    cfg = dict(lr=3e-3, batch_size=8, max_steps=3, eval_every=2, checkpoint_every=2, seed=5)
    m_a = copy.deepcopy(base)
    res_a = train_sft(m_a, tok, stages, config=TrainConfig(checkpoint_dir=tmp_path / "a", **cfg),
                      dynamics_path=tmp_path / "a.jsonl", eval_samples=small_world.split("heldout"), progress=False)
    m_b = copy.deepcopy(base)
    with pytest.raises(KeyboardInterrupt):
        train_sft(m_b, tok, stages, config=TrainConfig(checkpoint_dir=tmp_path / "b", **cfg), hooks=[Crash(5)],
                  dynamics_path=tmp_path / "b.jsonl", eval_samples=small_world.split("heldout"), progress=False)
    m_b = copy.deepcopy(base)   # a restarted process starts from the pretrained model again
    res_b = train_sft(m_b, tok, stages, config=TrainConfig(checkpoint_dir=tmp_path / "b", **cfg),
                      dynamics_path=tmp_path / "b.jsonl", eval_samples=small_world.split("heldout"), progress=False)
    pa, pb = _params(m_a), _params(m_b)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert res_a.history == res_b.history and res_a.stage_end_eval == res_b.stage_end_eval
    lines_a = (tmp_path / "a.jsonl").read_text().splitlines()
    assert lines_a == (tmp_path / "b.jsonl").read_text().splitlines()
    # dynamics: one line per training sample per evaluation point (steps 0, 2, 3 = end of stage 0, 4, 6)
    recs = [json.loads(ln) for ln in lines_a]
    n_train = sum(map(len, stages))
    assert len(recs) == 5 * n_train and set(recs[0]) == DYN_FIELDS
    assert sorted({r["step"] for r in recs}) == [0, 2, 3, 4, 6]
    assert {r["train_stage"] for r in recs if r["step"] == 4} == {1}
    assert all(0 <= r["mean_token_prob"] <= 1 and r["exact_match"] in (0, 1) for r in recs)
    assert len(res_a.stage_end_eval) == 2 and set(res_a.stage_end_eval[0]) == set(small_world.config.tasks)
    assert len(res_a.final_train_exact) == n_train


def test_format_and_bad_config(small_tiny, small_world):
    _, tok = small_tiny
    assert format_example(tok, "compute 1 plus 2", "3") == "compute 1 plus 2 <sep> 3<eos>"
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="step").validate()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0).validate()
    with pytest.raises(ValueError, match="stages must be a non-empty list"):
        train_sft(small_tiny[0], tok, [], config=TrainConfig(), progress=False)


def test_masked_adamw_zero_masked_grads_and_changing_masks():
    p = torch.nn.Parameter(torch.ones(5))
    opt = MaskedAdamW({"p": p}, lr=0.1, weight_decay=0.0)
    first, second = torch.tensor([True, False, True, True, False]), torch.tensor([False, True, True, True, True])
    p.grad = torch.tensor([1.0, -2.0, 3.0, 4.0, -5.0])
    opt.zero_masked_grads({"p": first})
    assert p.grad.tolist() == [1.0, 0.0, 3.0, 4.0, 0.0]
    opt.step({"p": first})
    after_first = p.detach().clone()
    assert after_first[1] == 1.0 and after_first[4] == 1.0 and after_first[0] != 1.0
    p.grad = torch.ones(5)
    opt.step({"p": second})  # a new mask tensor: the cached positions must not be reused
    assert p[0] == after_first[0] and p[1] != 1.0
    with pytest.raises(ValueError, match="bool tensor"):
        opt.zero_masked_grads({"p": torch.ones(5)})
    with pytest.raises(KeyError, match="not among"):
        opt.zero_masked_grads({"q": first})


class _Planted:
    """Unpickling this runs ``Path.touch`` on a marker file (what a malicious checkpoint could do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_resume_loads_weights_only_and_never_runs_pickled_code(small_tiny, small_world, tmp_path):
    base, tok = small_tiny
    marker = tmp_path / "code_ran"
    (tmp_path / "ck").mkdir()
    torch.save({"model": base.state_dict(), "optimizer": {}, "step": 0, "history": [], "stage_end_eval": [],
                "rng": {"planted": _Planted(str(marker))}}, tmp_path / "ck" / "last.pt")
    cfg = TrainConfig(lr=3e-3, batch_size=8, max_steps=1, checkpoint_every=1, seed=5, checkpoint_dir=tmp_path / "ck",
                      resume=True)
    with pytest.raises(ValueError, match="cannot be resumed"):
        train_sft(copy.deepcopy(base), tok, small_world.stages(), config=cfg, progress=False)
    assert not marker.exists()
    # what the engine writes loads with weights_only=True: tensors, and the rest as JSON
    cfg = TrainConfig(lr=3e-3, batch_size=8, max_steps=1, checkpoint_every=1, seed=5, checkpoint_dir=tmp_path / "ok",
                      eval_train=False)
    train_sft(copy.deepcopy(base), tok, small_world.stages(), config=cfg, progress=False)
    raw = torch.load(tmp_path / "ok" / "last.pt", weights_only=True)
    meta = json.loads(bytes(raw["meta_json"].tolist()).decode())
    assert meta["step"] == 2 and len(meta["history"]) == 2 and set(raw) == {"model", "optimizer", "rng_torch", "meta_json"}
