"""Document-level multi-event extraction (Study 04): event-specific probes on ChFinAnn.

The study contract (:mod:`epi_utils.workbench.contract`): ``Config`` (:class:`.config.EventConfig`),
``run_study(cfg, *, progress) -> Result``, ``rehearse(cfg, *, progress) -> Result``.

Modules (one concept each):

``config``           the one configuration (EventConfig): data, pipeline options, design
``schema``           event types and ordered role slots, read from a schema JSON file
``data``             Doc2EDAG-layout loader, validation, truncation, seeded split
``fetch``            download of Doc2EDAG's full ChFinAnn release (``fetch_chfinann``)
``synthetic``        synthetic documents with planted records in the same layout
``prepare``          a run's documents from the config (real folder or synthetic), split and truncated
``metric``           the Doc2EDAG evaluation protocol (Zheng et al., EMNLP 2019)
``methods``          the decoder methods (Variant)
``encoder``          character vocabulary, document encoder, entity (NER) head, type detection
``pretrain``         masked-character pretraining on unlabeled text
``rules``            high-recall rule candidates for values (dates, shares, money, ratios, codes)
``frontend``         stage 1: encoder training, candidate sets, frozen features
``probes``           event-specific probe decoder and the shared no-probe decoder
``alignment``        probe-label alignment (Hungarian) and the fixed-order ablation
``losses``           role contrastive and probe consistency losses
``training``         stage 2: decoder training, dev selection, decoding
``design``           encoders x decoders x methods on prepared documents, typed records
``ladder``           the front-end ladder (profile cpu-long)
``synthetic_check``  the planted-records sanity check
``study``            run_study: inputs from the config, design, ladder, check -> Result
``summary``          tables, paired comparisons, targets and metrics (verdicts as data)
``figures``          the study's figures (returned, never saved)
``rehearsal``        the gpu profile's CPU rehearsal (toy config and data through run_study, cost estimate)
"""
from epi_utils.events.config import EventConfig
from epi_utils.events.data import Document, DocumentError, LoadReport, load_documents, parse_document, split_documents
from epi_utils.events.fetch import fetch_chfinann
from epi_utils.events.metric import agg_role_stats, evaluate_documents
from epi_utils.events.rehearsal import rehearse
from epi_utils.events.schema import EventSchema, load_schema
from epi_utils.events.study import Result, run_study
from epi_utils.events.synthetic import generate_documents

Config = EventConfig

__all__ = ["Config", "EventConfig", "Result", "run_study", "rehearse", "EventSchema", "load_schema", "Document",
           "LoadReport", "DocumentError", "load_documents", "split_documents", "parse_document", "evaluate_documents",
           "agg_role_stats", "generate_documents", "fetch_chfinann"]
