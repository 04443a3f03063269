"""Study 05's design (issue 30): does a learned per-instance threshold beat a tuned static one on
multi-label episodes, and which attention carries Proto-AWATT's gain? Typed records.

For each seed and training group (one group of every setting with ``shared_training``, else one
per setting, as in the paper), :func:`run_study` meta-trains every architecture of ``cfg.archs``
on FewAsp(single) train (:func:`~epi_utils.acd.training.fit_model`): ProtoNet (max pooling),
Proto-AWATT and its attention ablations (same encoder, pooling and layers, minus the support-set
attention, minus the query-set attention, minus both; :data:`~epi_utils.acd.models.ABLATIONS`).

``cfg.tune_on``'s validation split (FewAsp(multi): 16 classes, disjoint from the 64 training and
the 20 test classes, 16% of its sentences multi-label) is cut by sentence
(:func:`~epi_utils.acd.episodes.split_sentences`, per seed) into a *fit* view and a *held-out*
view (``cfg.holdout``):

* fit view: the static threshold of every architecture (grid search of episode macro-F1 on
  ``val_episodes`` episodes per setting), the post-hoc policy's REINFORCE training (the same
  episodes), and the joint policy (one REINFORCE step per training episode on a fresh fit-view
  episode of the same shape, scored by the current encoder);
* held-out view (``select_episodes`` per setting): model selection only -- encoder early stopping
  (AUC), the post-hoc policy's stopping and restored epoch (reward), the policies' validation-reward
  curves.

Both policies are rewarded with ``cfg.policy_reward`` (default episode macro-F1, the evaluation
metric). Test: per seed, setting and test dataset the test episodes are sampled once and every
method is scored on the *same* episodes, so differences are paired (the seed is the unit):

* ``protonet``, ``proto_awatt_static``, ``proto_awatt_no_support``, ``proto_awatt_no_query``,
  ``proto_awatt_no_attention`` -- each architecture with its static threshold;
* ``proto_awatt_policy_joint`` / ``proto_awatt_policy_posthoc`` -- Proto-AWATT with the policy's
  per-query threshold (trained with the encoder / afterwards, starting from the static threshold);
* ``proto_awatt_oracle_count`` -- reference: each query predicts its top-``j`` classes with ``j``
  its *true* number of aspects (reads the test labels; the headroom of a per-instance threshold).
The Proto-AWATT rows share one encoder; their AUC is identical (AUC ignores thresholds).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
import pandas as pd
import torch

from epi_utils.acd import summary
from epi_utils.acd.config import Config, parse_setting
from epi_utils.acd.encoders import build_encoder, encode_bank
from epi_utils.acd.episodes import sample_episodes, split_sentences
from epi_utils.acd.metrics import confusion_counts, episode_auc, episode_macro_f1, instance_f1
from epi_utils.acd.models import build_model
from epi_utils.acd.threshold import ThresholdPolicy, episode_reward, predict, train_policy_episodes, tune_static_threshold
from epi_utils.acd.training import ACDData, episode_sentences, episode_tensors, fit_model, forward, load_data, score_episodes
from epi_utils.workbench import runs
from epi_utils.workbench.cards import Card, Headline, answer_sentence
from epi_utils.workbench.progress import progress
from epi_utils.workbench.stats import Comparison, Interval, Verdict

TRAIN_DATASET = "FewAsp(single)"
#: the static-threshold method of each architecture
STATIC = {"protonet": "protonet", "proto_awatt": "proto_awatt_static", "proto_awatt_no_support": "proto_awatt_no_support",
          "proto_awatt_no_query": "proto_awatt_no_query", "proto_awatt_no_attention": "proto_awatt_no_attention"}
POLICY_METHODS = ("proto_awatt_policy_joint", "proto_awatt_policy_posthoc")
METHODS = (*STATIC.values(), *POLICY_METHODS, "proto_awatt_oracle_count")


@dataclass(slots=True)
class EpisodeScores:
    """One method's scores on the test episodes of one (setting, seed, dataset): arrays ``(E,)``
    in episode order -- every method of that cell sees the same ``E`` episodes. ``threshold``:
    the static threshold, or the mean per-query policy threshold."""

    method: str
    setting: str
    seed: int
    dataset: str
    threshold: float
    auc: np.ndarray
    macro_f1: np.ndarray
    instance_f1: np.ndarray


@dataclass(slots=True)
class QueryThresholds:
    """A policy's per-query thresholds on one cell's test queries ``(Q,)`` with each query's true
    label count and top probability, and the cell's static threshold."""

    method: str
    setting: str
    seed: int
    dataset: str
    static_threshold: float
    threshold: np.ndarray
    n_labels: np.ndarray
    max_prob: np.ndarray


@dataclass(slots=True)
class ClassCounts:
    """TP/FP/FN of one test class summed over one cell's test episodes."""

    method: str
    setting: str
    seed: int
    dataset: str
    class_name: str
    tp: int
    fp: int
    fn: int


@dataclass(slots=True)
class TrainingRun:
    """One trained model: per-epoch held-out AUC and seconds, best epoch (restored), early stop;
    Proto-AWATT's also the joint policy's mean sampled reward and held-out reward per epoch."""

    arch: str
    settings: tuple[str, ...]
    seed: int
    episodes_per_epoch: int
    best_epoch: int
    stopped_early: bool
    val_auc: list[float]
    epoch_seconds: list[float]
    policy_reward: list[float]
    policy_val_reward: list[float]


@dataclass(slots=True)
class PolicyRun:
    """The post-hoc policy of one (setting, seed): mean sampled reward on the fit-view episodes and
    deterministic reward on the held-out episodes per epoch (``initial_reward``: before training),
    the restored epoch (0: the untrained policy, i.e. the static threshold, was kept), and on the
    same held-out episodes the static threshold's and the joint policy's reward (references)."""

    setting: str
    seed: int
    train_reward: list[float]
    val_reward: list[float]
    best_epoch: int
    stopped_early: bool
    static_reward: float
    joint_reward: float
    initial_reward: float = float("nan")


@dataclass
class Result:
    """Everything :func:`run_study` measured: the config that ran, typed records, the loaded splits'
    table and the seconds spent. ``*_frame()`` give pandas views of the records; :meth:`frames`,
    :meth:`metrics`, :meth:`headlines`, :meth:`timings` and :meth:`card` are the study contract's
    views. A rehearsal's result carries the full-scale ``estimate``."""

    config: Config
    scores: list[EpisodeScores] = field(default_factory=list)
    thresholds: list[QueryThresholds] = field(default_factory=list)
    class_counts: list[ClassCounts] = field(default_factory=list)
    training: list[TrainingRun] = field(default_factory=list)
    policies: list[PolicyRun] = field(default_factory=list)
    attention: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    splits: pd.DataFrame = field(default_factory=pd.DataFrame)
    data_note: str = ""
    estimate: dict | None = None

    def episode_frame(self) -> pd.DataFrame:
        """One row per (method, setting, seed, dataset, episode): ``auc, macro_f1, instance_f1, threshold``."""
        cols = ("method", "setting", "seed", "dataset", "episode", "auc", "macro_f1", "instance_f1", "threshold")
        parts = [pd.DataFrame({"method": s.method, "setting": s.setting, "seed": s.seed, "dataset": s.dataset,
                               "episode": np.arange(s.auc.size), "auc": s.auc, "macro_f1": s.macro_f1,
                               "instance_f1": s.instance_f1, "threshold": s.threshold}) for s in self.scores]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)

    def threshold_frame(self) -> pd.DataFrame:
        """One row per policy and test query: ``method, dataset, setting, seed, threshold, static_threshold, n_labels, max_prob``."""
        parts = [pd.DataFrame({"method": t.method, "setting": t.setting, "seed": t.seed, "dataset": t.dataset,
                               "static_threshold": t.static_threshold, "threshold": t.threshold,
                               "n_labels": t.n_labels, "max_prob": t.max_prob}) for t in self.thresholds]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def class_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.class_counts])

    def training_frame(self) -> pd.DataFrame:
        """One row per trained model and epoch: ``arch, settings, seed, epoch, val_auc, seconds, best,
        policy_val_reward`` (NaN for models without a policy)."""
        rows = [{"arch": r.arch, "settings": "+".join(r.settings), "seed": r.seed, "epoch": e + 1, "val_auc": v,
                 "seconds": s, "best": e + 1 == r.best_epoch,
                 "policy_val_reward": r.policy_val_reward[e] if e < len(r.policy_val_reward) else float("nan")}
                for r in self.training for e, (v, s) in enumerate(zip(r.val_auc, r.epoch_seconds))]
        return pd.DataFrame(rows)

    def policy_frame(self) -> pd.DataFrame:
        """One row per post-hoc policy and epoch (epoch 0: before training): ``setting, seed, epoch,
        train_reward, val_reward, best_epoch, static_reward, joint_reward`` (the validation-reward curves)."""
        rows = [{"setting": p.setting, "seed": p.seed, "epoch": e, "train_reward": t, "val_reward": v,
                 "best_epoch": p.best_epoch, "static_reward": p.static_reward, "joint_reward": p.joint_reward}
                for p in self.policies
                for e, (t, v) in enumerate(zip([float("nan"), *p.train_reward],
                                               [p.initial_reward, *(p.val_reward + [float("nan")] * len(p.train_reward))]))]
        return pd.DataFrame(rows, columns=["setting", "seed", "epoch", "train_reward", "val_reward", "best_epoch",
                                           "static_reward", "joint_reward"])

    # ------------------------------------------------------------------ summaries (computed once)
    @cached_property
    def per_seed(self) -> pd.DataFrame:
        """Each seed's mean over its test episodes (:func:`~epi_utils.acd.summary.per_seed`)."""
        return summary.per_seed(self.episode_frame())

    @cached_property
    def results(self) -> pd.DataFrame:
        """Mean over seeds with t-intervals (:func:`~epi_utils.acd.summary.over_seeds`)."""
        return summary.over_seeds(self.per_seed)

    @cached_property
    def comparisons(self) -> list[dict]:
        """Every claim's paired comparison over seeds (:func:`~epi_utils.acd.summary.paired_comparisons`)."""
        return summary.paired_comparisons(self.episode_frame())

    @cached_property
    def verdicts(self) -> dict[str, dict]:
        """Per claim, the verdicts over seeds on macro-F1 (:func:`~epi_utils.acd.summary.claim_verdicts`)."""
        return summary.claim_verdicts(self.comparisons, metric="macro_f1")

    def comparison(self, claim: str, *, dataset: str | None = None, setting: str = summary.ALL,
                   metric: str = "macro_f1") -> dict | None:
        """The comparison entry of ``claim`` (``None`` when it was not made)."""
        dataset = dataset or self.main_dataset
        for c in self.comparisons:
            if (c["claim"], c["dataset"], c["setting"], c["metric"]) == (claim, dataset, setting, metric):
                return c
        return None

    @property
    def main_dataset(self) -> str:
        """The test dataset of the card: FewAsp(multi) when evaluated, else the first one."""
        evals = list(self.config.eval_datasets)
        return summary.MAIN_DATASET if summary.MAIN_DATASET in evals else evals[0]

    # ------------------------------------------------------------------ the study contract
    def frames(self) -> dict[str, pd.DataFrame]:
        """Per-unit tables written beside the metrics: per-seed means, means over seeds with
        ``_low/_high`` intervals, paired comparisons, per-epoch training, the post-hoc policies'
        curves, pooled per-class F1, policy thresholds by label count and the loaded splits (raw
        per-episode and per-query records stay in the result)."""
        training = self.training_frame()
        return {"per_seed": self.per_seed, "results": self.results,
                "comparisons": summary.comparison_table(self.comparisons),
                "training": training, "training_summary": summary.training_summary(training),
                "policy_curves": self.policy_frame(),
                "per_class_f1": summary.per_class_tables(self.class_frame(), method="proto_awatt_policy_joint",
                                                         datasets=self.config.eval_datasets),
                "thresholds_by_labels": summary.threshold_by_labels(self.threshold_frame()),
                "splits": self.splits}

    def metrics(self) -> dict:
        """The metrics.json payload: ``results`` (per dataset, method and setting: ``auc``,
        ``macro_f1`` and their ``_ci95``, t over seeds), ``claims`` (paired over seeds, with the
        oracle's headroom beside the threshold claims), ``verdicts``, ``training`` and ``policy``
        (epochs run and restored)."""
        training = self.training_frame()
        pol = self.policy_frame()
        return {"results": summary.headline_metrics(self.results), "claims": summary.claims_metrics(self.comparisons),
                "verdicts": self.verdicts, "training": summary.training_metrics(training),
                "policy": {"best_epoch_mean": float(pol.groupby(["setting", "seed"]).best_epoch.first().mean())
                           if len(pol) else float("nan"),
                           "epochs_mean": float(pol.groupby(["setting", "seed"]).epoch.max().mean())
                           if len(pol) else float("nan")}}

    def headlines(self) -> list[str]:
        """The threshold and attention differences over all settings on the main test dataset."""
        ds = self.main_dataset
        return [f"claims.{c}.{ds}.macro_f1.{summary.ALL}.diff"
                for c in ("learned_threshold_joint", "learned_threshold_posthoc", "count_oracle", "both_attentions",
                          "attention_helps") if self.comparison(c, dataset=ds) is not None]

    def timings(self) -> dict:
        """Wall, training and evaluation seconds and the mean seconds per epoch (not metrics)."""
        training = self.training_frame()
        return {**{f"{k}_seconds": v for k, v in self.seconds.items()},
                "seconds_per_epoch_mean": float(training.seconds.mean()) if len(training) else float("nan")}

    def timing_line(self) -> str:
        """``"study wall time: 152 s with 1 torch thread(s); training 120 s, evaluation 30 s"``."""
        sec = self.seconds
        return (f"study wall time: {sec.get('wall', float('nan')):.0f} s with {self.config.num_threads} torch "
                f"thread(s); training {sec.get('train', 0.0):.0f} s, evaluation {sec.get('evaluate', 0.0):.0f} s")

    def card(self) -> Card:
        """The index's card: does a learned per-instance threshold beat the tuned static one on
        multi-label episodes? The answer is built from the joint policy's paired comparison over
        all settings of the main test dataset; headlines: both policies' and the oracle's
        differences and the attention ablation's (each over seeds)."""
        ds = self.main_dataset
        names = {"proto_awatt_policy_joint": "the jointly trained threshold policy",
                 "proto_awatt_static": "the tuned static threshold"}
        main = self.comparison("learned_threshold_joint", dataset=ds)
        answer = (answer_sentence(comparison_object(main), a=names[main["a_name"]], b=names[main["b_name"]],
                                  metric=f"{ds} test macro-F1 (mean over {len(self.config.settings)} settings)")
                  if main else "The threshold comparison was not made (no Proto-AWATT results).")
        answer = answer[:1].upper() + answer[1:]
        heads = []
        for claim, name in (("learned_threshold_joint", "joint policy - static threshold"),
                            ("learned_threshold_posthoc", "post-hoc policy - static threshold"),
                            ("count_oracle", "count oracle - static threshold (headroom)"),
                            ("both_attentions", "Proto-AWATT - same model without attention"),
                            ("attention_helps", "Proto-AWATT - ProtoNet")):
            c = self.comparison(claim, dataset=ds)
            if c is not None and len(heads) < 5:
                d = c["diff"]
                ok = d["n"] >= 2 and np.isfinite(d["low"])
                heads.append(Headline(f"{name}, {ds}", float(d["mean"]), float(d["low"]) if ok else None,
                                      float(d["high"]) if ok else None, "macro-F1",
                                      f"95% t-interval over {d['n']} seeds" if ok else f"{d['n']} seeds, no interval"))
        while len(heads) < 3:  # a run without the ablations: pad with Proto-AWATT's own score
            r = self.results[(self.results.method == "proto_awatt_static") & (self.results.dataset == ds)]
            row = r.iloc[len(heads) % max(len(r), 1)] if len(r) else None
            heads.append(Headline(f"Proto-AWATT static macro-F1, {ds} {row.setting if row is not None else ''}".strip(),
                                  float(row.macro_f1) if row is not None else float("nan"), unit="macro-F1"))
        return Card("Does a learned per-instance threshold beat a tuned static one on multi-label FewAsp episodes?",
                    answer, tuple(heads), figure="paired_differences")


def comparison_object(c: dict) -> Comparison:
    """A :class:`~epi_utils.workbench.stats.Comparison` back from its ``to_dict`` form."""
    d = c["diff"]
    iv = Interval(**{k: d[k] for k in Interval.__dataclass_fields__})
    return Comparison(a_name=c["a_name"], b_name=c["b_name"], metric=c["metric"], diff=iv, a_mean=c["a_mean"],
                      b_mean=c["b_mean"], p_value=c["p_value"], verdict=Verdict(c["verdict"]), paired=c["paired"],
                      higher_is_better=c["higher_is_better"])


def new_model(arch: str, cfg: Config, data: ACDData, seed: int, *, backbone=None):
    """A freshly initialised ``arch`` (seeded) on ``cfg.torch_device``."""
    torch.manual_seed(seed)
    enc = build_encoder(cfg.encoder, embeddings=data.matrix, hidden=cfg.hidden, dropout=cfg.dropout,
                        model_id=cfg.model_id, backbone=backbone() if callable(backbone) else backbone)
    return build_model(arch, enc, attn_dim=cfg.attn_dim).to(cfg.torch_device)


def oracle_count_predict(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Multi-hot ``(M, N)``: each row's top-``j`` classes by probability, ``j`` = the row's true label
    count (at least 1) -- the best a per-instance threshold could do if it knew the count."""
    j = np.maximum(labels.sum(1).astype(int), 1)
    rank = np.argsort(np.argsort(-probs, axis=1, kind="stable"), axis=1, kind="stable")
    return rank < j[:, None]


def static_reward(outputs: list[dict], tau: float, *, reward: str = "macro_f1") -> float:
    """Mean reward of the static threshold ``tau`` on scored episodes (the policies' reference)."""
    vals = []
    for s in outputs:
        pred = predict(s["probs"], tau)
        vals.append(episode_macro_f1(s["labels"], pred) if reward == "macro_f1"
                    else float(instance_f1(s["labels"], pred).mean()))
    return float(np.mean(vals))


def _triples(outputs: list[dict]) -> list[tuple]:
    return [(s["probs"], s["logits"], s["labels"]) for s in outputs]


def _scores(method, base, tau, test, preds) -> EpisodeScores:
    aucs = np.array([episode_auc(s["labels"], s["probs"]) for s in test])
    return EpisodeScores(method=method, threshold=float(tau), auc=aucs,
                         macro_f1=np.array([episode_macro_f1(s["labels"], p) for s, p in zip(test, preds)]),
                         instance_f1=np.array([float(instance_f1(s["labels"], p).mean()) for s, p in zip(test, preds)]),
                         **base)


def _class_counts(method, base, episodes, test, preds) -> list[ClassCounts]:
    acc: dict[str, np.ndarray] = {}
    for ep, s, p in zip(episodes, test, preds):
        tp, fp, fn = confusion_counts(s["labels"], p, axis=0)
        for j, c in enumerate(ep.classes):
            acc.setdefault(c, np.zeros(3, dtype=int))[:] += (tp[j], fp[j], fn[j])
    return [ClassCounts(method=method, class_name=c, tp=int(v[0]), fp=int(v[1]), fn=int(v[2]), **base)
            for c, v in acc.items()]


def evaluate_setting(outputs: dict, joint: ThresholdPolicy | None, cfg: Config, *, setting: str, seed: int,
                     test_episodes: dict, res: Result) -> None:
    """Thresholds and scores of one (seed, setting): ``outputs[arch][(part, setting)]`` are the scored
    episodes of each architecture (``part``: ``"fit"``, ``"held"`` or a test dataset);
    ``test_episodes[dataset]`` the episodes behind them; ``joint``: Proto-AWATT's jointly trained
    policy for this N. Appends the records to ``res``."""
    n_way, _ = parse_setting(setting)
    taus = {arch: tune_static_threshold([s["probs"] for s in out[("fit", setting)]],
                                        [s["labels"] for s in out[("fit", setting)]])[0] for arch, out in outputs.items()}
    posthoc = None
    if "proto_awatt" in outputs:
        aw = outputs["proto_awatt"]
        tau = taus["proto_awatt"]
        posthoc = ThresholdPolicy(n_way, init_threshold=min(max(tau, 0.02), 0.98), sigma=cfg.policy_sigma)
        torch.manual_seed(seed)
        fit = train_policy_episodes(posthoc, _triples(aw[("fit", setting)]), val_episodes=_triples(aw[("held", setting)]),
                                    max_epochs=cfg.policy_max_epochs, patience=cfg.policy_patience, lr=cfg.policy_lr,
                                    reward=cfg.policy_reward, seed=seed)
        res.policies.append(PolicyRun(
            setting=setting, seed=seed, train_reward=fit.train_reward, val_reward=fit.val_reward,
            best_epoch=fit.best_epoch, stopped_early=fit.stopped_early, initial_reward=fit.initial_val_reward,
            static_reward=static_reward(aw[("held", setting)], tau, reward=cfg.policy_reward),
            joint_reward=(episode_reward(joint, _triples(aw[("held", setting)]), reward=cfg.policy_reward)
                          if joint is not None else float("nan"))))
    for dataset, episodes in test_episodes.items():
        base = {"setting": setting, "seed": seed, "dataset": dataset}
        for arch, out in outputs.items():
            test = out[(dataset, setting)]
            preds = {STATIC[arch]: (taus[arch], [predict(s["probs"], taus[arch]) for s in test])}
            if arch == "proto_awatt":
                for name, pol in (("proto_awatt_policy_joint", joint), ("proto_awatt_policy_posthoc", posthoc)):
                    if pol is None:
                        continue
                    dyn = [pol.threshold(torch.as_tensor(s["probs"]), torch.as_tensor(s["logits"])).numpy() for s in test]
                    flat = np.concatenate(dyn)
                    preds[name] = (float(flat.mean()), [predict(s["probs"], d[:, None]) for s, d in zip(test, dyn)])
                    res.thresholds.append(QueryThresholds(
                        method=name, static_threshold=float(taus[arch]), threshold=flat,
                        n_labels=np.concatenate([s["labels"] for s in test]).sum(1).astype(int),
                        max_prob=np.concatenate([s["probs"] for s in test]).max(1), **base))
                preds["proto_awatt_oracle_count"] = (float("nan"),
                                                     [oracle_count_predict(s["probs"], s["labels"]) for s in test])
            for method, (t, plist) in preds.items():
                res.scores.append(_scores(method, base, t, test, plist))
                res.class_counts += _class_counts(method, base, episodes, test, plist)


@torch.no_grad()
def attention_examples(model, data: ACDData, *, dataset: str, n_way: int, k_shot: int, n_examples: int = 4,
                       seed: int = 0) -> list[dict]:
    """Support-attention weights of Proto-AWATT on support sentences of one ``dataset`` test episode,
    multi-aspect sentences first: ``[{"class", "aspects", "tokens", "weights"}]`` (CNN encoder:
    one weight per word)."""
    split = data.splits[(dataset, "test")]
    ep = sample_episodes(split, 1, n_way=n_way, k_shot=k_shot, n_query=1, rng=np.random.default_rng(seed))[0]
    model.eval()
    r = forward(model, episode_tensors(ep, data.encoded[(dataset, "test")], next(model.parameters()).device))
    order = sorted(range(n_way * k_shot), key=lambda i: -len(split.aspects[int(ep.support.reshape(-1)[i])]))
    out = []
    for i in order[:n_examples]:
        c, k = divmod(i, k_shot)
        sid = int(ep.support[c, k])
        toks = list(split.sentences[sid])
        out.append({"class": ep.classes[c], "aspects": sorted(split.aspects[sid]), "tokens": toks,
                    "weights": r["support_attn"][c, k, :len(toks)].cpu().numpy().tolist()})
    return out


def run_study(cfg: Config, *, progress: Callable = progress, data: ACDData | None = None,
              backbone=None) -> Result:
    """Run every seed x training group (see the module docstring) and return a :class:`Result`.

    ``data``: the loaded FewAsp splits (default: :func:`~epi_utils.acd.training.load_data` for
    ``cfg.encoder`` from ``$EPI_DATA_DIR/fewasp``; the rehearsal passes its toy copy).
    ``backbone``: for ``encoder="bert"``, a ``transformers`` model or a zero-argument factory of one
    (the GPU rehearsal passes a tiny random BERT); default: the pretrained ``cfg.model_id``.
    ``progress`` reports one unit per (seed, training group).
    """
    t_start = time.perf_counter()
    runs.seed_everything(cfg.seed)
    torch.set_num_threads(cfg.num_threads)
    if data is None:
        data = load_data(encoder=cfg.encoder, model_id=cfg.model_id)
    device = cfg.torch_device
    need = [(TRAIN_DATASET, "train"), (cfg.tune_on, "val"), *((d, "test") for d in cfg.eval_datasets)]
    absent = [f"{d}/{sp}.json" for d, sp in need if not data.has(d, sp)]
    if absent:
        raise ValueError(f"study 05 needs {', '.join(absent)}; " + (data.missing_note or "not loaded"))
    groups = [list(cfg.settings)] if cfg.shared_training else [[s] for s in cfg.settings]
    res = Result(config=cfg, seconds={"wall": 0.0, "train": 0.0, "evaluate": 0.0},
                 splits=summary.split_table(data), data_note=data.missing_note or "all splits present")
    tune, tune_enc = data.splits[(cfg.tune_on, "val")], data.encoded[(cfg.tune_on, "val")]
    train, train_enc = data.splits[(TRAIN_DATASET, "train")], data.encoded[(TRAIN_DATASET, "train")]
    need_per_class = max(k for _, k in cfg.shapes) + cfg.n_query
    jobs = [(seed, g) for seed in cfg.seeds for g in groups]
    for seed, group in progress(jobs, desc="seed x training group", unit="job"):
        t0 = time.perf_counter()
        shapes = [parse_setting(s) for s in group]
        fit_view, held_view = split_sentences(tune, holdout=cfg.holdout, rng=np.random.default_rng([seed, 5]),
                                              min_per_class=need_per_class)
        ekw = lambda s: dict(zip(("n_way", "k_shot"), parse_setting(s)), n_query=cfg.n_query)  # noqa: E731
        fit_eps = {s: sample_episodes(fit_view, cfg.val_episodes, rng=np.random.default_rng([seed, 1, *parse_setting(s)]),
                                      **ekw(s)) for s in group}
        held_eps = {s: sample_episodes(held_view, cfg.select_episodes,
                                       rng=np.random.default_rng([seed, 4, *parse_setting(s)]), **ekw(s)) for s in group}
        test_eps = {s: {d: sample_episodes(data.splits[(d, "test")], cfg.test_episodes,
                                           rng=np.random.default_rng([seed, 2, *parse_setting(s), i]), **ekw(s))
                        for i, d in enumerate(cfg.eval_datasets)} for s in group}
        select = [ep for s in group for ep in held_eps[s]]
        tune_ids = episode_sentences([ep for s in group for ep in (*fit_eps[s], *held_eps[s])])
        outputs, joint = {}, {}
        t_eval = 0.0
        for arch in cfg.archs:
            model = new_model(arch, cfg, data, seed, backbone=backbone)
            pols = ({n: ThresholdPolicy(n, init_threshold=1.0 / n, sigma=cfg.policy_sigma)
                     for n in sorted({n for n, _ in shapes})} if arch == "proto_awatt" else None)
            fit = fit_model(model, train, train_enc, shapes=shapes, n_query=cfg.n_query,
                            episodes_per_epoch=cfg.train_episodes, max_epochs=cfg.max_epochs, patience=cfg.patience,
                            lr=cfg.lr, rng=np.random.default_rng([seed, 0, *np.ravel(shapes)]), val_episodes=select,
                            val_enc=tune_enc, policies=pols, policy_lr=cfg.policy_lr, policy_seed=seed,
                            policy_split=fit_view if pols else None, policy_enc=tune_enc if pols else None,
                            policy_reward=cfg.policy_reward, device=device)
            res.training.append(TrainingRun(arch=arch, settings=tuple(group), seed=seed,
                                            episodes_per_epoch=cfg.train_episodes, best_epoch=fit.best_epoch,
                                            stopped_early=fit.stopped_early, val_auc=fit.val_auc,
                                            epoch_seconds=fit.epoch_seconds, policy_reward=fit.policy_reward,
                                            policy_val_reward=fit.policy_val_reward))
            if pols is not None:
                joint = pols
            t1 = time.perf_counter()
            bank = encode_bank(model.encoder, tune_enc, device=device, sentence_ids=tune_ids)
            out = {}
            for s in group:
                out[("fit", s)] = score_episodes(model, fit_eps[s], bank)
                out[("held", s)] = score_episodes(model, held_eps[s], bank)
            del bank
            for d in cfg.eval_datasets:
                eps = [ep for s in group for ep in test_eps[s][d]]
                bank = encode_bank(model.encoder, data.encoded[(d, "test")], device=device,
                                   sentence_ids=episode_sentences(eps))
                for s in group:
                    out[(d, s)] = score_episodes(model, test_eps[s][d], bank)
                del bank
            outputs[arch] = out
            if arch == "proto_awatt" and not res.attention and cfg.encoder == "cnn":
                res.attention = attention_examples(model, data, dataset=cfg.eval_datasets[0], n_way=shapes[0][0],
                                                   k_shot=shapes[0][1], seed=seed)
            del model
            t_eval += time.perf_counter() - t1
        t1 = time.perf_counter()
        for s in group:
            evaluate_setting(outputs, joint.get(parse_setting(s)[0]), cfg, setting=s, seed=seed,
                             test_episodes=test_eps[s], res=res)
        t_eval += time.perf_counter() - t1
        res.seconds["evaluate"] += t_eval
        res.seconds["train"] += time.perf_counter() - t0 - t_eval
    res.seconds["wall"] = time.perf_counter() - t_start
    return res
