"""Episodic training and evaluation of the few-shot ACD study (Study 05).

Protocol (Hu et al. 2021, adapted to a CPU budget): for each setting (N-way K-shot) and seed,
train ProtoNet and Proto-AWATT on episodes of the training split; tune a static threshold and
train the threshold policy on validation episodes of the evaluated dataset; score
``test_episodes`` test episodes. Methods reported:

* ``protonet``           -- ProtoNet + static threshold,
* ``proto_awatt_static`` -- Proto-AWATT + static threshold,
* ``proto_awatt_policy`` -- Proto-AWATT + per-instance policy threshold (same AUC as static:
  AUC does not depend on the threshold).

Datasets: the model that scores a dataset is trained on that dataset's ``train.json`` when it
exists (and ``protocol="auto"``), else on FewAsp(single)/train -- a *transfer* setting
(train: single-label sentences; test: multi-label sentences of unseen classes). Thresholds are
always tuned on the evaluated dataset's own validation split (its classes are disjoint from test).
Records: ``episodes`` (one row per method, setting, seed, dataset, episode: ``auc``, ``macro_f1``),
``thresholds`` (policy threshold and label count of each test query), ``per_class`` (TP/FP/FN per
test class), ``attention`` (support-attention weights on a few sentences).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from . import data as D
from .embeddings import EncodedSplit, encode_split, glove_vocab_and_matrix
from .encoders import TokenBank, build_encoder, encode_bank
from .episodes import Episode, sample_episodes
from .metrics import confusion_counts, episode_auc, episode_macro_f1, instance_f1
from .models import build_model, multilabel_proto_loss
from .threshold import ThresholdPolicy, predict, train_policy, tune_static_threshold

METHODS = ("protonet", "proto_awatt_static", "proto_awatt_policy")
_SETTING = re.compile(r"^(\d+)way(\d+)shot$")


def parse_setting(name: str) -> tuple[int, int]:
    """``"5way10shot" -> (5, 10)``; raises ``ValueError`` naming the allowed form."""
    m = _SETTING.match(name)
    if not m:
        raise ValueError(f"setting must look like '5way5shot', got {name!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass
class ACDConfig:
    """Validated study parameters (see the notebook's parameters cell for meanings)."""

    settings: list[str]
    seeds: list[int]
    n_query: int = 5
    train_episodes: int = 300
    val_episodes: int = 100
    test_episodes: int = 600
    transfer_test_episodes: int = 600
    eval_datasets: list[str] = field(default_factory=lambda: list(D.DATASETS))
    protocol: str = "auto"
    encoder: str = "cnn"
    hidden: int = 128
    attn_dim: int = 64
    dropout: float = 0.1
    lr: float = 1e-3
    policy_epochs: int = 5
    policy_sigma: float = 0.5
    shared_training: bool = True
    device: str = "cpu"
    num_threads: int = 2

    def __post_init__(self):
        for s in self.settings:
            parse_setting(s)
        if not self.seeds:
            raise ValueError("seeds must be a non-empty list of ints")
        bad = [d for d in self.eval_datasets if d not in D.DATASETS]
        if bad:
            raise ValueError(f"eval_datasets must be among {D.DATASETS}, got {bad}")
        if self.protocol not in ("auto", "transfer"):
            raise ValueError(f"protocol must be 'auto' or 'transfer', got {self.protocol!r}")
        if self.encoder not in ("cnn", "minilm"):
            raise ValueError(f"encoder must be 'cnn' or 'minilm', got {self.encoder!r}")
        for name in ("n_query", "train_episodes", "val_episodes", "test_episodes", "transfer_test_episodes",
                     "hidden", "attn_dim", "policy_epochs", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class ACDData:
    """Loaded splits ``{(dataset, split): FewAspSplit}``, their token ids, the vocabulary and
    embedding matrix, and the messages of the splits that are missing."""

    splits: dict
    encoded: dict
    vocab: object
    matrix: np.ndarray | None
    missing: list[str]

    def has(self, dataset: str, split: str) -> bool:
        return (dataset, split) in self.splits


def load_data(*, root=None, datasets=D.DATASETS, encoder: str = "cnn") -> ACDData:
    """Load every present split of ``datasets``; missing ones are recorded, not fatal (except
    FewAsp(single)/train, needed for training)."""
    splits, missing = {}, []
    for ds in datasets:
        for sp in D.SPLITS:
            try:
                splits[(ds, sp)] = D.load_split(ds, sp, root=root)
            except D.FewAspMissingError as err:
                missing.append(str(err))
    if ("FewAsp(single)", "train") not in splits:
        raise D.FewAspMissingError("FewAsp(single)/train.json is needed to train; " + " ".join(missing))
    if encoder == "minilm":
        from .encoders import encode_split_wordpiece, minilm_tokenizer

        tok = minilm_tokenizer()
        encoded = {k: encode_split_wordpiece(v, tok) for k, v in splits.items()}
        return ACDData(splits, encoded, tok, None, missing)
    vocab, matrix = glove_vocab_and_matrix(list(splits.values()))
    encoded = {k: encode_split(v, vocab) for k, v in splits.items()}
    return ACDData(splits, encoded, vocab, matrix, missing)


def episode_tensors(ep: Episode, enc: EncodedSplit, device) -> dict:
    """Tensors of an episode: support ``(N*K, L)`` class-major, query ``(M, L)``, labels ``(M, N)``."""
    s_ids, s_mask = enc.batch(ep.support.reshape(-1))
    q_ids, q_mask = enc.batch(ep.query)
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return {"support_ids": t(s_ids), "support_mask": t(s_mask), "query_ids": t(q_ids), "query_mask": t(q_mask),
            "labels": t(ep.query_labels), "n_way": ep.support.shape[0], "k_shot": ep.support.shape[1]}


def _forward(model, b):
    return model(b["support_ids"], b["support_mask"], b["query_ids"], b["query_mask"], n_way=b["n_way"], k_shot=b["k_shot"])


def train_model(model, split, enc, *, shapes: list[tuple[int, int]], n_query: int, n_episodes: int, lr: float,
                rng: np.random.Generator, device="cpu") -> list[float]:
    """Episodic training with Adam; episode ``i`` has ``(n_way, k_shot) = shapes[i % len(shapes)]``.
    Returns the loss of each episode."""
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for i in range(n_episodes):
        n_way, k_shot = shapes[i % len(shapes)]
        ep = sample_episodes(split, 1, n_way=n_way, k_shot=k_shot, n_query=n_query, rng=rng)[0]
        b = episode_tensors(ep, enc, device)
        loss = multilabel_proto_loss(_forward(model, b)["logits"], b["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def score_episodes(model, episodes, bank: TokenBank) -> list[dict]:
    """``[{"probs", "logits", "labels"} (M, N) numpy arrays]`` for each episode, from the token
    states in ``bank`` (see :func:`~epi_utils.acd.encoders.encode_bank`)."""
    model.eval()
    out = []
    for ep in episodes:
        hs, sm = bank.batch(ep.support.reshape(-1))
        hq, qm = bank.batch(ep.query)
        r = model.head(hs, sm, hq, qm, n_way=ep.support.shape[0], k_shot=ep.support.shape[1])
        out.append({"probs": r["probs"].cpu().numpy(), "logits": r["logits"].cpu().numpy(), "labels": ep.query_labels})
    return out


def _stack(scores, key):
    return np.concatenate([s[key] for s in scores])


def evaluate_setting(models: dict, banks: dict, data: ACDData, cfg: ACDConfig, *, setting: str, seed: int,
                     dataset: str, train_dataset: str) -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    """Score ``models`` (``{"protonet": m, "proto_awatt": m}``) on ``dataset`` using their token banks
    ``banks[(arch, split)]``; returns episode rows, the policy thresholds of the test queries and
    per-class counts."""
    n_way, k_shot = parse_setting(setting)
    n_test = cfg.test_episodes if dataset == train_dataset else cfg.transfer_test_episodes
    ekw = dict(n_way=n_way, k_shot=k_shot, n_query=cfg.n_query)
    val_eps = sample_episodes(data.splits[(dataset, "val")], cfg.val_episodes, rng=np.random.default_rng([seed, 1, n_way, k_shot]), **ekw)
    test_split = data.splits[(dataset, "test")]
    test_eps = sample_episodes(test_split, n_test, rng=np.random.default_rng([seed, 2, n_way, k_shot]), **ekw)
    rows, per_class, thr = [], [], pd.DataFrame()
    base = {"setting": setting, "seed": seed, "dataset": dataset, "train_dataset": train_dataset}
    for name, model in models.items():
        val = score_episodes(model, val_eps, banks[(name, "val")])
        test = score_episodes(model, test_eps, banks[(name, "test")])
        tau, _, _ = tune_static_threshold([s["probs"] for s in val], [s["labels"] for s in val])
        preds = {("protonet" if name == "protonet" else "proto_awatt_static"): [predict(s["probs"], tau) for s in test]}
        taus = {("protonet" if name == "protonet" else "proto_awatt_static"): tau}
        if name == "proto_awatt":
            policy = ThresholdPolicy(n_way, init_threshold=min(max(tau, 0.02), 0.98), sigma=cfg.policy_sigma)
            torch.manual_seed(seed)
            train_policy(policy, _stack(val, "probs"), _stack(val, "logits"), _stack(val, "labels"),
                         epochs=cfg.policy_epochs, seed=seed)
            dyn = [policy.threshold(torch.as_tensor(s["probs"]), torch.as_tensor(s["logits"])).numpy() for s in test]
            preds["proto_awatt_policy"] = [predict(s["probs"], d[:, None]) for s, d in zip(test, dyn)]
            taus["proto_awatt_policy"] = float(np.concatenate(dyn).mean())
            thr = pd.DataFrame({**base, "threshold": np.concatenate(dyn), "static_threshold": tau,
                                "n_labels": _stack(test, "labels").sum(1).astype(int),
                                "max_prob": _stack(test, "probs").max(1)})
        aucs = [episode_auc(s["labels"], s["probs"]) for s in test]
        for method, plist in preds.items():
            for e, (s, p) in enumerate(zip(test, plist)):
                rows.append({**base, "method": method, "episode": e, "auc": aucs[e],
                             "macro_f1": episode_macro_f1(s["labels"], p),
                             "instance_f1": float(instance_f1(s["labels"], p).mean()), "threshold": taus[method]})
            counts = {}
            for ep, s, p in zip(test_eps, test, plist):
                tp, fp, fn = confusion_counts(s["labels"], p, axis=0)
                for j, c in enumerate(ep.classes):
                    acc = counts.setdefault(c, np.zeros(3))
                    acc += (tp[j], fp[j], fn[j])
            per_class += [{**base, "method": method, "class": c, "tp": v[0], "fp": v[1], "fn": v[2]} for c, v in counts.items()]
    return rows, thr, pd.DataFrame(per_class)


@torch.no_grad()
def attention_examples(model, data: ACDData, *, dataset: str, n_way: int, k_shot: int, n_examples: int = 4,
                       seed: int = 0) -> list[dict]:
    """Support-attention weights of Proto-AWATT on the first support sentence of a few classes of
    one ``dataset`` test episode, preferring multi-aspect sentences: ``[{"class", "aspects", "tokens", "weights"}]``."""
    split = data.splits[(dataset, "test")]
    rng = np.random.default_rng(seed)
    ep = sample_episodes(split, 1, n_way=n_way, k_shot=k_shot, n_query=1, rng=rng)[0]
    r = _forward(model, episode_tensors(ep, data.encoded[(dataset, "test")], "cpu"))
    out = []
    order = sorted(range(n_way * k_shot), key=lambda i: -len(split.aspects[int(ep.support.reshape(-1)[i])]))
    for i in order[:n_examples]:
        c, k = divmod(i, k_shot)
        sid = int(ep.support[c, k])
        toks = list(split.sentences[sid])
        out.append({"class": ep.classes[c], "aspects": sorted(split.aspects[sid]), "tokens": toks,
                    "weights": r["support_attn"][c, k, :len(toks)].numpy().tolist()})
    return out


def _new_model(arch: str, cfg: ACDConfig, data: ACDData, seed: int):
    torch.manual_seed(seed)
    enc = build_encoder(cfg.encoder, embeddings=data.matrix, hidden=cfg.hidden, dropout=cfg.dropout)
    return build_model(arch, enc, attn_dim=cfg.attn_dim).to(cfg.device)


def run_study(cfg: ACDConfig, data: ACDData, *, progress: bool = True) -> dict:
    """Run every seed x setting. Returns ``{"episodes", "thresholds", "per_class", "timing"}``
    DataFrames and ``"attention"`` (list of dicts, from the first seed).

    With ``cfg.shared_training`` one model per (architecture, seed) is trained on episodes that
    cycle through all settings' (N, K) and is evaluated in every setting (CPU budget); otherwise
    one model per setting, as in the paper.
    """
    from tqdm.auto import tqdm

    torch.set_num_threads(cfg.num_threads)
    rows, thrs, pcs, timing, attention = [], [], [], [], []
    evals = [d for d in cfg.eval_datasets if data.has(d, "val") and data.has(d, "test")]
    sources = sorted({_train_source(d, data, cfg) for d in evals})
    groups = [cfg.settings] if cfg.shared_training else [[s] for s in cfg.settings]
    jobs = [(g, seed) for seed in cfg.seeds for g in groups]
    bar = tqdm(total=len(jobs) * len(sources) * 2 + len(cfg.seeds) * len(cfg.settings) * len(evals),
               desc="train/evaluate", disable=not progress)
    for group, seed in jobs:
        shapes = [parse_setting(s) for s in group]
        models = {}
        for src in sources:
            for arch in ("protonet", "proto_awatt"):
                model = _new_model(arch, cfg, data, seed)
                t0 = time.perf_counter()
                train_model(model, data.splits[(src, "train")], data.encoded[(src, "train")], shapes=shapes,
                            n_query=cfg.n_query, n_episodes=cfg.train_episodes, lr=cfg.lr,
                            rng=np.random.default_rng([seed, 0, *np.ravel(shapes)]), device=cfg.device)
                timing.append({"seed": seed, "phase": "train", "what": f"{arch} on {src} ({'+'.join(group)})",
                               "seconds": time.perf_counter() - t0, "episodes": cfg.train_episodes})
                models[(src, arch)] = model.cpu().eval()
                bar.update()
        for d in evals:
            src = _train_source(d, data, cfg)
            t0 = time.perf_counter()
            banks = {(a, sp): encode_bank(models[(src, a)].encoder, data.encoded[(d, sp)])
                     for a in ("protonet", "proto_awatt") for sp in ("val", "test")}
            timing.append({"seed": seed, "phase": "encode", "what": f"token banks of {d}",
                           "seconds": time.perf_counter() - t0, "episodes": None})
            for setting in group:
                t0 = time.perf_counter()
                r, t, p = evaluate_setting({a: models[(src, a)] for a in ("protonet", "proto_awatt")}, banks, data,
                                           cfg, setting=setting, seed=seed, dataset=d, train_dataset=src)
                n_eps = len({x["episode"] for x in r})
                timing.append({"seed": seed, "phase": "evaluate", "what": f"{setting} on {d}",
                               "seconds": time.perf_counter() - t0, "episodes": 2 * (n_eps + cfg.val_episodes)})
                rows += r
                thrs.append(t)
                pcs.append(p)
                bar.update()
            del banks
        if not attention and data.has("FewAsp(multi)", "test"):
            n_way, k_shot = shapes[0]
            attention = attention_examples(models[(sources[0], "proto_awatt")], data, dataset="FewAsp(multi)",
                                           n_way=n_way, k_shot=k_shot, seed=seed)
    bar.close()
    return {"episodes": pd.DataFrame(rows), "thresholds": pd.concat(thrs, ignore_index=True),
            "per_class": pd.concat(pcs, ignore_index=True), "timing": pd.DataFrame(timing), "attention": attention}


def _train_source(dataset: str, data: ACDData, cfg: ACDConfig) -> str:
    """Which training split scores ``dataset``: its own when present (protocol 'auto'), else FewAsp(single)."""
    if cfg.protocol == "auto" and data.has(dataset, "train"):
        return dataset
    return "FewAsp(single)"
