"""Checkpoints: round trip, resume bit-identical to an uninterrupted run, corrupt files refused."""
import json

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
