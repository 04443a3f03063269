"""Study 02's tables and verdicts, as data: per-run metrics, the frontier with t-intervals over seeds,
and paired comparisons (:func:`epi_utils.workbench.stats.compare`, unit = seeds).

Per-run metrics of a two-stage run (``R[i][t]`` = held-out test score of task ``t`` after stage
``i``; a stage's score is the mean over its tasks; GEM's ACC and Chaudhry et al.'s forgetting
for two stages):

- ``learned0`` = R[0][stage 0]: stage-0 score after stage 0;
- ``retained0`` = R[1][stage 0]: stage-0 score after stage 1 (retention, the frontier's y);
- ``forgetting0`` = learned0 - retained0;
- ``plastic`` = R[1][stage 1]: stage-1 score after stage 1 (plasticity, the frontier's x);
- ``final`` = (retained0 + plastic) / 2 (ACC);
- the same with suffix ``_train`` on train samples (memorisation, secondary), and the diagnostics
  ``moved_owned_stage0`` (share of the elements owned by stage-0 tasks at the start of stage 1
  that changed in stage 1) and ``protected_share``.

``separate`` (one model per stage) gets ``learned0 = retained0 =`` full SFT's ``learned0`` on the
same seed (stage 0's model is never touched again) and ``plastic`` from its own stage-1 run.

Verdicts are :class:`~epi_utils.workbench.stats.Verdict` values in the tables; nothing here turns
them into or reads them from sentences. For the redesign (issue 26): :func:`tost` (equivalence with a
pre-declared margin) and :func:`detectable_effect` / :func:`paired_power` (the effect detected at 80% power).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from epi_utils.workbench import stats

METRICS = ("learned0", "retained0", "forgetting0", "plastic", "final")
HIGHER_IS_BETTER = {"learned0": True, "retained0": True, "forgetting0": False, "plastic": True, "final": True}
EPI_METHODS = ("epi", "epi_replay", "epi_frozen")
STATIC_METHODS = ("cpi_after_stage", "importance_after_stage", "random_after_stage", "static_cpi", "static_grad",
                  "random_mask")
UNIT = "seeds"


def _mean(d: dict, tasks: Sequence[str]) -> float:
    return float(np.mean([d[t] for t in tasks])) if d and all(t in d for t in tasks) else float("nan")


def run_table(records: Sequence, stage_tasks: Sequence[Sequence[str]]):
    """One row per run (``pandas.DataFrame``): method, ratio (NaN for bounds), seed, the metrics of
    the module docstring (test and ``_train``), diagnostics, steps, tokens. Tuning runs are skipped."""
    import pandas as pd

    s0, s1 = list(stage_tasks[0]), list(stage_tasks[-1])
    rows = []
    for r in records:
        if r.tuning:
            continue
        row = {"method": r.method, "ratio": np.nan if r.ratio is None else float(r.ratio), "seed": r.seed,
               "moved_owned_stage0": r.moved_owned_stage0, "protected_share": r.protected_share,
               "steps": r.steps, "tokens": r.tokens}
        for split, suffix in (("test", ""), ("train", "_train")):
            per = getattr(r, split)
            if r.method == "separate":
                row["plastic" + suffix] = _mean(per[-1], s1)
            else:
                row["learned0" + suffix] = _mean(per[0], s0)
                row["retained0" + suffix] = _mean(per[-1], s0)
                row["plastic" + suffix] = _mean(per[-1], s1)
        rows.append(row)
    df = pd.DataFrame(rows)
    for suffix in ("", "_train"):
        full = df[df["method"] == "full_sft"].set_index("seed")["learned0" + suffix]
        sep = df["method"] == "separate"
        df.loc[sep, "learned0" + suffix] = df.loc[sep, "seed"].map(full).to_numpy()
        df.loc[sep, "retained0" + suffix] = df.loc[sep, "learned0" + suffix]
        df["forgetting0" + suffix] = df["learned0" + suffix] - df["retained0" + suffix]
        df["final" + suffix] = (df["retained0" + suffix] + df["plastic" + suffix]) / 2
    return df


def arm(method: str, ratio) -> str:
    """Display name of a (method, ratio) arm: ``"epi_frozen@20%"`` or the bound's name."""
    return method if ratio is None or ratio != ratio else f"{method}@{100 * ratio:g}%"


def _arms(df):
    """``df`` with ``_ratio`` (ratio, -1 for the bounds: a group key that is never NaN) and ``arm``."""
    out = df.assign(_ratio=df["ratio"].fillna(-1.0))
    out["arm"] = [arm(m, None if r == -1.0 else r) for m, r in zip(out["method"], out["_ratio"])]
    return out


def frontier_table(df, *, metrics: Sequence[str] = METRICS + ("moved_owned_stage0",)):
    """Per (method, ratio) in order of appearance: for each metric its mean and 95% t-interval over
    seeds (``stats.interval_table``: columns ``<m>``, ``<m>_low``, ``<m>_high``), ``n`` seeds and the
    interval's ``unit``; ``arm`` names the row (:func:`arm`), ``ratio`` is NaN for the bounds."""
    t = stats.interval_table(_arms(df), by=["method", "_ratio", "arm"], columns=list(metrics), unit=UNIT,
                             unit_column="seed")
    t.insert(1, "ratio", t.pop("_ratio").where(lambda r: r != -1.0))
    return t


def _by_seed(df, method: str, ratio, metric: str) -> dict:
    sel = df["method"] == method
    sel &= df["ratio"].isna() if ratio is None or ratio != ratio else np.isclose(df["ratio"], ratio)
    return dict(zip(df.loc[sel, "seed"], df.loc[sel, metric].astype(float)))


def paired(df, a: tuple[str, float | None], b: tuple[str, float | None], metric: str) -> stats.Comparison:
    """Paired comparison of arm ``a`` = (method, ratio) with arm ``b`` on ``metric`` over the seeds
    both have (``stats.compare``, t-interval of the per-seed differences)."""
    va, vb = _by_seed(df, *a, metric), _by_seed(df, *b, metric)
    keys = sorted(set(va) & set(vb))
    return stats.compare({k: va[k] for k in keys}, {k: vb[k] for k in keys}, unit=UNIT, metric=metric,
                         higher_is_better=HIGHER_IS_BETTER.get(metric, True), a_name=arm(*a), b_name=arm(*b))


#: columns of a paired comparison row (after ratio, a_method, b_method)
COMPARISON_COLUMNS = ["metric", "a", "b", "a_mean", "b_mean", "diff", "diff_low", "diff_high", "n", "p_value",
                      "verdict", "detectable"]
#: columns of :func:`equal_plasticity`
EQUAL_PLASTICITY_COLUMNS = ["ratio", "a_method", "b_method", "retained0_diff", "retained0_low", "retained0_high",
                            "retained0_verdict", "retained0_detectable", "plastic_diff", "plastic_verdict",
                            "plastic_detectable", "equal_plasticity", "epi_retains_more", "n"]


def _row(c: stats.Comparison, **extra) -> dict:
    d = c.diff
    return {**extra, "metric": c.metric, "a": c.a_name, "b": c.b_name, "a_mean": c.a_mean, "b_mean": c.b_mean,
            "diff": d.mean, "diff_low": d.low, "diff_high": d.high, "n": d.n, "p_value": c.p_value,
            "verdict": c.verdict.value, "detectable": c.detectable}


def frontier_comparisons(df, *, metrics: Sequence[str] = ("retained0", "plastic", "final")):
    """Paired differences along the frontier (``DataFrame``): at every ratio, each EPI variant
    against each static / random mask present; plus ``ratio = NaN`` rows pooled over the ratios
    (per seed, the mean over ratios). Columns: ratio, a_method, b_method, metric, a, b, means,
    diff, diff_low, diff_high (its 95% t-interval over seeds), n, p_value, verdict, detectable."""
    import pandas as pd

    methods = set(df["method"])
    epis = [m for m in EPI_METHODS if m in methods]
    statics = [m for m in STATIC_METHODS if m in methods]
    ratios = sorted(df["ratio"].dropna().unique())
    rows = []
    for e in epis:
        for s in statics:
            for m in metrics:
                for r in ratios:
                    rows.append(_row(paired(df, (e, r), (s, r), m), ratio=r, a_method=e, b_method=s))
                pooled = df[df["method"].isin([e, s])].groupby(["method", "seed"])[m].mean().reset_index()
                pooled["ratio"] = np.nan
                rows.append(_row(paired(pooled, (e, None), (s, None), m), ratio=np.nan, a_method=e, b_method=s))
    return pd.DataFrame(rows, columns=["ratio", "a_method", "b_method", *COMPARISON_COLUMNS])


def bound_comparisons(df, *, metrics: Sequence[str] = ("retained0", "plastic", "final"), against: str = "full_sft"):
    """Every other arm against the bound ``against`` (default the floor, full SFT), paired over seeds."""
    import pandas as pd

    rows = []
    arms = df[["method", "ratio"]].drop_duplicates().itertuples(index=False)
    for method, ratio in arms:
        if method == against:
            continue
        r = None if ratio != ratio else ratio
        for m in metrics:
            rows.append(_row(paired(df, (method, r), (against, None), m), ratio=ratio, a_method=method,
                             b_method=against))
    return pd.DataFrame(rows, columns=["ratio", "a_method", "b_method", *COMPARISON_COLUMNS])


def equal_plasticity(cmp):
    """One row per (ratio, EPI variant, static variant) from :func:`frontier_comparisons`: the
    retention difference and verdict beside the plasticity difference and verdict, and
    ``equal_plasticity`` = the plasticity verdict is ``no_difference`` (at this design's
    resolution, ``plastic_detectable``). ``epi_retains_more`` is the retention verdict
    ``a_better`` at equal plasticity (``False`` when plasticity differs: the question then has
    no answer at this ratio)."""
    import pandas as pd

    rows = []
    keys = ["ratio", "a_method", "b_method"]
    for key, g in cmp.groupby(keys, dropna=False, sort=False):
        g = g.set_index("metric")
        if "retained0" not in g.index or "plastic" not in g.index:
            continue
        ret, pla = g.loc["retained0"], g.loc["plastic"]
        eq = pla["verdict"] == stats.Verdict.NO_DIFFERENCE.value
        rows.append({**dict(zip(keys, key)), "retained0_diff": ret["diff"], "retained0_low": ret["diff_low"],
                     "retained0_high": ret["diff_high"], "retained0_verdict": ret["verdict"],
                     "retained0_detectable": ret["detectable"], "plastic_diff": pla["diff"],
                     "plastic_verdict": pla["verdict"], "plastic_detectable": pla["detectable"],
                     "equal_plasticity": bool(eq),
                     "epi_retains_more": bool(eq and ret["verdict"] == stats.Verdict.A_BETTER.value),
                     "n": int(ret["n"])})
    return pd.DataFrame(rows, columns=EQUAL_PLASTICITY_COLUMNS)


def headline_metrics(df, cmp, eqp, bounds_cmp, *, ewc_lambda, ewc_tuning, pretrain: dict) -> dict:
    """The ``metrics.json`` payload: per arm the mean and 95% t-interval over seeds of every metric
    (``<m>``, ``<m>_low``, ``<m>_high`` from :func:`frontier_table`; metrics the arm lacks are left
    out) with ``n`` and ``unit``, the comparison tables as lists of rows, EWC's choice, pretraining
    facts, run counts."""
    arms = {}
    names = METRICS + ("retained0_train", "plastic_train", "moved_owned_stage0")
    for row in frontier_table(df, metrics=names).to_dict(orient="records"):
        d = {}
        for m in names:
            if row[m] == row[m]:
                d.update({m: row[m], f"{m}_low": row[f"{m}_low"], f"{m}_high": row[f"{m}_high"]})
        d.update(n=int(row["n"]), unit=row["unit"])
        arms[row["arm"].replace(".", "_")] = d
    return {"arms": arms, "frontier_comparisons": _records(cmp), "equal_plasticity": _records(eqp),
            "bound_comparisons": _records(bounds_cmp),
            "ewc": {"lambda": ewc_lambda, "tuning": list(ewc_tuning)},
            "pretrain": {k: v for k, v in pretrain.items() if k in ("n_params", "recall_pretrain_facts",
                                                                   "recall_unseen_facts", "model", "pretrain")},
            "n_runs": int(len(df)), "n_seeds": int(df["seed"].nunique()), **_counts(eqp)}


def _records(t) -> list[dict]:
    """A table's rows as dicts, NaN as None (JSON)."""
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in t.to_dict(orient="records")] if len(t) else []


def _counts(eqp) -> dict:
    """How many (ratio, EPI variant, static variant) pairs had equal plasticity, and in how many of
    those EPI retained more; ``pooled_*``: the same over the ratio-pooled rows."""
    out = {}
    for prefix, sel in (("", eqp["ratio"].notna() if len(eqp) else []), ("pooled_", eqp["ratio"].isna() if len(eqp)
                                                                       else [])):
        g = eqp[sel] if len(eqp) else eqp
        out[f"{prefix}n_pairs"] = int(len(g))
        out[f"{prefix}n_equal_plasticity"] = int(g["equal_plasticity"].sum()) if len(g) else 0
        out[f"{prefix}n_epi_retains_more"] = int(g["epi_retains_more"].sum()) if len(g) else 0
    return out


def headline_names(metrics: dict) -> list[str]:
    """Flattened names of the study's headline numbers that exist in ``metrics``: the floor's
    forgetting, the ceiling's and replay's retention, and the pooled EPI-vs-static verdict counts."""
    want = ["arms.full_sft.forgetting0", "arms.full_sft.plastic", "arms.separate.retained0", "arms.replay.retained0",
            "arms.ewc.retained0", "n_epi_retains_more", "n_equal_plasticity", "n_pairs", "pooled_n_epi_retains_more"]
    arms = metrics.get("arms", {})
    out = []
    for name in want:
        parts = name.split(".")
        if parts[0] != "arms" or (parts[1] in arms and parts[2] in arms[parts[1]]):
            out.append(name)
    return out


#: the columns of the frontier the notebook shows
FRONTIER_COLUMNS = ["arm", "learned0", "retained0", "retained0_low", "retained0_high", "plastic", "plastic_low",
                    "plastic_high", "final", "moved_owned_stage0", "n", "unit"]
#: the columns of the memorisation table the notebook shows
MEMORISATION_COLUMNS = ["arm", "learned0_train", "retained0_train", "retained0_train_low", "retained0_train_high",
                        "plastic_train"]
#: the verdict counts of :func:`headline_metrics` the notebook shows
COUNTS = ("n_runs", "n_seeds", "n_pairs", "n_equal_plasticity", "n_epi_retains_more", "pooled_n_pairs",
          "pooled_n_equal_plasticity", "pooled_n_epi_retains_more")


def tables(records: Sequence, stage_tasks: Sequence[Sequence[str]], *, ewc_tuning: Sequence[dict] = ()) -> dict:
    """Every table of a study's records (``pandas.DataFrame`` each): ``runs`` (:func:`run_table`),
    ``frontier`` (:func:`frontier_table`), ``memorisation`` (the frontier of the ``_train`` metrics),
    ``frontier_comparisons``, ``equal_plasticity``, ``bound_comparisons`` and ``ewc_tuning``
    (``ewc_lambda``, ``val_score`` per candidate; empty when lambda was not chosen)."""
    import pandas as pd

    df = run_table(records, stage_tasks)
    cmp = frontier_comparisons(df)
    return {"runs": df, "frontier": frontier_table(df),
            "memorisation": frontier_table(df, metrics=("learned0_train", "retained0_train", "plastic_train")),
            "frontier_comparisons": cmp, "equal_plasticity": equal_plasticity(cmp),
            "bound_comparisons": bound_comparisons(df),
            "ewc_tuning": pd.DataFrame(list(ewc_tuning), columns=["ewc_lambda", "val_score"])}


def describe(result) -> str:
    """What ran, in a few lines: the model and its size, the stages, the pretraining recall of the
    tiny model, the number of runs and EWC's lambda (a rehearsal prints its estimate when it ends)."""
    pre = result.pretrain
    lines = [f"model: {result.config.model} ({pre.get('n_params', 0):,} parameters); "
             f"stages: {[tuple(t) for t in result.stage_tasks]}"]
    if "recall_pretrain_facts" in pre:
        lines.append(f"greedy recall after pretraining: facts in the corpus {pre['recall_pretrain_facts']:.2f}, "
                     f"facts never stated {pre['recall_unseen_facts']:.2f}")
    lines.append(f"{len(result.records)} runs; EWC lambda chosen on validation: {result.ewc_lambda}")
    return "\n".join(lines)


def verdict_counts(metrics: dict) -> dict:
    """The run and verdict counts (:data:`COUNTS`) of a :func:`headline_metrics` payload."""
    return {k: metrics[k] for k in COUNTS}


# ----------------------------------------------------------------------- equivalence and power (issue 26)
@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests (TOST) of ``|a - b| < margin`` over paired units.

    ``diff``: the mean paired difference; ``diff_low``/``diff_high``: its ``1 - 2 alpha`` t-interval
    (90% for ``alpha = 0.05``); ``p_value``: the larger of the two one-sided p-values;
    ``equivalent``: ``p_value < alpha``, i.e. the interval lies inside ``(-margin, margin)``. The
    margin must be written down before the run (Schuirmann 1987; Lakens 2017)."""

    a_name: str
    b_name: str
    metric: str
    margin: float
    diff: float
    diff_low: float
    diff_high: float
    n: int
    unit: str
    p_value: float
    equivalent: bool
    alpha: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


def tost(a: Mapping, b: Mapping, *, margin: float, unit: str, metric: str = "metric", a_name: str = "A",
         b_name: str = "B", alpha: float = 0.05) -> Equivalence:
    """Paired TOST of ``a`` against ``b`` (mappings unit -> value, e.g. seed -> plasticity) with the
    pre-declared equivalence ``margin`` (> 0, in the metric's units). With differences ``d`` over
    the ``n`` shared units, ``se = sd(d) / sqrt(n)``: ``p1 = P(T > (mean + margin) / se)`` (H0: the
    difference <= -margin), ``p2 = P(T < (mean - margin) / se)`` (H0: >= margin), ``T ~ t(n - 1)``.
    Fewer than 2 units: ``equivalent`` is False and ``p_value`` NaN. Units in one side only raise."""
    from scipy import stats as sps

    if not margin > 0:
        raise ValueError(f"tost: the equivalence margin must be > 0, got {margin!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"tost: alpha must be in (0, 0.5), got {alpha!r}")
    only = sorted(set(a) ^ set(b), key=str)
    if only:
        raise ValueError(f"tost({a_name}, {b_name}): units present in only one side: {only[:10]}")
    keys = sorted(a, key=str)
    d = np.array([float(a[k]) - float(b[k]) for k in keys])
    d = d[~np.isnan(d)]
    n = int(d.size)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return Equivalence(a_name, b_name, metric, margin, mean, mean, mean, n, unit, float("nan"), False, alpha)
    se = float(d.std(ddof=1)) / float(np.sqrt(n))
    if se == 0.0:
        p = 0.0 if abs(mean) < margin else 1.0
        low = high = mean
    else:
        p1 = float(sps.t.sf((mean + margin) / se, n - 1))
        p2 = float(sps.t.cdf((mean - margin) / se, n - 1))
        p = max(p1, p2)
        half = float(sps.t.ppf(1 - alpha, n - 1)) * se
        low, high = mean - half, mean + half
    return Equivalence(a_name, b_name, metric, margin, mean, low, high, n, unit, p, bool(p < alpha), alpha)


def detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true paired difference a two-sided paired t-test at level ``alpha`` detects
    with probability ``power``, for per-unit differences of standard deviation ``sd`` over ``n``
    units: ``(t_{1 - alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)`` (the usual approximation;
    :func:`paired_power` gives the exact power of any effect). The half-width of the 95% interval,
    ``t_{0.975, n-1} sd / sqrt(n)``, is the effect detected with only ~50% power."""
    from scipy import stats as sps

    if n < 2:
        raise ValueError(f"detectable_effect needs n >= 2 paired units, got {n}")
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    df = n - 1
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * sd / np.sqrt(n))


def paired_power(effect: float, sd: float, n: int, *, alpha: float = 0.05) -> float:
    """Exact power of the two-sided paired t-test at level ``alpha`` for a true mean difference
    ``effect`` (noncentral t with noncentrality ``effect / (sd / sqrt(n))``, ``n - 1`` degrees of freedom)."""
    from scipy import stats as sps

    if n < 2:
        raise ValueError(f"paired_power needs n >= 2 paired units, got {n}")
    df, nc = n - 1, effect / (sd / np.sqrt(n))
    crit = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))
