"""Targeted mitigations of incomplete learning as causal interventions, with compute-matched controls.

Every intervention continues training the fine-tuned model for exactly ``steps`` optimizer steps
of ``batch_size`` rows (:func:`continue_training`). A *fix* arm fills a share ``fix_share`` of
each batch with its cause-specific *focus* rows and the rest with rows of the (possibly cleaned)
SFT training set; the *control* arm uses the same number of steps and rows, all drawn uniformly
from the original SFT training set. The difference in recovery rate
(:mod:`epi_utils.ilp.recovery`) is then the effect of the targeting, not of extra compute.

Fixes, one per cause of the ILP taxonomy (ILP study, 2026):

``missing_knowledge``  knowledge injection: continued *pretraining* (next-token loss on the whole
                       sentence) on each diagnosed sample written as a statement, prompt followed
                       by its target (for a cloze prompt, the corpus' own form of the fact).
``conflict``           conflict resolution by knowledge update: the same, so that the model's
                       parametric knowledge agrees with the supervision.
``inconsistency``      majority relabelling: every group of same-stage duplicate prompts gets the
                       group's majority target (ties: first occurrence); focus = the relabelled
                       groups. Recovery is measured against the relabelled target in both arms.
``forgetting``         replay: the forgotten earlier-stage samples plus a random buffer of
                       earlier-stage samples (``replay_buffer`` rows).
``rare_complex``       up-sampling: the rare/complex samples themselves.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from epi_utils.ilp.diagnosis import CAUSES
from epi_utils.ilp.records import RecoveryRecord
from epi_utils.lm.sft_format import encode_example, pad_batch, pad_id

ARMS = ("fix", "focused", "control")  # per cause, in the order of a world's records (:func:`arm_order`)


@dataclass(frozen=True)
class InterventionConfig:
    """Extra training of every arm (validated)."""
    steps: int = 60             # optimizer steps per arm (the compute budget, equal for fix and control)
    batch_size: int = 16        # rows per step
    lr: float = 5e-4            # constant AdamW learning rate
    weight_decay: float = 0.0
    fix_share: float = 0.5      # share of each fix batch drawn from the focus rows
    replay_buffer: int = 32     # extra random earlier-stage samples in the forgetting fix

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"InterventionConfig.steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if not 0.0 < self.fix_share <= 1.0:
            raise ValueError(f"InterventionConfig.fix_share must be in (0, 1], got {self.fix_share}")
        if self.lr <= 0:
            raise ValueError(f"InterventionConfig.lr must be > 0, got {self.lr}")
        if self.replay_buffer < 0:
            raise ValueError(f"InterventionConfig.replay_buffer must be >= 0, got {self.replay_buffer}")


@dataclass
class FixPlan:
    """What one fix trains on and how its recovery is judged.

    ``focus``: rows ``("sft", prompt, response)`` or ``("lm", sentence, None)``; ``train``: the
    SFT rows the rest of each batch is drawn from; ``targets``: sample id -> the target recovery
    is measured against (the original target except for relabelled samples)."""
    cause: str
    focus: list[tuple] = field(default_factory=list)
    train: list[tuple] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)


def statements(samples: Sequence) -> list[tuple]:
    """Language-model rows stating each sample as running text: ``prompt + " " + response + " ."``."""
    return [("lm", f"{s.prompt} {s.response} .", None) for s in samples]


def plan_fix(cause: str, *, train_samples: Sequence, table: pd.DataFrame, diagnosis: pd.DataFrame,
             config: InterventionConfig, rng: np.random.Generator) -> FixPlan:
    """The fix for ``cause`` applied to the samples diagnosed with it (``diagnosis['diagnosis']``).

    ``table``: the per-sample signal table (index ``sample_id``; needs ``incons_majority_target``
    and ``stage``). Returns a :class:`FixPlan` (empty ``targets`` when nothing was diagnosed)."""
    if cause not in CAUSES:
        raise ValueError(f"cause must be one of {CAUSES}, got {cause!r}")
    by_id = {s.id: s for s in train_samples}
    ids = [i for i in diagnosis.index[diagnosis["diagnosis"] == cause] if i in by_id]
    chosen = [by_id[i] for i in ids]
    train = [("sft", s.prompt, s.response) for s in train_samples]
    plan = FixPlan(cause=cause, train=train, targets={s.id: s.response for s in chosen})
    if not chosen:
        return plan
    if cause in ("missing_knowledge", "conflict"):
        plan.focus = statements(chosen)
    elif cause == "inconsistency":
        relabel = _majority_relabel(train_samples, table)
        plan.train = [("sft", s.prompt, relabel.get(s.id, s.response)) for s in train_samples]
        groups = set(table.loc[ids, "incons_group_key"]) if "incons_group_key" in table else set()
        members = [s for s in train_samples if s.id in relabel and
                   (not groups or table.loc[s.id, "incons_group_key"] in groups)]
        plan.focus = [("sft", s.prompt, relabel[s.id]) for s in (members or chosen)]
        plan.targets = {s.id: relabel.get(s.id, s.response) for s in chosen}
    elif cause == "forgetting":
        last = max(s.stage for s in train_samples)
        early = [s for s in train_samples if s.stage < last and s.id not in plan.targets]
        pick = rng.choice(len(early), size=min(config.replay_buffer, len(early)), replace=False) if early else []
        plan.focus = [("sft", s.prompt, s.response) for s in chosen] + \
                     [("sft", early[int(i)].prompt, early[int(i)].response) for i in pick]
    else:  # rare_complex
        plan.focus = [("sft", s.prompt, s.response) for s in chosen]
    return plan


def _majority_relabel(train_samples: Sequence, table: pd.DataFrame) -> dict[str, str]:
    """sample id -> majority target for every sample in an inconsistent duplicate group.

    The majority is taken over the *original* (un-normalised) responses of the group, ties broken
    by the first occurrence; samples already carrying it are included (they are focus rows)."""
    flagged = set(table.index[table["incons_flag"].astype(bool)]) if "incons_flag" in table else set()
    if not flagged:
        return {}
    key = table["incons_group_key"] if "incons_group_key" in table else \
        table["task"].astype(str) + "|" + table["stage"].astype(str) + "|" + table["prompt"].str.strip().str.lower()
    groups: dict[str, list] = {}
    for s in train_samples:
        if s.id in flagged:
            groups.setdefault(key[s.id], []).append(s)
    out = {}
    for members in groups.values():
        counts: dict[str, int] = {}
        for s in members:
            counts[s.response] = counts.get(s.response, 0) + 1
        best = max(counts, key=lambda r: (counts[r], -[m.response for m in members].index(r)))
        out.update({s.id: best for s in members})
    return out


# --------------------------------------------------------------------------- training loop
def _encode(tokenizer, row: tuple) -> tuple[list[int], list[int]]:
    kind, text, response = row
    if kind == "sft":
        return encode_example(tokenizer, text, response)
    if kind == "lm":
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return ids, list(ids)
    raise ValueError(f"row kind must be 'sft' or 'lm', got {kind!r}")


def continue_training(model, tokenizer, *, focus: Sequence[tuple], train: Sequence[tuple], config: InterventionConfig,
                      fix_share: float | None, rng: np.random.Generator) -> list[float]:
    """``config.steps`` AdamW steps on batches of ``config.batch_size`` rows; returns the losses.

    ``fix_share`` rows of each batch (rounded, at least 1 when focus rows exist) come from
    ``focus`` (with replacement), the rest from ``train``; ``fix_share=None`` or no focus rows:
    all rows from ``train`` (the compute-matched control). Mean token loss over the labelled
    tokens (response + EOS for SFT rows, every token for ``lm`` rows)."""
    if not train:
        raise ValueError("continue_training: no training rows")
    dev = next(model.parameters()).device
    enc_train = [_encode(tokenizer, r) for r in train]
    enc_focus = [_encode(tokenizer, r) for r in focus]
    n_focus = 0
    if fix_share is not None and enc_focus:
        n_focus = max(1, int(round(fix_share * config.batch_size)))
    # foreach: the same values as the per-tensor loop (bit for bit, checked on a 40-step arm), ~5% faster
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                            weight_decay=config.weight_decay, foreach=True)
    pad = pad_id(tokenizer)
    model.train()
    losses = []
    for _ in range(config.steps):
        rows = [enc_focus[int(i)] for i in rng.integers(len(enc_focus), size=n_focus)] if n_focus else []
        rows += [enc_train[int(i)] for i in rng.integers(len(enc_train), size=config.batch_size - n_focus)]
        batch = {k: v.to(dev) for k, v in pad_batch(rows, pad_token_id=pad).items()}
        out = model(**batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(out.loss.detach()))
    model.eval()
    return losses


def run_arm(model, tokenizer, *, plan: FixPlan | None, train_samples: Sequence, config: InterventionConfig,
            rng: np.random.Generator) -> tuple[object, list[float]]:
    """Copy ``model`` and train one arm: the fix of ``plan``, or (``plan=None``) the control."""
    arm_model = copy.deepcopy(model)
    if plan is None:
        train = [("sft", s.prompt, s.response) for s in train_samples]
        losses = continue_training(arm_model, tokenizer, focus=[], train=train, config=config, fix_share=None, rng=rng)
    else:
        losses = continue_training(arm_model, tokenizer, focus=plan.focus, train=plan.train, config=config,
                                   fix_share=config.fix_share, rng=rng)
    return arm_model, losses


# --------------------------------------------------------------------------- one world's arms
def world_parts(table: pd.DataFrame) -> list[str]:
    """The independent parts of one world's mitigations: ``"control"`` (the uniform control, judged on
    every cause's targets) and each cause diagnosed in ``table`` (its fix and focused arms), in
    :data:`CAUSES` order."""
    diagnosed = set(table["diagnosis"].dropna())
    return ["control"] + [c for c in CAUSES if c in diagnosed]


def arm_order(record: RecoveryRecord) -> tuple[int, int]:
    """Sort key that puts one world's records in :func:`world_arms`' order: per cause (in
    :data:`CAUSES` order) fix, focused, control."""
    return CAUSES.index(record.cause), ARMS.index(record.arm)


def world_arms(cfg, *, seed: int, model, tokenizer, train: Sequence, heldout: Sequence, table: pd.DataFrame,
               part: str | None = None) -> list[RecoveryRecord]:
    """Every fix with diagnosed samples against two compute-matched controls (same steps, batch size
    and learning rate): the *focused* control trains the same diagnosed samples, with their own SFT
    targets, in the same share of every batch but without the cause-specific change (no statement
    form, no relabelling, no replay buffer); the *uniform* control (``"control"``, shared by the
    causes) draws every row uniformly from the SFT data. ``rare_complex``'s fix (up-sampling) is
    focused training itself, so it has no focused arm. Inconsistency is judged against the correct
    answer of each duplicated prompt (the generator's, which no arm sees), not the fix's relabelling.

    ``cfg``: the study's :class:`~epi_utils.ilp.config.Config` (its ``mit_*`` options). ``part``: one
    of :func:`world_parts` (only those arms' records), or None (all, in :func:`arm_order`). Every arm
    has its own generator (``[seed, 99]`` the control, ``[seed, 37, i]`` / ``[seed, 41, i]`` the fix /
    focused arm of the ``i``-th diagnosed cause), so the parts give the same records in any process and order."""
    from epi_utils.lm.evaluate import exact_match

    if part is not None and part != "control" and part not in CAUSES:
        raise ValueError(f"part must be 'control', one of {CAUSES} or None, got {part!r}")
    icfg = InterventionConfig(steps=cfg.mit_steps, batch_size=cfg.mit_batch_size, lr=cfg.mit_lr,
                              fix_share=cfg.mit_fix_share, replay_buffer=cfg.mit_replay_buffer)
    by_id = {s.id: s for s in train}
    diag = table.loc[table["diagnosis"].notna(), ["diagnosis"]]

    def judge(m, targets) -> float:
        probe_samples = [dataclasses.replace(by_id[i], response=r) for i, r in targets.items()]
        return float(exact_match(m, tokenizer, probe_samples).mean())

    def held(m) -> float:
        return float(exact_match(m, tokenizer, heldout).mean()) if heldout else float("nan")

    plans = {c: plan_fix(c, train_samples=train, table=table, diagnosis=diag, config=icfg,
                         rng=np.random.default_rng([seed, 31, i])) for i, c in enumerate(CAUSES)}
    plans = {c: p for c, p in plans.items() if p.targets}

    def targets_of(cause: str) -> dict[str, str]:
        targets = dict(plans[cause].targets)
        if cause == "inconsistency":
            targets = {k: (by_id[k].true_response or v) for k, v in targets.items()}
        return targets

    out = []
    if part in (None, "control") and plans:
        control, _ = run_arm(model, tokenizer, plan=None, train_samples=train, config=icfg,
                             rng=np.random.default_rng([seed, 99]))
        control_held = held(control)
        for cause in plans:
            targets = targets_of(cause)
            out.append(RecoveryRecord(seed, cause, "control", len(targets), judge(control, targets), control_held))
        del control
    for i, (cause, plan) in enumerate(plans.items()):   # i: the cause's place among the diagnosed ones
        if part not in (None, cause):
            continue
        targets = targets_of(cause)
        fixed, _ = run_arm(model, tokenizer, plan=plan, train_samples=train, config=icfg,
                           rng=np.random.default_rng([seed, 37, i]))
        out.append(RecoveryRecord(seed, cause, "fix", len(targets), judge(fixed, targets), held(fixed)))
        del fixed
        if cause != "rare_complex":
            focus = FixPlan(cause=cause, focus=[("sft", by_id[k].prompt, by_id[k].response) for k in plan.targets],
                            train=[("sft", s.prompt, s.response) for s in train], targets=targets)
            focused, _ = run_arm(model, tokenizer, plan=focus, train_samples=train, config=icfg,
                                 rng=np.random.default_rng([seed, 41, i]))
            out.append(RecoveryRecord(seed, cause, "focused", len(targets), judge(focused, targets), held(focused)))
            del focused
    return sorted(out, key=arm_order)
