"""Character-level tokenizer, as the seed: the vocabulary is the sorted set of characters in the
data, and BOS (which also ends a document) takes the id after the last character."""


class VocabularyError(ValueError):
    """A character the tokenizer has no id for."""


class Tokenizer:
    def __init__(self, chars):
        self.chars = "".join(chars)
        if len(set(self.chars)) != len(self.chars) or list(self.chars) != sorted(self.chars):
            raise ValueError("the vocabulary must be sorted distinct characters")
        self.ids = {ch: i for i, ch in enumerate(self.chars)}
        self.bos = len(self.chars)
        self.vocab_size = len(self.chars) + 1

    @classmethod
    def from_docs(cls, docs):
        return cls(sorted(set("".join(docs))))

    def encode(self, text):
        """Ids of text's characters (no BOS)."""
        try:
            return [self.ids[ch] for ch in text]
        except KeyError as e:
            ch = e.args[0]
            raise VocabularyError(f"character {ch!r} (U+{ord(ch):04X}) is not in the vocabulary "
                                  f"{self.shown()}") from None

    def shown(self, most=100):
        """The vocabulary for a message: whole, or its first `most` characters and its size."""
        if len(self.chars) <= most:
            return repr(self.chars)
        return f"{self.chars[:most]!r}... ({len(self.chars)} characters)"

    def decode(self, ids):
        if any(not 0 <= i < len(self.chars) for i in ids):
            raise VocabularyError(f"ids must be in 0..{len(self.chars) - 1} (BOS is {self.bos}), got {list(ids)}")
        return "".join(self.chars[i] for i in ids)

    def document(self, text):
        """The seed's training sequence for one document: BOS, its characters, BOS."""
        return [self.bos] + self.encode(text) + [self.bos]
