"""What isolation masks do over a run (issue 26: "show what the masks do"), on boolean masks.

A mask is a boolean array ``(n_params,)`` (True = protected for a task), e.g. ``owner == task_id``
of a policy's int8 owner vector (:func:`epi_utils.isolation_study.study.owner_vector`); a task's
*history* is its masks at successive refreshes, ``(n_refreshes, n_params)``.

- :func:`turnover`: the share of the new mask that the previous one did not hold;
- :func:`jaccard`: overlap of two masks (e.g. two tasks' sets, or EPI's set and a static one);
- :func:`release_and_reprotect`: of the elements a task ever protected, the share released at some
  refresh, and of those the share protected again later;
- :func:`turnover_table` / :func:`overlap_table`: the same as tables for figures and reports.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from epi_utils.lm.train import TrainHook


def _bool(mask) -> np.ndarray:
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.dtype != bool:
        raise TypeError(f"a mask is a boolean array, got dtype {arr.dtype}")
    return arr.ravel()


def turnover(previous, new) -> float:
    """``1 - |previous & new| / |new|``: the share of ``new``'s protected elements that ``previous``
    did not protect (0: nothing changed; 1: a disjoint set). An empty ``new`` gives 0."""
    p, q = _bool(previous), _bool(new)
    if p.shape != q.shape:
        raise ValueError(f"turnover: masks of {p.size} and {q.size} elements")
    size = int(q.sum())
    return 0.0 if size == 0 else 1.0 - float((p & q).sum()) / size


def jaccard(a, b) -> float:
    """``|a & b| / |a | b|`` (1 when both masks are empty)."""
    p, q = _bool(a), _bool(b)
    if p.shape != q.shape:
        raise ValueError(f"jaccard: masks of {p.size} and {q.size} elements")
    union = int((p | q).sum())
    return 1.0 if union == 0 else float((p & q).sum()) / union


def release_and_reprotect(history: Sequence) -> dict[str, float]:
    """For one task's masks at successive refreshes: ``ever_protected`` (elements protected at some
    refresh), ``released`` (the share of those dropped at some refresh after being protected at the
    one before) and ``reprotected`` (the share of the released elements protected again at a later
    refresh; NaN when nothing was released)."""
    h = np.stack([_bool(m) for m in history])
    if h.ndim != 2 or len(h) < 1:
        raise ValueError("release_and_reprotect needs a (n_refreshes, n_params) history")
    ever = h.any(axis=0)
    drops = h[:-1] & ~h[1:]                                  # (T-1, n): protected at t, not at t+1
    released = drops.any(axis=0)
    first_drop = np.where(released, drops.argmax(axis=0), len(h))   # last refresh protected before the drop
    after = np.arange(len(h))[:, None] > (first_drop + 1)[None, :]   # refreshes after the first unprotected one
    later = (h & after).any(axis=0) & released
    n_ever, n_rel = int(ever.sum()), int(released.sum())
    return {"ever_protected": float(n_ever), "released": float(n_rel) / n_ever if n_ever else float("nan"),
            "reprotected": float(later.sum()) / n_rel if n_rel else float("nan")}


def turnover_table(histories: Mapping[str, Sequence], *, steps: Sequence[int] | None = None):
    """One row per (task, refresh after the first): ``task``, ``refresh`` (index), ``step`` (when
    ``steps`` gives the step of each refresh), ``turnover`` from the previous refresh, ``size`` of the mask."""
    import pandas as pd

    rows = []
    for task, hist in histories.items():
        for k in range(1, len(hist)):
            rows.append({"task": task, "refresh": k, "step": steps[k] if steps is not None else np.nan,
                         "turnover": turnover(hist[k - 1], hist[k]), "size": int(_bool(hist[k]).sum())})
    return pd.DataFrame(rows, columns=["task", "refresh", "step", "turnover", "size"])


def overlap_table(masks: Mapping[str, object]):
    """Pairwise :func:`jaccard` of tasks' masks: a square ``DataFrame`` indexed by task."""
    import pandas as pd

    names = list(masks)
    return pd.DataFrame([[jaccard(masks[a], masks[b]) for b in names] for a in names], index=names, columns=names)


class MaskTrace(TrainHook):
    """What a policy's per-task critical sets do over a run (placed after the policy in the hooks):
    at every refresh (``policy.n_mask_updates`` grows) and for every task with a set: the turnover
    from its previous set (``1 - |prev & new| / |new|``), and, online, the elements ever protected,
    released (protected at one refresh, not at the next) and re-protected (protected again at a
    later refresh after a release): the same numbers as
    :func:`epi_utils.isolation_study.masks.release_and_reprotect` on the whole history. At the end:
    the pairwise Jaccard overlap of the tasks' final sets and each task's Jaccard between its first
    and its final set."""

    def __init__(self, policy, tasks: Sequence[str]):
        self.policy, self.tasks = policy, list(tasks)
        self.seen = 0
        self.prev: dict[str, torch.Tensor] = {}
        self.first: dict[str, torch.Tensor] = {}
        self.ever: dict[str, torch.Tensor] = {}
        self.released: dict[str, torch.Tensor] = {}
        self.reprotected: dict[str, torch.Tensor] = {}
        self.rows: list[dict] = []

    def update_mask(self, state):
        n = getattr(self.policy, "n_mask_updates", 0)
        if n > self.seen:
            self.seen = n
            self._record(state.step)
        return None

    def _record(self, step: int) -> None:
        sets = getattr(self.policy, "_crit_flat", None)
        for t in self.tasks:
            if sets is None or t not in sets:
                continue
            m = sets[t].detach().to("cpu", torch.bool).clone()
            if t in self.prev:
                p = self.prev[t]
                size = int(m.sum())
                turn = 0.0 if size == 0 else 1.0 - float((p & m).sum()) / size
                self.rows.append({"task": t, "step": int(step), "turnover": turn})
                self.reprotected[t] |= self.released[t] & m
                self.released[t] |= p & ~m
                self.ever[t] |= m
            else:
                self.first[t] = m
                self.ever[t] = m.clone()
                self.released[t] = torch.zeros_like(m)
                self.reprotected[t] = torch.zeros_like(m)
            self.prev[t] = m

    def stats(self) -> dict:
        """``refreshes`` (rows task, step, turnover), per-task ``released`` / ``reprotected`` shares
        (of the elements ever protected / of those released; NaN when none), ``first_final`` (Jaccard
        of a task's first and final set) and ``overlap`` (mean pairwise Jaccard of the final sets)."""
        def jac(a, b):
            u = int((a | b).sum())
            return 1.0 if u == 0 else float((a & b).sum()) / u

        per = {}
        for t in self.prev:
            n_ever, n_rel = int(self.ever[t].sum()), int(self.released[t].sum())
            per[t] = {"released": n_rel / n_ever if n_ever else float("nan"),
                      "reprotected": int(self.reprotected[t].sum()) / n_rel if n_rel else float("nan"),
                      "first_final": jac(self.first[t], self.prev[t])}
        names = list(self.prev)
        pairs = [jac(self.prev[a], self.prev[b]) for i, a in enumerate(names) for b in names[i + 1:]]
        return {"refreshes": self.rows, "per_task": per, "overlap": float(np.mean(pairs)) if pairs else float("nan"),
                "n_refreshes": self.seen}
