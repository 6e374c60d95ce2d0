"""The documents: parsed as the seed parses them, held as slices of one string, shuffled as the
seed shuffles its list."""
import random

import pytest

import re
import sys
import unicodedata

from microgpt.data import LINE_BOUNDARIES, Documents, control_characters, load_docs, load_documents, parse_docs

# every line boundary str.splitlines knows, \r\n, whitespace it strips (Unicode's too), blank
# lines and whitespace inside a document
TRICKY = ("anna\nbob\r\ncy\rdee\x0bed\x0cfay\x1cgus\x1dhal\x1eivy\x85jo\u2028kim\u2029"
          "  lea \t\n\n \u3000 \n\u00a0mo\u00a0\u2003 \nnew york\n\tol\x00a\n\x1f pat \x1f\n"
          "quinn\r\n\r\n   \r\nrex")


def seeds_parse(text):
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("text", [TRICKY, "", "\n\n", "one", "one\n", "\u2029x\u2029", TRICKY * 3])
def test_parse_is_the_seeds(text):
    docs = parse_docs(text)
    assert list(docs) == seeds_parse(text)
    assert docs == seeds_parse(text) and len(docs) == len(seeds_parse(text))


def test_names_parse_as_the_seed_parses_them(shared):
    text = (shared / "data" / "names.txt").read_text(encoding="utf-8")
    assert list(parse_docs(text)) == seeds_parse(text)


def test_shuffle_gives_the_seeds_order():
    # the seed: random.seed(42); docs = [...]; random.shuffle(docs)
    strings = seeds_parse(TRICKY * 7)
    for seed in (0, 42, 1234):
        expected = list(strings)
        random.Random(seed).shuffle(expected)
        docs = parse_docs(TRICKY * 7)
        rng = random.Random(seed)
        docs.shuffle(rng)
        assert list(docs) == expected
        assert rng.getstate() == _after_shuffle(seed, len(strings))   # the same draws, no more
        docs.shuffle(random.Random(seed))                              # again: from that order
        random.Random(seed).shuffle(expected)
        assert list(docs) == expected


def _after_shuffle(seed, n):
    rng = random.Random(seed)
    rng.shuffle(list(range(n)))
    return rng.getstate()


def test_documents_of_strings_and_indexing():
    strings = ["ab", "", "c\nd", "é" * 3]
    docs = Documents.of(strings)
    assert list(docs) == strings and docs == strings and docs == tuple(strings)
    assert [docs[-1], docs[-4]] == ["ééé", "ab"] and docs[1:3] == ["", "c\nd"] and docs[::-2] == ["ééé", ""]
    for bad in (4, -5):
        with pytest.raises(IndexError):
            docs[bad]
    with pytest.raises(TypeError):
        docs["0"]
    assert docs != ["ab"] and docs != strings + ["x"] and (docs == "abc") is False
    with pytest.raises(TypeError):
        hash(docs)


def test_load_documents_and_load_docs_agree(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("\ufeff" + TRICKY, encoding="utf-8")
    notes = []
    docs = load_documents(path, notes.append)
    assert list(docs) == load_docs(path) == seeds_parse(TRICKY)
    assert any("byte order mark" in n for n in notes) and any("U+0000" in n for n in notes)


def test_documents_take_a_few_bytes_each():
    # 12 bytes a document beside the text (offsets and order in 32 bits; the arrays grow by
    # an eighth at a time); a list of str takes some 50 bytes a document beside its characters
    text = "\n".join(f"n{i % 1000}" for i in range(100_000))
    docs = parse_docs(text)
    docs.shuffle(random.Random(1))
    held = sum(sys.getsizeof(x) for x in (docs._spans, docs._order))
    assert held <= 12 * 1.125 * len(docs) + 1024


def test_the_parses_premises_hold_on_this_python():
    # parse_docs finds documents with a regular expression: its line boundaries must be
    # str.splitlines' and its \S the complement of str.isspace (what str.strip strips)
    chars = [chr(c) for c in range(sys.maxunicode + 1)]
    assert [c for c in chars if len(f"a{c}b".splitlines()) == 2] == sorted(LINE_BOUNDARIES)
    assert all(bool(re.match(r"\s", c)) == c.isspace() for c in chars)


@pytest.mark.parametrize("text", [TRICKY, "a\tb\n\tc\t\n", "\x1fx\x1f \n", "x \x1f y", "\t\n\x1f",
                                  "a\x85b\x1cc", "\x7f\x9f", "plain", "x\t\u2028\ty"])
def test_control_characters_are_the_documents(text):
    seeds = sorted({ch for doc in seeds_parse(text) for ch in doc if unicodedata.category(ch) == "Cc"})
    assert control_characters(text) == seeds
