"""Document-level multi-event extraction (Study 04): event-specific probes on ChFinAnn.

Modules (one concept each):

``schema``     event types and ordered role slots, read from a schema JSON file
``data``       Doc2EDAG-layout loader, validation, truncation, seeded split
``fetch``      download of Doc2EDAG's full ChFinAnn release (``fetch_chfinann``)
``synthetic``  synthetic documents with planted records in the same layout
``metric``     the Doc2EDAG evaluation protocol (Zheng et al., EMNLP 2019)
``config``     the one configuration (EventConfig) and the methods (Variant)
``encoder``    character vocabulary, document encoder, entity (NER) head, type detection
``pretrain``   masked-character pretraining on unlabeled text
``rules``      high-recall rule candidates for values (dates, shares, money, ratios, codes)
``frontend``   stage 1: encoder training, candidate sets, frozen features
``probes``     event-specific probe decoder and the shared no-probe decoder
``alignment``  probe-label alignment (Hungarian) and the fixed-order ablation
``losses``     role contrastive and probe consistency losses
``training``   stage 2: decoder training, dev selection, decoding
``study``      the experiment: data, encoders x decoders x methods, typed records
``summary``    tables and paired comparisons (verdicts as data)
``figures``    the study's figures
``rehearsal``  the gpu profile's CPU rehearsal (tiny random BERT, local samples, cost estimate)
"""
from epi_utils.events.data import Document, DocumentError, LoadReport, load_documents, parse_document, split_documents
from epi_utils.events.fetch import fetch_chfinann
from epi_utils.events.metric import agg_role_stats, evaluate_documents
from epi_utils.events.schema import EventSchema, load_schema
from epi_utils.events.synthetic import generate_documents

__all__ = ["EventSchema", "load_schema", "Document", "LoadReport", "DocumentError", "load_documents",
           "split_documents", "parse_document", "evaluate_documents", "agg_role_stats",
           "generate_documents", "fetch_chfinann"]
