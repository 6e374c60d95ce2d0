"""Documents to train on: a UTF-8 file with one document a line, or the embedded default.

The default is the first names shipped by the `names` package (US census lists, lower-cased),
so `microgpt train` works on a fresh offline machine once the package is installed."""
import unicodedata

from . import limits
from .digest import sha256

BOM = "\ufeff"


class DataError(ValueError):
    """A data file that cannot be used, with a message fit for one line on stderr."""


def parse_docs(text):
    """One document a line, surrounding whitespace stripped, blank lines skipped (as the seed)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


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
    """The documents of a UTF-8 file. A leading byte order mark is dropped; control characters
    are kept (they are characters of the vocabulary) but note(message) is told about them."""
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
    controls = sorted({ch for doc in docs for ch in doc if unicodedata.category(ch) == "Cc"})
    if controls and note:
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
