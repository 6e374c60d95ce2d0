"""Checkpoints: config, vocabulary, parameters, Adam moments, step and random state in one file.

Format: a header line `microgpt-checkpoint 1 sha256=<hex>` and a JSON body whose sha256 the
header records, so a truncated or altered file is refused rather than half-loaded. Floats are
written by repr and read back by float(), which round-trips every double exactly.
"""
import hashlib
import json
import os

from .model import Config, ConfigError

MAGIC = "microgpt-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit, with a message fit for one line."""


def save(path, *, config, chars, step, num_steps, seed, lr, data, params, adam_m, adam_v, random_state):
    body = json.dumps({
        "config": {k: getattr(config, k) for k in ("vocab_size", "n_layer", "n_embd", "n_head", "block_size")},
        "chars": chars, "step": step, "num_steps": num_steps, "seed": seed, "lr": lr, "data": data,
        "params": params, "adam_m": adam_m, "adam_v": adam_v,
        "random_state": [random_state[0], list(random_state[1]), random_state[2]],
    })
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{MAGIC} {VERSION} sha256={digest}\n{body}")
    os.replace(tmp, path)  # a crash mid-write never leaves a half checkpoint under the real name


def load(path):
    """The checkpoint's fields as a dict, with 'config' a Config; CheckpointError if unusable."""
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    header, _, body = raw.partition(b"\n")
    parts = header.decode("ascii", "replace").split(" ")
    if len(parts) != 3 or parts[0] != MAGIC or not parts[2].startswith("sha256="):
        raise CheckpointError(f"{path} is not a microgpt checkpoint")
    if parts[1] != str(VERSION):
        raise CheckpointError(f"{path} is checkpoint format {parts[1]}; this microgpt reads {VERSION}")
    if hashlib.sha256(body).hexdigest() != parts[2][len("sha256="):]:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (checksum mismatch)")
    try:
        ck = json.loads(body)
        ck["config"] = Config(**ck["config"])
        n = ck["config"].num_params
        numbers = (int, float)
        floats_ok = all(type(x) in numbers for key in ("params", "adam_m", "adam_v") for x in ck[key])
        state = ck["random_state"]
        ck["random_state"] = (state[0], tuple(state[1]), state[2])
        ok = (floats_ok and len(ck["params"]) == n and len(ck["chars"]) + 1 == ck["config"].vocab_size and len(ck["adam_m"]) == n == len(ck["adam_v"])
              and 0 <= ck["step"] <= ck["num_steps"])
    except (ValueError, KeyError, TypeError, IndexError, ConfigError) as e:
        raise CheckpointError(f"checkpoint {path} is malformed: {e}") from None
    if not ok:
        raise CheckpointError(f"checkpoint {path} is inconsistent (sizes or step do not fit its config)")
    return ck
