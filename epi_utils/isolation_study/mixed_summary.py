"""Study 02's mixed design as tables and verdicts (issue 26), and its :class:`MixedResult`.

- :func:`run_table`: one row per (run, task) plus a ``task = "mean"`` row per run (the mean over the
  tasks): arm, ratio (NaN for the bounds), seed, pretraining seed, ``score`` (held-out test),
  ``score_train`` (train samples, secondary);
- :func:`score_table`: mean and interval over seeds (logit-t, scores in [0, 1]) per arm x ratio x task;
- :func:`comparisons`: paired over seeds, per ratio and per task (and ``"mean"``; ratio NaN = the
  mean over the ratios): ``diff`` with its 95% t-interval, p-value, the effect detectable at 80% power
  (:func:`.summary.detectable_effect`), the TOST of ``|diff| < margin`` (``equivalence_margin`` fixed
  in the config before the run) and the outcome: ``a_better`` / ``b_better`` (the 95% interval
  excludes 0), ``equivalent`` (TOST at 5%), else ``inconclusive``; the floor (full SFT) and ceiling
  (one model per task) of the same task beside every row;
- :func:`mask_table` / :func:`turnover_curve`: what the evolving masks did (turnover per refresh,
  share of a task's protected elements released and of those re-protected, overlap between tasks'
  final sets with the overlap of two random sets of the same share, ``r / (2 - r)``, beside it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from epi_utils.isolation_study import summary
from epi_utils.isolation_study.config import Config
from epi_utils.workbench import stats

UNIT = "seeds"
#: (a, b) pairs of :func:`comparisons`; the first is the answer to "does evolving help"
PAIRS = (("epi", "epi_warmup_frozen"), ("epi", "full_sft"), ("epi", "cpi_ft"), ("epi", "random_refresh"),
         ("epi_warmup_frozen", "full_sft"), ("cpi_ft", "full_sft"))
NAMES = {"full_sft": "full mixed SFT", "separate": "one model per task", "cpi_ft": "CPI-FT", "epi": "EPI",
         "epi_warmup_frozen": "EPI frozen after warmup", "random_refresh": "random masks on EPI's schedule"}


def run_table(records: Sequence, tasks: Sequence[str]):
    import pandas as pd

    rows = []
    for r in records:
        if r.tuning:
            continue
        base = {"arm": r.arm, "ratio": np.nan if r.ratio is None else float(r.ratio), "seed": r.seed,
                "pretrain_seed": r.pretrain_seed}
        for t in tasks:
            rows.append({**base, "task": t, "score": r.test.get(t, np.nan), "score_train": r.train.get(t, np.nan)})
        rows.append({**base, "task": "mean", "score": float(np.mean([r.test[t] for t in tasks])),
                     "score_train": float(np.mean([r.train[t] for t in tasks])) if r.train else np.nan})
    return pd.DataFrame(rows, columns=["arm", "ratio", "seed", "pretrain_seed", "task", "score", "score_train"])


def score_table(df):
    """Mean score with its interval over seeds per arm, ratio and task (``ratio`` NaN for bounds)."""
    d = df.copy()
    d["ratio_key"] = d["ratio"].fillna(-1.0)
    t = stats.interval_table(d, by=["arm", "ratio_key", "task"], columns=["score", "score_train"], unit=UNIT,
                             unit_column="seed", bounds=(0.0, 1.0))
    t.insert(1, "ratio", t.pop("ratio_key").replace(-1.0, np.nan))
    return t


def _by_seed(df, arm: str, ratio, task: str) -> dict:
    sel = (df["arm"] == arm) & (df["task"] == task)
    sel &= df["ratio"].isna() if ratio is None or ratio != ratio else np.isclose(df["ratio"], ratio)
    return dict(zip(df.loc[sel, "seed"], df.loc[sel, "score"]))


def _pooled(df, arm: str, ratios: Sequence[float], task: str) -> dict:
    """seed -> the arm's score on ``task`` averaged over ``ratios`` (a bound: its one score)."""
    per = [_by_seed(df, arm, r, task) for r in ratios]
    if not per[0]:
        per = [_by_seed(df, arm, None, task)]
    seeds = set.intersection(*(set(p) for p in per)) if per else set()
    return {s: float(np.mean([p[s] for p in per])) for s in seeds}


def compare_row(a: dict, b: dict, *, a_name: str, b_name: str, margin: float, unit: str = UNIT, **extra) -> dict:
    """One comparison row (see the module docstring); ``a``/``b``: unit (a seed) -> score."""
    keys = sorted(set(a) & set(b))
    a, b = {k: a[k] for k in keys}, {k: b[k] for k in keys}
    row = {**extra, "a": a_name, "b": b_name, "margin": margin, "n": len(keys), "unit": unit}
    if len(keys) < 2:
        return {**row, "a_mean": np.nan, "b_mean": np.nan, "diff": np.nan, "diff_low": np.nan, "diff_high": np.nan,
                "p_value": np.nan, "detectable": np.nan, "tost_p": np.nan, "outcome": "not_enough_data"}
    c = stats.compare(a, b, unit=unit, metric="score", a_name=a_name, b_name=b_name)
    e = summary.tost(a, b, margin=margin, unit=unit, metric="score", a_name=a_name, b_name=b_name)
    sd = float(np.std([a[k] - b[k] for k in keys], ddof=1))
    if c.verdict is stats.Verdict.A_BETTER:
        outcome = "a_better"
    elif c.verdict is stats.Verdict.B_BETTER:
        outcome = "b_better"
    else:
        outcome = "equivalent" if e.equivalent else "inconclusive"
    return {**row, "a_mean": c.a_mean, "b_mean": c.b_mean, "diff": c.diff.mean, "diff_low": c.diff.low,
            "diff_high": c.diff.high, "p_value": c.p_value, "detectable": summary.detectable_effect(sd, len(keys)),
            "tost_p": e.p_value, "outcome": outcome}


def comparisons(df, *, margin: float, pairs: Sequence[tuple[str, str]] = PAIRS):
    """Every pair of ``pairs`` present, per ratio (and pooled over the ratios, ratio NaN) and task."""
    import pandas as pd

    arms = set(df["arm"])
    ratios = sorted(df["ratio"].dropna().unique())
    tasks = [t for t in df["task"].unique()]
    rows = []
    for a, b in pairs:
        if a not in arms or b not in arms:
            continue
        for r in list(ratios) + [np.nan]:
            for t in tasks:
                if r == r:
                    sa = _by_seed(df, a, r, t) or _by_seed(df, a, None, t)
                    sb = _by_seed(df, b, r, t) or _by_seed(df, b, None, t)
                else:
                    sa, sb = _pooled(df, a, ratios, t), _pooled(df, b, ratios, t)
                floor = _by_seed(df, "full_sft", None, t)
                ceil = _by_seed(df, "separate", None, t)
                rows.append(compare_row(sa, sb, a_name=a, b_name=b, margin=margin, ratio=r, task=t,
                                        floor=float(np.mean(list(floor.values()))) if floor else np.nan,
                                        ceiling=float(np.mean(list(ceil.values()))) if ceil else np.nan))
    cols = ["a", "b", "ratio", "task", "a_mean", "b_mean", "diff", "diff_low", "diff_high", "p_value", "detectable",
            "tost_p", "margin", "outcome", "floor", "ceiling", "n", "unit"]
    return pd.DataFrame(rows, columns=cols)


MODEL_UNIT = "pretrained models"


def model_comparisons(df, *, margin: float, pairs: Sequence[tuple[str, str]] = PAIRS):
    """The pooled comparisons on the mean over tasks with the pretrained model as the unit: the seeds
    that start from one pretrained model (seed mod ``n_pretrain_seeds``) are averaged first, because
    they share its weights and are not independent of each other; the seed rows of
    :func:`comparisons` treat them as independent. A sensitivity check of those rows (review of issue
    26): same columns, ``unit`` "pretrained models", ``n`` the number of models. Empty when every
    seed has its own pretrained model (the seed intervals are then over independent units)."""
    import pandas as pd

    cols = ["a", "b", "ratio", "task", "a_mean", "b_mean", "diff", "diff_low", "diff_high", "p_value", "detectable",
            "tost_p", "margin", "outcome", "floor", "ceiling", "n", "unit"]
    model_of = dict(zip(df["seed"], df["pretrain_seed"]))
    if not len(df) or max(list(model_of.values()).count(m) for m in set(model_of.values())) <= 1:
        return pd.DataFrame(columns=cols)

    def by_model(per_seed: dict) -> dict:
        groups: dict = {}
        for seed, score in per_seed.items():
            groups.setdefault(model_of[seed], []).append(score)
        return {m: float(np.mean(v)) for m, v in groups.items()}

    arms, ratios = set(df["arm"]), sorted(df["ratio"].dropna().unique())
    rows = []
    for a, b in pairs:
        if a in arms and b in arms:
            floor, ceil = by_model(_by_seed(df, "full_sft", None, "mean")), by_model(_by_seed(df, "separate", None, "mean"))
            rows.append(compare_row(by_model(_pooled(df, a, ratios, "mean")), by_model(_pooled(df, b, ratios, "mean")),
                                    a_name=a, b_name=b, margin=margin, unit=MODEL_UNIT, ratio=np.nan, task="mean",
                                    floor=float(np.mean(list(floor.values()))) if floor else np.nan,
                                    ceiling=float(np.mean(list(ceil.values()))) if ceil else np.nan))
    return pd.DataFrame(rows, columns=cols)


def model_rows(cmp):
    """:func:`model_comparisons` for the reader, or a one-row note when every seed has its own model."""
    import pandas as pd

    if not len(cmp):
        return pd.DataFrame([{"note": "every seed starts from its own pretrained model: the seed intervals above "
                                      "are over independent units"}])
    return _reader(cmp).rename(columns={"n": "n_models"})


def wide_scores(scores, tasks: Sequence[str]):
    """The reader's score table: one row per arm (x ratio), one interval column per task and the mean."""
    import pandas as pd

    rows = []
    order = {a: k for k, a in enumerate(NAMES)}
    keys = scores[["arm", "ratio"]].drop_duplicates()
    keys = keys.assign(o=keys["arm"].map(order), r=keys["ratio"].fillna(-1)).sort_values(["r", "o"])
    for _, k in keys.iterrows():
        sel = scores[(scores["arm"] == k["arm"]) & ((scores["ratio"] == k["ratio"]) | (scores["ratio"].isna()
                                                                                          & (k["ratio"] != k["ratio"])))]
        row = {"arm": NAMES.get(k["arm"], k["arm"]), "ratio": k["ratio"]}
        for t in list(tasks) + ["mean"]:
            x = sel[sel["task"] == t]
            if len(x):
                row.update({t: float(x["score"].iloc[0]), f"{t}_low": float(x["score_low"].iloc[0]),
                            f"{t}_high": float(x["score_high"].iloc[0])})
        row["n"] = int(sel["n"].max()) if len(sel) else 0
        rows.append(row)
    return pd.DataFrame(rows)


def mask_rows(records: Sequence) -> list[dict]:
    """Per evolving-mask run and task: mean turnover per refresh, released, re-protected, first-final Jaccard."""
    rows = []
    for r in records:
        if r.tuning or not r.masks or "per_task" not in r.masks:
            continue
        turn: dict[str, list[float]] = {}
        for x in r.masks["refreshes"]:
            turn.setdefault(x["task"], []).append(x["turnover"])
        for t, d in r.masks["per_task"].items():
            rows.append({"arm": r.arm, "ratio": r.ratio, "seed": r.seed, "task": t,
                         "turnover": float(np.mean(turn[t])) if turn.get(t) else np.nan,
                         "released": d["released"], "reprotected": d["reprotected"], "first_final": d["first_final"],
                         "overlap": r.masks["overlap"], "n_refreshes": r.masks["n_refreshes"]})
    return rows


def mask_table(records: Sequence):
    """Mean over a run's tasks, then interval over seeds, per arm and ratio; ``chance_overlap`` = r / (2 - r)."""
    import pandas as pd

    d = pd.DataFrame(mask_rows(records))
    if d.empty:
        return pd.DataFrame(columns=["arm", "ratio", "turnover", "released", "reprotected", "first_final", "overlap",
                                     "chance_overlap", "n_refreshes", "n", "unit"])
    per_run = d.groupby(["arm", "ratio", "seed"], sort=False)[
        ["turnover", "released", "reprotected", "first_final", "overlap", "n_refreshes"]].mean().reset_index()
    t = stats.interval_table(per_run, by=["arm", "ratio"], columns=["turnover", "released", "reprotected",
                                                                    "first_final", "overlap"],
                             unit=UNIT, unit_column="seed", bounds=(0.0, 1.0))
    t["n_refreshes"] = per_run.groupby(["arm", "ratio"], sort=False)["n_refreshes"].mean().to_numpy()
    t["chance_overlap"] = t["ratio"] / (2 - t["ratio"])
    return t


def turnover_curve(records: Sequence):
    """Turnover per refresh step (mean over tasks and seeds) per arm and ratio."""
    import pandas as pd

    rows = [{"arm": r.arm, "ratio": r.ratio, "seed": r.seed, **x} for r in records
            if not r.tuning and r.masks and r.masks.get("refreshes") for x in r.masks["refreshes"]]
    if not rows:
        return pd.DataFrame(columns=["arm", "ratio", "step", "turnover", "n"])
    d = pd.DataFrame(rows)
    return (d.groupby(["arm", "ratio", "step"]).agg(turnover=("turnover", "mean"), n=("seed", "nunique"))
            .reset_index())


def tables(records: Sequence, tasks: Sequence[str], *, margin: float, tuning: Sequence[dict] = ()) -> dict:
    import pandas as pd

    df = run_table(records, tasks)
    scores = score_table(df)
    return {"runs": df, "scores": scores, "score_table": wide_scores(scores, tasks),
            "comparisons": comparisons(df, margin=margin),
            "model_comparisons": model_comparisons(df, margin=margin), "masks": mask_table(records),
            "turnover": turnover_curve(records), "tuning": pd.DataFrame(list(tuning))}


def _records(t) -> list[dict]:
    return summary._records(t)


@dataclass
class MixedResult:
    """Every run of the mixed design (tuning runs in ``tuning_records``), each arm's tuned
    hyperparameters ``hp`` and the tuning table."""

    config: Config
    records: list
    hp: dict[str, dict]
    tuning: list[dict]
    tuning_records: list
    tasks: list[str]
    pretrain: dict
    tuning_seconds: float = 0.0
    capacity_records: list = field(default_factory=list)
    forgetting: Any = None                  # the two-stage Result of checks.forgetting_run, or None
    estimate: Any = None
    _frames: dict = field(default=None, init=False, repr=False, compare=False)

    design = "mixed"

    def frames(self) -> dict:
        """The tables of :func:`tables`, ``capacity`` (:func:`.checks.capacity_table`, empty when not run)
        and ``forgetting`` / ``forgetting_comparisons`` (:func:`.checks.forgetting_tables`)."""
        from epi_utils.isolation_study import checks

        if self._frames is None:
            self._frames = tables(self.records, self.tasks, margin=self.config.equivalence_margin, tuning=self.tuning)
            self._frames["capacity"] = checks.capacity_table(self.capacity_records, self.tasks)
            self._frames.update(checks.forgetting_tables(self.forgetting))
        return dict(self._frames)

    def answer(self, task: str = "mean", ratio: float | None = None) -> dict:
        """The row of EPI - EPI frozen after warmup (pooled over ratios unless ``ratio``) on ``task``."""
        c = self.frames()["comparisons"]
        sel = (c["a"] == "epi") & (c["b"] == "epi_warmup_frozen") & (c["task"] == task)
        sel &= c["ratio"].isna() if ratio is None else np.isclose(c["ratio"], ratio)
        return c[sel].iloc[0].to_dict() if sel.any() else {}

    def metrics(self) -> dict:
        f = self.frames()
        arms = {}
        for row in f["scores"].to_dict(orient="records"):
            key = row["arm"] if row["ratio"] != row["ratio"] else f"{row['arm']}@{100 * row['ratio']:g}%"
            arms.setdefault(key.replace(".", "_"), {})[row["task"]] = {
                k: _none(row[k]) for k in ("score", "score_low", "score_high", "n")}
        ans = {k: (_none(v) if isinstance(v, float) else v) for k, v in self.answer().items() if k in ("diff", "diff_low", "diff_high", "p_value",
                                                                "detectable", "tost_p", "margin", "outcome", "n")}
        return {"design": "mixed", "tasks": list(self.tasks), "arms": arms,
                "answer": ans, "comparisons": _records(f["comparisons"]), "masks": _records(f["masks"]),
                "hp": self.hp, "tuning": _records(f["tuning"]),
                "pretrain": {k: v for k, v in self.pretrain.items() if k in ("n_params", "model", "pretrain",
                                                                             "pretrain_seeds")},
                "n_runs": int(len(f["runs"]) // (len(self.tasks) + 1)) if len(f["runs"]) else 0,
                "n_seeds": int(f["runs"]["seed"].nunique()) if len(f["runs"]) else 0,
                "equivalence_margin": self.config.equivalence_margin,
                "capacity": _records(f["capacity"]), "forgetting": _records(f["forgetting"]),
                "forgetting_comparisons": _records(f["forgetting_comparisons"])}

    def headlines(self) -> list[str]:
        m = self.metrics()
        out = [f"answer.{k}" for k in ("diff", "diff_low", "diff_high", "detectable") if k in m["answer"]]
        out += [f"arms.{a}.mean.score" for a in ("full_sft", "separate") if a in m["arms"]]
        return out

    def timings(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.records:
            out[f"seconds/{r.arm}"] = out.get(f"seconds/{r.arm}", 0.0) + r.seconds
        out["seconds/tuning"] = self.tuning_seconds
        extra = {"seconds/capacity_check": sum(r.seconds for r in self.capacity_records)}
        if self.forgetting is not None:
            extra["seconds/forgetting_table"] = self.forgetting.timings()["seconds/total"]
        out.update({k: v for k, v in extra.items() if v})
        out["seconds/total"] = sum(r.seconds for r in self.records) + self.tuning_seconds + sum(extra.values())
        return out

    def card(self):
        from epi_utils.workbench.cards import Card, Headline

        f = self.frames()
        a = self.answer()
        question = ("In mixed multi-task SFT, does updating the isolation masks during training (EPI) beat the same "
                    "masks frozen after warmup, CPI-FT and full SFT?")
        heads = []
        if a:
            heads.append(Headline("EPI minus EPI frozen after warmup (mean over tasks and ratios)", a["diff"],
                                  a["diff_low"], a["diff_high"], "score points (share of test samples)",
                                  f"95% t-interval over {a['n']} seeds"))
        s = f["scores"]
        for arm in ("full_sft", "separate"):
            x = s[(s["arm"] == arm) & (s["task"] == "mean")]
            if len(x):
                heads.append(Headline(f"{NAMES[arm]}, mean test score", float(x["score"].iloc[0]),
                                      _none(x["score_low"].iloc[0]), _none(x["score_high"].iloc[0]),
                                      "share of test samples", f"95% interval over {int(x['n'].iloc[0])} seeds"))
        c = f["comparisons"]
        for b in ("full_sft", "cpi_ft"):
            x = c[(c["a"] == "epi") & (c["b"] == b) & (c["task"] == "mean") & c["ratio"].isna()]
            if len(x) and len(heads) < 5:
                heads.append(Headline(f"EPI minus {NAMES[b]} (mean over tasks and ratios)", float(x["diff"].iloc[0]),
                                      _none(x["diff_low"].iloc[0]), _none(x["diff_high"].iloc[0]), "score points",
                                      f"95% t-interval over {int(x['n'].iloc[0])} seeds"))
        while len(heads) < 3:
            heads.append(Headline("seeds", float(self.metrics()["n_seeds"]), unit="seeds"))
        return Card(question, answer_sentence(a), tuple(heads[:5]), figure="epi_minus_frozen")


def _none(v):
    return None if v != v else float(v)


def answer_sentence(row: dict) -> str:
    """The answer from the EPI - frozen row's data (never hand-written): the outcome, the difference
    with its interval, the TOST against the pre-declared margin and the effect detectable at 80% power."""
    from epi_utils.workbench.tables import format_interval, format_number, format_p

    if not row or row.get("outcome") == "not_enough_data":
        return "Too few paired seeds to compare EPI with EPI frozen after warmup."
    diff = format_interval(row["diff"], row["diff_low"], row["diff_high"])
    where = f"({row['n']} seeds, {format_p(row['p_value'])}; 80%-power detectable effect " \
            f"{format_number(row['detectable'], digits=2)})"
    m = format_number(row["margin"], digits=2)
    head = "EPI minus EPI frozen after warmup, test score averaged over tasks and isolation ratios"
    if row["outcome"] == "a_better":
        return f"Evolving helps: {head} = {diff} {where}."
    if row["outcome"] == "b_better":
        return f"Evolving hurts: {head} = {diff} {where}."
    if row["outcome"] == "equivalent":
        return (f"Evolving makes no difference beyond the margin of {m} fixed before the run: {head} = {diff} "
                f"{where}, equivalent by TOST ({format_p(row['tost_p'])}).")
    return (f"Inconclusive: {head} = {diff} {where}; neither a difference nor equivalence within the margin of {m} "
            f"(TOST {format_p(row['tost_p'])}) was shown.")


def describe(result: MixedResult) -> str:
    """A few lines for the notebook: model, pretraining seeds, runs and each arm's tuned settings."""
    from epi_utils.workbench.tables import format_number

    m = result.metrics()
    p = result.pretrain
    lines = [f"design: mixed multi-task SFT over {len(result.tasks)} tasks ({', '.join(result.tasks)}), "
             f"{result.config.steps_per_stage} optimizer steps per run",
             f"model: {p.get('model', result.config.model)}, {int(p.get('n_params', 0)):,} parameters; "
             f"pretraining seeds {', '.join(str(s) for s in p.get('pretrain_seeds', []))}",
             f"runs: {m['n_runs']} over {m['n_seeds']} seeds (plus {len(result.tuning_records)} tuning runs on "
             f"seed {result.config.seeds[0]}'s validation split)",
             f"equivalence margin (fixed before the run): {format_number(result.config.equivalence_margin)}"]
    for arm, hp in result.hp.items():
        extra = ", ".join(f"{k} {format_number(v)}" for k, v in hp.items() if k != "lr")
        lines.append(f"  {NAMES.get(arm, arm)}: lr {format_number(hp['lr'])}" + (f", {extra}" if extra else ""))
    return "\n".join(lines)


def named(frame):
    """``frame`` with its ``arm`` column in reader names (:data:`NAMES`)."""
    out = frame.copy()
    if "arm" in out:
        out["arm"] = out["arm"].map(lambda x: NAMES.get(x, x))
    return out


def answer_rows(cmp):
    """EPI - EPI frozen after warmup: every ratio (and pooled) x task, reader columns."""
    return _reader(cmp[(cmp["a"] == "epi") & (cmp["b"] == "epi_warmup_frozen")])


def other_rows(cmp):
    """The other pairs on the mean over tasks, per ratio and pooled."""
    sel = ~((cmp["a"] == "epi") & (cmp["b"] == "epi_warmup_frozen")) & (cmp["task"] == "mean")
    return _reader(cmp[sel])


def _reader(rows):
    out = rows.copy()
    out["a"] = out["a"].map(lambda x: NAMES.get(x, x))
    out["b"] = out["b"].map(lambda x: NAMES.get(x, x))
    out["ratio"] = out["ratio"].map(lambda r: "pooled" if r != r else f"{100 * r:g}%")
    return out[["a", "b", "ratio", "task", "a_mean", "b_mean", "diff", "diff_low", "diff_high", "p_value", "detectable",
                "tost_p", "outcome", "floor", "ceiling", "n"]]


#: reader names of the comparison and mask columns
READER_NAMES = {"a": "A", "b": "B", "a_mean": "A mean", "b_mean": "B mean", "diff": "A - B (95% CI)",
                "p_value": "p", "detectable": "detectable at 80% power", "tost_p": "TOST p (margin)",
                "outcome": "outcome", "floor": "floor (full SFT)", "ceiling": "ceiling (one model per task)",
                "n": "seeds", "turnover": "turnover per refresh", "released": "share released",
                "reprotected": "share of released re-protected", "first_final": "Jaccard first vs final set",
                "overlap": "overlap between tasks (Jaccard)", "chance_overlap": "overlap of random sets",
                "n_refreshes": "refreshes", "val_score": "validation score (mean over tasks)",
                "arm": "arm", "lr": "learning rate", "interval": "mask interval", "warmup": "warmup steps",
                "n_models": "pretrained models"}


def _not_run(what: str, option: str):
    import pandas as pd

    return pd.DataFrame([{"note": f"{what} not run in this profile ({option} = 0; the cpu-long profile runs it)"}])


def capacity_rows(capacity):
    """The capacity check for the reader (ratio as a percentage), or a one-row note when it was not run."""
    if not len(capacity):
        return _not_run("capacity check", "capacity_seeds")
    out = capacity.copy()
    out["ratio"] = out["ratio"].map(lambda r: f"{100 * r:g}%")
    out = out.rename(columns={"diff": "capacity_diff", "diff_low": "capacity_diff_low",
                              "diff_high": "capacity_diff_high"})
    return out.drop(columns=["unit"])


#: reader names of the two-stage forgetting table's arms (its design trains one stage after another)
FORGETTING_NAMES = {"epi": "EPI", "epi_frozen": "EPI frozen (stage-0 set pinned)", "full_sft": "full SFT",
                    "separate": "one model per stage", "replay": "replay"}


def forgetting_rows(forgetting):
    """The two-stage forgetting table for the reader, or a one-row note when it was not run."""
    if not len(forgetting):
        return _not_run("two-stage forgetting table", "forgetting_seeds")
    out = forgetting.copy()
    out["arm"] = [FORGETTING_NAMES.get(m, m) + ("" if r is None or r != r else f" at {100 * r:g}%")
                  for m, r in zip(out["method"], out["ratio"])]
    return out.drop(columns=[c for c in ("method", "ratio", "unit") if c in out])



def forgetting_comparison_rows(cmp):
    """Paired rows of the forgetting table (EPI - EPI frozen, each - full SFT), or a note."""
    if not len(cmp):
        return _not_run("two-stage forgetting table", "forgetting_seeds")
    out = cmp.copy()
    out["ratio"] = out["ratio"].map(lambda r: f"{100 * r:g}%")
    return out.drop(columns=["a_method", "b_method"])


READER_NAMES.update({"capacity_diff": "critical set only - all parameters (95% CI)",
                     "random_set": "random set of the same size trainable (control)",
                     "diff_random": "critical set - random set (95% CI)", "base_model": "pretrained model (floor)",
                     "share_only": "only the critical set trainable", "all_parameters": "all parameters trainable",
                     "share_kept": "share of the all-parameters score", "learned0": "stage 0 learned",
                     "retained0": "stage 0 retained", "forgetting0": "forgetting", "plastic": "stage 1 learned",
                     "metric": "metric", "verdict": "verdict", "note": "note", "task": "task", "ratio": "ratio"})
