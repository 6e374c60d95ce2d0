"""The command line: its errors are one line on stderr with exit code 2, never a traceback."""
import json
import os

import pytest

from conftest import run_microgpt

from microgpt.model import Config, ConfigError


def microgpt(*args):
    return run_microgpt(*args)


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("microgpt: note:")]
    assert len(lines) == 1 and lines[0].startswith("microgpt: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("kwargs,message", [
    (dict(vocab_size=27, n_embd=16, n_head=3), "divisible"),
    (dict(vocab_size=27, n_layer=0), "n_layer"),
    (dict(vocab_size=27, block_size=-4), "block_size"),
    (dict(vocab_size=27, n_embd=2.5), "n_embd"),
    (dict(vocab_size=1), "vocab_size"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Config(**kwargs)


def test_empty_data_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n")
    assert_clean_error(microgpt("train", "--data", path, "--steps", "1"), "no documents")


def test_non_utf8_data_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("zoë\nanna\n".encode("latin-1"))
    assert_clean_error(microgpt("train", "--data", path, "--steps", "1"), "not UTF-8")


def test_missing_data_file(tmp_path):
    assert_clean_error(microgpt("train", "--data", tmp_path / "nope.txt"), "not found")


def test_config_that_does_not_divide(small_data):
    assert_clean_error(microgpt("train", "--data", small_data, "--n-head", "5", "--steps", "1"), "divisible")


def test_unknown_prefix_character(small_data):
    assert_clean_error(microgpt("train", "--data", small_data, "--steps", "0", "--prefix", "Q"), "'Q'")


def test_bad_temperature(small_data):
    assert_clean_error(microgpt("train", "--data", small_data, "--steps", "0", "--temperature", "0"), "temperature")


def test_negative_steps(small_data):
    assert_clean_error(microgpt("train", "--data", small_data, "--steps", "-3"), "--steps")


def test_no_flags_trains_on_embedded_data_offline():
    # the embedded data comes from an installed package: no network, no file argument
    result = microgpt("train", "--steps", "2", "--samples", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("num docs: ") and int(out[0].split()[-1]) > 1000
    assert out[2] == "num params: 4192"
    assert out[3].startswith("step    1 /    2 | loss ")
    assert out[-3] == "--- inference (new, hallucinated names) ---"
    assert out[-1].startswith("sample  2: ")


def test_steps_zero_samples_only_and_prefix(small_data, backend):
    result = microgpt("train", "--data", small_data, "--steps", "0", "--prefix", "ma", "--samples", "5",
                      "--backend", backend)
    assert result.returncode == 0, result.stderr
    samples = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("sample")]
    assert len(samples) == 5 and all(s.startswith("ma") for s in samples)


def test_metrics_file(tmp_path, small_data):
    metrics = tmp_path / "m.jsonl"
    result = microgpt("train", "--data", small_data, "--steps", "3", "--samples", "2", "--metrics", metrics)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records[:3]] == [1, 2, 3]
    assert records[0]["lr"] == 0.01 and records[2]["lr"] == 0.01 * (1 - 2 / 3)
    assert len(records[3]["params_sha256"]) == 64 and len(records[3]["samples"]) == 2


def test_backend_env_var_and_get_backend(backend):
    env = dict(os.environ, MICROGPT_BACKEND=backend)
    result = run_microgpt(code="import microgpt; print(microgpt.get_backend())", env=env)
    assert result.stdout.strip() == backend, result.stderr


def test_unknown_backend_env_var_is_an_error():
    env = dict(os.environ, MICROGPT_BACKEND="cuda")
    result = run_microgpt(code="import microgpt; microgpt.get_backend()", env=env)
    assert result.returncode != 0 and "unknown backend 'cuda'" in result.stderr


def test_programmatic_switch(backend):
    import microgpt
    try:
        microgpt.set_backend(backend)
        assert microgpt.get_backend() == backend
        assert microgpt.Value(2.0).data == 2.0
    finally:
        microgpt.set_backend(None)


def test_bad_sampling_flags_fail_before_training(small_data, tmp_path):
    # 10,000 steps would take minutes: the error must come first
    assert_clean_error(microgpt("train", "--data", small_data, "--steps", "10000", "--prefix", "abcdefghijklmnop"),
                       "no room")
    assert_clean_error(microgpt("train", "--data", small_data, "--steps", "10000", "--save",
                                tmp_path / "missing-dir" / "ck"), "--save")


def test_terminal_gets_one_progress_line_ending_at_the_last_step(small_data):
    """On a terminal the step lines become one line redrawn in place (at most ten times a
    second), ending on the last step; the samples follow on lines of their own."""
    import pathlib
    import pty
    import subprocess
    import sys

    import microgpt
    primary, secondary = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(microgpt.__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "train", "--data", str(small_data), "--steps", "40",
                             "--samples", "2"], stdout=secondary, stderr=subprocess.PIPE, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    os.close(primary)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    progress, _, rest = text.partition("--- inference")
    redraws = progress.split("\r")[1:]
    assert 1 <= len(redraws) <= 40
    assert redraws[-1].strip().startswith("step   40 /   40 | loss ")
    assert all(r.startswith("step ") for r in redraws)
    assert rest.splitlines()[1].startswith("sample  1: ")
