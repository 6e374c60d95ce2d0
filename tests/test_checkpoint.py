"""Checkpoints: round trip, resume bit-identical to an uninterrupted run, corrupt files refused."""
import hashlib
import json
import random

import pytest

from conftest import run_microgpt

from microgpt import checkpoint
from microgpt.checkpoint import CheckpointError
from microgpt.model import parameter_shapes


def run(*args):
    result = run_microgpt(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_is_bit_identical_to_uninterrupted(tmp_path, small_data, backend):
    common = ["--data", small_data, "--steps", 12, "--samples", 4, "--backend", backend]
    whole = run("train", *common, "--metrics", tmp_path / "whole.jsonl")
    run("train", *common, "--stop-after", 5, "--save", tmp_path / "ck", "--metrics", tmp_path / "a.jsonl")
    resumed = run("train", "--resume", tmp_path / "ck", "--backend", backend, "--samples", 4,
                  "--metrics", tmp_path / "b.jsonl")
    w, a, b = records(tmp_path / "whole.jsonl"), records(tmp_path / "a.jsonl"), records(tmp_path / "b.jsonl")
    assert [r["loss"] for r in a[:5] + b[:7]] == [r["loss"] for r in w[:12]]
    assert b[7]["params_sha256"] == w[12]["params_sha256"]
    assert b[7]["samples"] == w[12]["samples"]
    assert resumed.splitlines()[-4:] == whole.splitlines()[-4:]


def test_sample_command_continues_the_training_run(tmp_path, small_data, backend):
    out = run("train", "--data", small_data, "--steps", 3, "--samples", 3, "--save", tmp_path / "ck",
              "--backend", backend)
    sampled = run("sample", tmp_path / "ck", "--samples", 3, "--backend", backend)
    assert sampled.splitlines() == out.splitlines()[-4:]
    prefixed = run("sample", tmp_path / "ck", "--samples", 3, "--prefix", "el", "--seed", 1)
    assert all(line.split(": ", 1)[1].startswith("el") for line in prefixed.splitlines()[1:])


def test_round_trip_keeps_every_bit(tmp_path, small_data):
    run("train", "--data", small_data, "--steps", 2, "--samples", 0, "--save", tmp_path / "ck")
    ck = checkpoint.load(tmp_path / "ck")
    path2 = tmp_path / "ck2"
    checkpoint.save(path2, config=ck["config"], chars=ck["chars"], step=ck["step"], num_steps=ck["num_steps"],
                    seed=ck["seed"], lr=ck["lr"], data=ck["data"], params=ck["params"], adam_m=ck["adam_m"],
                    adam_v=ck["adam_v"], random_state=ck["random_state"])
    assert (tmp_path / "ck").read_bytes() == path2.read_bytes()
    assert ck["step"] == 2
    assert len(ck["params"]) == sum(r * c for r, c in parameter_shapes(ck["config"]).values())


SAVED = dict(chars="abc", step=3, num_steps=10, seed=42, lr=0.01, data={"source": "x", "sha256": "ab"})


def saved_whole(config, params, adam_m, adam_v, random_state):
    """The file as json.dumps made it whole, before saving was streamed."""
    body = json.dumps({"config": {k: getattr(config, k) for k in checkpoint.CONFIG_KEYS}, **SAVED,
                       "params": params, "adam_m": adam_m, "adam_v": adam_v,
                       "random_state": [random_state[0], list(random_state[1]), random_state[2]]}, allow_nan=False)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return f"{checkpoint.MAGIC} {checkpoint.VERSION} sha256={digest}\n{body}".encode("utf-8")


def test_a_streamed_save_is_the_whole_json_byte_for_byte(tmp_path, monkeypatch):
    from array import array
    from microgpt.model import Config
    monkeypatch.setattr(checkpoint, "SAVE_CHUNK", 3)  # chunk edges inside every list
    rng = random.Random(5)
    config = Config(vocab_size=4, n_embd=2, n_head=1, block_size=2)
    params = [rng.gauss(0, 1) for _ in range(7)] + [-0.0, 1.0, 1e300, 5e-324]
    m, v, state = [rng.random() * 1e-300 for _ in range(11)], [0.0] * 10 + [2.0 ** -1074], rng.getstate()
    for kinds in (list, lambda xs: array("d", xs)):
        checkpoint.save(tmp_path / "ck", config=config, **SAVED, params=kinds(params), adam_m=kinds(m),
                        adam_v=kinds(v), random_state=state)
        assert (tmp_path / "ck").read_bytes() == saved_whole(config, params, m, v, state)
    checkpoint.save(tmp_path / "empty", config=config, **SAVED, params=[], adam_m=[], adam_v=[], random_state=state)
    assert (tmp_path / "empty").read_bytes() == saved_whole(config, [], [], [], state)
    with pytest.raises(ValueError, match="not JSON compliant"):  # as json.dumps refuses it, and no file
        checkpoint.save(tmp_path / "nan", config=config, **SAVED, params=params[:5] + [float("nan")], adam_m=m,
                        adam_v=v, random_state=state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "empty"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty"])
def test_corrupt_checkpoint_is_refused(tmp_path, small_data, damage):
    path = tmp_path / "ck"
    run("train", "--data", small_data, "--steps", 1, "--samples", 0, "--save", path)
    raw = path.read_bytes()
    i = raw.index(b'"params": [') + 14  # inside the first parameter's digits
    flipped = raw[:i] + (b"1" if raw[i:i + 1] != b"1" else b"2") + raw[i + 1:]
    path.write_bytes({"truncate": raw[: len(raw) // 2], "flip": flipped,
                      "header": b"PK\x03\x04" + raw, "empty": b""}[damage])
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
    result = run_microgpt("sample", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "checkpoint" in result.stderr


def test_resume_with_other_data_is_refused(tmp_path, small_data):
    run("train", "--data", small_data, "--steps", 2, "--stop-after", 1, "--samples", 0, "--save", tmp_path / "ck")
    other = tmp_path / "other.txt"
    other.write_text("anna\nbob\n")
    result = run_microgpt("train", "--resume", tmp_path / "ck", "--data", other)
    assert result.returncode == 2 and "other data" in result.stderr


# --- every field checked before use: each bad checkpoint is one line and exit code 2

from test_cli import assert_clean_error, in_process  # noqa: E402


def rewrite(path, body):
    """A checkpoint with this body and a valid checksum: only the field checks can refuse it."""
    import hashlib
    raw = body.encode("utf-8") if isinstance(body, str) else body
    path.write_bytes(f"microgpt-checkpoint 1 sha256={hashlib.sha256(raw).hexdigest()}\n".encode() + raw)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    from small_data import write_small_data
    folder = tmp_path_factory.mktemp("ck")
    data = write_small_data(folder / "small.txt")
    run("train", "--data", data, "--steps", 3, "--stop-after", 2, "--samples", 0, "--save", folder / "ck")
    return json.loads((folder / "ck").read_bytes().partition(b"\n")[2])


def edit(body, field, value):
    body = json.loads(json.dumps(body))
    target, _, key = field.rpartition(".")
    holder = body
    for part in filter(None, target.split(".")):
        holder = holder[int(part)] if isinstance(holder, list) else holder[part]
    if isinstance(holder, list):
        key = int(key)
    if value is DELETE:
        del holder[key]
    else:
        holder[key] = value
    return json.dumps(body)


DELETE = object()

BAD_FIELDS = [
    ("step", 1.5, "step"), ("step", "1", "step"), ("step", -1, "step"), ("step", 99, "step"),
    ("step", True, "step"), ("num_steps", 2 ** 60, "num_steps"), ("lr", "0.01", "lr"), ("lr", 0.0, "lr"),
    ("lr", -1.0, "lr"), ("lr", 10 ** 400, "lr"), ("lr", 1, "lr"), ("config.n_embd", 10 ** 400, "n_embd"),
    ("num_steps", 10 ** 400, "num_steps"), ("seed", 4.2, "seed"), ("seed", None, "seed"),
    ("config.n_embd", 16.0, "n_embd"), ("config.n_layer", 0, "n_layer"), ("config.n_head", 5, "divisible"),
    ("config.n_layer", 10 ** 9, "params"), ("config.vocab_size", 99, "chars"), ("config", [1, 2], "config"),
    ("config.extra", 1, "config"), ("chars", 7, "chars"), ("chars", "ba", "chars"),
    ("params", "x", "params"), ("params", [], "params"), ("params.0", 10 ** 400, "params[0]"),
    ("params.0", "0.1", "params[0]"), ("params.0", None, "params[0]"), ("adam_v.3", -1.0, "adam_v[3]"),
    ("adam_m", {"a": 1}, "adam_m"), ("data", "names.txt", "data"), ("data.sha256", "xyz", "data"),
    ("data.source", 3, "data"), ("random_state", [3, [1, 2], None], "random_state"),
    ("random_state.1.0", 2 ** 40, "random_state"), ("random_state.0", 2, "random_state"),
    ("random_state.2", "x", "random_state"), ("lr", DELETE, "missing"), ("surprise", 1, "unknown"),
]


@pytest.mark.parametrize("read_bytes", [7, 1 << 20], ids=["numbers-and-marks-cut-by-reads", "one-read"])
def test_a_body_laid_out_as_saved_and_otherwise_load_alike(tmp_path, good_checkpoint, monkeypatch, read_bytes):
    # save()'s layout: read as a stream (here in reads of 7 bytes, which cut numbers and marks),
    # the long lists into arrays; any other layout: json.loads of the whole, into lists
    monkeypatch.setattr(checkpoint, "READ_BYTES", read_bytes)
    rewrite(tmp_path / "saved", json.dumps(good_checkpoint))
    rewrite(tmp_path / "other", json.dumps(good_checkpoint, indent=1))
    saved, other = checkpoint.load(tmp_path / "saved"), checkpoint.load(tmp_path / "other")
    assert type(saved["params"]).__name__ == "array" and type(other["params"]) is list
    for name in checkpoint.LISTS:
        assert list(saved[name]) == other[name] == good_checkpoint[name]
    assert {k: v for k, v in saved.items() if k not in checkpoint.LISTS} == \
        {k: v for k, v in other.items() if k not in checkpoint.LISTS}


DAMAGED_LISTS = {  # adam_m's numbers as saved, then damaged so that json.loads refuses them
    "trailing-comma": lambda xs: xs + b", ", "double-comma": lambda xs: xs.replace(b", ", b",, ", 1),
    "nested": lambda xs: b"[" + xs.replace(b", ", b"], ", 1), "no-comma": lambda xs: xs.replace(b", ", b" ", 1),
    "string": lambda xs: b'"' + xs.replace(b", ", b'", ', 1),
}


@pytest.mark.parametrize("damage", list(DAMAGED_LISTS))
def test_a_list_json_refuses_is_refused_in_saved_layout_too(tmp_path, good_checkpoint, monkeypatch, damage):
    # the streamed reader must refuse what json.loads refuses, the same way, wherever its reads
    # cut the damage (reads of 1 to 8 bytes); every number is still there
    body = json.dumps(good_checkpoint).encode()
    start = body.index(b'"adam_m": [') + len(b'"adam_m": [')
    end = body.index(b"]", start)
    rewrite(tmp_path / "bad", body[:start] + DAMAGED_LISTS[damage](body[start:end]) + body[end:])
    for read_bytes in range(1, 9):
        monkeypatch.setattr(checkpoint, "READ_BYTES", read_bytes)
        with pytest.raises(CheckpointError, match="malformed"):
            checkpoint.load(tmp_path / "bad")


@pytest.mark.parametrize("field,value,fragment", BAD_FIELDS,
                         ids=[f"{f}={'deleted' if v is DELETE else str(v)[:12]}" for f, v, _ in BAD_FIELDS])
def test_bad_field_is_one_line(tmp_path, good_checkpoint, field, value, fragment):
    path = tmp_path / "bad.ckpt"
    rewrite(path, edit(good_checkpoint, field, value))
    with pytest.raises(CheckpointError, match="malformed"):
        checkpoint.load(path)
    assert_clean_error(in_process("sample", path, "--samples", 1), "malformed", fragment)


@pytest.mark.parametrize("name,body", [
    ("deep", "[" * 100_000 + "]" * 100_000),
    ("deep-object", '{"a":' * 100_000 + "1" + "}" * 100_000),
    ("nan", None), ("infinity", None), ("1e400", None),
    ("not-an-object", "[1, 2, 3]"), ("not-json", "{params: 1}"), ("not-utf8", b"{\"a\": \"\xff\"}"),
])
def test_bad_json_is_one_line(tmp_path, good_checkpoint, name, body):
    if body is None:  # a parameter that is no finite double: NaN, Infinity, 1e400 (parses as inf)
        token = {"nan": "NaN", "infinity": "Infinity", "1e400": "1e400"}[name]
        text = json.dumps(good_checkpoint)
        i = text.index('"params": [') + len('"params": [')
        body = text[:i] + token + text[text.index(",", i):]
    path = tmp_path / "bad.ckpt"
    rewrite(path, body)
    assert_clean_error(in_process("sample", path), "malformed")
    assert_clean_error(in_process("train", "--resume", path), "malformed")


def test_checkpoint_that_is_a_device_or_folder(tmp_path):
    assert_clean_error(in_process("sample", "/dev/zero"), "not a regular file")
    assert_clean_error(in_process("sample", tmp_path), "directory")


def test_checkpoint_whose_data_source_is_a_device_exits_at_once(tmp_path, good_checkpoint):
    import time
    path = tmp_path / "ck"
    rewrite(path, edit(good_checkpoint, "data.source", "/dev/zero"))
    t0 = time.monotonic()
    result = run_microgpt("train", "--resume", path, timeout=30)
    assert_clean_error(result, "/dev/zero", "not a regular file")
    assert time.monotonic() - t0 < 10


# --- resuming honestly

@pytest.mark.parametrize("flag,value", [("--lr", "0.5"), ("--n-embd", "32"), ("--n-layer", "2"),
                                        ("--n-head", "2"), ("--block-size", "8"), ("--seed", "7"),
                                        ("--steps", "10"), ("--steps", "2")])
def test_resume_refuses_a_conflicting_flag(tmp_path, small_data, flag, value):
    run("train", "--data", small_data, "--steps", 3, "--stop-after", 1, "--samples", 0, "--save", tmp_path / "ck")
    assert_clean_error(in_process("train", "--resume", tmp_path / "ck", flag, value), flag, "conflicts")


def test_resume_accepts_flags_that_agree_or_apply(tmp_path, small_data):
    """Flags equal to the checkpoint's are fine; sampling flags, --stop-after and --graph apply."""
    run("train", "--data", small_data, "--steps", 4, "--stop-after", 1, "--samples", 0, "--save", tmp_path / "ck")
    out = run("train", "--resume", tmp_path / "ck", "--lr", "0.01", "--steps", 4, "--seed", 42, "--n-embd", 16,
              "--stop-after", 2, "--samples", 2, "--temperature", 0.7, "--graph", "seed", "--save", tmp_path / "ck")
    assert "step    3 /    4" in out and "step    4" not in out and "sample  2:" in out
    assert checkpoint.load(tmp_path / "ck")["step"] == 3


# --- written whole or not at all

def test_save_leaves_no_temporary_files_and_keeps_permissions(tmp_path, small_data):
    import os
    import stat
    run("train", "--data", small_data, "--steps", 2, "--samples", 0, "--save", tmp_path / "ck",
        "--metrics", tmp_path / "m.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "m.jsonl", "small.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "ck").stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    from microgpt import atomic
    path = tmp_path / "ck"
    path.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic.write_bytes(path, b"new" * 1000)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_the_package_digest_is_sha256():
    """microgpt.digest (CPython's own SHA-256 where it has one) gives hashlib's digests, whole and
    fed in pieces, for empty, short and multi-block inputs."""
    from microgpt.digest import sha256
    rng = random.Random(17)
    for n in (0, 1, 55, 56, 64, 1000, 300_000):
        data = rng.randbytes(n)
        assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
        pieces = sha256()
        for k in range(0, n, 777):
            pieces.update(data[k:k + 777])
        assert pieces.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("backend", ["python", "c"])
def test_the_parameters_digest_is_the_same_in_pieces(backend):
    """params_sha256 over a graph's parameter chunks (the c graph's refill one array) is sha256 of
    all the parameters as little-endian doubles, whatever the chunks' size."""
    from array import array
    from conftest import require
    from microgpt.model import GPT, Config
    from microgpt.modes import new_graph
    from microgpt.training import params_sha256
    require(backend)
    random.seed(5)
    graph = GPT(Config(vocab_size=7, n_embd=8, block_size=4), new_graph(backend, "fused")).graph
    whole = hashlib.sha256(array('d', graph.param_data()).tobytes()).hexdigest()
    assert params_sha256(graph.param_chunks()) == params_sha256([graph.param_data()]) == whole
    if backend == "c":
        for size in (1, 100, 1000):  # 912 parameters: pieces, a last piece shorter than the rest, one piece
            assert params_sha256(graph.param_chunks(size)) == whole


def test_training_does_not_load_openssl(tmp_path):
    """hashlib's OpenSSL costs a process 3.7 MB of resident memory; where CPython has its own
    SHA-256, a training run with a checkpoint and metrics does without it."""
    import importlib.util
    import subprocess
    import sys
    if not (importlib.util.find_spec("_sha256") or importlib.util.find_spec("_sha2")):
        pytest.skip("this Python has no SHA-256 of its own")
    code = ("import sys, runpy; sys.argv = ['microgpt', 'train', '--steps', '3', '--samples', '1', "
            "'--save', sys.argv[1], '--metrics', sys.argv[2]]\n"
            "try:\n    runpy.run_module('microgpt', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert '_hashlib' not in sys.modules and 'hashlib' not in sys.modules, 'OpenSSL loaded'\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ck"), str(tmp_path / "m.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "ck").exists() and len((tmp_path / "m.jsonl").read_text().splitlines()) == 4
