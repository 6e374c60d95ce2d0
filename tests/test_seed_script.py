"""`microgpt profile`'s first rung takes the seed's script as published: run in a scratch folder
with the data as input.txt, its 4-decimal losses compared at 4 decimals, for steps 1..N of its own
1000-step schedule, and the verdict says which precision was compared.

Karpathy's script itself is not part of this project: a stand-in with the same contract (reads
input.txt from its folder, ignores its arguments, a fixed schedule, 4 decimals, lines ended by a
carriage return, no parameter hash), computing with this package, checks the machinery; the real
one runs when MICROGPT_SEED_SCRIPT names it."""
import os
import pathlib

import pytest

from conftest import run_microgpt

STAND_IN = '''
import os, random, sys
sys.path.insert(0, {package_parent!r})
from microgpt.data import load_docs
from microgpt.modes import new_graph
from microgpt.model import GPT, Config
from microgpt.tokenizer import Tokenizer
from microgpt.training import train
if not os.path.exists("input.txt"):
    sys.exit("input.txt is not in the folder the script runs in")
random.seed(42)
docs = load_docs("input.txt")
random.shuffle(docs)
tokenizer = Tokenizer.from_docs(docs)
model = GPT(Config(vocab_size=tokenizer.vocab_size), new_graph("python"))
num_steps = {schedule}
def show(step, loss):
    print(f"step {{step+1:4d}} / {{num_steps:4d}} | loss {{loss + {offset!r} * (step == 1):.4f}}", end="\\r")
train(model, tokenizer, docs, num_steps, 0.01, on_step=show)
print("\\n--- inference (new, hallucinated names) ---")
'''


def stand_in(tmp_path, schedule=1000, offset=0.0):
    import microgpt
    script = tmp_path / "microgpt_published.py"
    script.write_text(STAND_IN.format(package_parent=str(pathlib.Path(microgpt.__file__).resolve().parents[1]),
                                      schedule=schedule, offset=offset))
    return script


def profile(script, data, steps, rungs="seed-script,python"):
    return run_microgpt("profile", "--steps", steps, "--data", data, "--rungs", rungs, "--seed-script", script)


def test_published_form_is_compared_at_four_decimals(tmp_path, small_data):
    result = profile(stand_in(tmp_path), small_data, 3)
    assert result.returncode == 0, result.stderr
    assert "bit-identical: yes, all 1 rungs give the same 3 losses" in result.stdout
    assert ("seed-script: its 3 losses equal this package's at the 4 decimals it prints (steps 1-3 of its "
            "1000-step schedule; it prints no parameter hash, so only the losses were compared)") in result.stdout
    assert not (tmp_path / "input.txt").exists() and not pathlib.Path("input.txt").exists()


def test_a_seed_script_alone_is_checked_too(tmp_path, small_data):
    result = profile(stand_in(tmp_path), small_data, 2, rungs="seed-script")
    assert result.returncode == 0, result.stderr
    assert "seed-script: its 2 losses equal this package's at the 4 decimals" in result.stdout


def test_a_loss_off_in_the_fourth_decimal_is_found(tmp_path, small_data):
    result = profile(stand_in(tmp_path, offset=1e-4), small_data, 3)
    assert result.returncode == 1, result.stderr
    assert "seed-script: DIFFERENT at step 2 (steps 1-3 of its 1000-step schedule)" in result.stdout


def test_a_schedule_shorter_than_the_steps_asked_for_is_one_clear_error(tmp_path, small_data):
    result = profile(stand_in(tmp_path, schedule=3), small_data, 4)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "did not print what the seed's script prints: 3 of the 4 step lines" in lines[-1]


def test_a_schedule_equal_to_the_steps_is_compared_with_the_rungs(tmp_path, small_data):
    result = profile(stand_in(tmp_path, schedule=3), small_data, 3)
    assert result.returncode == 0, result.stderr
    assert "seed-script: its 3 losses equal this package's at the 4 decimals it prints (steps 1-3 of its " \
           "3-step schedule" in result.stdout


def test_the_real_published_script(small_data):
    from conftest import env_path
    script = env_path("MICROGPT_SEED_SCRIPT")
    if not script:
        pytest.skip("set MICROGPT_SEED_SCRIPT to Karpathy's microgpt.py as published to run it as the profile's seed rung")
    result = profile(script, small_data, 3)
    assert result.returncode == 0, result.stderr
    assert "seed-script: its 3 losses equal this package's" in result.stdout or \
        "bit-identical: yes, all 2 rungs" in result.stdout
