"""Online (EMA) importance snapshots during SFT and their drift tables.

Study 01 no longer measures drift with these snapshots: an EMA of one batch per step, folded while
the weights move, mixes estimator noise with training dynamics, and :func:`seed_noise` (two runs'
masks at one step) mixes that noise with the divergence of two training paths, so it is not a
noise floor. The study measures importance at fixed checkpoints from disjoint data halves instead
(:mod:`epi_utils.epi.checkpoint_importance`, :mod:`epi_utils.epi.drift`). This module stays as the
record of what EPI's online tracker sees during training.

:class:`SnapshotHook` (a ``TrainHook``) keeps an :class:`~epi_utils.epi.importance.ImportanceTracker`
with one EMA per task plus one pseudo-task ``"all"`` updated on every step, and every
``every`` optimizer steps stores, for each of them, the top-``ratio`` mask
(:func:`~epi_utils.epi.importance.top_share_mask`, layer-normalised scores, global scope; bool, on
the CPU) and the raw scores at a fixed random sample of ``sample_size`` element positions (for
Spearman). Memory per snapshot: 1 byte/param per task for the masks plus 4 bytes per sampled
position.

:func:`drift_table` turns one run's snapshots into a ``pandas.DataFrame`` (one row per snapshot
and task): Jaccard with the first and the previous snapshot, Spearman with the first, turnover
from the previous one. :func:`seed_noise` compares two runs (different seeds) at the same steps:
the Jaccard of their masks is the noise floor that drift must be judged against.
:func:`layer_share_matrix` gives the per-layer share of the mask over time (heatmap).
"""
from __future__ import annotations

from typing import Sequence

import torch

from epi_utils.epi.importance import ImportanceTracker, top_share_mask
from epi_utils.epi.importance_drift import jaccard, layer_shares, turnover
from epi_utils.lm.train import TrainHook

ALL = "all"


class SnapshotHook(TrainHook):
    """Per-task EMA importance with masks snapshotted every ``every`` steps (see module doc).

    ``snapshots``: list of ``{"step", "masks": {task: {name: bool}}, "sample": {task: (S,) float}}``.
    """

    def __init__(self, *, every: int = 10, ratio: float = 0.05, estimator: str = "taylor", beta: float = 0.9,
                 sample_size: int = 20_000, seed: int = 0, include_step0: bool = False):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.ratio, self.sample_size, self.seed = every, ratio, sample_size, seed
        self.tracker_kw = dict(estimator=estimator, beta=beta, normalize="layer_mean")
        self.snapshots: list[dict] = []
        self.tracker: ImportanceTracker | None = None
        self._sample_idx: torch.Tensor | None = None

    def on_train_begin(self, state):
        self.tracker = ImportanceTracker(state.named_params, **self.tracker_kw)
        n = sum(p.numel() for p in state.named_params.values())
        g = torch.Generator().manual_seed(self.seed)
        self._sample_idx = torch.randint(0, n, (min(self.sample_size, n),), generator=g)

    def after_backward(self, state):
        if state.batch_task is None:
            raise ValueError("SnapshotHook needs task-homogeneous batches (state.batch_task is None)")
        self.tracker.update(state.batch_task)
        self.tracker.update(ALL)

    def on_step_end(self, state):
        if state.step % self.every == 0:
            self.snapshot(state.step)

    def snapshot(self, step: int) -> None:
        masks, sample = {}, {}
        for task in self.tracker.tasks:
            scores = self.tracker.scores(task)
            masks[task] = {n: m.cpu() for n, m in top_share_mask(scores, ratio=self.ratio).items()}
            flat = torch.cat([s.reshape(-1) for s in scores.values()]).cpu()
            sample[task] = flat[self._sample_idx].clone()
        self.snapshots.append({"step": int(step), "masks": masks, "sample": sample})


def _spearman_vec(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    if float(a.std()) == 0 or float(b.std()) == 0:
        return float("nan")
    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def drift_table(snapshots: Sequence[dict], *, tasks: Sequence[str] | None = None):
    """One row per snapshot and task: ``step, task, jaccard_first, jaccard_prev, spearman_first,
    turnover_prev, entering_prev, leaving_prev``; "first" = the task's first snapshot (which
    compares with itself), "prev" = the previous snapshot."""
    import pandas as pd

    if not snapshots:
        raise ValueError("no snapshots: train longer than `every` steps")
    rows = []
    if tasks is None:
        tasks = list(dict.fromkeys(t for s in snapshots for t in s["masks"]))
    first: dict[str, dict] = {}  # each task's first snapshot (a task appears once it has had a step)
    for i, snap in enumerate(snapshots):
        prev = snapshots[i - 1] if i > 0 else snap
        for t in tasks:
            if t not in snap["masks"]:
                continue
            f = first.setdefault(t, snap)
            tv = turnover(prev["masks"].get(t, snap["masks"][t]), snap["masks"][t])
            rows.append({"step": snap["step"], "task": t,
                         "jaccard_first": jaccard(f["masks"][t], snap["masks"][t]),
                         "jaccard_prev": jaccard(prev["masks"].get(t, snap["masks"][t]), snap["masks"][t]),
                         "spearman_first": _spearman_vec(f["sample"][t], snap["sample"][t]),
                         "turnover_prev": tv["turnover"], "entering_prev": tv["entering"],
                         "leaving_prev": tv["leaving"]})
    return pd.DataFrame(rows)


def seed_noise(snaps_a: Sequence[dict], snaps_b: Sequence[dict], *, task: str = ALL):
    """Jaccard and Spearman of two runs' snapshots at the same steps (``DataFrame``: step, jaccard,
    spearman): the noise floor of the drift metrics."""
    import pandas as pd

    by_step = {s["step"]: s for s in snaps_b}
    rows = []
    for s in snaps_a:
        o = by_step.get(s["step"])
        if o is None or task not in s["masks"] or task not in o["masks"]:
            continue
        rows.append({"step": s["step"], "jaccard": jaccard(s["masks"][task], o["masks"][task]),
                     "spearman": _spearman_vec(s["sample"][task], o["sample"][task])})
    return pd.DataFrame(rows)


def layer_share_matrix(snapshots: Sequence[dict], *, task: str = ALL, key: str = "density"):
    """``DataFrame`` (rows: layer, columns: step) of each block's share in the mask over time.

    ``key="density"``: share of the block's elements inside the mask; ``"of_mask"``: the block's
    share of the mask."""
    import pandas as pd

    cols = {}
    for s in snapshots:
        if task in s["masks"]:
            cols[s["step"]] = {layer: v[key] for layer, v in layer_shares(s["masks"][task]).items()}
    df = pd.DataFrame(cols)
    order = sorted(df.index, key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0, x))
    return df.loc[order]


def run_drift(world, *, model: str = "tiny", seed: int = 0, steps: int = 200, lr: float = 1e-2,
              batch_size: int = 16, every: int = 10, ratio: float = 0.05, estimator: str = "taylor",
              beta: float = 0.9, sample_size: int = 20_000, device: str = "cpu", pretrain: bool = True,
              progress: bool = False) -> dict:
    """Mixed multi-task SFT of a fresh ``model`` with a :class:`SnapshotHook`; returns
    ``{"seed", "snapshots", "history", "seconds", "n_params"}``. The sampled positions of the
    Spearman sample are the same for every seed (``SnapshotHook(seed=0)``)."""
    from epi_utils.workbench import runs
    from epi_utils.lm.models import load_model
    from epi_utils.lm.train import TrainConfig, train_sft

    runs.seed_everything(seed)
    net, tok = load_model(model, world=world, device=device, pretrain=pretrain)
    hook = SnapshotHook(every=every, ratio=ratio, estimator=estimator, beta=beta, sample_size=sample_size, seed=0)
    cfg = TrainConfig(lr=lr, batch_size=batch_size, max_steps=steps, eval_every=0, eval_train=False, seed=seed,
                      schedule="cosine")
    res = train_sft(net, tok, world.mixed(), config=cfg, hooks=[hook], progress=progress)
    return {"seed": seed, "snapshots": hook.snapshots, "history": res.history, "seconds": res.seconds,
            "n_params": sum(p.numel() for p in net.parameters() if p.requires_grad)}
