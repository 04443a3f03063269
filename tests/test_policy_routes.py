"""Every isolation policy behaves the same under the loop engine (the hook contract of train_sft,
also the DDP loop) and under transformers' Trainer (IsolationCallback): same model, data, optimizer,
two stages; the weights after a few steps agree (issue 12: EWC's extra_loss and on_stage_begin were
never called under the Trainer, so EWC trained there without its penalty)."""
import copy
import gc

import pytest
import torch

from epi_utils.isolation.distributed import hooked_steps, synthetic_task_batches, tiny_gpt2
from epi_utils.isolation.policies import make_policy, policy_names

TASKS = ["a", "b"]
BATCH, SEQ, STEPS_PER_STAGE = 4, 8, 4


def _schedule():
    """Two stages of task-homogeneous batches (a, b alternating), as (task, batch, stage)."""
    sched = synthetic_task_batches(vocab=64, n_steps=2 * STEPS_PER_STAGE, batch_size=BATCH, seq_len=SEQ, tasks=TASKS,
                                   seed=3)
    return [(t, b, k // STEPS_PER_STAGE) for k, (t, b) in enumerate(sched)]


def _probe():
    sched = synthetic_task_batches(vocab=64, n_steps=4, batch_size=2, seq_len=SEQ, tasks=TASKS, seed=7)
    return {t: [b for tt, b in sched if tt == t] for t in TASKS}


def _policy(name):
    kw = dict(tasks=TASKS, isolation_ratio=0.2)
    if name in ("epi", "epi_replay", "epi_frozen", "epi_warmup_frozen", "random_refresh"):
        kw.update(mask_update_interval=2, warmup_steps=2)
    if name == "frozen_cores":  # a fixed 20% of every tensor, frozen for both tasks
        g = torch.Generator().manual_seed(5)
        kw["cores"] = {n: torch.rand(p.shape, generator=g) < 0.2 for n, p in tiny_gpt2(seed=1, n_layer=1).named_parameters()}
    if name in ("static_grad", "static_cpi", "ewc", "importance_after_stage"):
        kw.update(probe_data=_probe())
    if name == "static_cpi":
        kw.update(probe_steps=2)
    if name == "epi_replay":
        kw.update(replay=_probe())
    if name == "ewc":
        kw.update(ewc_lambda=50.0, schedule="sequential")
    return make_policy(name, **kw)


def _optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)


def _engine_route(base, name):
    model = copy.deepcopy(base)
    torch.manual_seed(0)
    hooked_steps(model, _optimizer(model), _schedule(), hooks=[_policy(name)])
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _trainer_route(base, name, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    from epi_utils.isolation.callback import IsolationCallback, TaskRecordingCollator, sequential_trainer_class

    model = copy.deepcopy(base)
    opt = _optimizer(model)
    collator = TaskRecordingCollator(default_data_collator)
    callback = IsolationCallback(_policy(name), collator)
    sched = _schedule()
    for stage in range(2):  # one Trainer.train() per stage, the optimizer carried over
        rows = {"input_ids": [], "attention_mask": [], "labels": [], "task": []}
        for task, batch, k in sched:
            if k != stage:
                continue
            for i in range(BATCH):
                rows["input_ids"].append(batch["input_ids"][i].tolist())
                rows["attention_mask"].append(batch["attention_mask"][i].tolist())
                rows["labels"].append(batch["labels"][i].tolist())
                rows["task"].append(task)
        args = TrainingArguments(output_dir=str(tmp_path / f"s{stage}"), max_steps=STEPS_PER_STAGE,
                                 per_device_train_batch_size=BATCH, learning_rate=1e-2, lr_scheduler_type="constant",
                                 max_grad_norm=0.0, report_to=[], save_strategy="no", logging_strategy="no",
                                 use_cpu=True, remove_unused_columns=False, dataloader_num_workers=0,
                                 disable_tqdm=True, seed=0)
        trainer = sequential_trainer_class(Trainer)(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                                                    data_collator=collator, callbacks=[callback],
                                                    optimizers=(opt, None))
        trainer.model_accepts_loss_kwargs = False  # the plain mean loss, as the engine computes it
        torch.manual_seed(0)
        trainer.train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module", autouse=True)
def _heap_out_of_the_collectors_view():
    """Each ``Trainer.train()`` ends in accelerate's ``free_memory()``, a full ``gc.collect()`` that walks
    this process's whole heap (torch, transformers, datasets: measured 2/3 of the Trainer route's CPU, two
    per policy). ``gc.freeze()`` after importing them moves the objects alive now out of the collector's
    view, so each collection walks only what the tests create; the routes compute the same."""
    from datasets import Dataset  # noqa: F401
    from transformers import Trainer  # noqa: F401

    from epi_utils.isolation import callback  # noqa: F401

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def base():
    return tiny_gpt2(seed=1, n_layer=1)


@pytest.fixture(scope="module")
def full_sft(base):
    return _engine_route(base, "full_sft")


@pytest.mark.parametrize("name", policy_names())
def test_every_policy_gives_the_same_weights_under_the_engine_and_the_trainer(name, base, full_sft, tmp_path):
    engine = _engine_route(base, name)
    trainer = _trainer_route(base, name, tmp_path)
    worst = max(float((engine[n] - trainer[n]).abs().max()) for n in engine)
    assert worst < 1e-5, f"{name}: the two routes differ by up to {worst:.3g}"
    if name != "full_sft":  # the policy acted on both routes (not a no-op that trivially agrees)
        moved = max(float((engine[n] - full_sft[n]).abs().max()) for n in engine)
        assert moved > 1e-4, f"{name}: no different from full SFT ({moved:.3g})"
