"""Episodic training of ProtoNet / Proto-AWATT (Study 05) and scoring of episodes.

Protocol of the public re-implementations of Hu et al. (ACL 2021): epochs of ``episodes_per_epoch``
training episodes with Adam; after every epoch the mean episode AUC on fixed validation episodes
(classes disjoint from training) decides early stopping with ``patience``; the best epoch's weights
are restored (:func:`fit_model`).

Threshold policy trained *jointly* (the paper's design: the policy learns during meta-training):
with ``policies`` given, every training episode also makes one REINFORCE step
(:func:`~epi_utils.acd.threshold.reinforce_step`) -- on that episode's query outputs, or (study 05
since issue 30, ``policy_split``) on the current model's outputs of a multi-label episode of the
same shape drawn from the fit view of a validation split, since FewAsp(single) training episodes
are all single-label and teach the policy nothing about counts. Choice made here: the policy's
state is detached, so the policy loss does not reach the encoder -- the static and joint-policy
rows then share one encoder and differ only in the threshold, which is what the comparison tests.
The policy is saved and restored with the encoder at the best epoch; its deterministic reward on
the validation episodes is recorded per epoch (``FitResult.policy_val_reward``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from epi_utils.acd import data as D
from epi_utils.acd.embeddings import EncodedSplit, encode_split, glove_vocab_and_matrix
from epi_utils.acd.encoders import TokenBank, encode_bank
from epi_utils.acd.episodes import Episode, sample_episodes
from epi_utils.acd.metrics import episode_auc
from epi_utils.acd.models import multilabel_proto_loss
from epi_utils.acd.threshold import ThresholdPolicy, episode_reward, reinforce_step


@dataclass
class ACDData:
    """Loaded splits ``{(dataset, split): FewAspSplit}``, their token ids, the vocabulary (or
    tokenizer) and embedding matrix, and the relative names of the split files that are missing."""

    splits: dict
    encoded: dict
    vocab: object
    matrix: np.ndarray | None
    missing: list[str] = field(default_factory=list)
    where: str = ""  # the FewAsp folder searched

    def has(self, dataset: str, split: str) -> bool:
        return (dataset, split) in self.splits

    @property
    def missing_note(self) -> str:
        """One line naming every missing file and saying once how to get them ("" when none)."""
        if not self.missing:
            return ""
        return f"missing under {self.where}: {', '.join(self.missing)}; {D.remedies(Path(self.where))}"


def load_data(*, root=None, datasets=D.DATASETS, encoder: str = "cnn", tokenizer=None,
              model_id: str = "bert-base-uncased") -> ACDData:
    """Load every present split of ``datasets``; missing ones are recorded, not fatal, except
    FewAsp(single)/train (needed to train): then :class:`~epi_utils.acd.data.FewAspMissingError`
    names every missing file and gives the fetch hint once. ``encoder``: ``"cnn"`` (GloVe ids) or
    ``"minilm"`` / ``"bert"`` (WordPiece ids from ``tokenizer``; default: the MiniLM tokenizer, or
    ``model_id``'s for ``"bert"``)."""
    splits, missing = {}, []
    for ds in datasets:
        for sp in D.SPLITS:
            if D.has_split(ds, sp, root=root):
                splits[(ds, sp)] = D.load_split(ds, sp, root=root)
            else:
                missing.append(f"{ds}/{sp}.json")
    where = str(D._root(root))
    if ("FewAsp(single)", "train") not in splits:
        raise D.FewAspMissingError("FewAsp(single)/train.json is needed to train; "
                                   + ACDData({}, {}, None, None, missing, where).missing_note)
    if encoder in ("minilm", "bert"):
        if tokenizer is None and encoder == "bert":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_id)
        elif tokenizer is None:
            from epi_utils.acd.encoders import minilm_tokenizer

            tokenizer = minilm_tokenizer()
        from epi_utils.acd.encoders import encode_split_wordpiece

        encoded = {k: encode_split_wordpiece(v, tokenizer) for k, v in splits.items()}
        return ACDData(splits, encoded, tokenizer, None, missing, where)
    vocab, matrix = glove_vocab_and_matrix(list(splits.values()))
    encoded = {k: encode_split(v, vocab) for k, v in splits.items()}
    return ACDData(splits, encoded, vocab, matrix, missing, where)


def episode_tensors(ep: Episode, enc: EncodedSplit, device) -> dict:
    """Tensors of an episode: support ``(N*K, L)`` class-major, query ``(M, L)``, labels ``(M, N)``."""
    s_ids, s_mask = enc.batch(ep.support.reshape(-1))
    q_ids, q_mask = enc.batch(ep.query)
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return {"support_ids": t(s_ids), "support_mask": t(s_mask), "query_ids": t(q_ids), "query_mask": t(q_mask),
            "labels": t(ep.query_labels), "n_way": ep.support.shape[0], "k_shot": ep.support.shape[1]}


def forward(model, b: dict) -> dict:
    """``model`` on the tensors of :func:`episode_tensors`."""
    return model(b["support_ids"], b["support_mask"], b["query_ids"], b["query_mask"],
                 n_way=b["n_way"], k_shot=b["k_shot"])


@torch.no_grad()
def score_episodes(model, episodes, bank: TokenBank) -> list[dict]:
    """``[{"probs", "logits", "labels"} (M, N) numpy arrays]`` for each episode, from the token
    states in ``bank`` (see :func:`~epi_utils.acd.encoders.encode_bank`); runs on the model's device."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for ep in episodes:
        hs, sm = bank.batch(ep.support.reshape(-1))
        hq, qm = bank.batch(ep.query)
        r = model.head(hs.to(dev), sm.to(dev), hq.to(dev), qm.to(dev), n_way=ep.support.shape[0],
                       k_shot=ep.support.shape[1])
        out.append({"probs": r["probs"].cpu().numpy(), "logits": r["logits"].cpu().numpy(), "labels": ep.query_labels})
    return out


def episode_sentences(episodes) -> np.ndarray:
    """The sentence ids that ``episodes`` use (support and query), for a partial token bank."""
    return np.unique(np.concatenate([np.concatenate([ep.support.reshape(-1), ep.query]) for ep in episodes]))


def validation_auc(model, episodes: list[Episode], enc: EncodedSplit) -> float:
    """Mean episode AUC of ``model`` on ``episodes`` (the early-stopping criterion)."""
    return validate(model, episodes, enc)[0]


def validate(model, episodes: list[Episode], enc: EncodedSplit, *, policies: dict | None = None,
             reward: str = "macro_f1") -> tuple[float, float]:
    """``(mean episode AUC, mean policy reward)`` of ``model`` on ``episodes``: the reward of the
    deterministic thresholds of ``policies[n_way]`` (:func:`~epi_utils.acd.threshold.episode_reward`;
    NaN without policies)."""
    dev = next(model.parameters()).device
    bank = encode_bank(model.encoder, enc, device=dev, sentence_ids=episode_sentences(episodes))
    scores = score_episodes(model, episodes, bank)
    auc = float(np.nanmean([episode_auc(s["labels"], s["probs"]) for s in scores]))
    if not policies:
        return auc, float("nan")
    by_way: dict[int, list] = {}
    for s in scores:
        by_way.setdefault(s["probs"].shape[1], []).append((s["probs"], s["logits"], s["labels"]))
    total = sum(episode_reward(policies[n], eps, reward=reward) * len(eps) for n, eps in by_way.items())
    return auc, float(total / len(scores))


@dataclass
class FitResult:
    """What :func:`fit_model` did: per-episode losses, per-epoch validation AUC, seconds, mean
    sampled policy training reward and the policies' deterministic reward on the validation
    episodes (joint policy; empty without), the best epoch (1-based) and whether it stopped early."""

    losses: list[float]
    val_auc: list[float]
    epoch_seconds: list[float]
    policy_reward: list[float]
    best_epoch: int
    stopped_early: bool
    policy_val_reward: list[float] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        return len(self.epoch_seconds)


def fit_model(model, split, enc: EncodedSplit, *, shapes: list[tuple[int, int]], n_query: int,
              episodes_per_epoch: int, max_epochs: int, patience: int, lr: float, rng: np.random.Generator,
              val_episodes: list[Episode] | None = None, val_enc: EncodedSplit | None = None,
              policies: dict[int, ThresholdPolicy] | None = None, policy_lr: float = 1e-2,
              policy_samples: int = 8, policy_seed: int = 0, policy_split=None,
              policy_enc: EncodedSplit | None = None, policy_reward: str = "instance_f1", device="cpu",
              on_epoch=None) -> FitResult:
    """Episodic training with Adam; training episode ``i`` has ``(n_way, k_shot) = shapes[i % len(shapes)]``.

    With ``val_episodes`` (and their ``val_enc``), early stopping on validation AUC with
    ``patience`` epochs and restoration of the best epoch (model and ``policies``); without, all
    ``max_epochs`` run. ``policies``: ``{n_way: ThresholdPolicy}`` trained jointly, one REINFORCE
    step (``policy_reward``) per training episode: on that episode's query outputs, or, with
    ``policy_split`` (and its ``policy_enc``), on the current model's outputs (eval mode, no
    gradient) of an episode of the same shape drawn from ``policy_split`` (issue 30: multi-label
    episodes of validation classes). ``on_epoch(epoch, val_auc)`` is called after each epoch when
    given (a hook, e.g. for tests).
    """
    if val_episodes and val_enc is None:
        raise ValueError("val_episodes need val_enc (the token ids of their split)")
    if policy_split is not None and policy_enc is None:
        raise ValueError("policy_split needs policy_enc (the token ids of its split)")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    popt = {n: torch.optim.Adam(p.parameters(), lr=policy_lr) for n, p in (policies or {}).items()}
    missing = sorted({n for n, _ in shapes} - set(popt)) if policies is not None else []
    if missing:
        raise ValueError(f"policies lack n_way {missing}; have {sorted(popt)}")
    gen = torch.Generator().manual_seed(policy_seed)
    prng = np.random.default_rng(policy_seed)
    losses, vals, secs, rewards, pvals = [], [], [], [], []
    best, best_epoch, bad, best_state = -np.inf, 0, 0, None
    step = 0
    for epoch in range(1, max_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        epoch_rewards = []
        for _ in range(episodes_per_epoch):
            n_way, k_shot = shapes[step % len(shapes)]
            step += 1
            ep = sample_episodes(split, 1, n_way=n_way, k_shot=k_shot, n_query=n_query, rng=rng)[0]
            b = episode_tensors(ep, enc, device)
            out = forward(model, b)
            loss = multilabel_proto_loss(out["logits"], b["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if policies is not None:
                if policy_split is not None:
                    pep = sample_episodes(policy_split, 1, n_way=n_way, k_shot=k_shot, n_query=n_query, rng=prng)[0]
                    pb = episode_tensors(pep, policy_enc, device)
                    model.eval()
                    with torch.no_grad():
                        pout = forward(model, pb)
                    model.train()
                    probs, logits, labels = pout["probs"], pout["logits"], pb["labels"]
                else:
                    probs, logits, labels = out["probs"].detach(), out["logits"].detach(), b["labels"]
                epoch_rewards.append(reinforce_step(
                    policies[n_way], popt[n_way], probs.cpu(), logits.cpu(), labels.cpu(), n_samples=policy_samples,
                    generator=gen, reward=policy_reward))
        rewards.append(float(np.mean(epoch_rewards)) if epoch_rewards else float("nan"))
        if val_episodes and policies is not None:
            auc, pval = validate(model, val_episodes, val_enc, policies=policies, reward=policy_reward)
            pvals.append(pval)
        else:
            auc = validation_auc(model, val_episodes, val_enc) if val_episodes else float("nan")
        vals.append(auc)
        secs.append(time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(epoch, auc)
        if not val_episodes:
            best_epoch = epoch
            continue
        if auc > best:
            best, best_epoch, bad = auc, epoch, 0
            best_state = (copy.deepcopy(model.state_dict()),
                          {n: copy.deepcopy(p.state_dict()) for n, p in (policies or {}).items()})
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None and best_epoch != len(secs):
        model.load_state_dict(best_state[0])
        for n, sd in best_state[1].items():
            policies[n].load_state_dict(sd)
    model.eval()
    return FitResult(losses, vals, secs, [r for r in rewards if policies is not None], best_epoch,
                     stopped_early=len(secs) < max_epochs, policy_val_reward=pvals)
