"""Tables, verdicts and the metrics of Study 04, as data (from :class:`.design.Records` and a
:class:`.study.Result`).

Every interval says its unit; every table of means with intervals is
:func:`~epi_utils.workbench.stats.interval_table` (columns ``<metric>``, ``<metric>_low``,
``<metric>_high``, ``n``, ``unit``). Comparisons are :class:`~epi_utils.workbench.stats.Comparison`
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
from epi_utils.events.design import ANNOTATED, DecoderRecord, EncoderRecord, Records, SearchRecord
from epi_utils.events.ladder import Rung
from epi_utils.events.schedule import selection_problems
from epi_utils.events.schema import EventSchema
from epi_utils.workbench.stats import Comparison, compare, interval_table

SEED_UNIT = "seed units (encoder x decoder seeds)"
DOC_UNIT = "test documents"
MAIN_METRICS = ("micro_p", "micro_r", "micro_f1", "macro_f1", "mean_type_micro_f1", "single_f1", "multi_f1",
                "multi_recall")
#: the columns of the main tables: the headline metrics and single/multi-event precision and recall
TABLE_METRICS = MAIN_METRICS + ("single_p", "single_r", "multi_p", "multi_r")
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


def decoder_frame(records: Sequence[DecoderRecord]) -> pd.DataFrame:
    """One row per decoder evaluation: method, step, candidate set, seed unit, every score, the dev
    choices (prefixed ``dev_``) and the training seconds."""
    return pd.DataFrame([{"method": r.method, "step": r.step, "candidates": r.candidates, "unit": r.unit,
                          "encoder_seed": r.encoder_seed, "decoder_seed": r.decoder_seed, **r.scores,
                          **{f"dev_{k}": v for k, v in r.dev.items()}, "seconds": r.seconds} for r in records])


def score_table(records: Sequence[DecoderRecord], *, metrics: Sequence[str] = MAIN_METRICS) -> pd.DataFrame:
    """One row per method (column ``method``) x metrics, each cell ``"mean [low, high]"`` (x100): 95% t-interval over the seed units
    (:func:`~epi_utils.workbench.stats.interval_table`); the value alone where there is one unit."""
    frame = decoder_frame(records)
    frame[list(metrics)] = 100 * frame[list(metrics)]
    table = interval_table(frame, by=["method"], columns=metrics, unit=SEED_UNIT)
    out = {}
    for _, row in table.iterrows():
        cells = {m: (f"{row[m]:.1f} [{row[f'{m}_low']:.1f}, {row[f'{m}_high']:.1f}]" if row["n"] > 1 else f"{row[m]:.1f}")
                 for m in metrics}
        cells["n units"] = int(row["n"])
        out[row["method"]] = cells
    frame = pd.DataFrame(out).T
    return frame.rename_axis("method").reset_index()  # the method is a column: a report shows no index


def comparisons(records: Records, *, candidates: str, metrics: Sequence[str] = ("micro_f1", "multi_f1", "multi_recall"),
                pairs: Sequence[tuple[str, str]] = PAIRS) -> list[Comparison]:
    """Paired comparisons of every pair in ``pairs`` whose two methods ran: over the seed units for
    each of ``metrics``, and over the test documents (per-document F1, mean over units)."""
    recs = _by_method(records.rows(candidates=candidates))
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


def all_comparisons(records: Records, *, candidates: str) -> list[Comparison]:
    """The study's comparisons from ``candidates`` (micro F1, multi-event F1 and recall, document F1)
    followed by those decoded from the annotated mentions (micro F1, document F1)."""
    return comparisons(records, candidates=candidates) + comparisons(records, candidates=ANNOTATED, metrics=("micro_f1",))


NOT_INTERPRETABLE = "not interpretable"


def decoder_problems(r: DecoderRecord, *, min_dev_f1: float) -> list[str]:
    """Why a decoder's scores do not support a comparison (:func:`~.schedule.selection_problems`):
    it kept its last allowed epoch, or its dev micro F1 (from the annotated dev mentions when ``r``
    is decoded from the annotated test mentions) is below ``min_dev_f1``."""
    d = r.dev
    f1 = d.get("best_dev_f1_annotated") if r.candidates == ANNOTATED else d.get("best_dev_f1")
    return selection_problems(best_epoch=int(d.get("best_epoch") or 0), last_epoch=int(d.get("last_epoch") or 0),
                              max_epochs=int(d.get("max_epochs") or 0), dev_f1=float(f1 or 0.0), min_dev_f1=min_dev_f1)


def selection_table(records: Records, *, min_dev_f1: float) -> pd.DataFrame:
    """What the adaptive schedules chose, one row per trained model of the main run: encoders (kept
    epoch of at most, dev mention F1, the rule gate) and decoders (kept epoch, last epoch, dev F1) with
    the problems that make their comparisons not interpretable (empty: none)."""
    rows = []
    for e in records.encoders:
        if e.step != "main":
            continue
        last = e.epochs
        probs = selection_problems(best_epoch=e.best_epoch, last_epoch=last, max_epochs=e.max_epochs,
                                   dev_f1=e.mention.get("predicted", {}).get("f1", 0.0), min_dev_f1=min_dev_f1)
        rows.append({"model": f"encoder {e.encoder_seed}", "candidates": "predicted", "kept epoch": e.best_epoch,
                     "last epoch": last, "most epochs": e.max_epochs, "dev F1": e.mention.get("predicted", {}).get("f1"),
                     "problems": "; ".join(probs)})
    seen = set()
    for r in records.rows():
        if r.candidates not in ("predicted", "rules") and (r.unit, r.method, r.candidates) not in seen:
            seen.add((r.unit, r.method, r.candidates))
            d = r.dev
            rows.append({"model": f"decoder {r.method} {r.unit}", "candidates": r.candidates,
                         "kept epoch": d.get("best_epoch"), "last epoch": d.get("last_epoch"),
                         "most epochs": d.get("max_epochs"),
                         "dev F1": d.get("best_dev_f1_annotated") if r.candidates == ANNOTATED else d.get("best_dev_f1"),
                         "problems": "; ".join(decoder_problems(r, min_dev_f1=min_dev_f1))})
    return pd.DataFrame(rows, columns=["model", "candidates", "kept epoch", "last epoch", "most epochs", "dev F1",
                                       "problems"])


def comparison_table(comps: Sequence[Comparison], records: Records | None = None, *,
                     min_dev_f1: float = 0.05) -> pd.DataFrame:
    """One row per comparison: means, difference ``diff`` (a - b) with its interval and unit, p,
    verdict, detectable effect. With ``records``, a comparison one of whose decoders (of either
    method, on the compared candidate set) has a selection problem (:func:`decoder_problems`) gets
    the verdict ``"not interpretable"`` and its reasons in ``problems``."""
    rows = []
    for c in comps:
        problems = _comparison_problems(c, records, min_dev_f1) if records is not None else []
        rows.append({"a": c.a_name, "b": c.b_name, "metric": c.metric, "a mean": c.a_mean, "b mean": c.b_mean,
                     "diff": c.diff.mean, "diff_low": c.diff.low, "diff_high": c.diff.high, "interval": c.diff.label(),
                     "p": c.p_value, "verdict": NOT_INTERPRETABLE if problems else c.verdict.value,
                     "detectable": c.detectable, "problems": "; ".join(problems)})
    return pd.DataFrame(rows)


def _comparison_problems(c: Comparison, records: Records, min_dev_f1: float) -> list[str]:
    """Per method of the comparison: how many of its decoders kept their last allowed epoch and how
    many barely learned (dev F1 below ``min_dev_f1``)."""
    cand = c.metric[c.metric.rfind("(") + 1:-1] if c.metric.endswith(")") else ""
    out = []
    for m in dict.fromkeys((c.a_name, c.b_name)):
        recs = [r for r in records.rows(candidates=cand) if r.method == m]
        probs = [decoder_problems(r, min_dev_f1=min_dev_f1) for r in recs]
        last = sum(any("last epoch" in p for p in ps) for ps in probs)
        weak = sum(any("barely learned" in p for p in ps) for ps in probs)
        if last:
            out.append(f"{last} of {len(recs)} {m} decoders kept their last allowed epoch (still improving)")
        if weak:
            out.append(f"{weak} of {len(recs)} {m} decoders have dev F1 below {min_dev_f1} (barely learned)")
    return out


def frontend_table(rungs: Sequence[Rung]) -> pd.DataFrame:
    """The front-end steps: per (rung, candidate set of its encoder) the dev mention P/R/F1, the field
    accuracy, and the test micro F1 of the rung's decoders evaluated on that candidate set (mean over
    them; NaN where none was). ``rungs``: :func:`.ladder.run_ladder`'s."""
    rows = []
    for rung in rungs:
        name, e, decs = rung.step, rung.encoder, rung.decoders
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


def targets(records: Records, *, candidates: str, mention_target: float, bound_share_target: float,
            method: str = "probes", mention_candidates: str = "predicted") -> list[Target]:
    """The targets, from the config (``target_mention_f1``, ``target_bound_share``): dev mention F1
    of the entity front end's NER head (mean over the study's encoders; ``mention_candidates``,
    default ``"predicted"``: the head's own spans) >= ``mention_target``, and the test micro F1 of
    ``method`` decoded from the study's ``candidates`` as a share of the same decoders' micro F1
    decoded from the annotated test mentions (means over the seed units) >= ``bound_share_target``."""
    ment = float(np.mean([e.mention[mention_candidates]["f1"] for e in records.encoders if e.step == "main"]))
    f1 = [r.scores["micro_f1"] for r in records.rows(candidates=candidates) if r.method == method]
    bound = [r.scores["micro_f1"] for r in records.rows(candidates=ANNOTATED) if r.method == method]
    share = float(np.mean(f1) / np.mean(bound)) if f1 and bound and np.mean(bound) > 0 else 0.0
    return [Target("dev_mention_f1", ment, mention_target),
            Target(f"bound_share_{method}", share, bound_share_target)]


def config_targets(records: Records, cfg) -> list[Target]:
    """:func:`targets` with the config's candidates and targets."""
    return targets(records, candidates=cfg.candidates, mention_target=cfg.target_mention_f1,
                   bound_share_target=cfg.target_bound_share, method=cfg.methods[0])


def targets_table(records: Records, cfg) -> pd.DataFrame:
    """:func:`config_targets` as a table (one row per target: name, value, target, reached)."""
    return pd.DataFrame([{"name": t.name, **t.to_dict()} for t in config_targets(records, cfg)])


def method_metrics(records: Records, *, candidates: str, keys: Sequence[str] = MAIN_METRICS) -> dict:
    """``{"<method>": {key, key_low, key_high, ..., n, unit}, "<method> (annotated mentions)": {...}}``:
    the means over the seed units and their 95% t-intervals (:func:`interval_table`; no interval
    where there is one unit)."""
    out: dict = {}
    for cand, suffix in ((candidates, ""), (ANNOTATED, " (annotated mentions)")):
        table = interval_table(decoder_frame(records.rows(candidates=cand)), by=["method"], columns=keys, unit=SEED_UNIT)
        for row in table.to_dict(orient="records"):
            method = row.pop("method")
            out[method + suffix] = {k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}
    return out


def headline_metrics(result) -> dict:
    """The metrics of a :class:`.study.Result` (the metrics.json payload): per method
    (:func:`method_metrics`), the targets, the front-end steps, the comparisons, the reachable share of
    test arguments per sentence limit, the synthetic check and the setup."""
    cfg, records = result.config, result.records
    comps = all_comparisons(records, candidates=cfg.candidates)
    metrics = method_metrics(records, candidates=cfg.candidates)
    metrics["targets"] = {t.name: t.to_dict() for t in config_targets(records, cfg)}
    metrics["frontend_steps"] = frontend_table(result.ladder).to_dict(orient="records")
    table = comparison_table(comps, records, min_dev_f1=cfg.min_dev_f1)
    metrics["comparisons"] = [{**c.to_dict(), "verdict": v, "problems": p}
                              for c, v, p in zip(comps, table["verdict"], table["problems"])] if comps else []
    metrics["selection"] = selection_table(records, min_dev_f1=cfg.min_dev_f1).to_dict(orient="records")
    metrics["rules"] = [{"encoder_seed": e.encoder_seed, "gate": e.rule_gate,
                         "used": sum(r["used"] for r in e.rules), "offered": len(e.rules)}
                        for e in records.encoders if e.step == "main"]
    metrics["dataset"] = result.data.name
    metrics["reachable_at"] = {str(k): v for k, v in result.data.reachable_at.items()}
    metrics["synthetic"] = result.synthetic.to_dict()
    metrics["setup"] = {"split": result.data.describe(), "candidates": cfg.candidates, "encoder_seeds": cfg.encoder_seeds,
                        "decoder_seeds": cfg.decoder_seeds}
    return metrics


def recall_by_count_table(by_count: Sequence[dict]) -> pd.DataFrame:
    """Mean recall per method and number-of-records bin with its 95% t-interval over the seed units
    (``recall``, ``recall_low``, ``recall_high``, ``n``, ``unit``; :func:`interval_table`) and the
    bin's number of test documents ``n_docs``."""
    frame = pd.DataFrame(list(by_count))
    out = interval_table(frame, by=["method", "n_events"], columns=["recall"], unit=SEED_UNIT)
    docs = frame.groupby(["method", "n_events"], sort=False)["n_docs"].first().reset_index()
    out = out.merge(docs, on=["method", "n_events"], how="left")
    order = sorted(out["n_events"].unique(), key=lambda s: int(str(s).rstrip("+")))
    out["n_events"] = pd.Categorical(out["n_events"], categories=order, ordered=True)
    return out.sort_values(["method", "n_events"])


def search_table(search: Sequence[SearchRecord]) -> pd.DataFrame:
    """The dev-tuned learning-rate search: one row per (method, rate) with its dev scores and the choice."""
    return pd.DataFrame([{"method": s.method, "dec_lr": s.dec_lr, "dev F1": s.dev_key[0], "dev F1 (annotated)": s.dev_key[1],
                          "chosen": s.chosen} for s in search], columns=["method", "dec_lr", "dev F1", "dev F1 (annotated)", "chosen"])


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


def rules_table(encoder: EncoderRecord) -> pd.DataFrame:
    """The rule patterns of one encoder (:meth:`.rules.RuleSet.table`): used ones first, then by
    train precision."""
    frame = pd.DataFrame(encoder.rules, columns=["pattern", "source", "train precision", "train matches", "used"])
    return frame.sort_values(["used", "train precision"], ascending=[False, False], na_position="first")
