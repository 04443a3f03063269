"""Summaries of a study run for the notebook: rates over seeds, computed narrative text,
signal-level validation, and the ``metrics.json`` headline entries.

Functions take the per-seed results of :func:`epi_utils.ilp.study.run_seed`; every sentence is
built from the numbers, so the notebook's narrative never hard-codes a result.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from epi_utils.ilp import detection, recovery
from epi_utils.ilp.study import SeedResult, StudyConfig, pooled_table


def unlearned_over_seeds(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Unlearned rate overall and per task: mean and bootstrap CI over seeds (+ pass@N if present)."""
    from epi_utils.workbench import stats

    rows = []
    for r in results:
        rates = detection.unlearned_rates(r.table, by="task")
        for g, v in rates["unlearned_rate"].items():
            rows.append({"group": g, "seed": r.seed, "unlearned_rate": float(v)})
        pcols = [c for c in r.table.columns if c.startswith("pass_at_")]
        for c in pcols:
            rows.append({"group": "all", "seed": r.seed, f"unlearned_{c}": float(1 - r.table[c].mean())})
        rows.append({"group": "heldout", "seed": r.seed, "heldout_accuracy": r.heldout_accuracy})
    summ = stats.summarize_over_seeds(rows, group_keys=("group",), value_keys=[
        c for c in pd.DataFrame(rows).columns if c not in ("group", "seed")])
    return summ.set_index(["group", "metric"])


def prevalence_text(rates: pd.DataFrame, prev: pd.DataFrame) -> str:
    overall = rates.loc[("all", "unlearned_rate")]
    task_rows = rates.xs("unlearned_rate", level="metric").drop(index="all")
    worst_task = task_rows["mean"].idxmax()
    agg = float(prev.loc[prev["subset"] == "aggregate", "accuracy"].iloc[0])
    lowest = prev[prev["subset"] != "aggregate"].sort_values("accuracy").iloc[0]
    return (f"Unlearned rate after SFT: {overall['mean']:.3f} (95% CI {overall['ci_low']:.3f}-{overall['ci_high']:.3f}) "
            f"over {int(overall['n'])} seed(s). Worst task: {worst_task} ({task_rows.loc[worst_task, 'mean']:.3f} "
            f"unlearned). Aggregate training accuracy {agg:.3f}, but subset {lowest['subset']} reaches only "
            f"{lowest['accuracy']:.3f} (gap {agg - lowest['accuracy']:.3f}).")


def diagnosis_text(diag: Mapping) -> str:
    from epi_utils.ilp.explorer import confusion_notes

    sc = diag["scores"].dropna(subset=["f1"])
    best, worst = sc["f1"].idxmax(), sc["f1"].idxmin()
    lo, hi = diag["macro_f1_seed_ci95"]
    verdict = "meets" if diag["macro_f1"] >= 0.85 else "misses"
    conf = diag["confusion"]
    from epi_utils.ilp.diagnosis import CAUSES
    absent = [c for c in CAUSES if conf.loc[c].sum() == 0]
    lines = [f"Rule-cascade macro-F1 (pooled confusion): {diag['macro_f1']:.3f}; per seed {diag['macro_f1_seed']:.3f} "
             f"(95% CI {lo:.3f}-{hi:.3f}); this {verdict} the 0.85 target.",
             f"The macro average covers the causes with unlearned planted or diagnosed samples ({', '.join(sc.index)}). "
             + (f"Planted but never unlearned (did not manifest, so their diagnosis is not tested here): "
                f"{', '.join(absent)}." if absent else "Every planted cause manifested."),
             f"Best cause: {best} (F1 {sc.loc[best, 'f1']:.2f}); worst: {worst} (F1 {sc.loc[worst, 'f1']:.2f}, "
             f"precision {sc.loc[worst, 'precision']:.2f}, recall {sc.loc[worst, 'recall']:.2f}).",
             "Largest confusions:"]
    lines += [f"  - {n}" for n in confusion_notes(diag["confusion"])]
    return "\n".join(lines)


def learned_text(diag: Mapping) -> str:
    d = diag["macro_f1_learned"] - diag["macro_f1"]
    return (f"Learned diagnoser (cross-validated random forest) macro-F1 {diag['macro_f1_learned']:.3f} vs rule cascade "
            f"{diag['macro_f1']:.3f} ({'+' if d >= 0 else ''}{d:.3f}); the learned variant uses planted labels for "
            "training, the cascade none.")


def mitigation_text(rows: Sequence[Mapping]) -> str:
    diff = recovery.paired_differences(rows)
    if diff.empty:
        return "No cause had diagnosed samples in every arm: no fix-vs-control comparison."
    lines = []
    for r in diff.itertuples(index=False):
        verdict = "beats" if r.fix_better else ("does not beat" if r.ci_high >= 0 else "is worse than")
        if r.n_seeds < 2:
            verdict = "cannot be compared (one seed, no interval) with"
        lines.append(f"{r.cause}: fix - control recovery {r.fix_minus_control:+.3f} (95% CI {r.ci_low:+.3f} to "
                     f"{r.ci_high:+.3f}, {r.n_seeds} seeds): the targeted fix {verdict} the compute-matched control.")
    frame = pd.DataFrame(list(rows))
    if "heldout_delta" in frame:
        hd = frame.groupby("arm")["heldout_delta"].mean()
        lines.append("Held-out accuracy change (mean over causes and seeds): " +
                     ", ".join(f"{a} {v:+.3f}" for a, v in hd.items()))
    return "\n".join(lines)


def headline_metrics(results: Sequence[SeedResult], diag: Mapping, cfg: StudyConfig) -> dict:
    """The metrics.json entries: unlearned_rate (+CI), diagnosis_macro_f1 (+ per-seed CI),
    diagnosis_confusion (planted -> diagnosed -> count), learned-variant macro-F1, per-cause
    precision/recall, recovery rates per cause for fix and control (+CI), held-out accuracy."""
    from epi_utils.workbench import stats

    out = {}
    out.update(stats.with_ci("unlearned_rate", [1 - float(r.table["learned"].mean()) for r in results]))
    out.update(stats.with_ci("heldout_accuracy", [r.heldout_accuracy for r in results]))
    out["diagnosis_macro_f1"] = float(diag["macro_f1"])
    out["diagnosis_macro_f1_ci95"] = diag["macro_f1_seed_ci95"]
    out["diagnosis_macro_f1_learned"] = float(diag["macro_f1_learned"])
    out["diagnosis_confusion"] = {p: {d: int(v) for d, v in row.items()} for p, row in diag["confusion"].iterrows()}
    for cause, row in diag["scores"].iterrows():
        for k in ("precision", "recall", "f1"):
            if not np.isnan(row[k]):
                out[f"diagnosis_{k}_{cause}"] = float(row[k])
    rows = [row for r in results for row in r.recovery_rows]
    if rows:
        out.update(recovery.recovery_metrics(rows))
        out["recovery_rate"] = {k[len("recovery_rate_"):]: v for k, v in out.items()
                                if k.startswith("recovery_rate_") and not k.endswith("_ci95")}
    for name, row in signal_validation(results, cfg).iterrows():
        for k in ("precision", "recall"):
            if not np.isnan(row[k]):
                out[f"signal_{k}_{row['planted_cause']}"] = float(row[k])
    out["n_seeds"] = len(results)
    out["backend"] = cfg.backend
    return out


def signal_validation(results: Sequence[SeedResult], cfg: StudyConfig) -> pd.DataFrame:
    """Does each signal flag the samples it was built for? Measured on ALL training samples
    (learned or not), so that a cause that does not manifest can still be checked at the signal
    level. Rows: signal -> planted cause, with precision, recall, flagged and planted counts,
    pooled over seeds. Probe signals are scored among the probed (fact) samples only."""
    pooled = pooled_table(results)
    th = cfg.thresholds
    probed = pooled["probe_category"].ne("not_probed") if "probe_category" in pooled else pd.Series(False, index=pooled.index)
    checks = [
        ("incons_flag", "inconsistency", pooled["incons_flag"].astype(bool), pd.Series(True, index=pooled.index)),
        ("overwrite_later", "forgetting", pooled["overwrite_later"].astype(bool), pd.Series(True, index=pooled.index)),
        ("rare template or long target", "rare_complex",
         (pooled["rarity_group_share"] <= th.rare_max_share) | (pooled["rarity_target_len_z"] >= th.complex_min_len_z),
         pd.Series(True, index=pooled.index)),
    ]
    if probed.any():
        checks += [("conflict_flag", "conflict", pooled["conflict_flag"].astype(bool), probed),
                   ("probe unknown", "missing_knowledge", pooled["probe_category"].eq("unknown"), probed)]
    rows = []
    for name, cause, flag, scope in checks:
        f, p = flag[scope], pooled.loc[scope, "planted"].eq(cause)
        tp = int((f & p).sum())
        rows.append({"signal": name, "planted_cause": cause, "flagged": int(f.sum()), "planted": int(p.sum()),
                     "precision": tp / f.sum() if f.sum() else float("nan"),
                     "recall": tp / p.sum() if p.sum() else float("nan")})
    return pd.DataFrame(rows).set_index("signal")
