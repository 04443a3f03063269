"""Static threshold tuning and the REINFORCE policy update direction."""
import numpy as np
import pytest
import torch

from epi_utils.acd.metrics import episode_macro_f1
from epi_utils.acd.threshold import (
    ThresholdPolicy,
    episode_reward,
    instance_f1_torch,
    macro_f1_torch,
    policy_state,
    predict,
    reinforce_step,
    train_policy,
    train_policy_episodes,
    tune_static_threshold,
)


def test_predict_min_one():
    p = np.array([[0.5, 0.3, 0.2], [0.4, 0.35, 0.25]])
    assert predict(p, 0.6).tolist() == [[True, False, False], [True, False, False]]
    assert predict(p, 0.3).tolist() == [[True, False, False], [True, True, False]]
    assert predict(p, 0.6, min_one=False).sum() == 0
    tp = predict(torch.tensor(p), torch.tensor([[0.6], [0.3]]))
    assert tp.tolist() == [[True, False, False], [True, True, False]]


def test_static_threshold_by_hand():
    # single-label episodes: any tau above the second-largest prob (0.3) is perfect; smallest on grid wins
    p = [np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])]
    y = [np.eye(3)]
    tau, grid, scores = tune_static_threshold(p, y, grid=np.array([0.1, 0.25, 0.35, 0.5]))
    assert tau == 0.35 and scores[2] == pytest.approx(1.0) and scores[0] < 1.0


def test_static_threshold_vectorised_equals_loop():
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(5), size=10) for _ in range(6)]
    labels = [(rng.random((10, 5)) < 0.3).astype(float) for _ in range(6)]
    _, grid, fast = tune_static_threshold(probs, labels)
    _, _, slow = tune_static_threshold(probs + [probs[0][:4]], labels + [labels[0][:4]])  # ragged -> loop path
    from epi_utils.acd.metrics import episode_macro_f1
    loop = [np.mean([episode_macro_f1(y, predict(p, t)) for p, y in zip(probs, labels)]) for t in grid]
    assert np.allclose(fast, loop)
    assert not np.allclose(slow, loop)


def _case(two_labels: bool):
    """Probabilities (0.5, 0.4, 0.1): the right threshold is below 0.4 if both top classes are true,
    above 0.4 if only the first is."""
    probs = torch.tensor([[0.5, 0.4, 0.1]]).repeat(64, 1)
    labels = torch.tensor([[1.0, 1.0 if two_labels else 0.0, 0.0]]).repeat(64, 1)
    return probs, probs.log(), labels


@pytest.mark.parametrize("two_labels, init, direction", [(False, 0.3, +1), (True, 0.5, -1)])
def test_reinforce_moves_threshold_the_right_way(two_labels, init, direction):
    probs, logits, labels = _case(two_labels)
    torch.manual_seed(0)
    policy = ThresholdPolicy(3, init_threshold=init, sigma=0.5)
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    before = float(policy.threshold(probs, logits).mean())
    gen = torch.Generator().manual_seed(0)
    rewards = [reinforce_step(policy, opt, probs, logits, labels, n_samples=16, generator=gen) for _ in range(30)]
    after = float(policy.threshold(probs, logits).mean())
    assert direction * (after - before) > 0.05
    assert np.mean(rewards[-5:]) >= np.mean(rewards[:5])
    final = predict(probs, policy.threshold(probs, logits)[:, None])
    assert torch.all(instance_f1_torch(labels, final) == 1.0)


def test_policy_learns_per_instance_thresholds():
    """Confident rows are single-label, flat rows two-label: one static threshold cannot fit both."""
    rng = np.random.default_rng(0)
    conf = np.tile([0.8, 0.15, 0.05], (200, 1))
    flat = np.tile([0.45, 0.4, 0.15], (200, 1))
    probs = np.vstack([conf, flat]).astype(np.float32)
    labels = np.vstack([np.tile([1, 0, 0], (200, 1)), np.tile([1, 1, 0], (200, 1))]).astype(np.float32)
    perm = rng.permutation(400)
    probs, labels = probs[perm], labels[perm]
    policy = ThresholdPolicy(3, init_threshold=0.5)
    train_policy(policy, probs, np.log(probs), labels, epochs=30, batch_size=100, lr=3e-2, seed=0)
    tau = policy.threshold(torch.tensor(probs), torch.tensor(np.log(probs))).numpy()
    pred = predict(probs, tau[:, None])
    assert (pred == labels.astype(bool)).all()
    assert policy_state(torch.tensor(probs), torch.tensor(np.log(probs))).shape == (400, 7)


def test_macro_f1_reward_equals_the_evaluation_metric():
    rng = np.random.default_rng(1)
    labels = rng.random((3, 6, 4)) < 0.4
    preds = rng.random((3, 6, 4)) < 0.5
    got = macro_f1_torch(torch.as_tensor(labels), torch.as_tensor(preds))
    assert got.shape == (3,)
    assert np.allclose(got.numpy(), [episode_macro_f1(y, p) for y, p in zip(labels, preds)])
    policy = ThresholdPolicy(3)
    probs, logits, y = _case(True)
    with pytest.raises(ValueError, match="reward must be one of"):
        reinforce_step(policy, torch.optim.SGD(policy.parameters(), lr=0.1), probs, logits, y, reward="auc")


def _episodes(n, rng):
    """Episodes of 10 queries: confident rows are single-label, flat rows two-label (as above)."""
    out = []
    for _ in range(n):
        flat = rng.random(10) < 0.5
        probs = np.where(flat[:, None], [0.45, 0.4, 0.15], [0.8, 0.15, 0.05]).astype(np.float32)
        labels = np.where(flat[:, None], [1, 1, 0], [1, 0, 0]).astype(np.float32)
        out.append((probs, np.log(probs), labels))
    return out


def test_policy_trained_on_episode_macro_f1_until_validation_stops_improving():
    """Issue 30's post-hoc policy: reward = episode macro-F1, early stopping on validation reward."""
    rng = np.random.default_rng(0)
    train, val = _episodes(40, rng), _episodes(10, rng)
    perfect = np.mean([episode_macro_f1(y, y.astype(bool)) for _, _, y in val])
    policy = ThresholdPolicy(3, init_threshold=0.9)   # starts at the arg-max rule: misses every second label
    start = episode_reward(policy, val)
    fit = train_policy_episodes(policy, train, val_episodes=val, max_epochs=40, patience=3, lr=3e-2, seed=0)
    assert len(fit.val_reward) == len(fit.train_reward) and 1 <= fit.best_epoch <= len(fit.val_reward)
    assert fit.initial_val_reward == pytest.approx(start)
    assert fit.stopped_early == (len(fit.train_reward) < 40)
    assert episode_reward(policy, val) == pytest.approx(max(fit.val_reward))   # the best epoch is restored
    assert start < max(fit.val_reward) == pytest.approx(perfect)
    with pytest.raises(ValueError, match="N = 4"):
        train_policy_episodes(ThresholdPolicy(4), train)


def test_policy_that_never_beats_its_start_on_validation_is_kept_unchanged():
    """Epoch 0 (the untrained policy: for the post-hoc policy, the static threshold) takes part in the
    model selection: a policy started at the perfect threshold and trained with a huge step size
    keeps its starting weights."""
    rng = np.random.default_rng(1)
    train, val = _episodes(20, rng), _episodes(10, rng)
    policy = ThresholdPolicy(3, init_threshold=0.3)   # 0.3 separates the two kinds of row perfectly
    start = [p.clone() for p in policy.parameters()]
    perfect = episode_reward(policy, val)
    fit = train_policy_episodes(policy, train, val_episodes=val, max_epochs=3, patience=3, lr=5.0, seed=0)
    assert fit.initial_val_reward == pytest.approx(perfect)
    if max(fit.val_reward) <= perfect:
        assert fit.best_epoch == 0 and all(torch.equal(a, b) for a, b in zip(start, policy.parameters()))
    assert episode_reward(policy, val) == pytest.approx(max([perfect, *fit.val_reward]))
