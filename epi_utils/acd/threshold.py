"""Turning class probabilities into a multi-label prediction: static and learned thresholds.

Prediction rule (:func:`predict`): class j is predicted for a query when ``p_j > tau``; with
``min_one=True`` the arg-max class is always predicted as well (every FewAsp sentence has at
least one aspect). The same rule is used for every method, so only the threshold differs.

* Static threshold (:func:`tune_static_threshold`): one ``tau`` for a setting, the grid value
  that maximises mean episode macro-F1 on validation episodes.
* Dynamic threshold (Hu et al. 2021): a policy network maps the query's state to a per-instance
  threshold. Design here: state = the query's N probabilities sorted in decreasing order, its N
  negative distances (logits) sorted and standardised per row, and the normalised entropy
  (:func:`policy_state`); a 2-layer MLP outputs the mean ``m`` of a Gaussian over the logit of
  the threshold, ``z ~ N(m, sigma^2)``, ``tau = sigmoid(z)``; at test time ``tau = sigmoid(m)``.
  Reward = instance F1 of the resulting prediction; REINFORCE (Williams 1992) with, as the
  baseline, the mean reward of the ``n_samples`` thresholds drawn for the same instance:
  ``loss = -mean((r - mean_s r) * log pi(z | state))``.
Two ways of training the policy are reported (study 05): *jointly* with the encoder on the
training episodes (:func:`reinforce_step` once per training episode, from
:func:`epi_utils.acd.training.fit_model`; the paper's design), its output bias starting at
``logit(1/N)``; and *post hoc* (:func:`train_policy`) on frozen model outputs of validation
episodes, its output layer starting at zero weights with bias ``logit(tau_static)`` (so it starts
from the tuned static threshold). ``sigma`` is fixed in both.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from epi_utils.acd.metrics import episode_macro_f1, instance_f1


def predict(probs, tau, *, min_one: bool = True):
    """Multi-hot prediction ``probs > tau`` (numpy or torch; ``tau`` scalar or broadcastable, e.g.
    ``(M, 1)``), plus the arg-max class per row when ``min_one``."""
    if isinstance(probs, torch.Tensor):
        pred = probs > tau
        if min_one:
            top = torch.zeros_like(pred)
            top.scatter_(-1, probs.expand_as(pred).argmax(-1, keepdim=True), True)
            pred = pred | top
        return pred
    probs = np.asarray(probs)
    pred = probs > tau
    if min_one:
        np.put_along_axis(pred, np.broadcast_to(probs, pred.shape).argmax(-1)[..., None], True, axis=-1)
    return pred


def tune_static_threshold(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                          grid: np.ndarray | None = None, min_one: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Grid search of one threshold over episodes (lists of ``(M, N)`` arrays).

    Returns ``(best_tau, grid, mean macro-F1 per grid value)``; ties go to the smallest tau.
    """
    if len(probs) == 0 or len(probs) != len(labels):
        raise ValueError(f"need equally many probability and label arrays (>0), got {len(probs)} and {len(labels)}")
    grid = np.round(np.linspace(0.02, 0.98, 49), 4) if grid is None else np.asarray(grid, dtype=float)
    if len({p.shape for p in probs}) == 1:  # vectorised over episodes: (E, M, N)
        P, Y = np.stack(probs), np.stack(labels).astype(bool)
        top = np.zeros_like(Y)
        np.put_along_axis(top, P.argmax(-1)[..., None], True, axis=-1)
        scores = []
        for t in grid:
            pred = (P > t) | (top if min_one else False)
            tp, fp, fn = (Y & pred).sum(1), (~Y & pred).sum(1), (Y & ~pred).sum(1)
            den = 2 * tp + fp + fn
            f1 = np.divide(2 * tp, den, out=np.zeros(den.shape), where=den > 0)
            scores.append(f1.mean(-1).mean())
        scores = np.array(scores)
    else:
        scores = np.array([np.mean([episode_macro_f1(y, predict(p, t, min_one=min_one)) for p, y in zip(probs, labels)])
                           for t in grid])
    return float(grid[int(np.argmax(scores))]), grid, scores


def policy_state(probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """State ``(M, 2N + 1)``: sorted probs, standardised sorted logits, normalised entropy."""
    n = probs.shape[-1]
    sp = probs.sort(-1, descending=True).values
    sl = logits.sort(-1, descending=True).values
    sl = (sl - sl.mean(-1, keepdim=True)) / (sl.std(-1, keepdim=True, unbiased=False) + 1e-6)
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1, keepdim=True) / math.log(max(n, 2))
    return torch.cat([sp, sl, ent], dim=-1)


class ThresholdPolicy(nn.Module):
    """Per-instance threshold policy for a fixed ``n_way``: ``state (M, 2N+1) -> mean logit (M,)``."""

    def __init__(self, n_way: int, *, hidden: int = 32, init_threshold: float = 0.5, sigma: float = 0.5):
        super().__init__()
        if not 0.0 < init_threshold < 1.0:
            raise ValueError(f"init_threshold must be in (0, 1), got {init_threshold}")
        self.n_way, self.sigma = n_way, float(sigma)
        self.net = nn.Sequential(nn.Linear(2 * n_way + 1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.constant_(self.net[2].bias, math.log(init_threshold / (1 - init_threshold)))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state).squeeze(-1)

    @torch.no_grad()
    def threshold(self, probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Deterministic test-time threshold ``sigmoid(m)``, shape ``(M,)``."""
        return torch.sigmoid(self(policy_state(probs, logits)))


def instance_f1_torch(labels: torch.Tensor, preds: torch.Tensor) -> torch.Tensor:
    """Row-wise F1 over the last dim (any leading shape)."""
    y, p = labels.bool(), preds.bool()
    tp = (y & p).sum(-1).float()
    den = 2 * tp + (~y & p).sum(-1) + (y & ~p).sum(-1)
    return torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.zeros_like(tp))


#: rewards of :func:`reinforce_step`: per-instance F1 (the default design) or the episode's
#: macro-F1, the evaluation metric (issue 30: the batch is then one episode)
REWARDS = ("instance_f1", "macro_f1")


def macro_f1_torch(labels: torch.Tensor, preds: torch.Tensor) -> torch.Tensor:
    """Macro-F1 over the classes (last dim) of the instances (second-to-last dim): ``(..., M, N) -> (...)``;
    a class without true or predicted positives scores 0 (as :func:`~epi_utils.acd.metrics.episode_macro_f1`)."""
    y, p = labels.bool(), preds.bool()
    tp = (y & p).sum(-2).float()
    den = 2 * tp + (~y & p).sum(-2) + (y & ~p).sum(-2)
    return torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.zeros_like(tp)).mean(-1)


def reinforce_step(policy: ThresholdPolicy, optimizer: torch.optim.Optimizer, probs: torch.Tensor,
                   logits: torch.Tensor, labels: torch.Tensor, *, n_samples: int = 8, min_one: bool = True,
                   generator: torch.Generator | None = None, reward: str = "instance_f1") -> float:
    """One REINFORCE update on a batch of instances (``probs``, ``logits``, ``labels``: ``(M, N)``).

    ``reward="instance_f1"``: each instance's F1 is the reward of its own threshold (baseline: the
    mean over its samples). ``reward="macro_f1"``: the batch is one episode; each of the
    ``n_samples`` joint draws of the M thresholds is rewarded with the episode's macro-F1 (baseline:
    the mean over the draws) and its log-probability is the sum over the M instances.
    Returns the mean sampled reward before the update.
    """
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    m = policy(policy_state(probs, logits))                                   # (M,)
    eps = torch.randn((n_samples, m.shape[0]), generator=generator)
    z = (m.detach() + policy.sigma * eps)                                     # (S, M)
    logp = -0.5 * ((z - m) / policy.sigma) ** 2                               # up to a constant
    preds = predict(probs.unsqueeze(0), torch.sigmoid(z).unsqueeze(-1), min_one=min_one)
    if reward == "macro_f1":
        episode = macro_f1_torch(labels.unsqueeze(0).expand_as(preds), preds)  # (S,)
        loss = -((episode - episode.mean())[:, None] * logp).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(episode.mean())
    reward = instance_f1_torch(labels.unsqueeze(0).expand_as(preds), preds)   # (S, M)
    advantage = reward - reward.mean(0, keepdim=True)
    loss = -(advantage * logp).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(reward.mean())


def train_policy(policy: ThresholdPolicy, probs: np.ndarray, logits: np.ndarray, labels: np.ndarray, *,
                 epochs: int = 5, batch_size: int = 256, lr: float = 1e-2, n_samples: int = 8,
                 min_one: bool = True, seed: int = 0) -> list[float]:
    """Train ``policy`` on stacked instances ``(R, N)`` of frozen-model outputs; returns mean reward per epoch."""
    if probs.shape != labels.shape or probs.shape != logits.shape or probs.shape[1] != policy.n_way:
        raise ValueError(f"probs/logits/labels must be (R, {policy.n_way}); got {probs.shape}, {logits.shape}, {labels.shape}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    P, L, Y = (torch.as_tensor(a, dtype=torch.float32) for a in (probs, logits, labels))
    history = []
    for _ in range(epochs):
        order = torch.randperm(P.shape[0], generator=gen)
        rewards = [reinforce_step(policy, opt, P[idx], L[idx], Y[idx], n_samples=n_samples, min_one=min_one,
                                  generator=gen) for idx in order.split(batch_size)]
        history.append(float(np.mean(rewards)))
    return history


@dataclass
class PolicyFit:
    """What :func:`train_policy_episodes` did: mean sampled training reward and deterministic
    validation reward per epoch (the curve to show), the restored best epoch (1-based; 0: the
    untrained policy, whose validation reward is ``initial_val_reward``, was kept) and whether it
    stopped before ``max_epochs``."""

    train_reward: list[float]
    val_reward: list[float]
    best_epoch: int
    stopped_early: bool
    initial_val_reward: float = float("nan")


def episode_reward(policy: ThresholdPolicy, episodes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                   reward: str = "macro_f1", min_one: bool = True) -> float:
    """Mean over ``episodes`` (``(probs, logits, labels)`` of ``(M, N)`` each) of the reward of the
    policy's deterministic thresholds: episode macro-F1, or the mean instance F1."""
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    vals = []
    for probs, logits, labels in episodes:
        tau = policy.threshold(torch.as_tensor(probs, dtype=torch.float32),
                               torch.as_tensor(logits, dtype=torch.float32)).numpy()
        pred = predict(np.asarray(probs), tau[:, None], min_one=min_one)
        vals.append(episode_macro_f1(labels, pred) if reward == "macro_f1" else float(instance_f1(labels, pred).mean()))
    return float(np.mean(vals))


def train_policy_episodes(policy: ThresholdPolicy, episodes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                          val_episodes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
                          max_epochs: int = 50, patience: int = 3, lr: float = 1e-2, n_samples: int = 8,
                          reward: str = "macro_f1", min_one: bool = True, seed: int = 0) -> PolicyFit:
    """Train ``policy`` on frozen model outputs of whole episodes (one REINFORCE step per episode,
    :func:`reinforce_step` with ``reward``), until the deterministic reward on ``val_episodes``
    (:func:`episode_reward`) has not improved for ``patience`` epochs; the best epoch's weights
    are restored -- the untrained policy counts as epoch 0, so a policy that never beats its
    starting point on ``val_episodes`` is returned unchanged (the post-hoc policy starts at the
    static threshold). Without ``val_episodes`` all ``max_epochs`` run. Issue 30's post-hoc policy:
    reward = the evaluation metric, trained until its validation reward stops improving."""
    if not episodes:
        raise ValueError("train_policy_episodes needs at least one episode")
    bad_shape = [p.shape for p, _, _ in episodes if p.shape[-1] != policy.n_way]
    if bad_shape:
        raise ValueError(f"episodes must have N = {policy.n_way} columns; got {bad_shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    tensors = [tuple(torch.as_tensor(a, dtype=torch.float32) for a in ep) for ep in episodes]
    train, val = [], []
    best, best_epoch, bad, best_state = -np.inf, 0, 0, None
    initial = float("nan")
    if val_episodes:
        initial = episode_reward(policy, val_episodes, reward=reward, min_one=min_one)
        best, best_state = initial, copy.deepcopy(policy.state_dict())
    for epoch in range(1, max_epochs + 1):
        order = torch.randperm(len(tensors), generator=gen).tolist()
        train.append(float(np.mean([reinforce_step(policy, opt, *tensors[i], n_samples=n_samples, min_one=min_one,
                                                   generator=gen, reward=reward) for i in order])))
        if not val_episodes:
            best_epoch = epoch
            continue
        val.append(episode_reward(policy, val_episodes, reward=reward, min_one=min_one))
        if val[-1] > best:
            best, best_epoch, bad, best_state = val[-1], epoch, 0, copy.deepcopy(policy.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None and best_epoch != len(train):
        policy.load_state_dict(best_state)
    return PolicyFit(train, val, best_epoch, stopped_early=len(train) < max_epochs, initial_val_reward=initial)
