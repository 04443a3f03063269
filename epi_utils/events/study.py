"""The Study 04 experiment: from a config to a :class:`Result`.

:func:`run_study` builds its inputs from the config (:func:`.prepare.prepare`: the real documents or
synthetic ones), runs the design (:func:`.design.run_design`: the decoder methods over encoder x
decoder seeds), the front-end ladder when ``frontend_steps`` is set (:func:`.ladder.run_ladder`) and
the synthetic sanity check (:func:`.synthetic_check.run_check`). The :class:`Result` holds the
records and offers the study contract's ``frames()``, ``metrics()``, ``headlines()`` and ``timings()``;
:mod:`.summary` turns the records into tables and verdicts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from epi_utils.events.config import EventConfig
from epi_utils.events.design import ANNOTATED, EncoderRecord, Records, run_design
from epi_utils.events.ladder import Rung, run_ladder
from epi_utils.events.prepare import PreparedData, prepare
from epi_utils.events.summary import (
    all_comparisons,
    comparison_table,
    comparisons,
    decoder_frame,
    frontend_table,
    headline_metrics,
    recall_by_count_table,
    search_table,
    selection_table,
)
from epi_utils.events.synthetic_check import SyntheticCheck, run_check
from epi_utils.workbench import progress as progress_mod
from epi_utils.workbench.cards import Card, Headline, answer_sentence
from epi_utils.workbench.progress import log_line
from epi_utils.workbench.stats import interval

__all__ = ["ANNOTATED", "Result", "run_study"]


@dataclass
class Result:
    """One run of Study 04: the config, the documents it ran on, and every record."""

    config: EventConfig
    data: PreparedData
    records: Records
    ladder: list[Rung]
    synthetic: SyntheticCheck
    seconds: dict[str, float] = field(default_factory=dict)
    estimate: Any = None      # the full-scale estimate of a rehearsal (:mod:`.rehearsal`)

    def rows(self, *, candidates: str | None = None, step: str = "main"):
        """The decoder records of the main run (see :meth:`.design.Records.rows`)."""
        return self.records.rows(candidates=candidates, step=step)

    def encoder_records(self) -> list[EncoderRecord]:
        """The ladder's trained encoders, then the study's encoders (the encoder-curve figure)."""
        return [r.encoder for r in self.ladder[:-1]] + list(self.records.encoders)

    def frames(self) -> dict[str, pd.DataFrame]:
        """Per-unit tables: every decoder evaluation, every encoder's dev mention scores, the
        front-end steps, recall by number of events, the learning-rate search, the comparisons."""
        enc = pd.DataFrame([{"step": e.step, "encoder_seed": e.encoder_seed, "candidates": c, **m, "seconds": e.seconds}
                            for e in self.encoder_records() for c, m in e.mention.items()])
        return {"decoders": decoder_frame(self.records.decoders + [d for r in self.ladder[:-1] for d in r.decoders]),
                "encoders": enc,
                "frontend_steps": frontend_table(self.ladder),
                "recall_by_events": recall_by_count_table(self.records.by_count),
                "lr_search": search_table(self.records.search),
                "comparisons": comparison_table(all_comparisons(self.records, candidates=self.config.candidates),
                                                self.records, min_dev_f1=self.config.min_dev_f1),
                "selection": selection_table(self.records, min_dev_f1=self.config.min_dev_f1)}

    def metrics(self) -> dict:
        """The metrics.json payload (:func:`.summary.headline_metrics`)."""
        return headline_metrics(self)

    def headlines(self) -> list[str]:
        """Micro F1 and multi-event recall of the first two methods, the front end's dev mention F1
        (and a rehearsal's GPU-hours)."""
        heads = [f"{m}.{k}" for m in self.config.methods[:2] for k in ("micro_f1", "multi_recall")]
        heads.append("targets.dev_mention_f1.value")
        if self.estimate is not None:
            heads += ["rehearsal.gpu_hours", "rehearsal.decoders.hours"]
        return heads

    def card(self) -> Card:
        """The index's card: do the probes beat one shared decoder on this data set's test micro F1?
        The answer is the paired comparison over seed units (or "not interpretable" with the reasons
        when a decoder kept its last allowed epoch or barely learned); headlines: both methods' micro F1,
        the probes' bound from the annotated mentions, the NER head's dev mention F1 and the probes'
        multi-event recall."""
        cfg, name = self.config, self.data.name or "the data set"
        a, b = cfg.methods[0], cfg.methods[1] if len(cfg.methods) > 1 else cfg.methods[0]
        comps = [c for c in comparisons(self.records, candidates=cfg.candidates, metrics=("micro_f1",), pairs=((a, b),))
                 if c.metric.startswith("micro_f1")]
        if not comps:
            answer = f"No paired comparison was made (methods {list(cfg.methods)})."
        else:
            problems = comparison_table(comps, self.records, min_dev_f1=cfg.min_dev_f1)["problems"].iloc[0]
            answer = answer_sentence(comps[0], a=a, b=b, metric=f"{name} test micro F1 ({cfg.candidates} candidates)",
                                     unit="F1")
            if problems:
                answer = f"Not interpretable ({problems}); as measured: {answer}"
        plural = lambda n, word: f"{n} {word}" + ("" if n == 1 else "s")
        unit = f"seed units ({plural(cfg.encoder_seeds, 'encoder')} x {plural(cfg.decoder_seeds, 'decoder')})"

        def head(label: str, values: list[float], what: str = "micro F1") -> Headline:
            if len(values) >= 2:
                return Headline.from_interval(label, interval(values, unit=unit, bounds=(0, 1)), unit=what)
            return Headline(label, float(values[0]) if values else float("nan"), unit=what)

        rows = lambda c, m: [r.scores["micro_f1"] for r in self.records.rows(candidates=c) if r.method == m]
        heads = [head(f"{a}, test micro F1", rows(cfg.candidates, a)), head(f"{b}, test micro F1", rows(cfg.candidates, b)),
                 head(f"{a} from the annotated mentions (upper bound)", rows(ANNOTATED, a)),
                 head("NER head, dev mention F1", [e.mention["predicted"]["f1"] for e in self.records.encoders
                                                  if e.step == "main"], "F1"),
                 head(f"{a}, multi-event recall", [r.scores["multi_recall"] for r in self.records.rows(candidates=cfg.candidates)
                                                  if r.method == a], "recall")]
        return Card(f"Do event-specific probes beat one shared decoder on {name} (document-level event extraction)?",
                    answer, tuple(heads), figure="recall_vs_num_events")

    def timings(self) -> dict:
        """Seconds of each encoder, of the design, of each ladder rung, of the synthetic check and of
        the whole study; the kernel's CPU seconds so far (one thread: about the wall time)."""
        out = {f"study_{k}_s": v for k, v in self.records.seconds.items()}
        out.update({f"frontend_step {r.step}_s": r.seconds for r in self.ladder[:-1]})
        out["synthetic_s"] = self.synthetic.seconds
        out.update({f"{k}_s": v for k, v in self.seconds.items()})
        out["kernel_cpu_s"] = time.process_time()
        return out


def run_study(cfg: EventConfig, *, progress: Callable = progress_mod.progress, data: PreparedData | None = None,
              log: Callable[[str], None] = log_line) -> Result:
    """Run Study 04 as ``cfg`` says.

    ``data``: documents prepared elsewhere (the rehearsal's local samples); by default
    :func:`.prepare.prepare` builds them from ``cfg``. ``progress`` wraps the loops over trained
    decoders and ladder rungs; ``log`` receives one line per encoder epoch, encoder and decoder.
    """
    t0 = time.perf_counter()
    data = data if data is not None else prepare(cfg)
    records = run_design(data, cfg, progress=progress, log=log)
    ladder = run_ladder(data, cfg, records, progress=progress, log=log)
    synthetic, _ = run_check(data.schema, cfg, name=data.name)
    return Result(cfg, data, records, ladder, synthetic, {"run_study": time.perf_counter() - t0})
