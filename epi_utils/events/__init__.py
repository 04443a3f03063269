"""Document-level multi-event extraction (Study 04): event-specific probes on ChFinAnn.

Modules (one concept each):

``schema``     event types and ordered role slots, read from a schema JSON file
``data``       Doc2EDAG-layout loader, validation, truncation, seeded split
``fetch``      download of Doc2EDAG's full ChFinAnn release (``fetch_chfinann``)
``synthetic``  synthetic documents with planted records in the same layout
``metric``     the Doc2EDAG evaluation protocol (Zheng et al., EMNLP 2019)
``encoder``    character vocabulary, document encoder, entity (NER) head, type detection
``probes``     event-specific probe decoder and the shared no-probe decoder
``alignment``  probe-label alignment (Hungarian) and the fixed-order ablation
``losses``     role contrastive and probe consistency losses
``training``   two-stage training, feature extraction, decoding, variants
``analysis``   tables over seeds, recall by number of events, side-by-side records
"""
from .schema import EventSchema, load_schema
from .data import Document, LoadReport, DocumentError, load_documents, split_documents, parse_document
from .metric import evaluate_documents, agg_role_stats
from .synthetic import generate_documents
from .fetch import fetch_chfinann

__all__ = ["EventSchema", "load_schema", "Document", "LoadReport", "DocumentError", "load_documents",
           "split_documents", "parse_document", "evaluate_documents", "agg_role_stats",
           "generate_documents", "fetch_chfinann"]
