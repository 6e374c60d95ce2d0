"""Documents to train on: a UTF-8 file with one document a line, or the embedded default.

The default is the first names shipped by the `names` package (US census lists, lower-cased),
so `microgpt train` works on a fresh offline machine once the package is installed."""
import unicodedata
from importlib import resources

from . import limits
from .digest import sha256

BOM = "\ufeff"


class DataError(ValueError):
    """A data file that cannot be used, with a message fit for one line on stderr."""


def parse_docs(text):
    """One document a line, surrounding whitespace stripped, blank lines skipped (as the seed)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


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
            raw = f.read(limits.MAX_DATA_BYTES + 1)  # the file may have grown since stat
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
