"""IsolationCallback inside transformers.Trainer and TRL's SFTTrainer: masked elements bit-identical."""
import pytest
import torch

from epi_utils.isolation.callback import (
    IsolationCallback,
    TaskRecordingCollator,
    sequential_trainer_class,
    task_homogeneous_order,
)
from epi_utils.isolation.policies import make_policy

TASKS = ["a", "b"]



def _dataset(n=32, seq=8, seed=0):
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "task": []}
    for i in range(n):
        k = i % 2
        ids = torch.randint(4 + 20 * k, 24 + 20 * k, (seq,), generator=g).tolist()
        rows["input_ids"].append(ids)
        rows["attention_mask"].append([1] * seq)
        rows["labels"].append(ids)
        rows["task"].append(TASKS[k])
    ds = Dataset.from_dict(rows)
    return ds.select(task_homogeneous_order(rows["task"], batch_size=4, seed=seed))


def _checker():
    from transformers import TrainerCallback

    class BitCheck(TrainerCallback):
        """Placed after IsolationCallback: snapshot frozen elements, compare after the restore."""

        def __init__(self, iso_cb):
            self.iso_cb, self.checked, self.steps, self.tasks = iso_cb, 0, 0, []

        def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kw):
            self.masks = self.iso_cb.policy.update_mask(self.iso_cb.state)
            self.snap = {n: p.detach().clone() for n, p in model.named_parameters()}
            self.opt_snap = {n: {k: v.clone() for k, v in optimizer.state.get(p, {}).items() if torch.is_tensor(v)
                                 and v.shape == p.shape} for n, p in model.named_parameters()}

        def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kw):
            self.steps += 1
            self.tasks.append(self.iso_cb.state.batch_task)
            if self.masks is None:
                return
            for n, p in model.named_parameters():
                frozen = ~self.masks[n]
                assert torch.equal(p.detach()[frozen], self.snap[n][frozen]), n
                for k, v in optimizer.state[p].items():
                    if torch.is_tensor(v) and v.shape == p.shape:
                        prev = self.opt_snap[n].get(k)
                        assert torch.equal(v[frozen], prev[frozen] if prev is not None else v[frozen] * 0), (n, k)
                self.checked += int(frozen.sum())

    return BitCheck


def _args(tmp_path, cls=None):
    from transformers import TrainingArguments

    cls = cls or TrainingArguments
    return cls(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4, learning_rate=1e-2,
               weight_decay=0.5, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
               remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True)


def test_trainer_callback_freezes_bit_exactly(tmp_path):
    from transformers import Trainer, default_data_collator

    from epi_utils.isolation.distributed import tiny_gpt2

    model = tiny_gpt2(seed=0)
    policy = make_policy("epi", tasks=TASKS, isolation_ratio=0.2, mask_update_interval=2, warmup_steps=2)
    collator = TaskRecordingCollator(default_data_collator)
    cb = IsolationCallback(policy, collator)
    check = _checker()(cb)
    ds = _dataset()
    trainer = sequential_trainer_class(Trainer)(model=model, args=_args(tmp_path), train_dataset=ds,
                                                data_collator=collator, callbacks=[cb, check])
    trainer.train()
    assert check.steps == 6 and check.checked > 0
    assert check.tasks == [ds["task"][4 * i] for i in range(6)]  # each step got its own batch's task
    assert policy.n_mask_updates >= 2 and sum(cb.frozen_counts) > 0


def test_sft_trainer_callback(tmp_path):
    trl = pytest.importorskip("trl")
    from transformers import default_data_collator

    from epi_utils.isolation.distributed import tiny_gpt2
    from epi_utils.lm.models import build_word_tokenizer

    tok = build_word_tokenizer([f"w{i}" for i in range(60)])
    model = tiny_gpt2(vocab=len(tok), seed=0)
    policy = make_policy("random_mask", tasks=TASKS, isolation_ratio=0.3, seed=1)
    collator = TaskRecordingCollator(default_data_collator)
    cb = IsolationCallback(policy, collator)
    check = _checker()(cb)
    args = _args(tmp_path, trl.SFTConfig)
    trainer = sequential_trainer_class(trl.SFTTrainer)(model=model, args=args, train_dataset=_dataset(),
                                                       processing_class=tok, data_collator=collator,
                                                       callbacks=[cb, check])
    trainer.train()
    assert check.steps == 6 and check.checked > 0


def test_task_homogeneous_order_chunks_per_world_size():
    tasks = ["a"] * 20 + ["b"] * 13 + ["c"] * 9
    order = task_homogeneous_order(tasks, batch_size=2, world_size=2, seed=3)
    assert len(order) == 20 + 12 + 8 and len(set(order)) == len(order)  # incomplete chunks of 4 dropped
    for s in range(0, len(order), 4):  # every 2 processes x 2 examples: one task
        assert len({tasks[i] for i in order[s:s + 4]}) == 1
    with pytest.raises(ValueError, match="world_size"):
        task_homogeneous_order(tasks, batch_size=2, world_size=0)
