"""The Doc2EDAG evaluation protocol (Zheng et al., EMNLP 2019, ``dee/dee_metric.py``).

Per document and event type, predicted records are sorted by their number of filled slots
(descending, stable), and each in turn is matched greedily to the remaining gold record with the
most slot-wise equal arguments (``pred_arg == gold_arg``, where two empty slots also count as
equal, as in Doc2EDAG's code; ties go to the earliest gold record). For a matched pair, per role:
gold empty & pred filled -> FP; gold filled & pred empty -> FN; both filled & equal -> TP; both
filled & different -> FP + FN. Unmatched predictions add an FP per filled slot, unmatched gold
records an FN per filled slot. TP/FP/FN are summed per role and type over documents.

Reported: micro P/R/F1 over every role of every type (Doc2EDAG's MicroF1), per event type, for
single-event documents (exactly one gold record) and multi-event documents (more than one), and two
averages over types:

* ``macro_f1`` -- Doc2EDAG's **MacroF1** (``measure_event_table_filling``, ``avg_type="macro"``): per
  event type the mean over its roles of the role-level F1 (a role never predicted nor annotated has
  F1 0 and still counts), then the mean over types. ``macro_p``/``macro_r`` likewise. Neither
  Doc2EDAG's code nor this module rounds role scores before averaging (checked against
  ``measure_event_table_filling`` to 2e-16).
* ``mean_type_micro_f1`` -- the mean over types of each type's micro F1 (role counts pooled within
  the type): what this module reported as ``macro_f1`` before; it is *not* Doc2EDAG's MacroF1.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from epi_utils.events.schema import EventSchema

Record = Sequence  # tuple of argument strings or None, in schema role order


def agg_role_stats(pred_records: Sequence[Record] | None, gold_records: Sequence[Record] | None,
                   num_roles: int) -> list[list[int]]:
    """TP, FP, FN per role (list of ``[tp, fp, fn]``, length ``num_roles``) for one doc and type."""
    stats = [[0, 0, 0] for _ in range(num_roles)]
    preds = [tuple(r) for r in (pred_records or [])]
    golds = [tuple(r) for r in (gold_records or [])]
    for r in preds + golds:
        if len(r) != num_roles:
            raise ValueError(f"record {r!r} has {len(r)} slots, expected {num_roles}")
    preds = sorted(preds, key=lambda x: sum(a is not None for a in x), reverse=True)
    while preds and golds:
        pred = preds.pop(0)
        scores = [sum(pa == ga for pa, ga in zip(pred, g)) for g in golds]
        gold = golds.pop(scores.index(max(scores)))
        for i, (pa, ga) in enumerate(zip(pred, gold)):
            if ga is None:
                if pa is not None:
                    stats[i][1] += 1
            elif pa is None:
                stats[i][2] += 1
            elif pa == ga:
                stats[i][0] += 1
            else:
                stats[i][1] += 1
                stats[i][2] += 1
    for pred in preds:
        for i, pa in enumerate(pred):
            stats[i][1] += pa is not None
    for gold in golds:
        for i, ga in enumerate(gold):
            stats[i][2] += ga is not None
    return stats


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1 from counts (0 where undefined)."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f1": f, "tp": tp, "fp": fp, "fn": fn}


def role_macro(role_counts: Sequence[Sequence[int]]) -> dict[str, float]:
    """Doc2EDAG's per-type macro scores: the mean over roles of each role's P, R and F1 (from its
    ``[tp, fp, fn]``; 0 where undefined, so a role never filled in gold or prediction scores 0)."""
    scores = [prf(*c) for c in role_counts]
    n = max(len(scores), 1)
    return {f"macro_{k}": sum(s[k] for s in scores) / n for k in ("p", "r", "f1")}


def _by_type(records: Sequence, schema: EventSchema) -> list[list[tuple]]:
    out: list[list[tuple]] = [[] for _ in schema.event_types]
    for etype, args in records:
        out[schema.type_index(etype)].append(tuple(args))
    return out


def document_stats(pred: Sequence, gold: Sequence, schema: EventSchema) -> list[list[list[int]]]:
    """Per type, per role ``[tp, fp, fn]`` for one document; records are ``(event_type, args)``."""
    p_t, g_t = _by_type(pred, schema), _by_type(gold, schema)
    return [agg_role_stats(p_t[t], g_t[t], len(schema.roles[t])) for t in range(schema.num_types)]


def evaluate_documents(predictions: Sequence[Sequence], golds: Sequence[Sequence], schema: EventSchema
                       ) -> dict[str, object]:
    """Doc2EDAG scores for parallel lists of per-document records ``[(event_type, args), ...]``.

    Returns a flat dict: ``micro_p, micro_r, micro_f1, macro_p, macro_r, macro_f1`` (Doc2EDAG's
    MacroF1), ``mean_type_micro_f1``, ``single_p, single_r, single_f1, multi_p, multi_r, multi_f1,
    multi_recall`` (= ``multi_r``), ``n_docs, n_single, n_multi``, and ``per_type``:
    ``{event_type: {p, r, f1, tp, fp, fn, macro_p, macro_r, macro_f1}}`` (micro within the type, and
    the type's role-averaged scores).
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold documents")
    tot = {"all": [0, 0, 0], "single": [0, 0, 0], "multi": [0, 0, 0]}
    per_type = [[0, 0, 0] for _ in schema.event_types]
    per_role = [[[0, 0, 0] for _ in roles] for roles in schema.roles]
    n_single = n_multi = 0
    for pred, gold in zip(predictions, golds):
        group = "multi" if len(gold) > 1 else "single" if len(gold) == 1 else None
        n_single += group == "single"
        n_multi += group == "multi"
        for t, roles in enumerate(document_stats(pred, gold, schema)):
            for r, (tp, fp, fn) in enumerate(roles):
                per_role[t][r][0] += tp; per_role[t][r][1] += fp; per_role[t][r][2] += fn
                for key in ("all", group):
                    if key is None:
                        continue
                    tot[key][0] += tp; tot[key][1] += fp; tot[key][2] += fn
                per_type[t][0] += tp; per_type[t][1] += fp; per_type[t][2] += fn
    out: dict[str, object] = {}
    for key, prefix in (("all", "micro"), ("single", "single"), ("multi", "multi")):
        s = prf(*tot[key])
        out.update({f"{prefix}_p": s["p"], f"{prefix}_r": s["r"], f"{prefix}_f1": s["f1"]})
    out["multi_recall"] = out["multi_r"]
    pt = {t: prf(*per_type[i]) for i, t in enumerate(schema.event_types)}
    for i, t in enumerate(schema.event_types):
        pt[t].update(role_macro(per_role[i]))
    for k in ("p", "r", "f1"):
        out[f"macro_{k}"] = sum(v[f"macro_{k}"] for v in pt.values()) / len(pt)
    out["mean_type_micro_f1"] = sum(v["f1"] for v in pt.values()) / len(pt)
    out["per_type"] = pt
    out.update({"n_docs": len(golds), "n_single": n_single, "n_multi": n_multi})
    return out


def recall_by_event_count(predictions: Sequence[Sequence], golds: Sequence[Sequence], schema: EventSchema,
                          *, bins: Sequence[int] = (1, 2, 3, 4, 5)) -> dict[str, Mapping[str, float]]:
    """Micro recall (and P/F1) grouped by the number of gold records per document.

    ``bins`` are lower edges; the last bin collects everything at or above it (label ``"5+"``).
    """
    edges = sorted(bins)
    acc: dict[str, list[int]] = {}
    for pred, gold in zip(predictions, golds):
        n = len(gold)
        if n == 0:
            continue
        lab = [b for b in edges if n >= b][-1] if n >= edges[0] else None
        if lab is None:
            continue
        key = f"{lab}+" if lab == edges[-1] else str(lab)
        cur = acc.setdefault(key, [0, 0, 0, 0])
        for roles in document_stats(pred, gold, schema):
            for tp, fp, fn in roles:
                cur[0] += tp; cur[1] += fp; cur[2] += fn
        cur[3] += 1
    return {k: {**prf(*v[:3]), "n_docs": v[3]} for k, v in acc.items()}


def mention_scores(predicted: Sequence[Mapping[str, object]], gold: Sequence[Mapping[str, object]], *,
                   gold_fields: Sequence[Mapping[str, str]] | None = None) -> dict[str, float]:
    """Mention-level micro P/R/F1 of candidate extraction, at the level the decoder uses it:
    per document the *set of distinct mention strings* (identical strings are one candidate),
    predicted vs gold. With ``gold_fields`` (per document mention -> field) and predicted values
    of the form ``(field, spans)``, ``field_acc`` is the share of correct strings whose field is
    also right. Returns ``p, r, f1, n_pred, n_gold`` (and ``field_acc``)."""
    tp = fp = fn = ok = 0
    for i, (p, g) in enumerate(zip(predicted, gold)):
        ps, gs = set(p), set(g)
        tp += len(ps & gs)
        fp += len(ps - gs)
        fn += len(gs - ps)
        if gold_fields is not None:
            ok += sum(1 for m in ps & gs if p[m][0] == gold_fields[i].get(m))
    out = {**prf(tp, fp, fn), "n_pred": tp + fp, "n_gold": tp + fn}
    if gold_fields is not None:
        out["field_acc"] = ok / tp if tp else 0.0
    return out
