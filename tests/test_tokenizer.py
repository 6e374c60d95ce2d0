import pytest

from microgpt.tokenizer import Tokenizer, VocabularyError


def test_vocabulary_and_bos_as_the_seed():
    tok = Tokenizer.from_docs(["bob", "alice"])
    assert tok.chars == "abceilo"
    assert tok.bos == 7 and tok.vocab_size == 8


def test_round_trip():
    tok = Tokenizer.from_docs(["hello", "world"])
    assert tok.decode(tok.encode("lowered")) == "lowered"
    assert tok.document("ow") == [tok.bos, tok.ids["o"], tok.ids["w"], tok.bos]


def test_unicode_round_trip():
    tok = Tokenizer.from_docs(["zoë", "łukasz"])
    assert tok.decode(tok.encode("łoë")) == "łoë"


def test_unknown_character_is_named():
    tok = Tokenizer.from_docs(["abc"])
    with pytest.raises(VocabularyError, match=r"'z'.*U\+007A"):
        tok.encode("abz")


def test_decode_rejects_bos_and_out_of_range():
    tok = Tokenizer.from_docs(["abc"])
    with pytest.raises(VocabularyError):
        tok.decode([0, tok.bos])
