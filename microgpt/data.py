"""Documents to train on: a UTF-8 file with one document a line, or the embedded default.

The default is the first names shipped by the `names` package (US census lists, lower-cased),
so `microgpt train` works on a fresh offline machine once the package is installed."""
import hashlib
from importlib import resources


class DataError(ValueError):
    """A data file that cannot be used, with a message fit for one line on stderr."""


def parse_docs(text):
    """One document a line, surrounding whitespace stripped, blank lines skipped (as the seed)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_docs(path):
    try:
        raw = open(path, "rb").read()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"data path is a directory, not a file: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {path} is not UTF-8 (bad byte at offset {e.start})") from None
    docs = parse_docs(text)
    if not docs:
        raise DataError(f"data file {path} has no documents (it is empty or blank)")
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
    return hashlib.sha256("\n".join(docs).encode("utf-8")).hexdigest()
