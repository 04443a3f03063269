"""Study 02's two checks beside the mixed design (issue 26): can the protected share carry a task, and
what does plain EPI do to forgetting in the sequential (two-stage) design.

- **Capacity** (:func:`.mixed.capacity_runs` runs it, :func:`capacity_table`): on a seed, one model per task is trained
  from the pretrained model on its task alone (``steps_per_stage / n_tasks`` steps: the ceiling's
  models, at its tuned learning rate); each task's critical set at ratio ``r`` is CPI-FT's core region
  (the top ``r`` of layer-mean-normalised ``|theta_t - theta_0|``, :func:`.mixed.core_regions`). Then a
  fresh copy of the pretrained model is trained on that task alone for the same steps with ONLY that
  set trainable (every other element frozen, policy ``frozen_cores``). Its test score next to the
  all-parameters model of the same seed says whether a share of ``r`` can hold a task: if it cannot,
  protecting ``r`` cannot protect the task either.
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
    trainable, the all-parameters model's score on the same seeds, their paired difference with its
    95% t-interval over seeds, and ``share_kept`` = share-only mean / all-parameters mean."""
    import pandas as pd

    cols = ["ratio", "task", "share_only", "share_only_low", "share_only_high", "all_parameters", "diff",
            "diff_low", "diff_high", "share_kept", "n", "unit"]
    caps = [r for r in records if r.arm == "capacity" and not r.tuning]
    if not caps:
        return pd.DataFrame(columns=cols)
    per: dict[tuple[float, str], dict[int, float]] = {}
    for r in caps:
        for t in tasks:
            per.setdefault((r.ratio, t), {})[r.seed] = r.test.get(t, np.nan)
        per.setdefault((r.ratio, "mean"), {})[r.seed] = float(np.mean([r.test[t] for t in tasks]))
    rows = []
    for (ratio, task), by_seed in sorted(per.items(), key=lambda kv: (kv[0][0], kv[0][1] == "mean")):
        if ratio == 1.0:
            continue
        ref = per.get((1.0, task), {})
        seeds = sorted(set(by_seed) & set(ref))
        if len(seeds) < 2:
            continue
        a, b = {s: by_seed[s] for s in seeds}, {s: ref[s] for s in seeds}
        iv = stats.interval(list(a.values()), unit=UNIT, bounds=(0.0, 1.0))
        c = stats.compare(a, b, unit=UNIT, metric="score", a_name="share only", b_name="all parameters")
        rows.append({"ratio": ratio, "task": task, "share_only": iv.mean, "share_only_low": iv.low,
                     "share_only_high": iv.high, "all_parameters": c.b_mean, "diff": c.diff.mean,
                     "diff_low": c.diff.low, "diff_high": c.diff.high,
                     "share_kept": c.a_mean / c.b_mean if c.b_mean > 0 else np.nan, "n": len(seeds), "unit": UNIT})
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
