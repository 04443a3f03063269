"""Study 02's two checks beside the mixed design (issue 26): can the protected share carry a task, and
what does plain EPI do to forgetting in the sequential (two-stage) design.

- **Capacity** (:func:`.mixed.capacity_runs` runs it, :func:`capacity_table`): on a seed, one model per task is trained
  from the pretrained model on its task alone (``steps_per_stage / n_tasks`` steps: the ceiling's
  models, at its tuned learning rate); each task's critical set at ratio ``r`` is CPI-FT's core region
  (the top ``r`` of layer-mean-normalised ``|theta_t - theta_0|``, :func:`.mixed.core_regions`). Then a
  fresh copy of the pretrained model is trained on that task alone for the same steps with ONLY that
  set trainable (every other element frozen, policy ``frozen_cores``). Its test score next to the
  all-parameters model of the same seed says whether a share of ``r`` can hold a task: if it cannot,
  protecting ``r`` cannot protect the task either. Beside it: the floor (the pretrained model, untrained)
  and a control, a random set of the same size trainable (the critical set shuffled over all elements):
  a critical set that does no better than a random one of its size is not what carries the task.
- **Forgetting** (:func:`forgetting_run`, :func:`forgetting_tables`): the earlier two-stage design
  (stage 0 = the first half of the tasks, stage 1 = the rest; :mod:`.study`) with plain ``epi`` and
  ``epi_frozen`` (its stage-0 set pinned in stage 1) at the grid's ratios, beside full SFT, one model
  per stage and replay; each arm at the mixed design's tuned settings, half the steps per stage (the
  same total steps). Learned, retained, forgetting and plasticity per arm, paired over seeds.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from epi_utils.isolation_study.config import Config
from epi_utils.workbench import stats

UNIT = "seeds"


def capacity_table(records: Sequence, tasks: Sequence[str]):
    """Per ratio and task (and ``mean``): the score of the model with only the task's critical set
    trainable, the all-parameters model's score on the same seeds and their paired difference with its
    95% t-interval over seeds, ``share_kept`` = share-only mean / all-parameters mean, the floor
    (``base_model``: the pretrained model untrained) and the control (``random_set``: a random set of
    the same size trainable) with the paired difference critical - random (``diff_random``)."""
    import pandas as pd

    cols = ["ratio", "task", "share_only", "share_only_low", "share_only_high", "random_set", "diff_random",
            "diff_random_low", "diff_random_high", "all_parameters", "base_model", "diff", "diff_low", "diff_high",
            "share_kept", "n", "unit"]
    caps = [r for r in records if r.arm in ("capacity", "capacity_random") and not r.tuning]
    if not [r for r in caps if r.arm == "capacity"]:
        return pd.DataFrame(columns=cols)
    per: dict[tuple[str, float, str], dict[int, float]] = {}
    for r in caps:
        for t in tasks:
            per.setdefault((r.arm, r.ratio, t), {})[r.seed] = r.test.get(t, np.nan)
        per.setdefault((r.arm, r.ratio, "mean"), {})[r.seed] = float(np.mean([r.test[t] for t in tasks]))

    def paired(a: dict, b: dict, b_name: str):
        seeds = sorted(set(a) & set(b))
        if len(seeds) < 2:
            return None
        return stats.compare({s: a[s] for s in seeds}, {s: b[s] for s in seeds}, unit=UNIT, metric="score",
                             a_name="critical set only", b_name=b_name)

    rows = []
    keys = sorted((k for k in per if k[0] == "capacity" and k[1] not in (0.0, 1.0)), key=lambda k: (k[1], k[2] == "mean"))
    for _, ratio, task in keys:
        by_seed, ref = per[("capacity", ratio, task)], per.get(("capacity", 1.0, task), {})
        c = paired(by_seed, ref, "all parameters")
        if c is None:
            continue
        iv = stats.interval([by_seed[s] for s in sorted(set(by_seed) & set(ref))], unit=UNIT, bounds=(0.0, 1.0))
        rnd = paired(by_seed, per.get(("capacity_random", ratio, task), {}), "random set")
        floor = per.get(("capacity", 0.0, task), {})
        nan3 = (np.nan, np.nan, np.nan)
        dr = (rnd.diff.mean, rnd.diff.low, rnd.diff.high) if rnd is not None else nan3
        rows.append({"ratio": ratio, "task": task, "share_only": iv.mean, "share_only_low": iv.low,
                     "share_only_high": iv.high, "random_set": rnd.b_mean if rnd is not None else np.nan,
                     "diff_random": dr[0], "diff_random_low": dr[1], "diff_random_high": dr[2],
                     "all_parameters": c.b_mean, "base_model": float(np.mean(list(floor.values()))) if floor else np.nan,
                     "diff": c.diff.mean, "diff_low": c.diff.low, "diff_high": c.diff.high,
                     "share_kept": c.a_mean / c.b_mean if c.b_mean > 0 else np.nan, "n": c.diff.n, "unit": UNIT})
    return pd.DataFrame(rows, columns=cols)


def forgetting_config(cfg: Config, hp: dict[str, dict], *, n_seeds: int) -> Config:
    """The two-stage configuration of the forgetting table: ``cfg``'s tasks, ratios and seeds (the first
    ``n_seeds``), plain ``epi`` and ``epi_frozen`` at EPI's tuned lr / interval / warmup, full SFT, one
    model per stage and replay at full SFT's tuned lr, ``steps_per_stage / 2`` steps per stage."""
    epi = hp.get("epi", {})
    return cfg.replace(design="two_stage", n_seeds=n_seeds, methods=("epi", "epi_frozen"),
                       bounds=("full_sft", "separate", "replay"), steps_per_stage=max(1, cfg.steps_per_stage // 2),
                       lr=float(epi.get("lr", hp["full_sft"]["lr"])),
                       mask_update_interval=int(epi.get("interval", cfg.mask_update_interval)),
                       warmup_steps=int(epi.get("warmup", cfg.warmup_steps)))


def forgetting_run(cfg: Config, hp: dict[str, dict], *, inputs: Any, progress) -> Any:
    """The two-stage :class:`.study.Result` of :func:`forgetting_config` on the mixed run's inputs
    (same world and pretrained model ``pretrain_seed``)."""
    from epi_utils.isolation_study import study

    return study.run_study(forgetting_config(cfg, hp, n_seeds=cfg.forgetting_seeds), progress=progress,
                           inputs=inputs)


FORGETTING_METRICS = ("learned0", "retained0", "forgetting0", "plastic")


def forgetting_tables(result) -> dict:
    """``forgetting`` (mean and interval over seeds per arm of :data:`FORGETTING_METRICS`) and
    ``forgetting_comparisons`` (per ratio: EPI - EPI frozen and each of them - full SFT, paired over
    seeds, on retained0, forgetting0 and plastic)."""
    import pandas as pd

    from epi_utils.isolation_study import summary

    if result is None:
        return {"forgetting": pd.DataFrame(), "forgetting_comparisons": pd.DataFrame()}
    df = result.frames()["runs"]
    table = summary.frontier_table(df, metrics=FORGETTING_METRICS)
    rows = []
    for r in sorted(df["ratio"].dropna().unique()):
        for a, b in (("epi", "epi_frozen"), ("epi", "full_sft"), ("epi_frozen", "full_sft")):
            rb = None if b == "full_sft" else r
            for m in ("retained0", "forgetting0", "plastic"):
                rows.append(summary._row(summary.paired(df, (a, r), (b, rb), m), ratio=r, a_method=a, b_method=b))
    cmp = pd.DataFrame(rows, columns=["ratio", "a_method", "b_method", *summary.COMPARISON_COLUMNS])
    return {"forgetting": table, "forgetting_comparisons": cmp}
