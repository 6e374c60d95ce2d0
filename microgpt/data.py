"""Documents to train on: a UTF-8 file with one document a line, or the embedded default.

The default is the first names shipped by the `names` package (US census lists, lower-cased),
so `microgpt train` works on a fresh offline machine once the package is installed."""
import itertools
import operator
import re
import unicodedata
from array import array
from collections.abc import Sequence

from . import limits
from .digest import sha256

BOM = "\ufeff"
LINE_BOUNDARIES = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"   # str.splitlines' (with \r\n)
# A document: a line stripped, from its first character that is not whitespace (str.isspace, as
# re's \S) to its last
DOCUMENT = re.compile(f"\\S(?:[^{LINE_BOUNDARIES}]*\\S)?")


class DataError(ValueError):
    """A data file that cannot be used, with a message fit for one line on stderr."""


class Documents(Sequence):
    """Documents as slices of one string, in file order until shuffle(). A list of str takes some
    50 bytes a document beside its characters (2.3 MB for the 32k names, and gigabytes for a data
    file of short lines near the size limit); this takes 12: where each starts and ends, and its
    place in the shuffled order."""

    def __init__(self, text, spans):
        self._text, self._spans = text, spans   # document k is text[spans[2k]:spans[2k + 1]]
        self._order = None

    @classmethod
    def of(cls, strings):
        strings = list(strings)
        ends = itertools.accumulate(map(len, strings))
        spans = _numbers(sum(map(len, strings)), itertools.chain.from_iterable(
            (end - len(s), end) for s, end in zip(strings, ends)))
        return cls("".join(strings), spans)

    def __len__(self):
        return len(self._spans) // 2

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = operator.index(k)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError("document index out of range")
        i = k if self._order is None else self._order[k]
        return self._text[self._spans[2 * i]:self._spans[2 * i + 1]]

    def __eq__(self, other):
        if not isinstance(other, (Documents, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self):
        return f"<Documents: {len(self)}>"

    def shuffle(self, rng):
        """Put them in the order rng.shuffle would put a list of them in (it shuffles their
        numbers, with the same draws)."""
        if self._order is None:
            self._order = _numbers(len(self), range(len(self)))
        rng.shuffle(self._order)


def _numbers(largest, values=()):
    """An array for numbers up to largest: 32 bits where they fit."""
    return array("I" if largest < 2 ** 32 and array("I").itemsize == 4 else "q", values)


def parse_docs(text):
    """One document a line, surrounding whitespace stripped, blank lines skipped: the seed's
    [line.strip() for line in text.splitlines() if line.strip()], with no string made a line."""
    return Documents(text, _numbers(len(text), itertools.chain.from_iterable(
        map(re.Match.span, DOCUMENT.finditer(text)))))


def control_characters(text):
    """The control characters (Unicode's Cc) that the documents parse_docs finds in text hold,
    sorted: line boundaries never, whitespace only where it lies between two other characters
    of a line."""
    found, other_space = [], f"[^\\S{LINE_BOUNDARIES}]*"   # whitespace within a line
    for ch in sorted(set(text)):
        if unicodedata.category(ch) != "Cc" or ch in LINE_BOUNDARIES:
            continue
        if not ch.isspace() or re.search(f"\\S{other_space}{re.escape(ch)}{other_space}\\S", text):
            found.append(ch)
    return found


def _read_whole(f, size, limit):
    """The file's bytes, or limit + 1 of them if it has more: size (stat's) and one byte more at
    first, then a MiB at a time only if it grew since. (read(n) sets n bytes aside before it reads
    a byte: read(limit + 1) would ask for 256 MiB to read a 228 KB file, which fails under a
    memory limit such as ulimit -v.)"""
    chunks = [f.read(min(size, limit) + 1)]
    total = len(chunks[0])
    while total > size and total <= limit:
        chunk = f.read(min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def load_docs(path, note=None):
    """The documents of a UTF-8 file as a list of strings (load_documents)."""
    return list(load_documents(path, note))


def load_documents(path, note=None):
    """The documents of a UTF-8 file (Documents). A leading byte order mark is dropped; control
    characters are kept (they are characters of the vocabulary) but note(message) is told about
    them."""
    try:
        size = limits.regular_file_size(path, "data path")
        if size > limits.MAX_DATA_BYTES:
            raise DataError(f"data file {path} is {limits.format_bytes(size)}; the limit is "
                            f"{limits.format_bytes(limits.MAX_DATA_BYTES)} (this model reads it whole, one "
                            f"document a line)")
        with open(path, "rb") as f:
            raw = _read_whole(f, size, limits.MAX_DATA_BYTES)
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror}") from None
    except DataError:
        raise
    except ValueError as e:  # a folder, a device
        raise DataError(str(e)) from None
    if len(raw) > limits.MAX_DATA_BYTES:
        raise DataError(f"data file {path} grew past the limit of {limits.format_bytes(limits.MAX_DATA_BYTES)}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {path} is not UTF-8 (bad byte at offset {e.start})") from None
    if text.startswith(BOM):
        text = text[1:]
        if note:
            note(f"data file {path} starts with a UTF-8 byte order mark; it was dropped")
    docs = parse_docs(text)
    if not docs:
        raise DataError(f"data file {path} has no documents (it is empty or blank)")
    controls = control_characters(text) if note else []
    if controls:
        names = ", ".join(f"U+{ord(ch):04X}" for ch in controls[:5]) + (", ..." if len(controls) > 5 else "")
        note(f"data file {path} contains control characters ({names}); they are part of the vocabulary")
    return docs


def default_docs():
    """First names from the `names` package's census lists, lower-cased, first occurrence kept."""
    from importlib import resources  # 2 MB of imports that a run on a data file does without
    docs, seen = [], set()
    for name in ("dist.female.first", "dist.male.first"):
        text = resources.files("names").joinpath(name).read_text(encoding="ascii")
        for line in text.splitlines():
            if line.strip():
                doc = line.split()[0].lower()
                if doc not in seen:
                    seen.add(doc)
                    docs.append(doc)
    return docs


def docs_sha256(docs):
    """Fingerprint of a document list (in file order), to tie a checkpoint to its data."""
    return sha256("\n".join(docs).encode("utf-8")).hexdigest()
