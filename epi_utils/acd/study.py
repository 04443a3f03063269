"""Study 05's design: train, threshold and score every (seed, setting, dataset); typed records.

For each seed and each training group (one setting per model, as in the paper; or every setting
in one model with ``shared_training``), :func:`run_study` trains ProtoNet and Proto-AWATT with
early stopping (:func:`~epi_utils.acd.training.fit_model`); Proto-AWATT's threshold policy is
trained jointly on the training episodes. Then, per evaluated dataset and setting, it samples the
validation and test episodes once and scores every method on the *same* test episodes
(:func:`evaluate_setting`), so that differences are paired by (seed, episode):

* ``protonet``                    -- ProtoNet + static threshold (tuned on validation episodes),
* ``proto_awatt_static``          -- Proto-AWATT + static threshold,
* ``proto_awatt_policy_joint``    -- Proto-AWATT + the policy trained with the encoder (paper's design),
* ``proto_awatt_policy_posthoc``  -- Proto-AWATT + a policy trained afterwards on frozen validation
  outputs, starting from the static threshold.
* ``proto_awatt_oracle_count``    -- reference: each query predicts its top-``j`` classes with ``j``
  its *true* number of aspects (reads the test labels; a bound to compare with, not a method). Not
  an upper bound of macro-F1 (on single-label data it is the arg-max rule).
The Proto-AWATT rows share one encoder; their AUC is identical (AUC ignores thresholds).

Datasets: a dataset is scored by a model trained on its own ``train.json`` when present (and
``protocol="auto"``), else by the FewAsp(single) model -- a labelled *transfer* setting.
Thresholds and the post-hoc policy use the evaluated dataset's validation split only.
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
from epi_utils.acd.episodes import sample_episodes
from epi_utils.acd.metrics import confusion_counts, episode_auc, episode_macro_f1, instance_f1
from epi_utils.acd.models import build_model
from epi_utils.acd.threshold import ThresholdPolicy, predict, train_policy, tune_static_threshold
from epi_utils.acd.training import ACDData, episode_tensors, fit_model, forward, load_data, score_episodes
from epi_utils.workbench import runs
from epi_utils.workbench.progress import progress

ARCHS = ("protonet", "proto_awatt")
METHODS = ("protonet", "proto_awatt_static", "proto_awatt_policy_joint", "proto_awatt_policy_posthoc",
           "proto_awatt_oracle_count")


@dataclass(slots=True)
class EpisodeScores:
    """One method's scores on the test episodes of one (setting, seed, dataset): arrays ``(E,)``
    in episode order -- every method of that cell sees the same ``E`` episodes. ``threshold``:
    the static threshold, or the mean per-query policy threshold."""

    method: str
    setting: str
    seed: int
    dataset: str
    train_dataset: str
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
    """One trained model: per-epoch validation AUC and seconds, best epoch (restored), early stop."""

    arch: str
    train_dataset: str
    settings: tuple[str, ...]
    seed: int
    episodes_per_epoch: int
    best_epoch: int
    stopped_early: bool
    val_auc: list[float]
    epoch_seconds: list[float]
    policy_reward: list[float]


@dataclass
class Result:
    """Everything :func:`run_study` measured: the config that ran, typed records, the loaded splits'
    table and the seconds spent. ``*_frame()`` give pandas views of the records; :meth:`frames`,
    :meth:`metrics`, :meth:`headlines` and :meth:`timings` are the study contract's views (the
    notebook displays and saves them). A rehearsal's result carries the full-scale ``estimate``."""

    config: Config
    scores: list[EpisodeScores] = field(default_factory=list)
    thresholds: list[QueryThresholds] = field(default_factory=list)
    class_counts: list[ClassCounts] = field(default_factory=list)
    training: list[TrainingRun] = field(default_factory=list)
    attention: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    splits: pd.DataFrame = field(default_factory=pd.DataFrame)
    data_note: str = ""
    estimate: dict | None = None

    def episode_frame(self) -> pd.DataFrame:
        """One row per (method, setting, seed, dataset, episode): ``auc, macro_f1, instance_f1, threshold``."""
        cols = ("method", "setting", "seed", "dataset", "train_dataset", "episode", "auc", "macro_f1",
                "instance_f1", "threshold")
        parts = [pd.DataFrame({"method": s.method, "setting": s.setting, "seed": s.seed, "dataset": s.dataset,
                               "train_dataset": s.train_dataset, "episode": np.arange(s.auc.size), "auc": s.auc,
                               "macro_f1": s.macro_f1, "instance_f1": s.instance_f1, "threshold": s.threshold})
                 for s in self.scores]
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
        """One row per trained model and epoch: ``arch, train_dataset, settings, seed, epoch, val_auc, seconds, best``."""
        rows = [{"arch": r.arch, "train_dataset": r.train_dataset, "settings": "+".join(r.settings), "seed": r.seed,
                 "epoch": e + 1, "val_auc": v, "seconds": s, "best": e + 1 == r.best_epoch}
                for r in self.training for e, (v, s) in enumerate(zip(r.val_auc, r.epoch_seconds))]
        return pd.DataFrame(rows)

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
        """The paired comparisons of the claims on FewAsp(single) (:func:`~epi_utils.acd.summary.paired_comparisons`)."""
        return summary.paired_comparisons(self.episode_frame(), dataset=summary.MAIN_DATASET)

    @cached_property
    def verdicts(self) -> dict[str, dict]:
        """Per claim, the verdicts over seeds on macro-F1 (:func:`~epi_utils.acd.summary.claim_verdicts`)."""
        return summary.claim_verdicts(self.comparisons, unit="seeds", metric="macro_f1")

    # ------------------------------------------------------------------ the study contract
    def frames(self) -> dict[str, pd.DataFrame]:
        """Per-unit tables written beside the metrics: per-seed means, means over seeds with
        ``_low/_high`` intervals, paired comparisons, per-epoch training, pooled per-class F1,
        policy thresholds by label count and the loaded splits (raw per-episode and per-query
        records stay in the result: :meth:`episode_frame`, :meth:`threshold_frame`)."""
        training = self.training_frame()
        return {"per_seed": self.per_seed, "results": self.results,
                "comparisons": summary.comparison_table(self.comparisons),
                "training": training, "training_summary": summary.training_summary(training).reset_index(),
                "per_class_f1": summary.per_class_tables(self.class_frame(), method="proto_awatt_policy_joint",
                                                         datasets=summary.PER_CLASS_DATASETS),
                "thresholds_by_labels": summary.threshold_by_labels(self.threshold_frame()).reset_index(),
                "splits": self.splits}

    def metrics(self) -> dict:
        """The metrics.json payload: per method and setting on FewAsp(single) ``auc``, ``macro_f1`` and
        their ``_ci95`` (t over seeds); ``transfer``; ``claims`` (over seeds), ``verdicts``,
        ``comparisons`` (over seeds and over episodes); ``training`` (best and run epochs)."""
        training = self.training_frame()
        return {**summary.headline_metrics(self.results, dataset=summary.MAIN_DATASET),
                "transfer": summary.transfer_metrics(self.results),
                "claims": summary.claims_metrics(self.comparisons, unit="seeds"), "verdicts": self.verdicts,
                "comparisons": self.comparisons, "training": summary.training_metrics(training)}

    def headlines(self) -> list[str]:
        """Macro-F1 of the four methods and the claims' differences in the first setting."""
        s0 = self.config.settings[0]
        return ([f"{m}.{s0}.macro_f1" for m in METHODS[:4]]
                + [f"claims.{c}.macro_f1.{s0}.diff" for c in ("attention_helps", "learned_threshold_joint",
                                                              "learned_threshold_posthoc")])

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


def train_source(dataset: str, data: ACDData, cfg: Config) -> str:
    """Which training split scores ``dataset``: its own when present (protocol 'auto'), else FewAsp(single)."""
    if cfg.protocol == "auto" and data.has(dataset, "train"):
        return dataset
    return "FewAsp(single)"


def new_model(arch: str, cfg: Config, data: ACDData, seed: int, *, backbone=None):
    """A freshly initialised ``arch`` (seeded) on ``cfg.torch_device``."""
    torch.manual_seed(seed)
    enc = build_encoder(cfg.encoder, embeddings=data.matrix, hidden=cfg.hidden, dropout=cfg.dropout,
                        model_id=cfg.model_id, backbone=backbone() if callable(backbone) else backbone)
    return build_model(arch, enc, attn_dim=cfg.attn_dim).to(cfg.torch_device)


def _cycled_episodes(split, n: int, shapes, n_query: int, rng) -> list:
    """``n`` episodes whose (N, K) cycle through ``shapes``."""
    return [sample_episodes(split, 1, n_way=shapes[i % len(shapes)][0], k_shot=shapes[i % len(shapes)][1],
                            n_query=n_query, rng=rng)[0] for i in range(n)]


def _scores(method, base, tau, test, preds) -> EpisodeScores:
    aucs = np.array([episode_auc(s["labels"], s["probs"]) for s in test])
    return EpisodeScores(method=method, threshold=float(tau), auc=aucs,
                         macro_f1=np.array([episode_macro_f1(s["labels"], p) for s, p in zip(test, preds)]),
                         instance_f1=np.array([float(instance_f1(s["labels"], p).mean()) for s, p in zip(test, preds)]),
                         **base)


def evaluate_setting(models: dict, policies: dict, banks: dict, data: ACDData, cfg: Config, *, setting: str,
                     seed: int, dataset: str, train_dataset: str):
    """Score ``models`` (``{"protonet": m, "proto_awatt": m}``) on one cell with the token banks
    ``banks[(arch, split)]``; ``policies``: the jointly trained ``{n_way: ThresholdPolicy}`` of
    Proto-AWATT. Returns ``(scores, thresholds, class_counts)`` lists of records."""
    n_way, k_shot = parse_setting(setting)
    n_test = cfg.test_episodes if dataset == train_dataset else cfg.transfer_test_episodes
    ekw = dict(n_way=n_way, k_shot=k_shot, n_query=cfg.n_query)
    val_eps = sample_episodes(data.splits[(dataset, "val")], cfg.val_episodes,
                              rng=np.random.default_rng([seed, 1, n_way, k_shot]), **ekw)
    test_eps = sample_episodes(data.splits[(dataset, "test")], n_test,
                               rng=np.random.default_rng([seed, 2, n_way, k_shot]), **ekw)
    base = {"setting": setting, "seed": seed, "dataset": dataset}
    scores, thresholds, counts = [], [], []
    for arch, model in models.items():
        val = score_episodes(model, val_eps, banks[(arch, "val")])
        test = score_episodes(model, test_eps, banks[(arch, "test")])
        tau, _, _ = tune_static_threshold([s["probs"] for s in val], [s["labels"] for s in val])
        static = "protonet" if arch == "protonet" else "proto_awatt_static"
        preds = {static: (tau, [predict(s["probs"], tau) for s in test])}
        if arch == "proto_awatt":
            posthoc = ThresholdPolicy(n_way, init_threshold=min(max(tau, 0.02), 0.98), sigma=cfg.policy_sigma)
            torch.manual_seed(seed)
            train_policy(posthoc, *(np.concatenate([s[k] for s in val]) for k in ("probs", "logits", "labels")),
                         epochs=cfg.policy_epochs, lr=cfg.policy_lr, seed=seed)
            for name, pol in (("proto_awatt_policy_joint", policies[n_way]), ("proto_awatt_policy_posthoc", posthoc)):
                dyn = [pol.threshold(torch.as_tensor(s["probs"]), torch.as_tensor(s["logits"])).numpy() for s in test]
                flat = np.concatenate(dyn)
                preds[name] = (float(flat.mean()), [predict(s["probs"], d[:, None]) for s, d in zip(test, dyn)])
                thresholds.append(QueryThresholds(
                    method=name, static_threshold=float(tau), threshold=flat,
                    n_labels=np.concatenate([s["labels"] for s in test]).sum(1).astype(int),
                    max_prob=np.concatenate([s["probs"] for s in test]).max(1), **base))
            preds["proto_awatt_oracle_count"] = (float("nan"), [oracle_count_predict(s["probs"], s["labels"]) for s in test])
        for method, (t, plist) in preds.items():
            scores.append(_scores(method, {**base, "train_dataset": train_dataset}, t, test, plist))
            acc: dict[str, np.ndarray] = {}
            for ep, s, p in zip(test_eps, test, plist):
                tp, fp, fn = confusion_counts(s["labels"], p, axis=0)
                for j, c in enumerate(ep.classes):
                    acc.setdefault(c, np.zeros(3, dtype=int))[:] += (tp[j], fp[j], fn[j])
            counts += [ClassCounts(method=method, class_name=c, tp=int(v[0]), fp=int(v[1]), fn=int(v[2]), **base)
                       for c, v in acc.items()]
    return scores, thresholds, counts


def oracle_count_predict(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Multi-hot ``(M, N)``: each row's top-``j`` classes by probability, ``j`` = the row's true label
    count (at least 1) -- the best a per-instance threshold could do if it knew the count."""
    j = np.maximum(labels.sum(1).astype(int), 1)
    rank = np.argsort(np.argsort(-probs, axis=1, kind="stable"), axis=1, kind="stable")
    return rank < j[:, None]


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
    evals = [d for d in cfg.eval_datasets if data.has(d, "val") and data.has(d, "test")]
    if not evals:
        raise ValueError(f"none of eval_datasets {list(cfg.eval_datasets)} has both val.json and test.json; "
                         + data.missing_note)
    sources = sorted({train_source(d, data, cfg) for d in evals})
    groups = [list(cfg.settings)] if cfg.shared_training else [[s] for s in cfg.settings]
    res = Result(config=cfg, seconds={"wall": 0.0, "train": 0.0, "evaluate": 0.0},
                 splits=summary.split_table(data), data_note=data.missing_note or "all splits present")
    jobs = [(seed, g) for seed in cfg.seeds for g in groups]
    for seed, group in progress(jobs, desc="seed x training group", unit="job"):
        shapes = [parse_setting(s) for s in group]
        models, policies = {}, {}
        t0 = time.perf_counter()
        for src in sources:
            val_eps = _cycled_episodes(data.splits[(src, "val")], cfg.val_episodes, shapes, cfg.n_query,
                                       np.random.default_rng([seed, 3, *np.ravel(shapes)]))
            for arch in ARCHS:
                model = new_model(arch, cfg, data, seed, backbone=backbone)
                pols = ({n: ThresholdPolicy(n, init_threshold=1.0 / n, sigma=cfg.policy_sigma)
                         for n in sorted({n for n, _ in shapes})} if arch == "proto_awatt" else None)
                fit = fit_model(model, data.splits[(src, "train")], data.encoded[(src, "train")], shapes=shapes,
                                n_query=cfg.n_query, episodes_per_epoch=cfg.train_episodes, max_epochs=cfg.max_epochs,
                                patience=cfg.patience, lr=cfg.lr, rng=np.random.default_rng([seed, 0, *np.ravel(shapes)]),
                                val_episodes=val_eps, val_enc=data.encoded[(src, "val")], policies=pols,
                                policy_lr=cfg.policy_lr, policy_seed=seed, device=device)
                res.training.append(TrainingRun(arch=arch, train_dataset=src, settings=tuple(group), seed=seed,
                                                episodes_per_epoch=cfg.train_episodes, best_epoch=fit.best_epoch,
                                                stopped_early=fit.stopped_early, val_auc=fit.val_auc,
                                                epoch_seconds=fit.epoch_seconds, policy_reward=fit.policy_reward))
                models[(src, arch)] = model
                if pols is not None:
                    policies[src] = pols
        res.seconds["train"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for d in evals:
            src = train_source(d, data, cfg)
            banks = {(a, sp): encode_bank(models[(src, a)].encoder, data.encoded[(d, sp)], device=device)
                     for a in ARCHS for sp in ("val", "test")}
            for setting in group:
                s, t, c = evaluate_setting({a: models[(src, a)] for a in ARCHS}, policies[src], banks, data, cfg,
                                           setting=setting, seed=seed, dataset=d, train_dataset=src)
                res.scores += s
                res.thresholds += t
                res.class_counts += c
        if not res.attention and cfg.encoder == "cnn":
            shown = "FewAsp(multi)" if "FewAsp(multi)" in evals else evals[0]
            res.attention = attention_examples(models[(train_source(shown, data, cfg), "proto_awatt")], data,
                                               dataset=shown, n_way=shapes[0][0], k_shot=shapes[0][1], seed=seed)
        res.seconds["evaluate"] += time.perf_counter() - t0
    res.seconds["wall"] = time.perf_counter() - t_start
    return res
