"""N-way K-shot multi-label episodes (meta-tasks) for few-shot aspect category detection.

Protocol of Hu et al. (ACL 2021, FewAsp): sample N classes of a split; for each class draw K
support and Q query instances listed under that class. The query label is a multi-hot vector
over the N sampled classes built from the sentence's *full* aspect list (a query drawn for class
A that also mentions sampled class B is positive for both). Support instances only feed their
key class's prototype. No sentence occurs twice in one episode (so none is in both the support
and the query set); a multi-label sentence listed under two sampled classes is used at most once.

Randomness: every function takes a ``numpy.random.Generator``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from epi_utils.acd.data import FewAspSplit


@dataclass
class Episode:
    """One meta-task.

    ``classes``: the N sampled category names; ``support``: int array ``(N, K)`` of sentence ids
    (row i = class i); ``query``: int array ``(M,)`` with ``M = N*Q``; ``query_labels``: float32
    array ``(M, N)`` multi-hot over ``classes``; ``query_keys``: int array ``(M,)``, the class each
    query was drawn for.
    """

    classes: list[str]
    support: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    query_keys: np.ndarray

    @property
    def n_way(self) -> int:
        return len(self.classes)


def sample_episode(split: FewAspSplit, *, n_way: int, k_shot: int, n_query: int,
                   rng: np.random.Generator, max_tries: int = 50) -> Episode:
    """Sample one N-way K-shot episode with ``n_query`` queries per class.

    Raises ``ValueError`` when ``n_way`` exceeds the split's classes or a class has fewer than
    ``k_shot + n_query`` sentences not already used in the episode.
    """
    if n_way < 1 or k_shot < 1 or n_query < 1:
        raise ValueError(f"n_way, k_shot, n_query must be >= 1, got {n_way}, {k_shot}, {n_query}")
    if n_way > len(split.classes):
        raise ValueError(f"n_way={n_way} exceeds the {len(split.classes)} classes of {split.name}")
    need = k_shot + n_query
    for _ in range(max_tries):
        cls_idx = rng.choice(len(split.classes), size=n_way, replace=False)
        classes = [split.classes[i] for i in cls_idx]
        used: set[int] = set()
        support = np.empty((n_way, k_shot), dtype=np.int64)
        query = np.empty((n_way, n_query), dtype=np.int64)
        ok = True
        for i, c in enumerate(classes):
            pool = split.by_class[c]
            picked: list[int] = []
            for sid in pool[rng.permutation(len(pool))]:
                sid = int(sid)
                if sid not in used:
                    picked.append(sid)
                    used.add(sid)
                    if len(picked) == need:
                        break
            if len(picked) < need:
                ok = False
                break
            support[i] = picked[:k_shot]
            query[i] = picked[k_shot:]
        if ok:
            break
    else:
        raise ValueError(f"could not sample {need} distinct sentences per class from {split.name} "
                         f"in {max_tries} tries (n_way={n_way}, k_shot={k_shot}, n_query={n_query})")
    pos = {c: i for i, c in enumerate(classes)}
    q = query.reshape(-1)
    labels = np.zeros((q.size, n_way), dtype=np.float32)
    for r, sid in enumerate(q):
        for a in split.aspects[sid]:
            j = pos.get(a)
            if j is not None:
                labels[r, j] = 1.0
    keys = np.repeat(np.arange(n_way), n_query)
    return Episode(classes=classes, support=support, query=q, query_labels=labels, query_keys=keys)


def sample_episodes(split: FewAspSplit, n_episodes: int, *, n_way: int, k_shot: int, n_query: int,
                    rng: np.random.Generator) -> list[Episode]:
    """``n_episodes`` independent episodes drawn with ``rng`` (same rng state -> same episodes)."""
    return [sample_episode(split, n_way=n_way, k_shot=k_shot, n_query=n_query, rng=rng)
            for _ in range(n_episodes)]


def split_sentences(split: FewAspSplit, *, holdout: float, rng: np.random.Generator,
                    min_per_class: int = 1) -> tuple[FewAspSplit, FewAspSplit]:
    """Two disjoint views ``(fit, held_out)`` of ``split`` by *sentence*: each unique sentence goes
    to the held-out view with probability ``holdout`` (a multi-label sentence goes whole to one
    side, under all its classes). Both views keep the split's sentence ids, ``sentences`` and
    ``aspects`` (so token ids and token banks of ``split`` serve both) and filter only
    ``by_class``; every class keeps at least ``min_per_class`` instances on each side (sentences
    are moved back to the fit view, or to the held-out one, until it does; ``ValueError`` when a
    class has too few). Issue 30: tune thresholds and policies on FewAsp(multi) validation
    classes while holding out some of their sentences for model selection."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    small = [c for c in split.classes if len(split.by_class[c]) < 2 * min_per_class]
    if small:
        raise ValueError(f"classes {small[:5]} of {split.name} have fewer than {2 * min_per_class} instances")
    held = rng.random(len(split)) < holdout
    for c in split.classes:  # repair classes left short on either side, in a fixed order
        ids = split.by_class[c]
        for side in (True, False):
            short = min_per_class - int((held[ids] == side).sum())
            if short > 0:
                movable = [int(i) for i in ids if held[i] != side]
                for i in rng.permutation(movable)[:short]:
                    held[i] = side
    left_short = [c for c in split.classes for side in (True, False)
                  if int((held[split.by_class[c]] == side).sum()) < min_per_class]
    if left_short:  # a multi-label sentence moved for one class emptied another
        raise ValueError(f"could not keep {min_per_class} instances of {sorted(set(left_short))[:5]} on both sides")
    views = []
    for side in (False, True):
        by_class = {c: ids[held[ids] == side] for c, ids in split.by_class.items()}
        views.append(FewAspSplit(name=f"{split.name}[{'held-out' if side else 'fit'}]", classes=list(split.classes),
                                 sentences=split.sentences, aspects=split.aspects, by_class=by_class))
    return views[0], views[1]
