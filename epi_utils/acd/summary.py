"""Tables, paired comparisons and verdicts of Study 05, from the records of :class:`~epi_utils.acd.study.Result`.

Units: a test episode's score is a measurement within a seed; a seed's mean over its test episodes
is the unit of every interval and comparison (issue 30: the seed, never the (seed, episode) pair).
Per-episode numbers are description only. Tables of means over seeds come from
``stats.interval_table`` (columns ``<metric>``, ``<metric>_low``, ``<metric>_high``, ``n``, ``unit``;
Student-t over seeds); the metrics.json blocks keep the workbench's ``<metric>_ci95: [low, high]``.

Comparisons (:data:`CLAIMS`), each A - B on the *same* test episodes, paired by seed with
``epi_utils.workbench.stats.compare``, per test dataset and setting and over all settings
(``setting = "all"``: each seed's mean over the settings, every setting weighted equally):

* threshold (:data:`THRESHOLD_CLAIMS`, macro-F1): the jointly trained policy, the post-hoc policy
  and the count oracle, each minus the static threshold of the same Proto-AWATT.
  ``count_oracle`` is the headroom of a per-instance threshold (the oracle knows each query's
  number of aspects; a reference, not a method); every threshold comparison carries it as
  ``headroom`` (oracle - static, with its interval over seeds) beside the difference.
* attention (:data:`ATTENTION_CLAIMS`, macro-F1 with the static threshold, and AUC): Proto-AWATT
  minus ProtoNet (the paper's claim), minus Proto-AWATT without support-set attention, without
  query-set attention, without both; and the no-attention model minus ProtoNet (what mean
  pooling, the projection layers and the temperature do without attention).
Nothing here turns numbers into sentences (the result card does, from the verdicts).

Paper figures: Hu et al. (2021) report results on FewAsp(single), FewAsp(multi), FewAsp; they could
not be verified from any source reachable here, so none are quoted.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from epi_utils.workbench.stats import Verdict, compare, interval_table

KEYS = ("method", "setting", "dataset")
#: the dataset of the card's answer (the multi-label test set of the issue)
MAIN_DATASET = "FewAsp(multi)"
SETTING_ORDER = ("5way5shot", "5way10shot", "10way5shot", "10way10shot")
ALL = "all"
#: claim -> (A, B, metrics): A - B, higher is better.
THRESHOLD_CLAIMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "learned_threshold_joint": ("proto_awatt_policy_joint", "proto_awatt_static", ("macro_f1",)),
    "learned_threshold_posthoc": ("proto_awatt_policy_posthoc", "proto_awatt_static", ("macro_f1",)),
    "count_oracle": ("proto_awatt_oracle_count", "proto_awatt_static", ("macro_f1",)),
}
ATTENTION_CLAIMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "attention_helps": ("proto_awatt_static", "protonet", ("macro_f1", "auc")),
    "support_attention": ("proto_awatt_static", "proto_awatt_no_support", ("macro_f1", "auc")),
    "query_attention": ("proto_awatt_static", "proto_awatt_no_query", ("macro_f1", "auc")),
    "both_attentions": ("proto_awatt_static", "proto_awatt_no_attention", ("macro_f1", "auc")),
    "pooling_without_attention": ("proto_awatt_no_attention", "protonet", ("macro_f1", "auc")),
}
CLAIMS = {**THRESHOLD_CLAIMS, **ATTENTION_CLAIMS}
#: reader-facing names of the methods
METHOD_NAMES = {"protonet": "ProtoNet", "proto_awatt_static": "Proto-AWATT, static threshold",
                "proto_awatt_no_support": "Proto-AWATT without support attention",
                "proto_awatt_no_query": "Proto-AWATT without query attention",
                "proto_awatt_no_attention": "Proto-AWATT without either attention",
                "proto_awatt_policy_joint": "Proto-AWATT, joint policy",
                "proto_awatt_policy_posthoc": "Proto-AWATT, post-hoc policy",
                "proto_awatt_oracle_count": "Proto-AWATT, count oracle (reference)"}


def setting_rank(setting: str) -> int:
    return SETTING_ORDER.index(setting) if setting in SETTING_ORDER else len(SETTING_ORDER) + (setting == ALL)


def per_seed(episodes: pd.DataFrame) -> pd.DataFrame:
    """Mean over test episodes per (method, setting, dataset, seed): ``auc, macro_f1, instance_f1, n_episodes``."""
    g = episodes.groupby([*KEYS, "seed"], sort=True)
    out = g[["auc", "macro_f1", "instance_f1"]].mean()
    out["n_episodes"] = g.size()
    return out.reset_index()


def over_seeds(seed_table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds with its 95% t-interval over seeds (``stats.interval_table``): one row per
    (method, setting, dataset) with ``auc, auc_low, auc_high, macro_f1, macro_f1_low, macro_f1_high,
    n`` (seeds), ``unit`` and ``n_episodes`` (test episodes per seed), sorted by the keys."""
    keys = list(KEYS)
    cols = [*keys, "auc", "auc_low", "auc_high", "macro_f1", "macro_f1_low", "macro_f1_high", "n", "unit",
            "n_episodes"]
    if seed_table.empty:
        return pd.DataFrame(columns=cols)
    ordered = seed_table.sort_values(keys, kind="stable")
    table = interval_table(ordered, by=keys, columns=("auc", "macro_f1"), unit="seeds", unit_column="seed",
                           method="t")
    episodes = ordered.groupby(keys, sort=False)["n_episodes"].first().astype(int).reset_index()
    return table.merge(episodes, on=keys, how="left")[cols]


def results_table(summary: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """Rows (dataset, setting, method) -- of one ``dataset``, or of every one -- for a reader
    (``tables.format_table`` merges the interval columns): method names, AUC and macro-F1 with
    their t-intervals over seeds, seeds and test episodes per seed."""
    sub = (summary if dataset is None else summary[summary.dataset == dataset]).copy()
    methods = list(METHOD_NAMES)
    sub["order"] = [(d, setting_rank(s), methods.index(m) if m in methods else 99)
                    for d, s, m in zip(sub.dataset, sub.setting, sub.method)]
    sub = sub.sort_values("order")
    sub["method"] = sub.method.map(lambda m: METHOD_NAMES.get(m, m))
    return sub[["dataset", "setting", "method", "auc", "auc_low", "auc_high", "macro_f1", "macro_f1_low",
                "macro_f1_high", "n", "n_episodes"]].reset_index(drop=True)


def _pooled(per_seed_table: pd.DataFrame) -> pd.DataFrame:
    """Each seed's mean over the settings (every setting weighted equally) as setting ``"all"``."""
    g = per_seed_table.groupby(["method", "dataset", "seed"])
    out = g[["auc", "macro_f1", "instance_f1"]].mean()
    out["n_episodes"] = g.n_episodes.sum()
    return out.reset_index().assign(setting=ALL)


def paired_comparisons(episodes: pd.DataFrame, *, claims: dict | None = None) -> list[dict]:
    """Every claim x metric x (dataset, setting) -- and each dataset over all settings -- compared
    over seeds (unit = a seed's mean over its test episodes; t-interval) with ``stats.compare``.
    Each entry is ``{"claim", "setting", "dataset", **Comparison.to_dict()}``; threshold claims
    also carry ``headroom`` (the count oracle's difference: ``{"mean", "low", "high"}``)."""
    claims = CLAIMS if claims is None else claims
    seeds = per_seed(episodes)
    seeds = pd.concat([seeds, _pooled(seeds)], ignore_index=True)
    out = []
    for dataset in sorted(set(seeds.dataset)):
        sub = seeds[seeds.dataset == dataset]
        for setting in sorted(set(sub.setting), key=setting_rank):
            cell = sub[sub.setting == setting]
            present = set(cell.method)
            rows = []
            for claim, (a, b, metrics) in claims.items():
                if not {a, b} <= present:
                    continue
                for metric in metrics:
                    va = cell[cell.method == a].set_index("seed")[metric].to_dict()
                    vb = cell[cell.method == b].set_index("seed")[metric].to_dict()
                    c = compare(va, vb, unit="seeds", metric=metric, a_name=a, b_name=b)
                    rows.append({"claim": claim, "setting": setting, "dataset": dataset, **c.to_dict()})
            oracle = [r for r in rows if r["claim"] == "count_oracle"]
            for r in rows:
                if r["claim"] in THRESHOLD_CLAIMS and oracle:
                    d = oracle[0]["diff"]
                    r["headroom"] = {"mean": d["mean"], "low": d["low"], "high": d["high"]}
            out += rows
    return out


def _fmt(d: dict, digits: int = 4) -> str:
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def comparison_table(comparisons: list[dict], *, digits: int = 4) -> pd.DataFrame:
    """The comparisons as a table: claim, dataset, setting, metric, A, B, their means, the
    difference ``mean [lo, hi]`` over seeds, p, detectable effect, verdict, and for threshold
    claims the oracle's headroom ``mean [lo, hi]``."""
    rows = [{"claim": c["claim"], "dataset": c["dataset"], "setting": c["setting"], "metric": c["metric"],
             "A": c["a_name"], "B": c["b_name"], "A mean": round(c["a_mean"], digits), "B mean": round(c["b_mean"], digits),
             "A - B [95% CI]": _fmt(c["diff"], digits), "headroom (oracle - static)":
                 _fmt(c["headroom"], digits) if "headroom" in c else "",
             "interval": f"{c['diff']['method']} over {c['diff']['n']} {c['diff']['unit']}", "p": c["p_value"],
             "detectable": round(c["detectable"], digits), "verdict": c["verdict"]} for c in comparisons]
    return pd.DataFrame(rows)


def claim_verdicts(comparisons: list[dict], *, metric: str = "macro_f1") -> dict[str, dict]:
    """Per claim, the verdict of each ``dataset/setting`` on ``metric`` (over seeds) and their
    counts: ``{claim: {"a", "b", "metric", "by_setting": {"<dataset>/<setting>": verdict},
    "diff_by_setting", "detectable_by_setting", "counts": {verdict: n}, "largest_detectable",
    "overall"}}``; ``overall`` is the common verdict of the per-setting cells when they agree, else
    ``"mixed"`` (the pooled ``all`` cells are listed but not counted)."""
    out: dict[str, dict] = {}
    for c in comparisons:
        if c["metric"] != metric:
            continue
        block = out.setdefault(c["claim"], {"a": c["a_name"], "b": c["b_name"], "metric": metric, "unit": "seeds",
                                            "by_setting": {}, "diff_by_setting": {}, "detectable_by_setting": {}})
        key = f"{c['dataset']}/{c['setting']}"
        block["by_setting"][key] = c["verdict"]
        block["diff_by_setting"][key] = c["diff"]["mean"]
        block["detectable_by_setting"][key] = c["detectable"]
    for block in out.values():
        verdicts = [v for k, v in block["by_setting"].items() if not k.endswith(f"/{ALL}")]
        block["counts"] = {v.value: verdicts.count(v.value) for v in Verdict}
        block["largest_detectable"] = float(max(block["detectable_by_setting"].values()))
        block["overall"] = verdicts[0] if verdicts and len(set(verdicts)) == 1 else "mixed"
    return out


def headline_metrics(summary: pd.DataFrame) -> dict:
    """``{dataset: {method: {setting: {"auc", "auc_ci95", "macro_f1", "macro_f1_ci95", "ci_unit", "n_seeds",
    "n_episodes"}}}}`` (``_ci95``: ``[low, high]`` of :func:`over_seeds`, the metrics.json convention)."""
    out: dict = {}
    for _, r in summary.iterrows():
        out.setdefault(r.dataset, {}).setdefault(r.method, {})[r.setting] = {
            "auc": r.auc, "auc_ci95": [r.auc_low, r.auc_high], "macro_f1": r.macro_f1,
            "macro_f1_ci95": [r.macro_f1_low, r.macro_f1_high], "ci_unit": f"{int(r.n)} {r.unit} (t)",
            "n_seeds": int(r.n), "n_episodes": int(r.n_episodes)}
    return out


def claims_metrics(comparisons: list[dict]) -> dict:
    """``{claim: {dataset: {metric: {setting: {"diff", "diff_ci95", "p_value", "detectable", "verdict",
    "a", "b", "a_mean", "b_mean", "n", "unit"[, "headroom", "headroom_ci95"]}}}}}`` -- the metrics.json block."""
    out: dict = {}
    for c in comparisons:
        cell = {"diff": c["diff"]["mean"], "diff_ci95": [c["diff"]["low"], c["diff"]["high"]], "p_value": c["p_value"],
                "detectable": c["detectable"], "verdict": c["verdict"], "a": c["a_name"], "b": c["b_name"],
                "a_mean": c["a_mean"], "b_mean": c["b_mean"], "n": c["diff"]["n"], "unit": c["diff"]["unit"]}
        if "headroom" in c:
            cell["headroom"] = c["headroom"]["mean"]
            cell["headroom_ci95"] = [c["headroom"]["low"], c["headroom"]["high"]]
        out.setdefault(c["claim"], {}).setdefault(c["dataset"], {}).setdefault(c["metric"], {})[c["setting"]] = cell
    return out


def training_summary(training: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, settings): epochs run and best epoch (mean, max over seeds), mean seconds per
    epoch and the best held-out AUC (mean over seeds)."""
    per_run = training.groupby(["arch", "settings", "seed"]).agg(
        epochs=("epoch", "max"), best_epoch=("best", lambda b: int(np.argmax(b.to_numpy())) + 1),
        seconds_per_epoch=("seconds", "mean"), best_val_auc=("val_auc", "max")).reset_index()
    return per_run.groupby(["arch", "settings"]).agg(
        epochs_mean=("epochs", "mean"), epochs_max=("epochs", "max"), best_epoch_mean=("best_epoch", "mean"),
        seconds_per_epoch=("seconds_per_epoch", "mean"), best_val_auc=("best_val_auc", "mean"),
        n_seeds=("seed", "nunique")).round(3).reset_index()


def training_metrics(training: pd.DataFrame) -> dict:
    """``{"best_epoch_mean", "epochs_mean"}`` over the trained models (the metrics.json block)."""
    return {"best_epoch_mean": float(training[training.best].epoch.mean()),
            "epochs_mean": float(training.groupby(["arch", "settings", "seed"]).epoch.max().mean())}


def policy_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per setting: the post-hoc policy's epochs run and restored epoch (mean over seeds), its best
    held-out reward, and on the same held-out episodes the static threshold's and the joint
    policy's reward (means over seeds)."""
    if curves.empty:
        return pd.DataFrame(columns=["setting", "epochs_mean", "best_epoch_mean", "posthoc_best", "static", "joint",
                                     "n_seeds"])
    per = curves.groupby(["setting", "seed"]).agg(epochs=("epoch", "max"), best_epoch=("best_epoch", "first"),
                                                  posthoc_best=("val_reward", "max"), static=("static_reward", "first"),
                                                  joint=("joint_reward", "first")).reset_index()
    out = per.groupby("setting").agg(epochs_mean=("epochs", "mean"), best_epoch_mean=("best_epoch", "mean"),
                                     posthoc_best=("posthoc_best", "mean"), static=("static", "mean"),
                                     joint=("joint", "mean"), n_seeds=("seed", "nunique")).reset_index()
    return out.sort_values("setting", key=lambda s: s.map(setting_rank)).round(4).reset_index(drop=True)


def per_class_tables(per_class: pd.DataFrame, *, method: str, datasets) -> pd.DataFrame:
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
        return pd.DataFrame(columns=["method", "dataset", "n_labels", "mean", "count", "spearman_rho"])
    tab = thresholds.groupby(["method", "dataset", "n_labels"]).threshold.agg(["mean", "count"]).round(4)
    rho = {k: (spearmanr(g.threshold, g.n_labels).statistic if g.n_labels.nunique() > 1 and g.threshold.nunique() > 1
               else float("nan")) for k, g in thresholds.groupby(["method", "dataset"])}
    tab["spearman_rho"] = [round(float(rho[(m, d)]), 4) for m, d, _ in tab.index]
    return tab.reset_index()
