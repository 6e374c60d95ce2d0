"""No work lost to a signal: SIGTERM and SIGINT end training after the current step and save;
the run resumed from there ends exactly where an uninterrupted one does. A second signal exits
at once; Ctrl-C while sampling exits cleanly."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_microgpt

from microgpt import checkpoint


def start(*args):
    """`python -m microgpt ARGS` with unbuffered output, so step lines arrive as they are printed."""
    import microgpt
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(microgpt.__file__).resolve().parents[1]), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "microgpt", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)


def wait_for(proc, prefix, count=1):
    seen = 0
    for line in proc.stdout:
        if line.startswith(prefix):
            seen += 1
            if seen == count:
                return line
    raise AssertionError(f"the run ended before printing {prefix!r}: {proc.stderr.read()}")


def final_record(path):
    return json.loads(path.read_text().splitlines()[-1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_and_resume_matches_the_uninterrupted_run(tmp_path, small_data, backend, signum):
    common = ["--data", small_data, "--steps", 100000, "--backend", backend, "--samples", 3]
    proc = start("train", *common, "--save", tmp_path / "c.ckpt")
    last_read = wait_for(proc, "step", count=5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"interrupted ({signal.Signals(signum).name})" in err and "saved" in err
    done = checkpoint.load(tmp_path / "c.ckpt")["step"]
    assert done >= 5 and f"after step {done};" in err
    assert "--- inference" not in out  # stopped: no sampling
    last_line = (out.splitlines() or [last_read])[-1]
    assert last_line.startswith(f"step {done:4d} / 100000 |")  # every step done was printed

    total = done + 7
    result = run_microgpt("train", "--resume", tmp_path / "c.ckpt", "--backend", backend, "--samples", 3,
                          "--stop-after", total - done, "--metrics", tmp_path / "resumed.jsonl")
    assert result.returncode == 0, result.stderr
    whole = run_microgpt("train", *common, "--stop-after", total, "--metrics", tmp_path / "whole.jsonl")
    assert whole.returncode == 0, whole.stderr
    resumed, uninterrupted = final_record(tmp_path / "resumed.jsonl"), final_record(tmp_path / "whole.jsonl")
    assert resumed["params_sha256"] == uninterrupted["params_sha256"]
    assert resumed["samples"] == uninterrupted["samples"]


def test_second_signal_exits_at_once_without_saving(tmp_path):
    """A step of this model takes about a second on the python backend's seed graph: the second
    SIGTERM comes in the middle of it and must not wait for it."""
    data = tmp_path / "long.txt"
    data.write_text("\n".join("abcdefghij"[i % 10:] + "abcdefghij"[:i % 10] * 2 for i in range(20)) + "\n")
    proc = start("train", "--data", data, "--steps", 100, "--backend", "python", "--graph", "seed", "--n-embd", 48,
                 "--save", tmp_path / "ck", "--metrics", tmp_path / "m.jsonl")
    wait_for(proc, "num params")
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 0.5
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM again" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.txt"]  # no checkpoint, no temporary files


def test_ctrl_c_while_sampling_exits_cleanly(small_data):
    proc = start("train", "--data", small_data, "--steps", 0, "--samples", 10 ** 7)
    wait_for(proc, "sample", count=3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and err.strip() == "microgpt: interrupted"


def outputs(tmp_path):
    """A folder of the test's own for a run's outputs (small_data is in tmp_path)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_sighup_saves_as_sigterm_does(tmp_path, small_data):
    """A closed terminal (SIGHUP) ends training after the current step and saves."""
    tmp_path = outputs(tmp_path)
    proc = start("train", "--data", small_data, "--steps", 100000, "--samples", 0, "--save", tmp_path / "ck")
    wait_for(proc, "step", count=5)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "interrupted (SIGHUP)" in err and "saved" in err and "Traceback" not in err
    assert checkpoint.load(tmp_path / "ck")["step"] >= 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_sigterm_while_sampling_keeps_the_checkpoint_and_the_step_records(tmp_path, small_data):
    tmp_path = outputs(tmp_path)
    proc = start("train", "--data", small_data, "--steps", 20, "--samples", 10 ** 7, "--save", tmp_path / "ck",
                 "--metrics", tmp_path / "m.jsonl")
    wait_for(proc, "sample", count=3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err and err.strip() == "microgpt: interrupted (SIGTERM)"
    assert checkpoint.load(tmp_path / "ck")["step"] == 20
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 21))   # every step's record, no samples record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "m.jsonl"]


def test_sigterm_to_profile_stops_the_seed_script_it_runs(tmp_path, small_data):
    """The seed's script runs as a child process in a scratch folder: SIGTERM to the profile
    stops the child and removes the folder, as Ctrl-C does."""
    script = tmp_path / "slow_seed.py"
    marker = tmp_path / "child.pid"
    script.write_text(f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\n"
                      "print('step    1 / 1000 | loss 3.3000', flush=True)\ntime.sleep(600)\n")
    proc = start("profile", "--steps", 2, "--data", small_data, "--rungs", "seed-script,python",
                 "--seed-script", script)
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    child = int(marker.read_text())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "microgpt: interrupted (SIGTERM)"
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_a_metrics_file_that_cannot_grow_keeps_the_steps_done(tmp_path, small_data):
    """A write of --metrics fails mid-run (here the file size limit; a full disk is the same): one
    line naming the file, the checkpoint holds every step done, its step count the parameters'
    (the dense graph's runs of steps included), and the metrics file is not left half written."""
    import resource
    import microgpt
    tmp_path = outputs(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(microgpt.__file__).resolve().parents[1]))
    limit = 64 * 1024

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    common = ["--data", small_data, "--steps", 100000, "--n-embd", 4, "--n-head", 1, "--samples", 0]
    result = subprocess.run([sys.executable, "-m", "microgpt", "train", *map(str, common), "--save",
                             str(tmp_path / "ck"), "--metrics", str(tmp_path / "m.jsonl")], capture_output=True,
                            text=True, env=env, preexec_fn=small_files, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "m.jsonl" in lines[0] and "File too large" in lines[0] and "saved" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]   # no metrics file, no temporary one
    ck = checkpoint.load(tmp_path / "ck")
    done = ck["step"]
    assert done > 100
    whole = run_microgpt("train", *common, "--stop-after", done, "--save", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    assert checkpoint.load(tmp_path / "whole")["params"] == ck["params"]


def test_an_ignored_sighup_stays_ignored(tmp_path, small_data):
    """Under nohup (SIGHUP ignored before the program started) a closed terminal ends nothing."""
    import microgpt
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(microgpt.__file__).resolve().parents[1]), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "train", "--data", str(small_data), "--steps", "150",
                             "--backend", "python", "--samples", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    wait_for(proc, "step", count=3)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "step  150 /  150" in out and "interrupted" not in err
