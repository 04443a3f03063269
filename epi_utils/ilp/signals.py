"""Per-sample signals for diagnosing the Incomplete Learning Phenomenon (ILP).

Every function here takes plain tables (``pandas.DataFrame``, one row per training sample, or
the per-sample dynamics records of the SFT engine) and returns a table indexed by
``sample_id`` whose columns are documented in the function. Nothing here runs a model: the
knowledge probe's raw numbers come from :mod:`epi_utils.ilp.probe`, the dynamics records from
``epi_utils.lm.train.train_sft(dynamics_path=...)``.

Signals (column prefix -> source):

``dyn_*``     training dynamics (dataset cartography, Swayamdipta et al. 2020, EMNLP): mean and
              standard deviation of the gold-target probability over evaluation points
              (``confidence``, ``variability``), share of points with a greedy exact match
              (``correctness``); forgetting events, i.e. transitions learned -> not learned
              between consecutive evaluation points (Toneva et al. 2019, ICLR), and the
              stage-level version for sequential schedules (learned at the end of the sample's
              own stage, unlearned after a later one); the least-squares slope of the loss over
              the last evaluation points (still falling = under-optimised).
``probe_*``   knowledge of the base model before SFT, read from the sample's own prompt
              (:mod:`epi_utils.ilp.probe`), categorised as in Gekhman et al. 2024 ("Does
              fine-tuning LLMs on new knowledge encourage hallucinations?"): ``known``,
              ``conflict`` (another answer, as confident as on known samples), ``unknown``,
              ``not_applicable`` (a task where the base model knows nothing: a skill);
``incons_*``  the same (after normalisation) or a near-identical prompt appears elsewhere in the
              SFT data with a different target: normalised-text hashing plus character n-gram
              Jaccard similarity.
``rarity_*``  rarity of the prompt's surface form (skeleton of the task's template words, from
              word document frequencies), target length and its z-score within the task.

No signal reads a generator field of the synthetic world (template ids, planted causes, fact
ids): everything comes from the prompts, responses, the task name, the stage of the schedule,
the base model and the training dynamics, which a user has for their own SFT run.
"""
from __future__ import annotations

import hashlib
import json
import re
import string
import unicodedata
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

DYNAMICS_FIELDS = ("sample_id", "task", "stage", "train_stage", "step", "epoch", "loss",
                   "mean_token_prob", "exact_match")
SAMPLE_FIELDS = ("sample_id", "task", "prompt", "response", "stage")
NORMALIZATIONS = ("none", "strip", "lower", "alnum")
PROBE_CATEGORIES = ("known", "conflict", "unknown", "not_applicable", "not_probed")


class SignalInputError(ValueError):
    """Bad input to a signal function; the message names the file/field and what was expected."""


# --------------------------------------------------------------------------- text normalisation
def normalize_text(text: str, *, mode: str = "alnum") -> str:
    """Normalise ``text`` for comparisons.

    ``mode``: ``"none"`` (unchanged), ``"strip"`` (outer whitespace), ``"lower"`` (strip +
    lower case + collapsed inner whitespace), ``"alnum"`` (``lower`` + NFKC + punctuation
    removed). Raises ``SignalInputError`` on another mode.
    """
    if mode not in NORMALIZATIONS:
        raise SignalInputError(f"normalize mode must be one of {NORMALIZATIONS}, got {mode!r}")
    if text is None:
        text = ""
    if mode == "none":
        return text
    if mode == "strip":
        return text.strip()
    out = re.sub(r"\s+", " ", text.strip().lower())
    if mode == "alnum":
        out = unicodedata.normalize("NFKC", out)
        out = out.translate(str.maketrans("", "", string.punctuation))
        out = re.sub(r"\s+", " ", out).strip()
    return out


def text_hash(text: str, *, mode: str = "alnum") -> str:
    """Short stable hash (sha1, 16 hex digits) of the normalised text."""
    return hashlib.sha1(normalize_text(text, mode=mode).encode("utf-8")).hexdigest()[:16]


def char_ngram_jaccard(a: str, b: str, *, n: int = 3) -> float:
    """Jaccard similarity of the sets of character ``n``-grams of two (normalised) strings.

    Strings shorter than ``n`` count as one n-gram (themselves). Two empty strings -> 1.0.
    Example: ``"abcd"`` vs ``"abce"`` with n=3: {abc, bcd} vs {abc, bce} -> 1/3.
    """
    def grams(s: str) -> set[str]:
        return {s[i:i + n] for i in range(len(s) - n + 1)} if len(s) >= n else {s}
    ga, gb = grams(a), grams(b)
    union = ga | gb
    return 1.0 if not union else len(ga & gb) / len(union)


# --------------------------------------------------------------------------- input validation
def _require_columns(frame: pd.DataFrame, fields: Sequence[str], *, source: str) -> None:
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise SignalInputError(f"{source} lacks field(s) {missing}; required fields are {list(fields)}, "
                               f"found {sorted(map(str, frame.columns))}")


def samples_frame(samples: Iterable) -> pd.DataFrame:
    """One row per sample from ``Sample`` objects, dicts or a DataFrame.

    ``Sample.id`` becomes ``sample_id``. Required fields: ``SAMPLE_FIELDS``; optional ones kept
    (``split``, ``fact_id``, ``planted_cause``...). Duplicate ids raise ``SignalInputError``.
    """
    if isinstance(samples, pd.DataFrame):
        frame = samples.copy()
    else:
        rows = []
        for s in samples:
            d = s.to_dict() if hasattr(s, "to_dict") else dict(s)
            rows.append(d)
        frame = pd.DataFrame(rows)
    if "sample_id" not in frame.columns and "id" in frame.columns:
        frame = frame.rename(columns={"id": "sample_id"})
    if frame.empty:
        raise SignalInputError("samples: got no samples")
    _require_columns(frame, SAMPLE_FIELDS, source="samples")
    dup = frame["sample_id"][frame["sample_id"].duplicated()].tolist()
    if dup:
        raise SignalInputError(f"samples: duplicate sample_id values {dup[:5]}")
    return frame.reset_index(drop=True)


def read_dynamics(source: str | Path | pd.DataFrame | Sequence[Mapping]) -> pd.DataFrame:
    """Read and validate per-sample dynamics records (the SFT engine's JSONL).

    ``source``: a path to a JSONL file, a DataFrame, or a list of dicts. Each record needs the
    fields ``DYNAMICS_FIELDS``. Returns a DataFrame sorted by ``(sample_id, step)``. Raises
    ``SignalInputError`` naming the file, the line and the missing field(s), or an empty source.
    """
    name = "dynamics records"
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = f"dynamics file {path}"
        if not path.exists():
            raise SignalInputError(f"{name} does not exist")
        rows = []
        with path.open("r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SignalInputError(f"{name}, line {lineno}: not valid JSON ({exc.msg})") from None
                miss = [f for f in DYNAMICS_FIELDS if f not in rec]
                if miss:
                    raise SignalInputError(f"{name}, line {lineno}: missing field(s) {miss}; "
                                           f"required fields are {list(DYNAMICS_FIELDS)}")
                rows.append(rec)
        frame = pd.DataFrame(rows)
    elif isinstance(source, pd.DataFrame):
        frame = source.copy()
    else:
        frame = pd.DataFrame(list(source))
    if frame.empty:
        raise SignalInputError(f"{name}: no records")
    _require_columns(frame, DYNAMICS_FIELDS, source=name)
    nulls = [f for f in DYNAMICS_FIELDS if frame[f].isna().any()]
    if nulls:
        raise SignalInputError(f"{name}: field(s) {nulls} have missing values")
    for col in ("loss", "mean_token_prob", "exact_match", "step", "stage", "train_stage"):
        frame[col] = pd.to_numeric(frame[col], errors="raise")
    return frame.sort_values(["sample_id", "step"], kind="stable").reset_index(drop=True)


def check_sample_ids(expected: Iterable[str], found: Iterable[str], *, source: str,
                     allow_missing: bool = True) -> None:
    """Raise ``SignalInputError`` when ``found`` has ids not in ``expected`` (records that do
    not belong to this data) or, with ``allow_missing=False``, when expected ids are absent."""
    exp, got = set(expected), set(found)
    unknown = sorted(got - exp)
    if unknown:
        raise SignalInputError(f"{source}: {len(unknown)} sample_id(s) do not match the data, e.g. "
                               f"{unknown[:3]}; is it from another world seed or data set?")
    absent = sorted(exp - got)
    if absent and not allow_missing:
        raise SignalInputError(f"{source}: {len(absent)} sample(s) of the data have no records, e.g. {absent[:3]}")


# --------------------------------------------------------------------------- training dynamics
def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc ** 2).sum())


def dynamics_signals(dynamics: pd.DataFrame, *, end_window: int = 3, per_steps: float = 100.0) -> pd.DataFrame:
    """Per-sample training-dynamics signals from validated records (:func:`read_dynamics`).

    Only evaluation points at which the sample had already been trained on
    (``train_stage >= stage``) count. Output columns (index ``sample_id``):

    - ``dyn_confidence``, ``dyn_variability``: mean and population std of ``mean_token_prob``
      (Swayamdipta et al. 2020 use the gold-label probability per epoch);
    - ``dyn_correctness``: mean of ``exact_match``;
    - ``dyn_forgetting_events``: number of 1 -> 0 transitions of ``exact_match`` between
      consecutive points (Toneva et al. 2019);
    - ``dyn_learned_in_stage``: exact match at the last point of the sample's own stage (1/0);
    - ``dyn_max_in_stage``: best exact match during the own stage;
    - ``dyn_stage_forgotten``: learned at the end of the own stage and not at the final point,
      with a later stage trained in between (left-side forgetting);
    - ``dyn_final_em``, ``dyn_final_loss``, ``dyn_final_prob``: values at the last point;
    - ``dyn_loss_slope_end``: least-squares slope of the loss over the last ``end_window``
      points of the sample's own stage, per ``per_steps`` optimizer steps (negative = falling);
    - ``dyn_n_points``.
    """
    if end_window < 2:
        raise SignalInputError(f"end_window must be >= 2, got {end_window}")
    frame = dynamics[dynamics["train_stage"] >= dynamics["stage"]]
    if frame.empty:
        raise SignalInputError("dynamics: no evaluation point after a sample's own stage began "
                               "(check the stage/train_stage fields)")
    final_stage = int(dynamics["train_stage"].max())
    out = {}
    for sid, g in frame.groupby("sample_id", sort=True):
        g = g.sort_values("step", kind="stable")
        em = g["exact_match"].to_numpy(dtype=float)
        prob = g["mean_token_prob"].to_numpy(dtype=float)
        own = g[g["train_stage"] == g["stage"]]
        own_em = own["exact_match"].to_numpy(dtype=float)
        tail = own.tail(end_window)
        learned_in_stage = float(own_em[-1]) if len(own_em) else float("nan")
        final_em = float(em[-1])
        later = int(g["stage"].iloc[0]) < final_stage
        out[sid] = {
            "dyn_confidence": float(prob.mean()),
            "dyn_variability": float(prob.std()),
            "dyn_correctness": float(em.mean()),
            "dyn_forgetting_events": int(((em[:-1] >= 0.5) & (em[1:] < 0.5)).sum()),
            "dyn_learned_in_stage": learned_in_stage,
            "dyn_max_in_stage": float(own_em.max()) if len(own_em) else float("nan"),
            "dyn_stage_forgotten": bool(later and learned_in_stage >= 0.5 and final_em < 0.5),
            "dyn_final_em": final_em,
            "dyn_final_loss": float(g["loss"].iloc[-1]),
            "dyn_final_prob": float(prob[-1]),
            "dyn_loss_slope_end": _slope(tail["step"].to_numpy(float), tail["loss"].to_numpy(float)) * per_steps,
            "dyn_n_points": int(len(g)),
        }
    result = pd.DataFrame.from_dict(out, orient="index")
    result.index.name = "sample_id"
    return result


# --------------------------------------------------------------------------- knowledge probe
PROBE_FIELDS = ("sample_id", "base_answer", "base_conf", "target_prob", "known")


def probe_signals(probe: pd.DataFrame, samples: pd.DataFrame, *, min_known_share: float = 0.2,
                  conflict_quantile: float = 0.1, min_known: int = 5, group_col: str = "task") -> pd.DataFrame:
    """Categorise the base model's knowledge of each sample's target and flag conflicts.

    ``probe``: raw rows of :func:`epi_utils.ilp.probe.knowledge_probe` (``PROBE_FIELDS``);
    ``samples``: the SFT samples (``sample_id`` and ``group_col``, by default ``task``; the signal
    table uses the task and the prompt's surface form, ``rarity_skeleton``). Everything is
    calibrated per group on the base model's own behaviour, without labels (Gekhman et al. 2024 categorise by what the base
    model answers; here the threshold comes from the samples it demonstrably knows):

    - a group where the base model answers fewer than ``min_known_share`` of the prompts (or fewer
      than ``min_known`` samples) exactly holds no probe-able knowledge (a *skill*, e.g. sorting,
      or a prompt form the base model cannot read): category ``not_applicable``;
    - otherwise ``known`` (base answer = target); ``conflict`` when the base model answers
      something else with a confidence at least the ``conflict_quantile``-quantile of its
      confidence on the samples it knows ("as sure as on facts it demonstrably holds");
      ``unknown`` when it answers something else less confidently (missing knowledge).

    Returns (index ``sample_id``) ``probe_category``, ``probe_base_answer``, ``probe_base_conf``,
    ``probe_target_prob``, ``probe_conflict_threshold``, ``probe_group_known_share``, ``conflict_flag``.
    """
    _require_columns(probe, PROBE_FIELDS, source="probe table")
    _require_columns(samples, ("sample_id", group_col), source="samples")
    if not 0.0 <= min_known_share <= 1.0:
        raise SignalInputError(f"min_known_share must be in [0, 1], got {min_known_share}")
    if not 0.0 <= conflict_quantile <= 1.0:
        raise SignalInputError(f"conflict_quantile must be in [0, 1], got {conflict_quantile}")
    frame = probe.merge(samples[["sample_id", group_col]].rename(columns={group_col: "_group"}), on="sample_id",
                        how="left")
    if frame["_group"].isna().any():
        raise SignalInputError("probe table: sample_id(s) not among the samples, e.g. "
                               f"{frame.loc[frame['_group'].isna(), 'sample_id'].head(3).tolist()}")
    rows = []
    for _, g in frame.groupby("_group", sort=False):
        known = g["known"].astype(bool).to_numpy()
        conf = g["base_conf"].astype(float).to_numpy()
        share = float(known.mean())
        applicable = share >= min_known_share and known.sum() >= min_known
        thr = float(np.quantile(conf[known], conflict_quantile)) if applicable else float("nan")
        for rec, k, c in zip(g.itertuples(index=False), known, conf):
            if not applicable:
                cat = "not_applicable"
            elif k:
                cat = "known"
            else:
                cat = "conflict" if c >= thr else "unknown"
            rows.append({"sample_id": rec.sample_id, "probe_category": cat, "probe_base_answer": rec.base_answer,
                         "probe_base_conf": float(c), "probe_target_prob": float(rec.target_prob),
                         "probe_conflict_threshold": thr, "probe_group_known_share": share,
                         "conflict_flag": cat == "conflict"})
    return pd.DataFrame(rows).set_index("sample_id")


# --------------------------------------------------------------------------- inconsistency
def inconsistency_signals(samples: pd.DataFrame, *, normalize: str = "alnum", similarity_threshold: float = 0.95,
                          ngram: int = 3, block_cols: Sequence[str] = ("stage", "task"), paraphrase: bool = True,
                          template_df: float = 0.5, marker_df: float = 0.1, max_extra: int = 3) -> pd.DataFrame:
    """Flag samples whose prompt occurs elsewhere in the SFT data with a different target.

    Exact duplicates: prompts with equal normalised-text hash (:func:`text_hash`). Near
    duplicates: character ``ngram`` Jaccard similarity >= ``similarity_threshold`` between
    prompts. Both only *within* a block of ``block_cols`` (default: the same stage and task, so
    that a prompt retrained with another answer in a *later* stage counts as an overwrite, not as
    an internal inconsistency; ``()`` = one block). Set the threshold to 1.0 to use exact
    hashing only. Targets are compared after the same normalisation.
    Columns (index ``sample_id``): ``incons_group_size`` (copies of the normalised prompt),
    ``incons_n_targets`` (distinct targets among them), ``incons_max_similarity`` (highest
    similarity to a prompt with a *different* target, 0 if none), ``incons_partner`` (that
    prompt's sample id), ``incons_paraphrase`` (with ``paraphrase``: the prompt and another one of
    the block ask the same in other words with different targets, :func:`paraphrase_pairs`; both
    share one ``incons_group_key``), ``incons_flag`` (any of these), ``incons_group_key`` (block + prompt hash), ``incons_majority_target`` (most frequent target in the
    exact group, ties broken by first occurrence), ``incons_is_majority``, and
    ``overwrite_later`` / ``overwrite_by``: the same normalised prompt appears in a *later* stage
    with a different target (and the id of the first such sample); needs a ``stage`` column.
    """
    _require_columns(samples, ("sample_id", "prompt", "response"), source="samples")
    if not 0.0 < similarity_threshold <= 1.0:
        raise SignalInputError(f"similarity_threshold must be in (0, 1], got {similarity_threshold}")
    block_cols = list(block_cols)
    _require_columns(samples, block_cols, source="samples")
    frame = samples.reset_index(drop=True)
    norm_p = frame["prompt"].map(lambda t: normalize_text(t, mode=normalize))
    norm_r = frame["response"].map(lambda t: normalize_text(t, mode=normalize))
    prompt_hash = norm_p.map(lambda t: hashlib.sha1(t.encode()).hexdigest()[:16])
    block = frame[block_cols].astype(str).agg("|".join, axis=1) if block_cols else pd.Series([""] * len(frame))
    keys = block + "#" + prompt_hash
    group_size = keys.map(keys.value_counts())
    n_targets = pd.Series([0] * len(frame))
    majority = pd.Series([""] * len(frame), dtype=object)
    for key, idx in keys.groupby(keys).groups.items():
        targets = norm_r.loc[idx]
        counts = targets.value_counts(sort=False)
        first_pos = {t: i for i, t in reversed(list(enumerate(targets)))}
        best = max(counts.index, key=lambda t: (counts[t], -first_pos[t]))
        n_targets.loc[idx] = len(counts)
        majority.loc[idx] = best
    max_sim = np.zeros(len(frame))
    partner = np.array([None] * len(frame), dtype=object)
    blocks = block.groupby(block).indices
    for _, idx in blocks.items():
        idx = np.asarray(idx)
        sims = _pairwise_jaccard(norm_p.iloc[idx].tolist(), n=ngram)
        differ = norm_r.iloc[idx].to_numpy()[:, None] != norm_r.iloc[idx].to_numpy()[None, :]
        sims = np.where(differ, sims, 0.0)
        np.fill_diagonal(sims, 0.0)
        if sims.size:
            best = sims.argmax(axis=1)
            max_sim[idx] = sims[np.arange(len(idx)), best]
            has = max_sim[idx] > 0
            partner[idx[has]] = frame["sample_id"].iloc[idx[best[has]]].to_numpy()
    flag = (n_targets.to_numpy() > 1) | (max_sim >= similarity_threshold)
    para = np.zeros(len(frame), dtype=bool)
    if paraphrase:
        for _, idx in blocks.items():
            for i, j in paraphrase_pairs(frame["prompt"].iloc[idx].tolist(), norm_r.iloc[idx].tolist(),
                                         template_df=template_df, marker_df=marker_df, max_extra=max_extra):
                a, b = int(idx[i]), int(idx[j])
                para[[a, b]] = True
                for x, y in ((a, b), (b, a)):
                    if not flag[x]:
                        partner[x] = frame["sample_id"].iloc[y]
                keys.iloc[b] = keys.iloc[a]   # one group: the majority relabel sees both copies
        flag = flag | para
    over, over_by = _later_overwrites(frame, prompt_hash, norm_r)
    out = pd.DataFrame({
        "incons_group_size": group_size.to_numpy(int), "incons_n_targets": n_targets.to_numpy(int),
        "incons_max_similarity": max_sim, "incons_partner": partner, "incons_flag": flag,
        "incons_majority_target": majority.to_numpy(), "incons_is_majority": (norm_r == majority).to_numpy(),
        "overwrite_later": over, "overwrite_by": over_by, "incons_group_key": keys.to_numpy(),
        "incons_paraphrase": para,
    }, index=pd.Index(frame["sample_id"], name="sample_id"))
    return out


def paraphrase_pairs(prompts: Sequence[str], targets: Sequence[str], *, template_df: float = 0.5,
                     marker_df: float = 0.1, max_extra: int = 3) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of prompts of one block that ask the same thing in other words and
    have different targets.

    Per block, *template words* are in at least ``template_df`` of the prompts and a prompt's
    *content* is its other words (lower-cased word set). A pair is a paraphrase when the smaller
    content is contained in the larger, the 1 to ``max_extra`` extra words are *markers* (each in
    at most ``marker_df`` of the block's prompts, at least one prompt) that appear in neither
    target, the two skeletons (:func:`prompt_skeleton`) differ and the targets differ. Example:
    ``"the color of zabok is"`` and ``"zabok 's color is"`` (content {color, zabok} and {zabok,
    's, color}; ``'s`` is a rare word in no target). Two prompts that only reorder or extend their
    content (``"reverse a b"``, ``"reverse b a"``, ``"reverse a b c"``) are not paraphrases: same
    skeleton, or an extra word that is part of a target."""
    words = [normalize_text(p, mode="lower").split() for p in prompts]
    n = len(words)
    df: dict[str, int] = {}
    for ws in words:
        for w in set(ws):
            df[w] = df.get(w, 0) + 1
    frequent = {w for w, c in df.items() if c >= template_df * n}
    marker_cut = max(1.0, marker_df * n)
    content = [frozenset(w for w in ws if w not in frequent) for ws in words]
    skeleton = [prompt_skeleton(p, frequent) for p in prompts]
    tgt_words = [set(normalize_text(t, mode="lower").split()) for t in targets]
    by_word: dict[str, list[int]] = {}
    for i, c in enumerate(content):
        for w in c:
            if df[w] > marker_cut:
                continue
            by_word.setdefault(w, []).append(i)
    out = set()
    for i in range(n):
        if not content[i]:
            continue
        rarest = min(content[i], key=lambda w: df[w])
        cands = by_word.get(rarest, []) if df[rarest] <= marker_cut else range(n)
        for j in cands:
            if j == i or targets[i] == targets[j] or skeleton[i] == skeleton[j]:
                continue
            small, large = (i, j) if len(content[i]) <= len(content[j]) else (j, i)
            if small != i or not content[small] <= content[large]:
                continue
            extra = content[large] - content[small]
            if not 1 <= len(extra) <= max_extra:
                continue
            if any(df[w] > marker_cut or w in tgt_words[i] or w in tgt_words[j] for w in extra):
                continue
            out.add((min(i, j), max(i, j)))
    return sorted(out)


def _later_overwrites(frame: pd.DataFrame, prompt_hash: pd.Series, norm_r: pd.Series):
    """For each row: does a later-stage row have the same prompt hash and another target?"""
    n = len(frame)
    over = np.zeros(n, dtype=bool)
    by = np.array([None] * n, dtype=object)
    if "stage" not in frame.columns:
        return over, by
    stage = frame["stage"].to_numpy()
    for _, idx in prompt_hash.groupby(prompt_hash).groups.items():
        idx = np.asarray(list(idx))
        if len(idx) < 2:
            continue
        for i in idx:
            later = [j for j in idx if stage[j] > stage[i] and norm_r.iloc[j] != norm_r.iloc[i]]
            if later:
                over[i] = True
                by[i] = frame["sample_id"].iloc[later[0]]
    return over, by


def _pairwise_jaccard(texts: list[str], *, n: int) -> np.ndarray:
    """(m, m) character n-gram Jaccard matrix via a sparse binary n-gram matrix."""
    from sklearn.feature_extraction.text import CountVectorizer

    m = len(texts)
    if m == 0:
        return np.zeros((0, 0))
    padded = [t if len(t) >= n else t.ljust(n, "\0") for t in texts]
    vec = CountVectorizer(analyzer="char", ngram_range=(n, n), binary=True, lowercase=False)
    x = vec.fit_transform(padded).astype(np.float32)
    inter = (x @ x.T).toarray()
    sizes = np.asarray(x.sum(axis=1)).ravel()
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.where(union > 0, inter / union, 1.0)
    return sim


# --------------------------------------------------------------------------- rarity / complexity
def prompt_skeleton(prompt: str, frequent: set[str]) -> str:
    """The prompt's words with every word outside ``frequent`` replaced by ``*`` and runs of ``*``
    collapsed: ``"the color of zabok is"`` with ``{"the", "of", "is"}`` -> ``"the * of * is"``."""
    out: list[str] = []
    for w in normalize_text(prompt, mode="lower").split():
        tok = w if w in frequent else "*"
        if not (tok == "*" and out and out[-1] == "*"):
            out.append(tok)
    return " ".join(out)


def rarity_signals(samples: pd.DataFrame, *, template_df: float = 0.5) -> pd.DataFrame:
    """Rarity of each prompt's form and complexity of its target, from the text alone.

    Per task: the *template words* are the words found in at least ``template_df`` of the task's
    prompts (document frequency); a prompt's *skeleton* keeps those and masks the rest
    (:func:`prompt_skeleton`), so prompts written in the same surface form share a skeleton
    whatever their content (entities, numbers, letters). Columns (index ``sample_id``):
    ``rarity_skeleton``, ``rarity_group_size`` (prompts of the task with the same skeleton),
    ``rarity_group_share`` (that size / the task's prompts), ``rarity_ratio`` (that size / the
    size of the task's most common skeleton: 1 for the dominant form), ``rarity_target_len``
    (words of the target), ``rarity_target_len_z`` (its z-score within the task; 0 when the
    task's lengths do not vary) and ``rarity_target_len_rz`` (robust z-score: distance from the
    task's median length over 1.4826 x the median absolute deviation, or over the mean absolute
    deviation when more than half the targets have the median length; a share of long targets
    does not hide itself by inflating the scale, as it does the standard deviation). No generator field (template id) is read.
    """
    _require_columns(samples, ("sample_id", "task", "prompt", "response"), source="samples")
    if not 0.0 < template_df <= 1.0:
        raise SignalInputError(f"template_df must be in (0, 1], got {template_df}")
    frame = samples.reset_index(drop=True)
    skeleton = pd.Series([""] * len(frame), dtype=object)
    for _, idx in frame.groupby("task", sort=False).indices.items():
        words = [set(normalize_text(p, mode="lower").split()) for p in frame["prompt"].iloc[idx]]
        df: dict[str, int] = {}
        for ws in words:
            for w in ws:
                df[w] = df.get(w, 0) + 1
        frequent = {w for w, c in df.items() if c >= template_df * len(idx)}
        skeleton.iloc[idx] = [prompt_skeleton(p, frequent) for p in frame["prompt"].iloc[idx]]
    key = frame["task"].astype(str) + "|" + skeleton
    size = key.map(key.value_counts())
    task_size = frame.groupby("task")["sample_id"].transform("count")
    largest = size.groupby(frame["task"]).transform("max")
    length = frame["response"].map(lambda t: len(str(t).split()))
    mean = length.groupby(frame["task"]).transform("mean")
    std = length.groupby(frame["task"]).transform(lambda v: v.std(ddof=0))
    z = np.where(std > 0, (length - mean) / std.replace(0, 1), 0.0)
    med = length.groupby(frame["task"]).transform("median")
    scale = (length - med).abs().groupby(frame["task"]).transform(
        lambda d: 1.4826 * d.median() if d.median() > 0 else d.mean())
    rz = np.where(scale > 0, (length - med) / scale.replace(0, 1), 0.0)
    return pd.DataFrame({"rarity_skeleton": skeleton.to_numpy(), "rarity_group_size": size.to_numpy(int),
                         "rarity_group_share": (size / task_size).to_numpy(float),
                         "rarity_ratio": (size / largest).to_numpy(float),
                         "rarity_target_len": length.to_numpy(int), "rarity_target_len_z": z,
                         "rarity_target_len_rz": rz},
                        index=pd.Index(frame["sample_id"], name="sample_id"))


# --------------------------------------------------------------------------- the table
def signal_table(samples, *, correct: Mapping[str, bool] | pd.Series | None = None,
                 dynamics: pd.DataFrame | None = None, probe: pd.DataFrame | None = None,
                 inconsistency_kwargs: Mapping | None = None, probe_kwargs: Mapping | None = None,
                 dynamics_kwargs: Mapping | None = None, rarity_kwargs: Mapping | None = None) -> pd.DataFrame:
    """The per-sample table: sample fields + every available signal, one row per sample.

    ``samples``: training samples (see :func:`samples_frame`). ``correct``: sample id -> greedy
    exact match after SFT (becomes ``learned``). ``dynamics``: records (validated here);
    ``probe``: raw knowledge-probe rows (:func:`epi_utils.ilp.probe.knowledge_probe`). Missing
    signal sources leave their columns out (unprobed samples get ``probe_category =
    "not_probed"``). Ids in ``correct``/``dynamics``/``probe`` that are not in ``samples`` raise
    ``SignalInputError``.
    """
    base = samples_frame(samples)
    ids = base["sample_id"]
    table = base.set_index("sample_id")
    table = table.join(inconsistency_signals(base, **(inconsistency_kwargs or {})))
    table = table.join(rarity_signals(base, **(rarity_kwargs or {})))
    if correct is not None:
        corr = pd.Series(correct, dtype=bool) if not isinstance(correct, pd.Series) else correct.astype(bool)
        check_sample_ids(ids, corr.index, source="exact-match results", allow_missing=False)
        table["learned"] = corr.reindex(table.index).astype(bool)
    if dynamics is not None:
        dyn = read_dynamics(dynamics)
        check_sample_ids(ids, dyn["sample_id"], source="dynamics records")
        table = table.join(dynamics_signals(dyn, **(dynamics_kwargs or {})))
    if probe is not None:
        check_sample_ids(ids, probe["sample_id"], source="probe table")
        groups = base[["sample_id"]].assign(probe_group=(base["task"].astype(str) + "|" +
                                                          table["rarity_skeleton"].reindex(ids).to_numpy()))
        table = table.join(probe_signals(probe, groups, group_col="probe_group", **(probe_kwargs or {})))
        table["probe_category"] = table["probe_category"].fillna("not_probed")
        table["conflict_flag"] = table["conflict_flag"].astype("boolean").fillna(False).astype(bool)
    return table
