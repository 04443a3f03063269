"""The per-tokenizer encoding cache of ``epi_utils.lm.sft_format``: same ids as encoding afresh,
fresh lists for every caller, reset when the vocabulary grows, and a switch to turn it off."""
import pytest

from epi_utils.lm import sft_format
from epi_utils.lm.models import build_word_tokenizer


@pytest.fixture()
def tok():
    return build_word_tokenizer(["what", "is", "the", "colour", "of", "ada", "red", "blue"])


def _fresh(tok, prompt, response):
    previous = sft_format.set_encoding_cache(False)
    try:
        return sft_format.encode_example(tok, prompt, response), sft_format.encode_prompt(tok, prompt)
    finally:
        sft_format.set_encoding_cache(previous)


def test_cached_ids_equal_fresh_ids(tok):
    cases = [("what is the colour of ada", "red"), ("what is the colour of ada", "blue"), ("ada", "red blue")]
    for prompt, response in cases:
        want_example, want_prompt = _fresh(tok, prompt, response)
        for _ in range(2):  # the second call is served from the cache
            assert sft_format.encode_example(tok, prompt, response) == want_example
            assert sft_format.encode_prompt(tok, prompt) == want_prompt
    ids, labels = sft_format.encode_example(tok, "ada", "red")
    sep, eos = tok.convert_tokens_to_ids("<sep>"), tok.eos_token_id
    assert ids == [tok.convert_tokens_to_ids("ada"), sep, tok.convert_tokens_to_ids("red"), eos]
    assert labels == [-100, -100, tok.convert_tokens_to_ids("red"), eos]


def test_callers_get_fresh_lists(tok):
    first = sft_format.encode_prompt(tok, "what is ada")
    first.append(99)
    ids, labels = sft_format.encode_example(tok, "what is ada", "red")
    ids.clear()
    assert sft_format.encode_prompt(tok, "what is ada") == first[:-1]
    assert sft_format.encode_example(tok, "what is ada", "red")[0] == first[:-1] + [
        tok.convert_tokens_to_ids("red"), tok.eos_token_id]


def test_cache_resets_when_the_vocabulary_grows(tok):
    unk = tok.convert_tokens_to_ids("[UNK]")
    assert sft_format.encode_prompt(tok, "zebra")[0] == unk
    tok.add_tokens(["zebra"])
    assert sft_format.encode_prompt(tok, "zebra")[0] == tok.convert_tokens_to_ids("zebra") != unk


def test_switch_validates_and_turns_the_cache_off(tok):
    with pytest.raises(TypeError, match="enabled must be a bool"):
        sft_format.set_encoding_cache("no")
    assert sft_format.set_encoding_cache(False) is True
    try:
        assert sft_format._cache(tok) is None
    finally:
        assert sft_format.set_encoding_cache(True) is False
    assert sft_format._cache(tok) is not None
