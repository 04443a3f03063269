"""Alignment, losses, and the whole pipeline on a made-up schema (schema-driven, tiny)."""
import math

import numpy as np
import pytest
import torch

from epi_utils.events import Config
from epi_utils.events import frontend as fe
from epi_utils.events import training as tr
from epi_utils.events.alignment import assign, best_record
from epi_utils.events.data import parse_document, truncate_document
from epi_utils.events.losses import slot_nll, supcon
from epi_utils.events.methods import default_variants
from epi_utils.events.metric import evaluate_documents
from epi_utils.events.schema import schema_from_dict
from epi_utils.events.synthetic import generate_documents
from epi_utils.workbench.contract import ConfigError

#: the small, fast front end these tests were written with (the config's defaults are the cpu profile)
SMALL = dict(enc_epoch_steps=0, dec_epoch_steps=0, max_sentences=24, enc_lstm=False, bigram_buckets=0, pretrain_epochs=0, enc_layers=2, enc_epochs=4,
             enc_lr=2e-3, dec_epochs=20, dec_lr=2e-3, num_probes=8, dec_batch=16, device="cpu")


def small_config(**changes) -> Config:
    return Config(**{**SMALL, **changes})


def test_hungarian_finds_the_cheapest_assignment_and_fixed_keeps_order():
    cost = np.array([[4.0, 1.0], [2.0, 8.0], [3.0, 3.0]])  # 3 probes, 2 records
    assert sorted(assign(cost, mode="hungarian")) == [(0, 1), (1, 0)]  # total 3
    assert assign(cost, mode="fixed") == [(0, 0), (1, 1)]
    assert assign(np.zeros((3, 0))) == []
    assert best_record(cost).tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="alignment mode"):
        assign(cost, mode="greedy")


def test_supcon_hand_computed():
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    # anchors 0 and 1: -log(e^1 / (e^1 + e^0)); anchor 2 has no positive and is skipped
    assert float(supcon(x, torch.tensor([0, 0, 1]), temperature=1.0)) == pytest.approx(math.log(1 + math.e) - 1)
    assert float(supcon(x, torch.tensor([0, 1, 2]))) == 0.0


def test_slot_nll_masks_padding_roles():
    logp = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))  # 1 probe, 2 roles, M=2 + null
    assert float(slot_nll(logp, torch.tensor([[0, 2]]), torch.tensor([[True, False]]))) == pytest.approx(math.log(2))


MADE_UP = schema_from_dict({"events": [{"event_type": "Launch", "roles": ["Rocket", "Site", "Day", "Crew"]},
                                       {"event_type": "Dock", "roles": ["Ship", "Port"]},
                                       {"event_type": "Recall", "roles": ["Product", "Maker", "Count"]}],
                            "common_fields_entity_only": ["Ticker"]})


def test_whole_pipeline_runs_on_a_made_up_schema():
    raw = generate_documents(MADE_UP, n_docs=24, rng=np.random.default_rng(0), min_events=1, max_events=3)
    docs = [truncate_document(parse_document(i, d, MADE_UP), max_sentences=8, max_sentence_chars=64) for i, d in raw]
    train, test = docs[:18], docs[18:]
    cfg = small_config(dim=32, hidden=32, enc_layers=1, dec_layers=1, heads=2, max_sentence_chars=64,
                       max_sentences=8, enc_epochs=1, dec_epochs=2, num_probes=3, eval_every=1)
    enc = fe.train_encoder(train, MADE_UP, cfg, seed=0)
    f_train = fe.extract_features(enc, train, MADE_UP, candidates="gold")
    f_test = fe.extract_features(enc, test, MADE_UP, candidates="predicted")
    assert f_train[0]["gold"][0].shape[1] == MADE_UP.max_roles
    for variant in default_variants():
        dec, info = tr.train_decoder(f_train, MADE_UP, variant, cfg, seed=0, d_in=32, num_fields=len(enc.labels),
                                     dev_feats=f_test, dev_docs=test)
        preds = tr.decode(dec, f_test, MADE_UP, cfg)
        for recs in preds:
            for etype, args in recs:
                assert etype in MADE_UP.event_types and len(args) == len(MADE_UP.roles_of(etype))
        scores = evaluate_documents(preds, [d.records for d in test], MADE_UP)
        assert 0.0 <= scores["micro_f1"] <= 1.0 and set(scores["per_type"]) == set(MADE_UP.event_types)
        assert "slot" in info["history"][0] and ("role_contrastive" in info["history"][0]) == variant.role_contrastive


def test_config_validation_names_the_parameter():
    for kwargs, message in [({"candidates": "oracle"}, "EventConfig.candidates: must be one of"),
                            ({"dim": 30, "heads": 4}, "EventConfig.dim: must be divisible by heads (4) (got 30)"),
                            ({"hidden": 30, "heads": 4}, "EventConfig.hidden: must be divisible by heads (4) (got 30)"),
                            ({"type_gate": "maybe"}, "EventConfig.type_gate: must be one of ['on', 'off', 'dev']"),
                            ({"methods": ("probes", "crf")}, "EventConfig.methods: must be one of"),
                            ({"methods": ()}, "EventConfig.methods: must not be empty"),
                            ({"methods": ("probes", "probes")}, "EventConfig.methods: must not repeat a value"),
                            ({"dec_lr_grid": (0.001, -1.0)}, "EventConfig.dec_lr_grid: must be > 0"),
                            ({"split_files": ["train.json"]}, "EventConfig.split_files: must name three files"),
                            ({"data_source": "web"}, "EventConfig.data_source: must be one of ['real', 'synthetic']"),
                            ({"bigram_buckets": -1}, "EventConfig.bigram_buckets: must be >= 0"),
                            ({"dropout": 1.0}, "EventConfig.dropout: must be < 1")]:
        with pytest.raises(ConfigError) as info:
            Config(**kwargs)
        assert str(info.value).startswith(message), (kwargs, str(info.value))
    cfg = Config()
    assert cfg.replace(dec_lr=0.01).dec_lr == 0.01 and cfg.dec_lr == 0.003
    assert cfg.methods == ("probes", "no_probe")   # the cpu profile: the question's pair (cpu-long adds the 2x2 cells)
    assert cfg.replace(methods=["probes", "no_probe_extra_losses"]).methods == ("probes", "no_probe_extra_losses")
    assert cfg.replace(dec_lr_grid=[1e-3]).dec_lr_grid == (1e-3,)


def test_hugging_face_encoder_option_with_a_local_tiny_bert(tmp_path):
    """The GPU option (``hf_encoder``) maps token vectors back to characters; checked offline
    with a randomly initialised one-layer BERT saved to a temporary folder."""
    transformers = pytest.importorskip("transformers")
    schema = schema_from_dict({"events": [{"event_type": "Dock", "roles": ["Ship", "Port"]}]})
    raw = generate_documents(schema, n_docs=6, rng=np.random.default_rng(0), max_events=2)
    docs = [parse_document(i, d, schema) for i, d in raw]
    chars = sorted({c for doc in docs for s in doc.sentences for c in s})
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars), encoding="utf-8")
    transformers.BertTokenizerFast(str(tmp_path / "vocab.txt"), do_lower_case=False).save_pretrained(tmp_path)
    config = transformers.BertConfig(vocab_size=5 + len(chars), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(config).save_pretrained(tmp_path)
    cfg = small_config(dim=32, hidden=32, heads=2, enc_epochs=1, dec_epochs=1, hf_encoder=str(tmp_path),
                       max_sentence_chars=64)
    enc = fe.train_encoder(docs, schema, cfg, seed=0)
    feats = fe.extract_features(enc, docs, schema, candidates="gold")
    assert feats[0]["sent"].shape == (len(docs[0].sentences), 32 + schema.num_types)
    assert feats[0]["ment"].shape[1] == 2 * 32 + schema.num_types


def test_span_decoding_is_field_agnostic_merges_strings_and_drops_short_spans():
    """A name whose characters prefer different fields (B-Pledger, I-Pledgee, I-Pledger) is one span;
    its field is the one with the most summed probability; a repeated string is one candidate with
    two spans; a one-character span is dropped with ``min_chars=2``."""
    from epi_utils.events.data import Document
    from epi_utils.events.encoder import CharVocab, DocumentEncoder
    enc = DocumentEncoder(CharVocab(list("甲乙丙丁X")), ["Pledgee", "Pledger"], 1, dim=8, layers=1, heads=2)
    doc = Document("d", ["甲乙丙X丁", "甲乙丙"], {}, {}, [])
    tag = {"O": 0, "B-Pledgee": 1, "I-Pledgee": 2, "B-Pledger": 3, "I-Pledger": 4}
    seq = ["B-Pledger", "I-Pledgee", "I-Pledger", "O", "B-Pledgee", "B-Pledger", "I-Pledger", "I-Pledger"]
    logits = torch.full((1, len(seq), 5), -5.0)
    for i, t in enumerate(seq):
        logits[0, i, tag[t]] = 5.0
    found = enc.decode_mentions([doc], logits, [[0, 5]], min_chars=2)[0]
    assert found == {"甲乙丙": ("Pledger", [(0, 0, 3), (1, 0, 3)])}
    assert "丁" in enc.decode_mentions([doc], logits, [[0, 5]], min_chars=1)[0]
