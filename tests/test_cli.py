"""The command line: its errors are one line on stderr with exit code 2, never a traceback."""
import json
import os
import pathlib

import pytest

from conftest import run_microgpt

from microgpt.model import Config, ConfigError


def microgpt(*args):
    return run_microgpt(*args)


def in_process(*args):
    """main(ARGS) in this process: what a subprocess would report (exit code, stdout, stderr),
    without an interpreter's start-up per case. An unexpected exception fails the test."""
    import contextlib
    import io
    import types

    from microgpt.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


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


def test_data_file_reads_within_a_tight_address_space_limit(tmp_path):
    """A 228 KB-sized data file loads in a process whose address space may grow by only 64 MiB
    more (ulimit -v): the reader asks for the file's size, not for the 256 MiB limit up front."""
    import subprocess
    import sys
    path = tmp_path / "names.txt"
    path.write_text("\n".join(f"name{i}" for i in range(25_000)) + "\n")
    code = ("import resource, sys\n"
            "from microgpt.data import load_docs\n"
            "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
            "resource.setrlimit(resource.RLIMIT_AS, (size + 64 * 2**20, resource.RLIM_INFINITY))\n"
            "print(len(load_docs(sys.argv[1])))\n")
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc to size the address space")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.split() == ["25000"], result.stderr


def test_data_file_that_grows_past_the_limit_while_read(tmp_path, monkeypatch):
    """stat says the file fits; the read finds more than the limit: a clear error, whatever size
    stat gave, and the reader never holds more than the limit and one byte."""
    from microgpt import data, limits
    path = tmp_path / "growing.txt"
    path.write_bytes(b"anna\n" * 1000)                       # 5,000 bytes
    monkeypatch.setattr(limits, "MAX_DATA_BYTES", 3000)
    for stat_size in (10, 2999, 3000):                      # the size it had when stat looked
        monkeypatch.setattr(limits, "regular_file_size", lambda p, what, n=stat_size: n)
        with pytest.raises(data.DataError, match="grew past the limit"):
            data.load_docs(path)
        with open(path, "rb") as f:
            assert len(data._read_whole(f, stat_size, 3000)) == 3001
    monkeypatch.setattr(limits, "MAX_DATA_BYTES", 5000)
    monkeypatch.setattr(limits, "regular_file_size", lambda p, what: 10)   # grew, and fits
    assert data.load_docs(path) == ["anna"] * 1000


def test_missing_data_file(tmp_path):
    assert_clean_error(microgpt("train", "--data", tmp_path / "nope.txt"), "not found")


def test_config_that_does_not_divide(small_data):
    assert_clean_error(microgpt("train", "--data", small_data, "--n-head", "5", "--steps", "1"), "divisible")


def test_unknown_prefix_character(small_data):
    assert_clean_error(microgpt("train", "--data", small_data, "--steps", "0", "--prefix", "Q"), "'Q'")


def test_bad_temperature(small_data):
    assert_clean_error(microgpt("train", "--data", small_data, "--steps", "0", "--temperature", "0"), "temperature")


def test_bad_thread_count(small_data):
    assert_clean_error(microgpt("train", "--data", small_data, "--steps", "1", "--threads", "0"), "--threads")


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
    assert all(f in redraws[-1] for f in ("steps/s", "elapsed ", "ETA "))
    assert all(r.startswith("step ") for r in redraws)
    assert rest.splitlines()[1].startswith("sample  1: ")


# --- bad input: one line on stderr, exit code 2, before any training

STEP_LINE = r"^step +\d+ / +\d+ \| loss \d+\.\d{4}$"


@pytest.mark.parametrize("flags,fragment", [
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "0"], "--lr"), (["--lr", "-0.1"], "--lr"),
    (["--temperature", "1e-320"], "overflows"), (["--temperature", "nan"], "--temperature"),
    (["--temperature", "inf"], "--temperature"), (["--temperature", "-1"], "--temperature"),
    (["--steps", str(2 ** 60)], "too large"), (["--stop-after", "-1"], "--stop-after"),
    (["--stop-after", str(10 ** 30)], "too large"), (["--samples", "-2"], "--samples"),
    (["--steps", "ten"], "invalid int"), (["--n-embd", "0"], "n_embd"), (["--n-layer", "1" + "0" * 400], "too large"), (["--block-size", "-1"], "block_size"),
    (["--backend", "gpu"], "invalid choice"), (["--bogus"], "unrecognized"),
])
def test_bad_flags_are_one_line(small_data, flags, fragment):
    assert_clean_error(in_process("train", "--data", small_data, "--steps", "100000", *flags), fragment)


@pytest.mark.parametrize("flags,fragment", [(["--temperature", "0"], "temperature"), (["--samples", "-1"], "samples"),
                                            (["--temperature", "1e-310"], "overflows")])
def test_bad_sample_flags_are_one_line(tmp_path, small_data, flags, fragment):
    microgpt("train", "--data", small_data, "--steps", "1", "--samples", "0", "--save", tmp_path / "ck")
    assert_clean_error(in_process("sample", tmp_path / "ck", *flags), fragment)


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in (root ignores permission bits: use /proc)."""
    if os.geteuid() == 0:
        return pathlib.Path("/proc")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


@pytest.mark.parametrize("flag", ["--save", "--metrics"])
@pytest.mark.parametrize("where", ["directory", "missing-folder", "unwritable-folder", "device"])
def test_unusable_output_paths_fail_before_training(tmp_path, small_data, flag, where):
    path = {"directory": tmp_path, "missing-folder": tmp_path / "nope" / "out",
            "unwritable-folder": unwritable_folder(tmp_path) / "out", "device": "/dev/null"}[where]
    result = in_process("train", "--data", small_data, "--steps", "100000", flag, path)
    assert_clean_error(result, flag)
    assert "step" not in result.stdout


def test_save_and_metrics_on_the_same_file(tmp_path, small_data):
    assert_clean_error(in_process("train", "--data", small_data, "--save", tmp_path / "x", "--metrics", tmp_path / "x"),
                       "same file")


@pytest.mark.parametrize("what", ["dev-zero", "directory", "fifo", "huge"])
def test_data_that_is_not_a_regular_file_or_too_big(tmp_path, what):
    import time
    if what == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    elif what == "huge":  # sparse: no disk used
        path = tmp_path / "huge.txt"
        with open(path, "wb") as f:
            f.truncate(300 * 2 ** 20)
    else:
        path = {"dev-zero": "/dev/zero", "directory": tmp_path}[what]
    t0 = time.monotonic()
    result = in_process("train", "--data", path, "--steps", "1")
    assert time.monotonic() - t0 < 10
    assert_clean_error(result, {"dev-zero": "not a regular file", "directory": "directory",
                                "fifo": "not a regular file", "huge": "limit"}[what])


def test_byte_order_mark_is_dropped_with_a_note(tmp_path, small_data):
    text = small_data.read_text()
    with_bom = tmp_path / "bom.txt"
    with_bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    plain = microgpt("train", "--data", small_data, "--steps", "2", "--samples", "2")
    bom = microgpt("train", "--data", with_bom, "--steps", "2", "--samples", "2")
    assert bom.returncode == 0, bom.stderr
    assert bom.stdout == plain.stdout  # the same vocabulary, the same run
    assert "byte order mark" in bom.stderr and bom.stderr.startswith("microgpt: note:")


def test_control_characters_get_a_note(tmp_path):
    path = tmp_path / "tabs.txt"
    path.write_text("an\tna\nbob\nal\x07ice\n")
    result = microgpt("train", "--data", path, "--steps", "1", "--samples", "0")
    assert result.returncode == 0, result.stderr
    assert "control characters (U+0007, U+0009)" in result.stderr


# --- conventions

def test_version():
    import microgpt as package
    result = microgpt("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"microgpt {package.__version__}"


def test_help_shows_defaults_and_rungs():
    from microgpt.profile import RUNGS, SEED_SCRIPT_RUNG
    train_help = " ".join(microgpt("train", "--help").stdout.split())
    for fragment in ("(default: 1000)", "(default: 42)", "(default: 0.01)", "(default: 0.5)", "(default: 20)",
                     "(default: 16)", "(default: 4)"):
        assert fragment in train_help
    profile_help = " ".join(microgpt("profile", "--help").stdout.split())
    for name in [SEED_SCRIPT_RUNG] + [r.name for r in RUNGS]:
        assert name in profile_help


def test_pipe_lines_are_the_seeds_and_metrics_have_elapsed(tmp_path, small_data):
    import re
    result = microgpt("train", "--data", small_data, "--steps", "5", "--samples", "1", "--metrics", tmp_path / "m")
    steps = [line for line in result.stdout.splitlines() if line.startswith("step")]
    assert len(steps) == 5 and all(re.match(STEP_LINE, line) for line in steps)
    records = [json.loads(line) for line in (tmp_path / "m").read_text().splitlines()[:5]]
    elapsed = [r["elapsed"] for r in records]
    assert all(isinstance(x, float) and x >= 0 for x in elapsed) and elapsed == sorted(elapsed)


def test_closed_stdout_exits_quietly(small_data):
    """`microgpt train | head -1`: no error message, no traceback."""
    import subprocess
    import sys

    import microgpt as package
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(package.__file__).resolve().parents[1]))
    reader = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "train", "--data", str(small_data), "--steps", "3000"],
                            stdout=reader.stdin, stderr=subprocess.PIPE, env=env)
    reader.stdin.close()  # only head holds the pipe's reading end now
    first = reader.stdout.read()
    reader.wait(timeout=120)
    stderr = proc.communicate(timeout=300)[1]
    assert first.decode().startswith("num docs:")
    assert stderr == b"" and proc.returncode == 141


def test_closed_stdout_still_saves(tmp_path, small_data):
    import subprocess
    import sys

    import microgpt as package
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(package.__file__).resolve().parents[1]), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "train", "--data", str(small_data), "--steps", "100000",
                             "--save", str(tmp_path / "ck")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    while not proc.stdout.readline().startswith(b"step"):  # training has begun
        pass
    proc.stdout.close()
    stderr = proc.communicate(timeout=300)[1].decode()
    assert proc.returncode == 141
    assert "Traceback" not in stderr and "stdout was closed" in stderr
    from microgpt import checkpoint
    assert 0 < checkpoint.load(tmp_path / "ck")["step"] < 100000


def test_plot_command(tmp_path, small_data):
    pytest.importorskip("matplotlib")
    microgpt("train", "--data", small_data, "--steps", "120", "--samples", "0", "--metrics", tmp_path / "m.jsonl")
    result = microgpt("plot", tmp_path / "m.jsonl", tmp_path / "loss.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_errors(tmp_path):
    (tmp_path / "junk.jsonl").write_text("not json\n")
    (tmp_path / "empty.jsonl").write_text('{"params_sha256": "00"}\n')
    no_matplotlib = ("import sys; sys.modules['matplotlib'] = None; from microgpt.cli import main; "
                     f"sys.exit(main(['plot', {str(tmp_path / 'junk.jsonl')!r}, {str(tmp_path / 'o.png')!r}]))")
    assert_clean_error(run_microgpt(code=no_matplotlib), "matplotlib", "pip install")
    pytest.importorskip("matplotlib")
    assert_clean_error(microgpt("plot", tmp_path / "junk.jsonl", tmp_path / "o.png"), "not JSON")
    assert_clean_error(microgpt("plot", tmp_path / "empty.jsonl", tmp_path / "o.png"), "no step records")
    assert_clean_error(microgpt("plot", tmp_path / "missing.jsonl", tmp_path / "o.png"), "missing.jsonl")
    assert_clean_error(microgpt("plot", "/dev/zero", tmp_path / "o.png"), "not a regular file")
    assert_clean_error(microgpt("plot", tmp_path / "junk.jsonl", tmp_path), "directory")
    (tmp_path / "deep.jsonl").write_text("[" * 100000 + "\n")
    assert_clean_error(microgpt("plot", tmp_path / "deep.jsonl", tmp_path / "o.png"), "not JSON")
    (tmp_path / "nan.jsonl").write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": NaN}\n')
    assert_clean_error(microgpt("plot", tmp_path / "nan.jsonl", tmp_path / "o.png"), "line 2", "finite")
    (tmp_path / "huge.jsonl").write_text('{"step": 1, "loss": 1' + "0" * 400 + '}\n')
    assert_clean_error(microgpt("plot", tmp_path / "huge.jsonl", tmp_path / "o.png"), "line 1", "finite")
    assert not (tmp_path / "o.png").exists()


def test_a_run_that_writes_no_file_imports_no_tempfile_nor_package_resources(small_data):
    """tempfile (with shutil, bz2 and lzma) and importlib.resources are 1.2 MB of resident memory:
    only a run that writes a file, or trains on the embedded names, imports them."""
    import subprocess
    import sys
    code = ("import sys, runpy; sys.argv = ['microgpt', 'train', '--data', sys.argv[1], '--steps', '2', "
            "'--samples', '1']\n"
            "try:\n    runpy.run_module('microgpt', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('tempfile', 'importlib.resources') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code, str(small_data)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


@pytest.mark.parametrize("args", [
    ["train", "--data", ""], ["train", "--save", ""], ["train", "--resume", ""], ["train", "--metrics", ""],
    ["sample", ""], ["profile", "--data", ""], ["profile", "--json", ""], ["profile", "--plot", ""],
    ["profile", "--seed-script", ""], ["plot", "", "out.png"], ["plot", "m.jsonl", ""],
], ids=lambda args: " ".join(a or "''" for a in args))
def test_an_empty_path_is_an_error_not_the_default(args):
    """`--resume "$CKPT"` with CKPT unset must not start a new run (which --save would then write
    over the checkpoint); nor may an empty --save or --metrics quietly write nothing."""
    assert_clean_error(in_process(*args), "the path is empty")


def test_an_empty_resume_leaves_the_checkpoint_alone(tmp_path, small_data):
    in_process("train", "--data", small_data, "--steps", 50, "--stop-after", 7, "--samples", 0,
               "--save", tmp_path / "ck")
    before = (tmp_path / "ck").read_bytes()
    assert_clean_error(in_process("train", "--data", small_data, "--resume", "", "--steps", 50, "--stop-after", 1,
                                  "--save", tmp_path / "ck"), "--resume")
    assert (tmp_path / "ck").read_bytes() == before


def test_an_output_may_not_overwrite_an_input(tmp_path, small_data):
    """Each output against the inputs the same command reads (and against the other outputs):
    refused before anything runs, the input untouched. --save onto --resume's file is a run going
    on where it left off, and stays allowed."""
    in_process("train", "--data", small_data, "--steps", 50, "--stop-after", 2, "--samples", 0,
               "--save", tmp_path / "ck")
    data_copy = tmp_path / "data.txt"
    data_copy.write_bytes(pathlib.Path(small_data).read_bytes())
    (tmp_path / "m.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    (tmp_path / "link").symlink_to(data_copy)
    cases = [
        (["train", "--resume", tmp_path / "ck", "--stop-after", 1, "--metrics", tmp_path / "ck"], "ck"),
        (["train", "--data", data_copy, "--save", data_copy], "data.txt"),
        (["train", "--data", data_copy, "--metrics", tmp_path / "link"], "--data"),   # through a link
        (["profile", "--data", data_copy, "--json", data_copy, "--rungs", "python"], "data.txt"),
        (["plot", tmp_path / "m.jsonl", tmp_path / "m.jsonl"], "m.jsonl"),
    ]
    before = {p: p.read_bytes() for p in (tmp_path / "ck", data_copy, tmp_path / "m.jsonl")}
    for args, name in cases:
        result = in_process(*args)
        if args[0] == "plot" and "matplotlib" in result.stderr:
            continue  # plot refuses earlier without matplotlib
        assert_clean_error(result, "name the same file", name)
        assert "step" not in result.stdout
    assert {p: p.read_bytes() for p in before} == before
    result = in_process("train", "--resume", tmp_path / "ck", "--stop-after", 1, "--samples", 0,
                        "--save", tmp_path / "ck")
    assert result.returncode == 0, result.stderr


def test_saving_through_a_symbolic_link_writes_the_file_it_points_to(tmp_path, small_data):
    (tmp_path / "real").mkdir()
    link = tmp_path / "run.ckpt"
    link.symlink_to(tmp_path / "real" / "run.ckpt")
    in_process("train", "--data", small_data, "--steps", 50, "--stop-after", 2, "--samples", 0, "--save", link)
    assert link.is_symlink() and (tmp_path / "real" / "run.ckpt").is_file()
    result = in_process("train", "--resume", link, "--stop-after", 3, "--samples", 0, "--save", link,
                        "--metrics", tmp_path / "m.jsonl")
    assert result.returncode == 0, result.stderr
    from microgpt import checkpoint
    assert link.is_symlink() and checkpoint.load(tmp_path / "real" / "run.ckpt")["step"] == 5
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["run.ckpt"]   # no temporary file left


@pytest.mark.parametrize("flag", ["--save", "--metrics"])
@pytest.mark.parametrize("where", ["new-folder", "a-file"])
def test_an_output_path_ending_with_a_slash_fails_before_training(tmp_path, small_data, flag, where):
    path = {"new-folder": f"{tmp_path}/new/", "a-file": f"{small_data}/"}[where]
    result = in_process("train", "--data", small_data, "--steps", 100000, flag, path)
    assert_clean_error(result, flag, "ends with /")
    assert "step" not in result.stdout


def test_a_path_with_a_line_break_is_still_one_line(tmp_path):
    assert_clean_error(in_process("train", "--data", tmp_path / "no\nsuch.txt"), "no\\nsuch.txt")


def test_a_checkpoint_with_a_lone_surrogate_in_its_vocabulary_is_refused(tmp_path, small_data):
    in_process("train", "--data", small_data, "--steps", 5, "--samples", 0, "--save", tmp_path / "ck")
    import hashlib
    header, body = (tmp_path / "ck").read_bytes().split(b"\n", 1)
    record = json.loads(body)
    record["chars"] = record["chars"][:-1] + "\ud800"   # JSON can carry it: "\ud800"
    body = json.dumps(record).encode("ascii")
    header = header.split(b"sha256=")[0] + b"sha256=" + hashlib.sha256(body).hexdigest().encode()
    (tmp_path / "bad").write_bytes(header + b"\n" + body)
    assert_clean_error(in_process("sample", tmp_path / "bad"), "surrogate")


def test_an_unknown_prefix_character_names_a_large_vocabulary_in_short(tmp_path):
    data = tmp_path / "wide.txt"
    data.write_text("".join(chr(0x4E00 + i) + "\n" for i in range(3000)))
    result = in_process("train", "--data", data, "--steps", 0, "--samples", 1, "--prefix", "z")
    assert_clean_error(result, "'z'", "(3000 characters)")
    assert len(result.stderr) < 600


def test_an_output_may_not_overwrite_the_data_a_resumed_checkpoint_reads(tmp_path, small_data):
    data = tmp_path / "src.txt"
    data.write_bytes(pathlib.Path(small_data).read_bytes())
    in_process("train", "--data", data, "--steps", 20, "--stop-after", 5, "--samples", 0, "--save", tmp_path / "r.ck")
    before = data.read_bytes()
    for flag in ("--metrics", "--save"):
        result = in_process("train", "--resume", tmp_path / "r.ck", "--stop-after", 1, flag, data)
        assert_clean_error(result, flag, "the checkpoint's data file")
    assert data.read_bytes() == before


def test_a_data_file_whose_name_is_not_utf8_gives_a_checkpoint_that_loads(tmp_path, small_data):
    name = os.fsdecode(b"\xff-names.txt")   # a lone surrogate in Python's name for it
    data = tmp_path / name
    data.write_bytes(pathlib.Path(small_data).read_bytes())
    result = in_process("train", "--data", data, "--steps", 6, "--stop-after", 3, "--samples", 0, "--save",
                        tmp_path / "ck")
    assert result.returncode == 0, result.stderr
    assert in_process("train", "--resume", tmp_path / "ck", "--samples", 2).returncode == 0


def test_an_output_that_is_a_loop_of_links_is_refused_and_kept(tmp_path, small_data):
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    assert_clean_error(in_process("train", "--data", small_data, "--steps", 5, "--save", tmp_path / "l1"), "loop")
    assert (tmp_path / "l1").is_symlink() and (tmp_path / "l2").is_symlink()


def test_a_failed_write_leaves_no_temporary_file_and_names_its_file(tmp_path):
    """The flush at commit fails (here at the file size limit; a full disk alike): the error
    names the file, and the temporary file is removed though closing it failed too."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (50, 50)); "
            "from microgpt.atomic import AtomicFile\n"
            "f = AtomicFile(sys.argv[1])\nf.write('x' * 100)\n"
            "try:\n    f.commit()\nexcept OSError as e:\n    print('error', e.filename, e.strerror)\n")
    out = run_microgpt(code=code.replace("sys.argv[1]", repr(str(tmp_path / "out.txt"))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"error {tmp_path / 'out.txt'} File too large")
    assert list(tmp_path.iterdir()) == []


def test_a_signal_while_the_final_checkpoint_is_written_ends_the_run_after_it(tmp_path, small_data, monkeypatch):
    """The checkpoint is whole (the signal waits for it), and the run stops there: no sampling."""
    import signal
    import microgpt.api
    real_save = microgpt.api.Model.save

    def save(self, path):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_save(self, path)

    monkeypatch.setattr(microgpt.api.Model, "save", save)
    result = in_process("train", "--data", small_data, "--steps", 4, "--samples", 5, "--save", tmp_path / "ck")
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "interrupted (SIGTERM) after step 4; saved" in result.stderr and "inference" not in result.stdout
    from microgpt import checkpoint
    assert checkpoint.load(tmp_path / "ck")["step"] == 4
