"""Study 04: rule candidates, masked-character pretraining, dev selection, and a data set with
another schema run end to end from a folder (``data_subdir`` + ``schema_file``)."""
import json

import numpy as np
import pytest
import torch

from epi_utils.events import Config, Result, prepare, run_study, summary
from epi_utils.events import frontend as fe
from epi_utils.events import training as tr
from epi_utils.events.data import parse_document, truncate_document
from epi_utils.events.design import ANNOTATED, frontend_step, silent
from epi_utils.events.encoder import CharTransformer, CharVocab
from epi_utils.events.ladder import Rung, study_rung
from epi_utils.events.methods import VARIANTS
from epi_utils.events.pretrain import mask_characters, pretrain_characters, windows_of
from epi_utils.events.rules import merge_candidates, rule_mentions
from epi_utils.events.schema import schema_from_dict
from epi_utils.events.synthetic import generate_documents
from epi_utils.workbench.contract import ConfigError
from epi_utils.workbench.stats import Verdict

#: the small, fast front end these tests were written with (the config's defaults are the cpu profile)
SMALL = dict(enc_epoch_steps=0, dec_epoch_steps=0, max_sentences=24, enc_lstm=False, bigram_buckets=0, pretrain_epochs=0, enc_layers=2, enc_epochs=4,
             enc_lr=2e-3, dec_epochs=20, dec_lr=2e-3, num_probes=8, dec_batch=16, device="cpu")


def test_rule_candidates_find_values_and_merge_by_string():
    sents = ["2018年9月6日质押76762170股，占其所持股份的35.98%。", "代码600703，回购金额7750848.0元，均价9.26元，2018年9月6日"]
    found = rule_mentions(sents)
    assert set(found) == {"2018年9月6日", "76762170股", "35.98%", "600703", "7750848.0元", "9.26元"}
    assert found["2018年9月6日"] == ("", [(0, 0, 9), (1, 32, 41)])   # one candidate, both spans
    assert rule_mentions(sents, kinds=["ratio"]) == {"35.98%": ("", [(0, 28, 34)])}
    with pytest.raises(ValueError, match="unknown rule kinds"):
        rule_mentions(sents, kinds=["names"])
    merged = merge_candidates({"甲公司": ("Pledger", [(0, 0, 3)])}, {"甲公司": ("", [(1, 2, 5)]), "100股": ("", [(0, 5, 9)])})
    assert merged == {"甲公司": ("Pledger", [(0, 0, 3), (1, 2, 5)]), "100股": ("", [(0, 5, 9)])}


def test_masking_follows_bert_proportions():
    ids = torch.randint(3, 50, (64, 100))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, 90:] = False
    g = torch.Generator().manual_seed(0)
    inp, tgt = mask_characters(ids, mask, vocab_size=50, rate=0.15, generator=g)
    chosen = tgt != -100
    assert not chosen[:, 90:].any()                                   # padding is never a target
    assert 0.12 < chosen.float().sum() / mask.sum() < 0.18
    assert 0.75 < (inp[chosen] == CharVocab.MASK).float().mean() < 0.85
    assert torch.equal(inp[~chosen], ids[~chosen])                    # unchosen characters are untouched
    inp0, tgt0 = mask_characters(ids, mask, vocab_size=50, rate=0.0, generator=g)
    assert (tgt0 == -100).all() and torch.equal(inp0, ids)


def test_pretraining_learns_a_planted_character_pattern():
    """Text made of one repeated 10-character cycle: after pretraining, a masked character is
    predictable from its neighbours, so the loss falls far below log(vocabulary) (the 'yes' case);
    the control (shuffled i.i.d. characters) stays near log(10)."""
    from epi_utils.events.data import Document
    cycle = "甲乙丙丁戊己庚辛壬癸"
    rng = np.random.default_rng(0)
    planted = [Document(str(i), [cycle * 6], {}, {}, []) for i in range(40)]
    noise = [Document(str(i), ["".join(rng.choice(list(cycle), 60))], {}, {}, []) for i in range(40)]
    losses = {}
    for name, docs in (("planted", planted), ("noise", noise)):
        torch.manual_seed(0)
        model = CharTransformer(CharVocab.build(docs), dim=32, layers=1, heads=2, max_len=32, dropout=0.0)
        losses[name] = pretrain_characters(model, docs, epochs=12, lr=3e-3, batch=16, seed=0)
    assert losses["planted"][-1] < 0.5 * np.log(10), losses
    assert losses["noise"][-1] > 0.8 * np.log(10), losses
    assert windows_of(planted[:1], 32) == [(cycle * 6)[:32], (cycle * 6)[32:]]


def test_char_encoder_with_bigrams_and_bilstm_does_not_depend_on_the_batch_padding():
    """A sentence's character vectors are the same alone and padded beside a longer sentence (the
    convolution sees zero padding, the packed BiLSTM's backward pass starts at its last character)."""
    from epi_utils.events.data import Document
    docs = ["甲公司质押股份", "乙公司于2018年9月6日回购股份7750848股"]
    torch.manual_seed(0)
    model = CharTransformer(CharVocab.build([Document("d", docs, {}, {}, [])]), dim=16, layers=1, heads=2, max_len=32, dropout=0.0,
                            bigram_buckets=97, lstm=True).eval()
    with torch.no_grad():
        alone, m1 = model([docs[0]])
        both, m2 = model(docs)
    assert alone.shape == (1, 7, 16) and both.shape == (2, len(docs[1]), 16)
    assert torch.allclose(alone[0], both[0, :7], atol=1e-5)
    assert m2.sum().item() == 7 + len(docs[1])
    ids, mask = model.vocab.encode(docs[:1], max_len=32)
    swapped = ids.clone()
    swapped[0, 3] = ids[0, 4]    # one character changed: its neighbours' bigram features change too
    with torch.no_grad():
        a, b = model.forward_ids(ids, mask), model.forward_ids(swapped, mask)
    assert not torch.allclose(a[0, 2], b[0, 2])
    with pytest.raises(ConfigError, match="EventConfig.bigram_buckets"):
        Config(bigram_buckets=-1)


def test_selection_key_orders_f1_then_annotated_f1_then_loss():
    assert tr.selection_key(0.2, 0.0, 9.0) > tr.selection_key(0.1, 0.9, 1.0)
    assert tr.selection_key(0.0, 0.5, 9.0) > tr.selection_key(0.0, 0.4, 1.0)
    assert tr.selection_key(0.0, 0.0, 1.0) > tr.selection_key(0.0, 0.0, 2.0)


MADE_UP = schema_from_dict({"events": [{"event_type": "Launch", "roles": ["Rocket", "Site", "Day"]},
                                       {"event_type": "Dock", "roles": ["Ship", "Port"]}]})


def _docs(n, seed=0):
    raw = generate_documents(MADE_UP, n_docs=n, rng=np.random.default_rng(seed), min_events=1, max_events=3)
    return [truncate_document(parse_document(i, d, MADE_UP), max_sentences=8, max_sentence_chars=64) for i, d in raw]


def test_decoder_selection_does_not_keep_the_first_checkpoint_when_dev_f1_is_zero_everywhere():
    """Issue 12: with candidates that never hold an argument, dev F1 is 0 at every check; the
    checkpoint, threshold and gate must then follow the annotated-mention dev F1 (then dev loss),
    not the first checkpoint and the default threshold 0.5."""
    docs = _docs(80)
    train, dev = docs[:60], docs[60:]
    cfg = Config(**{**SMALL, **dict(dim=32, hidden=32, enc_layers=1, dec_layers=1, heads=2, max_sentence_chars=64,
                                    max_sentences=8, enc_epochs=3, dec_epochs=8, eval_every=1, num_probes=3, dec_lr=3e-3,
                                    dropout=0.0, type_gate="dev")})
    enc = fe.train_encoder(train, MADE_UP, cfg, seed=0)
    f_train = fe.extract_features(enc, train, MADE_UP, candidates="gold")
    f_gold = fe.extract_features(enc, dev, MADE_UP, candidates="gold")
    empty = [{**f, "ment": f["ment"][:0], "field": f["field"][:0], "strings": [],
              "gold": [torch.full_like(g, -1) for g in f["gold"]]} for f in f_gold]
    dec, info = tr.train_decoder(f_train, MADE_UP, VARIANTS["probes"], cfg, seed=0, dev_feats=empty, dev_docs=dev,
                                 dev_gold_feats=f_gold, d_in=32, num_fields=len(enc.labels))
    checks = [h for h in info["history"] if "dev_f1" in h]
    assert all(h["dev_f1"] == 0.0 for h in checks)
    best = max(checks, key=lambda h: tr.selection_key(h["dev_f1"], h["dev_f1_annotated"], h["dev_loss"]))
    assert info["best_epoch"] == best["epoch"]
    assert best["dev_f1_annotated"] > checks[0]["dev_f1_annotated"]     # the first checkpoint was worse
    gold = [d.records for d in dev]
    by_setting = {}
    for gate in (True, False):
        for thr in tr.THRESHOLDS:
            dec.type_gate, dec.exist_threshold = gate, thr
            by_setting[(gate, thr)] = tr.evaluate_documents(tr.decode(dec, f_gold, MADE_UP, cfg), gold, MADE_UP)["micro_f1"]
    assert info["best_dev_f1_annotated"] == pytest.approx(max(by_setting.values()))
    assert by_setting[(info["type_gate"], info["exist_threshold"])] == pytest.approx(max(by_setting.values()))


def _write_layout(folder, schema_dict, docs_raw):
    folder.mkdir(parents=True)
    (folder / "my_schema.json").write_text(json.dumps(schema_dict, ensure_ascii=False), encoding="utf-8")
    with open(folder / "train.jsonl", "w", encoding="utf-8") as fh:
        for i, d in docs_raw:
            fh.write(json.dumps([i, d], ensure_ascii=False) + "\n")


def test_a_doc2edag_layout_data_set_with_another_schema_runs_from_a_folder(tmp_path, monkeypatch):
    """The notebook's data path: ``data_subdir`` under EPI_DATA_DIR and ``schema_file`` in it; a
    two-type schema unlike ChFinAnn's, documents in Doc2EDAG's ``[doc_id, doc]`` layout; run_study
    builds its inputs from the config alone and returns a complete :class:`Result`."""
    schema_dict = {"events": [{"event_type": "Launch", "roles": ["Rocket", "Site", "Day"]},
                              {"event_type": "Dock", "roles": ["Ship", "Port"]}]}
    raw = generate_documents(schema_from_dict(schema_dict), n_docs=60, rng=np.random.default_rng(1), max_events=2)
    _write_layout(tmp_path / "space" / "launches", schema_dict, raw)
    monkeypatch.setenv("EPI_DATA_DIR", str(tmp_path / "space"))
    folder, schema_path = prepare.locate_data("launches", "my_schema.json")
    data = prepare.prepare_data(folder, schema_path, split_seed=0, max_sentences=8, max_sentence_chars=64)
    assert data.schema.event_types == ("Launch", "Dock") or list(data.schema.event_types) == ["Launch", "Dock"]
    assert sum(len(v) for v in data.full.values()) == 60
    cfg = Config(**{**SMALL, **dict(data_subdir="launches", schema_file="my_schema.json", dim=32, hidden=32, enc_layers=1,
                                    dec_layers=1, heads=2, max_sentence_chars=64, max_sentences=8, enc_epochs=1,
                                    pretrain_epochs=1, dec_epochs=2, eval_every=1, num_probes=3, encoder_seeds=2,
                                    decoder_seeds=1, methods=("probes", "no_probe"), dec_lr_grid=(1e-3, 3e-3),
                                    synthetic_docs=30, synthetic_enc_epochs=1, synthetic_dec_epochs=1)})
    result = run_study(cfg, progress=silent, log=lambda s: None)
    assert isinstance(result, Result) and result.data.describe() == data.describe()   # the same split, built from cfg
    res = result.records
    cands = {r.candidates for r in res.decoders}
    assert cands == {"union", ANNOTATED, "predicted", "rules"}
    assert {r.unit for r in res.rows(candidates="union")} == {"enc0-dec100", "enc1-dec200"}
    assert len(res.search) == 4 and sum(s.chosen for s in res.search) == 2
    comps = summary.comparisons(res, candidates="union", metrics=("micro_f1",))
    assert [c.metric for c in comps] == ["micro_f1 (union)", "document F1 (union)"]
    assert all(c.verdict in tuple(Verdict) for c in comps)
    table = summary.score_table(res.rows(candidates=ANNOTATED))
    assert set(table["method"]) == {"probes", "no_probe"} and list(table.columns)[0] == "method"
    e, ds = frontend_step(data, cfg.replace(pretrain_epochs=0, enc_lstm=True, bigram_buckets=64), step="no pretraining", seed=0)
    assert [d.candidates for d in ds] == ["union", "predicted", "rules"] and {d.step for d in ds} == {"no pretraining"}
    steps = summary.frontend_table([Rung("no pretraining", e, ds), study_rung(cfg, res)])
    assert list(steps["candidates"][:3]) == ["predicted", "rules", "union"]
    assert steps["decoders"].tolist() == [1, 1, 1] + [1, 1, 1]   # the study row: probes of the first encoder
    ment, share = summary.targets(res, candidates="union", mention_target=0.7, bound_share_target=0.6)
    assert ment.value == pytest.approx(np.mean([x.mention["predicted"]["f1"] for x in res.encoders]))  # the NER head's
    e2e = np.mean([r.scores["micro_f1"] for r in res.rows(candidates="union") if r.method == "probes"])
    bound = np.mean([r.scores["micro_f1"] for r in res.rows(candidates=ANNOTATED) if r.method == "probes"])
    assert share.value == pytest.approx(e2e / bound if bound > 0 else 0.0) and share.target == 0.6
    # the schedules' choices are recorded, and decoders that barely learned make comparisons not interpretable
    sel = summary.selection_table(res, min_dev_f1=cfg.min_dev_f1)
    assert len(sel) == 2 + 2 * 2 * 2 and (sel["kept epoch"] <= sel["last epoch"]).all()
    table = summary.comparison_table(comps, res, min_dev_f1=1.0)   # nothing reaches dev F1 1.0
    assert set(table["verdict"]) == {summary.NOT_INTERPRETABLE} and table["problems"].str.contains("barely learned").all()
    assert result.data.name == "launches" and "launches" in result.card().question
    assert res.encoders[0].history[0].get("dev_mention_f1") is not None
    # the contract's outputs: metrics with intervals named _low/_high over the seed units, headlines present
    metrics = result.metrics()
    assert metrics["probes"]["n"] == 2 and metrics["probes"]["unit"] == summary.SEED_UNIT
    assert metrics["probes"]["micro_f1_low"] <= metrics["probes"]["micro_f1"] <= metrics["probes"]["micro_f1_high"]
    assert set(metrics["synthetic"]) == {"micro_f1", "multi_recall", "passed", "end_to_end_micro_f1"}
    for key in result.headlines():
        node = metrics
        for part in key.split("."):
            node = node[part]
    assert set(result.frames()) == {"decoders", "encoders", "frontend_steps", "recall_by_events", "lr_search", "comparisons",
                                    "selection"}
    assert "study_total_s" in result.timings() and "synthetic_s" in result.timings()
    by_count = summary.recall_by_count_table(res.by_count)
    assert {"recall", "recall_low", "recall_high", "n", "unit", "n_docs"} <= set(by_count.columns)
    with pytest.raises(FileNotFoundError, match="my_schema_typo.json"):
        prepare.locate_data("launches", "my_schema_typo.json")


def test_decoding_from_cached_outputs_gives_the_same_records_and_loss_at_every_threshold_and_gate():
    """The dev checks and the threshold/gate search decode from one forward pass
    (``decoder_outputs``); the records and the dev loss must equal a fresh ``decode``/``dev_loss``."""
    docs = _docs(40)
    cfg = Config(**{**SMALL, **dict(dim=32, hidden=32, enc_layers=1, dec_layers=1, heads=2, max_sentence_chars=64,
                                    max_sentences=8, enc_epochs=1, dec_epochs=2, num_probes=3, dropout=0.0)})
    enc = fe.train_encoder(docs[:30], MADE_UP, cfg, seed=0)
    f_train = fe.extract_features(enc, docs[:30], MADE_UP, candidates="gold")
    feats = fe.extract_features(enc, docs[30:], MADE_UP, candidates="gold")
    dec, _ = tr.train_decoder(f_train, MADE_UP, VARIANTS["probes"], cfg, seed=0, d_in=32, num_fields=len(enc.labels))
    outs, loss = tr.decoder_outputs(dec, feats, cfg, batch=4, variant=VARIANTS["probes"])
    assert loss == pytest.approx(tr.dev_loss(dec, feats, VARIANTS["probes"], cfg, batch=4))
    assert len(outs) == 3                                              # 10 documents in batches of 4
    for gate in (True, False):
        for thr in (0.1, 0.5, 0.9):
            dec.type_gate, dec.exist_threshold = gate, thr
            assert tr.decode(dec, feats, MADE_UP, cfg, batch=4, outputs=outs) == tr.decode(dec, feats, MADE_UP, cfg, batch=4)
