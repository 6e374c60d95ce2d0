"""Checkpoints: config, vocabulary, parameters, Adam moments, step and random state in one file.

Format: a header line `microgpt-checkpoint 1 sha256=<hex>` and a JSON body whose sha256 the
header records, so a truncated or altered file is refused rather than half-loaded. Floats are
written by repr and read back by float(), which round-trips every double exactly. A file is
written whole or not at all (atomic.py).

A checksum proves only that the file is the one written; load() also checks every field (its
type, range, size and the sizes its config implies) before anything is built from it, so a
hand-edited or foreign file is one clear error, never a traceback or a huge allocation.
"""
import json
import math
import re
from array import array
from contextlib import contextmanager

from . import atomic, limits
from .digest import sha256
from .model import Config, ConfigError

MAGIC = "microgpt-checkpoint"
VERSION = 1
CONFIG_KEYS = ("vocab_size", "n_layer", "n_embd", "n_head", "block_size")
FIELDS = ("config", "chars", "step", "num_steps", "seed", "lr", "data", "params", "adam_m", "adam_v",
          "random_state")
LISTS = ("params", "adam_m", "adam_v")        # the long fields, in FIELDS' order
# json.loads needs several times the file's size: the text, then a float object per number
LOAD_BYTES_PER_FILE_BYTE = 6


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit, with a message fit for one line."""


# numbers written (and hashed) a slice at a time: the file is written as it is made, so that a
# large model's checkpoint never exists whole in memory (at d128 the text alone is 55 MB)
SAVE_CHUNK = limits.CHECKPOINT_SLICE


def save(path, *, config, chars, step, num_steps, seed, lr, data, params, adam_m, adam_v, random_state):
    """The body is json.dumps of every field in FIELDS' order, byte for byte; params, adam_m and
    adam_v are sequences of floats (lists, or arrays of doubles)."""
    head = json.dumps({"config": {k: getattr(config, k) for k in CONFIG_KEYS}, "chars": chars, "step": step,
                       "num_steps": num_steps, "seed": seed, "lr": lr, "data": data}, allow_nan=False)
    tail = json.dumps({"random_state": [random_state[0], list(random_state[1]), random_state[2]]})
    prefix = f"{MAGIC} {VERSION} sha256=".encode("ascii")
    digest = sha256()
    with atomic.AtomicFile(path, "wb") as f:
        f.write(prefix + b"0" * digest.digest_size * 2 + b"\n")   # the digest's place, filled in last

        def put(text):
            raw = text.encode("utf-8")
            digest.update(raw)
            f.write(raw)
        put(head[:-1])
        for name, values in zip(LISTS, (params, adam_m, adam_v)):
            put(f', "{name}": [')
            for k in range(0, len(values), SAVE_CHUNK):
                put((", " if k else "") + ", ".join(map(_json_float, values[k:k + SAVE_CHUNK])))
            put("]")
        put(", " + tail[1:])
        f.file.seek(len(prefix))
        f.write(digest.hexdigest().encode("ascii"))


def _json_float(x):
    """x as json.dumps writes a float (its repr), refusing what JSON cannot hold as it does."""
    if not math.isfinite(x):
        raise ValueError(f"Out of range float values are not JSON compliant: {x!r}")
    return float.__repr__(x)


def _finite_float(text):
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {text} is out of a double's range")
    return x


def _no_constant(name):
    raise ValueError(f"{name} is not a number a checkpoint may hold")


JSON_HOOKS = dict(parse_float=_finite_float, parse_constant=_no_constant)   # every json.loads of a checkpoint


@contextmanager
def _reading(path):
    """Errors reading the checkpoint at path as one-line CheckpointErrors."""
    try:
        yield
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    except CheckpointError:
        raise
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def _check_size(path):
    """A regular file that a whole read (_read_whole) could hold in the memory available."""
    with _reading(path):
        size = limits.regular_file_size(path, "checkpoint")
        available = limits.available_bytes()
        if available is not None and size * LOAD_BYTES_PER_FILE_BYTE > available:
            raise CheckpointError(f"checkpoint {path} is {limits.format_bytes(size)}: reading it needs more than "
                                  f"the {limits.format_bytes(available)} of memory available")


def load(path):
    """The checkpoint's fields as a dict, with 'config' a Config and 'random_state' a tuple for
    random.setstate; CheckpointError (one line) if the file is unusable in any way."""
    _check_size(path)
    ck = _read_as_saved(path)
    if ck is None:
        ck = _read_whole(path)
    try:
        return _validate(ck)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} is malformed: {e}") from None


def _read_whole(path):
    """The body's JSON read at once, after its header and checksum are checked."""
    with _reading(path), open(path, "rb") as f:
        raw = f.read()
    header, _, body = raw.partition(b"\n")
    del raw
    parts = header.decode("ascii", "replace").split(" ")
    if len(parts) != 3 or parts[0] != MAGIC or not parts[2].startswith("sha256="):
        raise CheckpointError(f"{path} is not a microgpt checkpoint")
    if parts[1] != str(VERSION):
        raise CheckpointError(f"{path} is checkpoint format {parts[1]}; this microgpt reads {VERSION}")
    if sha256(body).hexdigest() != parts[2][len("sha256="):]:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (checksum mismatch)")
    try:
        return json.loads(body, **JSON_HOOKS)
    except RecursionError:
        raise CheckpointError(f"checkpoint {path} is malformed: its JSON is nested too deeply") from None
    except ValueError as e:  # also UnicodeDecodeError and the parse hooks' errors
        raise CheckpointError(f"checkpoint {path} is malformed: {e}") from None


# a streamed load's reads
READ_BYTES = 1 << 20


def _read_as_saved(path):
    """The fields of a checkpoint laid out as save() writes it, read as a stream: its three long
    lists a slice at a time into arrays of doubles, never the whole file in memory (at d128 it is
    55 MB, and its lists as float objects 80 MB more). None where anything differs (the header,
    the layout, a value that is not a float, the checksum), for load() to read the whole file and
    refuse it, or read it, as before."""
    try:
        with open(path, "rb") as f:
            parts = f.readline(200).decode("ascii", "replace").rstrip("\n").split(" ")
            if len(parts) != 3 or parts[0] != MAGIC or parts[1] != str(VERSION) or not parts[2].startswith("sha256="):
                return None
            body = _Body(f)
            ck = json.loads(body.until(b', "params": [') + b"}", **JSON_HOOKS)
            config = Config(**{k: ck["config"][k] for k in CONFIG_KEYS})
            n = limits.num_params(config)
            for k, name in enumerate(LISTS):
                if k and body.until(f', "{name}": ['.encode()) != b"":
                    return None
                ck[name] = body.floats(n)
            if body.until(b', "random_state": ') != b"" or "random_state" in ck:
                return None
            tail = json.loads(b'{"random_state": ' + body.rest(), **JSON_HOOKS)
            if body.sha.hexdigest() != parts[2][len("sha256="):]:
                return None
    except (OSError, ValueError, TypeError, KeyError, RecursionError, ConfigError):
        return None
    ck.update(tail)
    return ck


class _Body:
    """A checkpoint's body read from f a READ_BYTES chunk at a time, each hashed as it comes."""

    def __init__(self, f):
        self.f, self.buf, self.sha = f, b"", sha256()

    def more(self):
        chunk = self.f.read(READ_BYTES)
        self.sha.update(chunk)
        self.buf += chunk
        return bool(chunk)

    def until(self, mark):
        """The bytes before the next mark, both consumed; ValueError at the end of the file."""
        while (i := self.buf.find(mark)) < 0:
            if not self.more():
                raise ValueError("no mark")
        out, self.buf = self.buf[:i], self.buf[i + len(mark):]
        return out

    def floats(self, limit):
        """JSON numbers separated by ", " up to a "]" (consumed) as an array of doubles, read a
        chunk at a time by json.loads; ValueError unless every one is a float (json's grammar,
        _finite_float) and there are at most limit."""
        out, after_comma = array("d"), False
        while True:
            end = self.buf.find(b"]")
            cut = end if end >= 0 else self.buf.rfind(b", ")
            if cut > 0 or end == 0:
                if end == 0 and after_comma:     # "1.0, ]": json.loads refuses it, and so does this
                    raise ValueError("a comma before the end")
                xs = json.loads(b"[" + self.buf[:cut] + b"]", **JSON_HOOKS)
                if any(type(x) is not float for x in xs) or len(out) + len(xs) > limit:
                    raise ValueError("not a checkpoint's list")
                out.extend(xs)
                self.buf, after_comma = self.buf[cut + (1 if end >= 0 else 2):], end < 0
            if end >= 0:
                return out
            if not self.more():
                raise ValueError("no end")

    def rest(self):
        while self.more():
            pass
        return self.buf


def _is_int(x):
    return type(x) is int


def _field(ck, name, kind, test=None, what=""):
    x = ck[name]
    if not isinstance(x, kind) or isinstance(x, bool):
        raise ValueError(f"field {name!r} must be {what or kind.__name__}, got {type(x).__name__}")
    if test is not None and not test(x):
        raise ValueError(f"field {name!r} must be {what}, got {_short(x)}")
    return x


def _encodable(text):
    """Whether text is UTF-8 text (JSON can carry a lone surrogate, which no file or terminal
    takes: sampling would fail on printing it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(x):
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def _floats(ck, name, n, minimum=None):
    xs = ck[name]
    if type(xs) is array:                         # _Body.floats's: floats, each checked as read
        if len(xs) != n:
            raise ValueError(f"field {name!r} has {len(xs)} numbers; its config needs {n}")
        if minimum is not None and xs and min(xs) < minimum:
            i = next(i for i, x in enumerate(xs) if x < minimum)
            raise ValueError(f"{name}[{i}] must be >= {minimum}, got {xs[i]!r}")
        return xs
    if type(xs) is not list:
        raise ValueError(f"field {name!r} must be a list of numbers, got {type(xs).__name__}")
    if len(xs) != n:
        raise ValueError(f"field {name!r} has {len(xs)} numbers; its config needs {n}")
    for i, x in enumerate(xs):
        if type(x) is not float:  # checkpoints are written with floats only; ints could be 10**400
            raise ValueError(f"{name}[{i}] must be a float, got {_short(x)}")
        if minimum is not None and x < minimum:
            raise ValueError(f"{name}[{i}] must be >= {minimum}, got {x!r}")
    return xs


def _validate(ck):
    if type(ck) is not dict:
        raise ValueError("the body is not a JSON object")
    missing = [f for f in FIELDS if f not in ck]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    extra = sorted(set(ck) - set(FIELDS))
    if extra:
        raise ValueError(f"unknown field(s) {', '.join(map(str, extra))}")

    config = ck["config"]
    if type(config) is not dict or sorted(config) != sorted(CONFIG_KEYS):
        raise ValueError(f"field 'config' must be an object with exactly {', '.join(CONFIG_KEYS)}")
    for key in CONFIG_KEYS:
        if not _is_int(config[key]) or config[key] > limits.MAX_DIMENSION:
            raise ValueError(f"config.{key} must be an integer up to {limits.MAX_DIMENSION}, got {_short(config[key])}")
    try:
        config = Config(**config)
    except ConfigError as e:
        raise ValueError(str(e)) from None

    _field(ck, "chars", str, lambda s: len(s) + 1 == config.vocab_size and list(s) == sorted(set(s))
           and _encodable(s), "a string of vocab_size - 1 sorted distinct characters (no lone surrogate)")
    num_steps = _field(ck, "num_steps", int, lambda n: 0 <= n <= limits.MAX_STEPS,
                       f"an integer in 0..{limits.MAX_STEPS}")
    _field(ck, "step", int, lambda s: 0 <= s <= num_steps, f"an integer in 0..num_steps ({num_steps})")
    _field(ck, "seed", int, None, "an integer")
    lr = _field(ck, "lr", float, lambda x: math.isfinite(x) and x > 0, "a finite float > 0")

    data = ck["data"]
    if (type(data) is not dict or sorted(data) != ["sha256", "source"]
            or not (data["source"] is None or type(data["source"]) is str)
            or type(data["sha256"]) is not str or not re.fullmatch(r"[0-9a-f]{64}", data["sha256"])):
        raise ValueError("field 'data' must be {\"source\": a path or null, \"sha256\": 64 hex digits}")
    # (a source may hold lone surrogates: Python's names for the bytes of a file name that is not UTF-8)
    if data["source"] is not None and ("\0" in data["source"] or not data["source"]):
        raise ValueError("data.source must be a non-empty path without NUL characters")

    n = limits.num_params(config)
    _floats(ck, "params", n)
    _floats(ck, "adam_m", n)
    _floats(ck, "adam_v", n, minimum=0.0)

    state = ck["random_state"]
    if (type(state) is not list or len(state) != 3 or state[0] != 3 or type(state[1]) is not list
            or len(state[1]) != 625 or not all(_is_int(w) and 0 <= w < 2 ** 32 for w in state[1])
            or state[1][624] > 624 or not (state[2] is None or type(state[2]) is float)):
        raise ValueError("field 'random_state' is not a state of Python's random module (version 3)")

    ck["config"], ck["lr"] = config, lr
    ck["random_state"] = (state[0], tuple(state[1]), state[2])
    return ck
