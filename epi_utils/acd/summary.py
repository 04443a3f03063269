"""Tables, paired comparisons and verdicts of Study 05, from the records of :class:`~epi_utils.acd.study.Result`.

Units: a test episode's score is one unit within a seed; a seed's mean over its test episodes is
one unit across seeds. Tables of means over seeds come from ``stats.interval_table`` (columns
``<metric>``, ``<metric>_low``, ``<metric>_high``, ``n``, ``unit``; Student-t over seeds); the
metrics.json blocks keep the workbench's ``<metric>_ci95: [low, high]`` convention (the report
reads it). Paired differences over episodes (>= 30) use the bootstrap.

The paper's two claims (Hu et al. 2021) are tested as paired differences on the *same* test
episodes and seeds with ``epi_utils.workbench.stats.compare`` (:data:`CLAIMS`):

* ``attention_helps``: Proto-AWATT (static threshold) minus ProtoNet (static threshold), on
  macro-F1 and AUC;
* ``learned_threshold_joint`` / ``learned_threshold_posthoc``: Proto-AWATT with the policy threshold
  (trained with the encoder / afterwards) minus the same Proto-AWATT with the static threshold, on
  macro-F1 (AUC does not depend on the threshold).
``count_oracle`` is a reference, not a claim: the oracle that knows each query's number of aspects
(top-``j`` with ``j`` the true count) minus the static threshold. It is the natural target of a
per-instance threshold, but not an upper bound of macro-F1: on single-label data it is the arg-max
rule, and macro-F1 can gain from a second predicted class on an uncertain query. The verdicts are :class:`~epi_utils.workbench.stats.Comparison` dicts; :func:`claim_verdicts`
counts them over settings. Nothing here turns numbers into sentences.

Paper figures: Hu et al. (2021) report results on FewAsp(single), FewAsp(multi), FewAsp; they could
not be verified from any source reachable here, so :data:`PAPER_REPORTED` is empty and tables print
"unknown". Fill it only from the paper (``{dataset: {method: {setting: {"auc": x, "macro_f1": y}}}}``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from epi_utils.workbench.stats import Verdict, compare, interval_table

PAPER_REPORTED: dict = {}
KEYS = ("method", "setting", "dataset")
#: the dataset of the headline numbers and of the claims' paired comparisons
MAIN_DATASET = "FewAsp(single)"
#: datasets whose test classes get a per-class F1 table
PER_CLASS_DATASETS = ("FewAsp(single)", "FewAsp(multi)")
SETTING_ORDER = ("5way5shot", "5way10shot", "10way5shot", "10way10shot")
#: claim -> (A, B, metrics): A - B, higher is better.
CLAIMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "attention_helps": ("proto_awatt_static", "protonet", ("macro_f1", "auc")),
    "learned_threshold_joint": ("proto_awatt_policy_joint", "proto_awatt_static", ("macro_f1",)),
    "learned_threshold_posthoc": ("proto_awatt_policy_posthoc", "proto_awatt_static", ("macro_f1",)),
    "count_oracle": ("proto_awatt_oracle_count", "proto_awatt_static", ("macro_f1",)),
}


def _setting_key(values: pd.Series) -> pd.Series:
    order = {s: i for i, s in enumerate(SETTING_ORDER)}
    return values.map(lambda s: order.get(s, len(order)))


def per_seed(episodes: pd.DataFrame) -> pd.DataFrame:
    """Mean over test episodes per (method, setting, dataset, seed): ``auc, macro_f1, instance_f1, n_episodes``."""
    g = episodes.groupby([*KEYS, "seed", "train_dataset"], sort=True)
    out = g[["auc", "macro_f1", "instance_f1"]].mean()
    out["n_episodes"] = g.size()
    return out.reset_index()


def over_seeds(seed_table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds with its 95% t-interval over seeds (``stats.interval_table``): one row per
    (method, setting, dataset, train_dataset) with ``auc, auc_low, auc_high, macro_f1, macro_f1_low,
    macro_f1_high, n`` (seeds), ``unit`` and ``n_episodes`` (test episodes per seed), sorted by the keys."""
    keys = [*KEYS, "train_dataset"]
    cols = [*keys, "auc", "auc_low", "auc_high", "macro_f1", "macro_f1_low", "macro_f1_high", "n", "unit",
            "n_episodes"]
    if seed_table.empty:
        return pd.DataFrame(columns=cols)
    ordered = seed_table.sort_values(keys, kind="stable")
    table = interval_table(ordered, by=keys, columns=("auc", "macro_f1"), unit="seeds", unit_column="seed",
                           method="t")
    episodes = ordered.groupby(keys, sort=False)["n_episodes"].first().astype(int).reset_index()
    return table.merge(episodes, on=keys, how="left")[cols]


def interval_label(row) -> str:
    """``"95% t-interval over 5 seeds"``: the caption of a row of :func:`over_seeds`."""
    return f"95% t-interval over {int(row['n'])} {row['unit']}"


def results_table(summary: pd.DataFrame, *, dataset: str, digits: int = 3) -> pd.DataFrame:
    """Rows (setting, method) of one dataset; AUC and macro-F1 as ``"mean [low, high]"`` (t-interval
    over seeds, column ``interval``) beside the paper's figures (``"unknown"`` where not verified).
    A dataset that was not evaluated gives an empty table with the same columns."""
    cols = ["AUC", "paper AUC", "macro-F1", "paper macro-F1", "interval"]
    rows = []
    for _, r in summary[summary.dataset == dataset].iterrows():
        row = {"setting": r.setting, "method": r.method, "interval": interval_label(r)}
        for m, label in (("auc", "AUC"), ("macro_f1", "macro-F1")):
            row[label] = f"{r[m]:.{digits}f} [{r[f'{m}_low']:.{digits}f}, {r[f'{m}_high']:.{digits}f}]"
            paper = PAPER_REPORTED.get(dataset, {}).get(r.method, {}).get(r.setting, {}).get(m)
            row[f"paper {label}"] = "unknown" if paper is None else f"{paper:.{digits}f}"
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["setting", "method", *cols]).set_index(["setting", "method"])
    table = pd.DataFrame(rows).sort_values(["setting", "method"], key=lambda c: _setting_key(c) if c.name == "setting" else c)
    return table.set_index(["setting", "method"])[cols]


def transfer_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The :func:`results_table` of every evaluated dataset other than FewAsp(single), stacked with
    the dataset and the dataset whose model scored it (``train_dataset``) as the outer index levels;
    an empty table when only FewAsp(single) was evaluated."""
    parts = {}
    for ds in sorted(set(summary.dataset) - {MAIN_DATASET}):
        src = summary[summary.dataset == ds]["train_dataset"].iloc[0]
        parts[(ds, src)] = results_table(summary, dataset=ds)
    if not parts:
        empty = results_table(summary, dataset="none")
        return empty.set_index(pd.MultiIndex.from_arrays([[]] * 4, names=["dataset", "train_dataset", "setting",
                                                                          "method"]))
    return pd.concat(parts, names=["dataset", "train_dataset"])


def paired_comparisons(episodes: pd.DataFrame, *, dataset: str = "FewAsp(single)") -> list[dict]:
    """Every claim x metric x setting of ``dataset`` compared twice with ``stats.compare``:
    over seeds (unit = a seed's mean over its test episodes; t-interval) and over episodes (unit =
    one (seed, episode) pair; bootstrap when >= 30, else t). Each entry is
    ``{"claim", "setting", "dataset", **Comparison.to_dict()}``."""
    sub = episodes[episodes.dataset == dataset]
    out = []
    for claim, (a, b, metrics) in CLAIMS.items():
        for setting in sorted(set(sub.setting), key=lambda s: (SETTING_ORDER + (s,)).index(s)):
            cell = sub[sub.setting == setting]
            if not {a, b} <= set(cell.method):
                continue
            for metric in metrics:
                pa = cell[cell.method == a].set_index(["seed", "episode"])[metric]
                pb = cell[cell.method == b].set_index(["seed", "episode"])[metric]
                seeds_a, seeds_b = pa.groupby(level=0).mean().to_dict(), pb.groupby(level=0).mean().to_dict()
                by_seed = compare(seeds_a, seeds_b, unit="seeds", metric=metric, a_name=a, b_name=b)
                n_eps = len(pa)
                by_episode = compare(pa.to_dict(), pb.to_dict(), unit="episodes", metric=metric, a_name=a, b_name=b,
                                     method="bootstrap" if n_eps >= 30 else "t")
                for c in (by_seed, by_episode):
                    out.append({"claim": claim, "setting": setting, "dataset": dataset, **c.to_dict()})
    return out


def comparison_table(comparisons: list[dict], *, digits: int = 4) -> pd.DataFrame:
    """The comparisons as a table: difference ``mean [lo, hi]``, interval label, p, detectable effect, verdict."""
    rows = [{"claim": c["claim"], "setting": c["setting"], "metric": c["metric"], "unit": c["diff"]["unit"],
             "A": c["a_name"], "B": c["b_name"], "A mean": round(c["a_mean"], digits), "B mean": round(c["b_mean"], digits),
             "A - B [95% CI]": f"{c['diff']['mean']:+.{digits}f} [{c['diff']['low']:+.{digits}f}, {c['diff']['high']:+.{digits}f}]",
             "interval": f"{c['diff']['method']} over {c['diff']['n']} {c['diff']['unit']}", "p": c["p_value"],
             "detectable": round(c["detectable"], digits), "verdict": c["verdict"]} for c in comparisons]
    return pd.DataFrame(rows)


def claim_verdicts(comparisons: list[dict], *, unit: str = "seeds", metric: str = "macro_f1") -> dict[str, dict]:
    """Per claim, the verdict of each setting on ``metric`` over ``unit`` and their counts:
    ``{claim: {"a", "b", "metric", "unit", "by_setting": {setting: verdict}, "counts": {verdict: n},
    "largest_detectable": x, "overall": verdict}}``. ``overall`` is the common verdict when every
    setting agrees, else ``"mixed"``. Verdict values are :class:`~epi_utils.workbench.stats.Verdict`'s."""
    out: dict[str, dict] = {}
    for c in comparisons:
        if c["diff"]["unit"] != unit or c["metric"] != metric:
            continue
        block = out.setdefault(c["claim"], {"a": c["a_name"], "b": c["b_name"], "metric": metric, "unit": unit,
                                            "by_setting": {}, "diff_by_setting": {}, "detectable_by_setting": {}})
        block["by_setting"][c["setting"]] = c["verdict"]
        block["diff_by_setting"][c["setting"]] = c["diff"]["mean"]
        block["detectable_by_setting"][c["setting"]] = c["detectable"]
    for block in out.values():
        verdicts = list(block["by_setting"].values())
        block["counts"] = {v.value: verdicts.count(v.value) for v in Verdict}
        block["largest_detectable"] = float(max(block["detectable_by_setting"].values()))
        block["overall"] = verdicts[0] if len(set(verdicts)) == 1 else "mixed"
    return out


def headline_metrics(summary: pd.DataFrame, *, dataset: str = MAIN_DATASET) -> dict:
    """``{method: {setting: {"auc", "auc_ci95", "macro_f1", "macro_f1_ci95", "ci_unit", "n_seeds", "n_episodes"}}}``
    (``_ci95``: ``[low, high]`` of :func:`over_seeds`, the metrics.json convention)."""
    out: dict = {}
    for _, r in summary[summary.dataset == dataset].iterrows():
        out.setdefault(r.method, {})[r.setting] = {
            "auc": r.auc, "auc_ci95": [r.auc_low, r.auc_high], "macro_f1": r.macro_f1,
            "macro_f1_ci95": [r.macro_f1_low, r.macro_f1_high], "ci_unit": f"{int(r.n)} {r.unit} (t)",
            "n_seeds": int(r.n), "n_episodes": int(r.n_episodes)}
    return out


def transfer_metrics(summary: pd.DataFrame) -> dict:
    """``{dataset: {"train_dataset", "transfer", method: {setting: {...}}}}`` for every evaluated
    dataset other than FewAsp(single) (``{}`` when there is none)."""
    out = {}
    for ds in sorted(set(summary.dataset) - {MAIN_DATASET}):
        src = summary[summary.dataset == ds]["train_dataset"].iloc[0]
        out[ds] = {"train_dataset": src, "transfer": src != ds, **headline_metrics(summary, dataset=ds)}
    return out


def training_summary(training: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, settings): epochs run and best epoch (mean, min, max over seeds) and mean seconds per epoch."""
    per_run = training.groupby(["arch", "train_dataset", "settings", "seed"]).agg(
        epochs=("epoch", "max"), best_epoch=("best", lambda b: int(np.argmax(b.to_numpy())) + 1),
        seconds_per_epoch=("seconds", "mean"), best_val_auc=("val_auc", "max")).reset_index()
    return per_run.groupby(["arch", "train_dataset", "settings"]).agg(
        epochs_mean=("epochs", "mean"), epochs_max=("epochs", "max"), best_epoch_mean=("best_epoch", "mean"),
        seconds_per_epoch=("seconds_per_epoch", "mean"), best_val_auc=("best_val_auc", "mean"),
        n_seeds=("seed", "nunique")).round(3)


def training_metrics(training: pd.DataFrame) -> dict:
    """``{"best_epoch_mean", "epochs_mean"}`` over the trained models (the metrics.json block)."""
    return {"best_epoch_mean": float(training[training.best].epoch.mean()),
            "epochs_mean": float(training.groupby(["arch", "train_dataset", "settings", "seed"]).epoch.max().mean())}


def verdict_table(verdicts: dict[str, dict]) -> pd.DataFrame:
    """The claims' verdicts (:func:`claim_verdicts`) as a table: one column per claim, rows A, B,
    the verdict of each setting, the largest detectable effect and the overall verdict."""
    return pd.DataFrame({c: {"A": v["a"], "B": v["b"], **v["by_setting"], "largest detectable": round(v["largest_detectable"], 4),
                             "overall": v["overall"]} for c, v in verdicts.items()})


def per_class_tables(per_class: pd.DataFrame, *, method: str, datasets: tuple[str, ...]) -> pd.DataFrame:
    """:func:`per_class_f1` of each of ``datasets`` that was evaluated, stacked with a ``dataset``
    column first (empty with those columns when none was)."""
    present = set(per_class.dataset) if not per_class.empty else set()
    parts = [per_class_f1(per_class, method=method, dataset=ds).assign(dataset=ds) for ds in datasets if ds in present]
    if not parts:
        return pd.DataFrame(columns=["dataset", "class", "tp", "fp", "fn", "f1"])
    out = pd.concat(parts, ignore_index=True)
    return out[["dataset", *[c for c in out.columns if c != "dataset"]]]


def per_class_f1(per_class: pd.DataFrame, *, method: str, dataset: str) -> pd.DataFrame:
    """F1 of each test class pooled over settings, seeds and episodes: ``class, f1, tp, fp, fn``."""
    if per_class.empty:
        return pd.DataFrame(columns=["class", "tp", "fp", "fn", "f1"])
    sel = per_class[(per_class.method == method) & (per_class.dataset == dataset)]
    g = sel.groupby("class_name")[["tp", "fp", "fn"]].sum()
    den = 2 * g.tp + g.fp + g.fn
    g["f1"] = np.where(den > 0, 2 * g.tp / den.where(den > 0, 1), 0.0)
    return g.reset_index().rename(columns={"class_name": "class"}).sort_values("f1")


def split_table(data) -> pd.DataFrame:
    """Classes, instances, unique sentences and label-count histogram of each loaded split."""
    rows = []
    for (ds, sp), split in sorted(data.splits.items()):
        counts = pd.Series(split.label_counts()).value_counts().sort_index()
        rows.append({"dataset": ds, "split": sp, "classes": len(split.classes), "instances": split.n_instances,
                     "sentences": len(split), "labels per sentence": " ".join(f"{k}:{v}" for k, v in counts.items())})
    return pd.DataFrame(rows)


def threshold_by_labels(thresholds: pd.DataFrame) -> pd.DataFrame:
    """Mean policy threshold and count per (method, dataset, true label count), with the Spearman
    correlation of threshold and label count per (method, dataset) (negative: lower thresholds for
    sentences with more aspects, as a per-instance threshold should do)."""
    from scipy.stats import spearmanr

    if thresholds.empty:
        return pd.DataFrame()
    tab = thresholds.groupby(["method", "dataset", "n_labels"]).threshold.agg(["mean", "count"]).round(4)
    rho = {k: (spearmanr(g.threshold, g.n_labels).statistic if g.n_labels.nunique() > 1 and g.threshold.nunique() > 1
               else float("nan")) for k, g in thresholds.groupby(["method", "dataset"])}
    tab["spearman_rho"] = [round(float(rho[(m, d)]), 4) for m, d, _ in tab.index]
    return tab


def claims_metrics(comparisons: list[dict], *, unit: str = "seeds") -> dict:
    """``{claim: {metric: {setting: {"diff", "diff_ci95", "p_value", "detectable", "verdict", "a_mean",
    "b_mean", "n", "unit"}}}}`` of the comparisons over ``unit`` -- the metrics.json block."""
    out: dict = {}
    for c in comparisons:
        if c["diff"]["unit"] != unit:
            continue
        out.setdefault(c["claim"], {}).setdefault(c["metric"], {})[c["setting"]] = {
            "diff": c["diff"]["mean"], "diff_ci95": [c["diff"]["low"], c["diff"]["high"]], "p_value": c["p_value"],
            "detectable": c["detectable"], "verdict": c["verdict"], "a": c["a_name"], "b": c["b_name"],
            "a_mean": c["a_mean"], "b_mean": c["b_mean"], "n": c["diff"]["n"], "unit": unit}
    return out
