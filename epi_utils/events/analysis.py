"""Tables, verdicts and side-by-side records for the Study 04 notebook (from :class:`.study.StudyResult` rows)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..workbench.stats import bootstrap_ci, with_ci
from .data import Document
from .schema import EventSchema

HEADLINE = ("micro_p", "micro_r", "micro_f1", "single_f1", "multi_f1", "multi_recall")


def main_table(rows: Sequence[dict], *, metrics: Sequence[str]) -> pd.DataFrame:
    """Methods x metrics, each cell ``"mean [lo, hi]"`` (x100) over seeds (percentile bootstrap 95% CI)."""
    frame = pd.DataFrame(list(rows))
    out = {}
    for method, sub in frame.groupby("method", sort=False):
        cells = {}
        for m in metrics:
            vals = sub[m].to_numpy(dtype=float) * 100
            lo, hi = bootstrap_ci(vals)
            cells[m] = f"{vals.mean():.1f} [{lo:.1f}, {hi:.1f}]"
        out[method] = cells
    return pd.DataFrame(out).T


def headline_metrics(rows: Sequence[dict], *, keys: Sequence[str] = HEADLINE) -> dict:
    """``{method: {key: mean, key_ci95: [lo, hi], ...}}`` for ``runs.save_metrics``."""
    frame = pd.DataFrame(list(rows))
    out = {}
    for method, sub in frame.groupby("method", sort=False):
        d: dict = {"n_seeds": int(len(sub))}
        for k in keys:
            d.update(with_ci(k, sub[k].to_numpy(dtype=float)))
        out[method] = d
    return out


def verdict(rows: Sequence[dict], *, method: str, metrics: Sequence[str] = ("micro_f1", "multi_recall")) -> list[str]:
    """Sentences comparing ``method`` with every other method on ``metrics``: "beats" only when the
    mean is higher and the 95% CIs do not overlap; "higher/lower mean but CIs overlap" otherwise."""
    frame = pd.DataFrame(list(rows))
    lines = []
    mine = frame[frame.method == method]
    for other, sub in frame[frame.method != method].groupby("method", sort=False):
        for m in metrics:
            a, b = mine[m].to_numpy(dtype=float), sub[m].to_numpy(dtype=float)
            (alo, ahi), (blo, bhi) = bootstrap_ci(a), bootstrap_ci(b)
            diff = 100 * (a.mean() - b.mean())
            if alo > bhi:
                word = "beats"
            elif ahi < blo:
                word = "is beaten by"
            else:
                word = "is indistinguishable (overlapping 95% CIs) from"
            lines.append(f"{method} {word} {other} on {m}: {100 * a.mean():.1f} vs {100 * b.mean():.1f} ({diff:+.1f} points)")
    return lines


def recall_by_count_table(by_count: Sequence[dict]) -> pd.DataFrame:
    """Mean recall over seeds per method and number-of-events bin (long format with CI columns)."""
    frame = pd.DataFrame(list(by_count))
    rows = []
    for (method, k), sub in frame.groupby(["method", "n_events"], sort=False):
        lo, hi = bootstrap_ci(sub["recall"].to_numpy(dtype=float))
        rows.append({"method": method, "n_events": k, "recall": sub["recall"].mean(), "lo": lo, "hi": hi,
                     "n_docs": int(sub["n_docs"].iloc[0])})
    out = pd.DataFrame(rows)
    order = sorted(out["n_events"].unique(), key=lambda s: int(str(s).rstrip("+")))
    out["n_events"] = pd.Categorical(out["n_events"], categories=order, ordered=True)
    return out.sort_values(["method", "n_events"])


def side_by_side(docs: Sequence[Document], predictions: dict[str, list], schema: EventSchema, *,
                 method: str, n_docs: int = 3, rng: np.random.Generator | None = None, multi_only: bool = True
                 ) -> pd.DataFrame:
    """Gold and predicted records of a few test documents, one row per (document, type, role, record)."""
    rng = rng or np.random.default_rng(0)
    pool = [i for i, d in enumerate(docs) if d.is_multi or not multi_only]
    pick = sorted(rng.choice(pool, size=min(n_docs, len(pool)), replace=False).tolist()) if pool else []
    rows = []
    for i in pick:
        gold_t = docs[i].records_by_type(schema)
        pred_t: list[list] = [[] for _ in schema.event_types]
        for etype, args in predictions[method][i]:
            pred_t[schema.type_index(etype)].append(args)
        for t, etype in enumerate(schema.event_types):
            pred_t[t] = _pair_with_gold(gold_t[t], pred_t[t])
            n = max(len(gold_t[t]), len(pred_t[t]))
            for j in range(n):
                for r, role in enumerate(schema.roles[t]):
                    g = gold_t[t][j][r] if j < len(gold_t[t]) else ""
                    p = pred_t[t][j][r] if j < len(pred_t[t]) else ""
                    if g or p:
                        rows.append({"doc": docs[i].doc_id, "type": etype, "record": j, "role": role,
                                     "gold": g or "-", "predicted": p or "-", "match": "ok" if g == p else "x"})
    return pd.DataFrame(rows)


def _pair_with_gold(gold: list, pred: list) -> list:
    """Reorder predictions so that row j holds the prediction closest to gold record j (most equal
    filled slots, greedy in gold order); unpaired predictions follow. Display only."""
    left, out = list(pred), []
    for g in gold:
        if not left:
            break
        score = [sum(a is not None and a == b for a, b in zip(p, g)) for p in left]
        out.append(left.pop(int(np.argmax(score))))
    return out + left
