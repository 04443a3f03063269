"""Episode sampler guarantees: shapes, seeding, no sentence in support and query, multi-hot labels."""
import numpy as np
import pytest

from epi_utils.acd.data import parse_split
from epi_utils.acd.episodes import sample_episode, sample_episodes, split_sentences


def toy_split(n_classes=6, per_class=12, shared=4):
    """Classes c0..c5; the first `shared` sentences of each class also carry the next class."""
    obj = {f"c{i}": [] for i in range(n_classes)}
    for i in range(n_classes):
        for j in range(per_class):
            obj[f"c{i}"].append([[f"w{i}", f"s{j}"], [f"c{i}"]])
        for j in range(shared):
            nxt = f"c{(i + 1) % n_classes}"
            inst = [[f"both{i}", f"s{j}"], [f"c{i}", nxt]]
            obj[f"c{i}"].append(inst)
            obj[nxt].append(inst)
    return parse_split(obj, source="toy.json")


def test_shapes_labels_and_disjointness():
    sp = toy_split()
    rng = np.random.default_rng(0)
    for _ in range(200):
        ep = sample_episode(sp, n_way=4, k_shot=3, n_query=2, rng=rng)
        assert ep.support.shape == (4, 3) and ep.query.shape == (8,) and ep.query_labels.shape == (8, 4)
        ids = np.concatenate([ep.support.ravel(), ep.query])
        assert len(set(ids.tolist())) == ids.size  # no sentence twice, so none in support and query
        assert len(set(ep.classes)) == 4
        for r, sid in enumerate(ep.query):
            expect = [float(c in sp.aspects[sid]) for c in ep.classes]
            assert ep.query_labels[r].tolist() == expect
            assert ep.query_labels[r, ep.query_keys[r]] == 1.0
        for i, c in enumerate(ep.classes):
            assert all(c in sp.aspects[s] for s in ep.support[i])


def test_seeded_by_generator():
    sp = toy_split()
    a = sample_episodes(sp, 5, n_way=3, k_shot=2, n_query=2, rng=np.random.default_rng(7))
    b = sample_episodes(sp, 5, n_way=3, k_shot=2, n_query=2, rng=np.random.default_rng(7))
    c = sample_episodes(sp, 5, n_way=3, k_shot=2, n_query=2, rng=np.random.default_rng(8))
    assert all(np.array_equal(x.support, y.support) and np.array_equal(x.query, y.query) for x, y in zip(a, b))
    assert not all(np.array_equal(x.query, y.query) for x, y in zip(a, c))


def test_multilabel_queries_occur():
    sp = toy_split()
    rng = np.random.default_rng(1)
    counts = [ep.query_labels.sum(1).max() for ep in sample_episodes(sp, 50, n_way=6, k_shot=2, n_query=3, rng=rng)]
    assert max(counts) == 2


def test_errors():
    sp = toy_split(n_classes=3, per_class=2, shared=0)
    with pytest.raises(ValueError, match="exceeds the 3 classes"):
        sample_episode(sp, n_way=4, k_shot=1, n_query=1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="could not sample 3 distinct"):
        sample_episode(sp, n_way=2, k_shot=2, n_query=1, rng=np.random.default_rng(0))


def test_split_sentences_gives_disjoint_views_with_the_same_ids():
    """Issue 30: hold out some sentences of the tuning classes for model selection."""
    split = toy_split()
    fit, held = split_sentences(split, holdout=0.3, rng=np.random.default_rng(0), min_per_class=3)
    assert fit.sentences is split.sentences and held.aspects is split.aspects and fit.classes == split.classes
    fit_ids = {int(i) for v in fit.by_class.values() for i in v}
    held_ids = {int(i) for v in held.by_class.values() for i in v}
    assert not fit_ids & held_ids and fit_ids | held_ids == set(range(len(split)))
    for c in split.classes:   # every instance of a class is on exactly one side; both sides keep >= 3
        assert sorted(np.concatenate([fit.by_class[c], held.by_class[c]])) == sorted(split.by_class[c])
        assert len(fit.by_class[c]) >= 3 and len(held.by_class[c]) >= 3
    assert 0.15 < len(held_ids) / len(split) < 0.45
    again = split_sentences(split, holdout=0.3, rng=np.random.default_rng(0), min_per_class=3)[1]
    assert all(np.array_equal(again.by_class[c], held.by_class[c]) for c in split.classes)
    for ep in sample_episodes(held, 5, n_way=3, k_shot=1, n_query=1, rng=np.random.default_rng(1)):
        assert set(ep.support.ravel()) | set(ep.query) <= held_ids
    with pytest.raises(ValueError, match="holdout"):
        split_sentences(split, holdout=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="fewer than"):
        split_sentences(split, holdout=0.5, rng=np.random.default_rng(0), min_per_class=20)
