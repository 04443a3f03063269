"""Tables and verdicts of Study 04, as data (from :class:`.study.StudyResult` records).

Every interval says its unit. Comparisons are :class:`~epi_utils.workbench.stats.Comparison`
objects from :func:`~epi_utils.workbench.stats.compare`, paired either over the (encoder seed,
decoder seed) units -- t-interval, micro scores -- or over the test documents -- bootstrap over
documents of each document's role-level F1 averaged over the seed units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from epi_utils.events.data import Document
from epi_utils.events.schema import EventSchema
from epi_utils.events.study import ANNOTATED, DecoderRecord, EncoderRecord, StudyResult
from epi_utils.workbench.stats import Comparison, compare, interval, with_ci

SEED_UNIT = "seed units (encoder x decoder seeds)"
DOC_UNIT = "test documents"
MAIN_METRICS = ("micro_p", "micro_r", "micro_f1", "macro_f1", "mean_type_micro_f1", "single_f1", "multi_f1",
                "multi_recall")
#: the pairs compared (a, b): the method against the no-probe baseline, and the cells that separate
#: the probes from the two extra losses.
PAIRS = (("probes", "no_probe"),                                # the study's question
         ("probes_no_extra_losses", "no_probe"),                # probes alone
         ("no_probe_extra_losses", "no_probe"),                 # extra losses alone
         ("probes", "probes_no_extra_losses"),                  # extra losses given probes
         ("probes", "no_probe_extra_losses"),                   # probes given extra losses
         ("probes", "wo_alignment"), ("probes", "wo_role_contrastive"), ("probes", "wo_probe_consistency"))


def _by_method(records: Sequence[DecoderRecord]) -> dict[str, list[DecoderRecord]]:
    out: dict[str, list[DecoderRecord]] = {}
    for r in records:
        out.setdefault(r.method, []).append(r)
    return out


def score_table(records: Sequence[DecoderRecord], *, metrics: Sequence[str] = MAIN_METRICS) -> pd.DataFrame:
    """Methods x metrics, each cell ``"mean [lo, hi]"`` (x100): 95% t-interval over the seed units."""
    out = {}
    for method, recs in _by_method(records).items():
        cells = {}
        for m in metrics:
            iv = interval([100 * r.scores[m] for r in recs], unit=SEED_UNIT, method="t") if len(recs) > 1 else None
            cells[m] = (f"{iv.mean:.1f} [{iv.low:.1f}, {iv.high:.1f}]" if iv is not None
                        else f"{100 * recs[0].scores[m]:.1f}")
        cells["n units"] = len(recs)
        out[method] = cells
    return pd.DataFrame(out).T


def comparisons(result: StudyResult, *, candidates: str, metrics: Sequence[str] = ("micro_f1", "multi_f1", "multi_recall"),
                pairs: Sequence[tuple[str, str]] = PAIRS) -> list[Comparison]:
    """Paired comparisons of every pair in ``pairs`` whose two methods ran: over the seed units for
    each of ``metrics``, and over the test documents (per-document F1, mean over units)."""
    recs = _by_method(result.rows(candidates=candidates))
    out = []
    for a, b in pairs:
        if a not in recs or b not in recs:
            continue
        ua, ub = {r.unit: r for r in recs[a]}, {r.unit: r for r in recs[b]}
        for m in metrics:
            out.append(compare({u: r.scores[m] for u, r in ua.items()}, {u: r.scores[m] for u, r in ub.items()},
                               unit=SEED_UNIT, metric=f"{m} ({candidates})", a_name=a, b_name=b))
        da = np.mean([r.doc_f1() for r in recs[a]], axis=0)
        db = np.mean([r.doc_f1() for r in recs[b]], axis=0)
        out.append(compare(da, db, unit=DOC_UNIT, metric=f"document F1 ({candidates})", a_name=a, b_name=b,
                           method="bootstrap" if len(da) >= 30 else "t"))
    return out


def comparison_table(comps: Sequence[Comparison]) -> pd.DataFrame:
    """One row per comparison: means, difference with its interval and unit, p, verdict, detectable effect."""
    rows = []
    for c in comps:
        rows.append({"a": c.a_name, "b": c.b_name, "metric": c.metric, "a mean": c.a_mean, "b mean": c.b_mean,
                     "a - b": c.diff.mean, "low": c.diff.low, "high": c.diff.high, "interval": c.diff.label(),
                     "p": c.p_value, "verdict": c.verdict.value, "detectable": c.detectable})
    return pd.DataFrame(rows)


def frontend_table(steps: Sequence[tuple[str, EncoderRecord, Sequence[DecoderRecord]]]) -> pd.DataFrame:
    """The front-end steps: per (step, candidate set of its encoder) the dev mention P/R/F1, the field
    accuracy, and the test micro F1 of the step's decoders evaluated on that candidate set (mean over
    them; NaN where none was). ``steps``: ``(name, encoder record, decoder records)``."""
    rows = []
    for name, e, decs in steps:
        for cand, m in e.mention.items():
            test = [d.scores["micro_f1"] for d in decs if d.candidates == cand]
            rows.append({"step": name, "encoder seed": e.encoder_seed, "candidates": cand,
                         "dev mention P": m["p"], "dev mention R": m["r"], "dev mention F1": m["f1"],
                         "field acc": m.get("field_acc", float("nan")), "dev mentions": m["n_pred"],
                         "test micro F1": float(np.mean(test)) if test else float("nan"), "decoders": len(test)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Target:
    """A target of the issue and whether this run reached it (data, not prose)."""

    name: str
    value: float
    target: float

    @property
    def reached(self) -> bool:
        return self.value >= self.target

    def to_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "reached": self.reached}


def targets(result: StudyResult, *, candidates: str, method: str = "probes",
            mention_candidates: str = "predicted") -> list[Target]:
    """The issue's two targets: dev mention F1 of the entity front end's NER head (mean over the
    study's encoders; ``mention_candidates``, default ``"predicted"``: the head's own spans, the
    quantity the issue's 44.2 baseline measured) >= 0.70, and test micro F1 of ``method`` decoded
    from the study's ``candidates`` >= 0.35."""
    ment = float(np.mean([e.mention[mention_candidates]["f1"] for e in result.encoders if e.step == "main"]))
    f1 = [r.scores["micro_f1"] for r in result.rows(candidates=candidates) if r.method == method]
    return [Target("dev_mention_f1", ment, 0.70), Target(f"test_micro_f1_{method}", float(np.mean(f1)) if f1 else 0.0, 0.35)]


def headline_metrics(result: StudyResult, *, candidates: str, keys: Sequence[str] = MAIN_METRICS) -> dict:
    """``{"<method>": {key, key_ci95, ...}, "<method> (annotated)": {...}}`` over the seed units."""
    out: dict = {}
    for cand, suffix in ((candidates, ""), (ANNOTATED, " (annotated mentions)")):
        for method, recs in _by_method(result.rows(candidates=cand)).items():
            d: dict = {"n_units": len(recs)}
            for k in keys:
                vals = [r.scores[k] for r in recs]
                d.update(with_ci(k, vals, unit=SEED_UNIT) if len(vals) > 1 else {k: vals[0]})
            out[method + suffix] = d
    return out


def recall_by_count_table(by_count: Sequence[dict]) -> pd.DataFrame:
    """Mean recall per method and number-of-records bin with a t-interval over the seed units."""
    frame = pd.DataFrame(list(by_count))
    rows = []
    for (method, k), sub in frame.groupby(["method", "n_events"], sort=False):
        vals = sub["recall"].to_numpy(dtype=float)
        iv = interval(vals, unit=SEED_UNIT, method="t") if len(vals) > 1 else None
        rows.append({"method": method, "n_events": k, "recall": float(vals.mean()),
                     "lo": iv.low if iv else float(vals.mean()), "hi": iv.high if iv else float(vals.mean()),
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
            for j in range(max(len(gold_t[t]), len(pred_t[t]))):
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
