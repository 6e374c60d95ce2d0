"""A step that fails (a non-finite loss, a math error) stops the run with one line naming the
step and the likely cause, and what --save writes is the state from before that step."""
import json
import random

import pytest

from conftest import require, run_microgpt
from test_cli import assert_clean_error

from microgpt import checkpoint, guard
from microgpt import training as train_module
from microgpt.model import GPT, Config
from microgpt.modes import new_graph
from microgpt.tokenizer import Tokenizer


def test_diverging_run_saves_the_last_good_state(tmp_path, small_data, backend):
    common = ["--data", small_data, "--steps", 30, "--lr", "1e6", "--backend", backend]
    result = run_microgpt("train", *common, "--save", tmp_path / "ck", "--metrics", tmp_path / "m.jsonl")
    assert_clean_error(result, "training stopped at step 2", "math error", "learning rate", "saved")
    assert [json.loads(line)["step"] for line in (tmp_path / "m.jsonl").read_text().splitlines()] == [1]
    # the same run stopped cleanly after step 1 holds the same state, bit for bit
    clean = run_microgpt("train", *common, "--stop-after", 1, "--samples", 0, "--save", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    failed, good = checkpoint.load(tmp_path / "ck"), checkpoint.load(tmp_path / "clean")
    assert failed["step"] == good["step"] == 1
    for key in ("params", "adam_m", "adam_v"):
        assert failed[key] == good[key]


def test_failure_without_save_says_nothing_was_saved(small_data):
    assert_clean_error(run_microgpt("train", "--data", small_data, "--lr", "1e6", "--steps", "30"),
                       "step 2", "nothing saved")


DOCS = ["anna", "bob", "carla", "dave", "emma", "frank", "gina", "hal"]


def fresh(backend, mode):
    random.seed(3)
    tokenizer = Tokenizer.from_docs(DOCS)
    return GPT(Config(vocab_size=tokenizer.vocab_size, n_embd=8, n_head=2, block_size=8), new_graph(backend, mode)), \
        tokenizer


def state(model):
    return model.graph.param_data(), model.graph.adam_state()


def expected_after(backend, mode, steps):
    model, tokenizer = fresh(backend, mode)
    train_module.train(model, tokenizer, DOCS, 20, 0.01, stop=steps)
    return state(model)


def assert_no_gradients(model):
    if model.graph.backend == "python":
        assert all(p.grad == 0 for p in model.graph.params)
    else:
        assert set(model.graph.arena.read_grad(0, model.graph.nparams)) == {0.0}


@pytest.mark.parametrize("snapshot_every", [0, 10 ** 9], ids=["copy-every-step", "rebuild-from-the-start"])
@pytest.mark.parametrize("mode", ["fused", "seed"])
def test_failure_inside_adam_rebuilds_the_state_before_the_step(monkeypatch, mode, snapshot_every):
    """Simulate the python backend's Adam failing half way (some parameters and gradients
    changed, an OverflowError): the model must come back to its exact state after step 5."""
    expected = expected_after("python", mode, 5)
    model, tokenizer = fresh("python", mode)
    real_step = train_module.train_step

    def failing_step(model, tokens, step, num_steps, lr, **options):
        loss = real_step(model, tokens, step, num_steps, lr, **options)
        if step == 5:
            values = model.graph.param_data()
            model.graph.set_param_data([x * 3 for x in values[:10]] + values[10:])
            for p in model.graph.params[100:]:
                p.grad = 1e200
            raise OverflowError("(34, 'Numerical result out of range')")
        return loss
    monkeypatch.setattr(guard, "SNAPSHOT_EVERY", snapshot_every)
    monkeypatch.setattr(train_module, "train_step", failing_step)
    with pytest.raises(guard.TrainingFailed, match="step 6: math error") as failed:
        train_module.train(model, tokenizer, DOCS, 20, 0.01)
    assert failed.value.step == 5
    assert state(model) == expected
    assert_no_gradients(model)


@pytest.mark.parametrize("mode", ["replay", "dense", "seed"])
def test_the_c_backends_failed_adam_changes_nothing_and_no_copy_is_kept(monkeypatch, mode):
    """The c backend's Adam, failing for real (g**2 overflows), leaves the state after step 5; the
    trainer keeps no copy of it (guard.NothingToUndo) and zeroes the gradients."""
    require("c")
    from microgpt.native import lib
    expected = expected_after("c", mode, 5)
    model, tokenizer = fresh("c", mode)
    real_adam = model.graph.adam_step

    def adam_step(step, num_steps, lr):
        if step == 5:
            for i in range(100, model.graph.nparams):
                lib.mg_set_grad(model.graph.arena.ptr, i, 1e200)
        real_adam(step, num_steps, lr)
    monkeypatch.setattr(model.graph, "adam_step", adam_step)
    monkeypatch.setattr(guard, "LastGood", None)  # a copy would fail here
    # every step through train_step and its Adam (the dense graph's steps in one C call fail
    # without changing anything: tests/test_dense.py)
    monkeypatch.setattr(train_module.Batches, "run", lambda self, step, end: ([], None))
    with pytest.raises(guard.TrainingFailed, match="step 6: math error") as failed:
        train_module.train(model, tokenizer, DOCS, 20, 0.01)
    assert failed.value.step == 5
    assert state(model) == expected
    assert_no_gradients(model)


@pytest.mark.parametrize("backend,mode", [("python", "fused"), ("c", "dense")])
def test_a_loss_that_is_not_finite_leaves_the_state_before_its_step(monkeypatch, backend, mode):
    require(backend)
    expected = expected_after(backend, mode, 3)
    model, tokenizer = fresh(backend, mode)
    real_item, calls = model.graph.item, []

    def item(node):  # the loss of step 4 (the 4th call) is nan
        calls.append(node)
        return float("nan") if len(calls) == 4 else real_item(node)
    monkeypatch.setattr(model.graph, "item", item)
    monkeypatch.setattr(train_module.Batches, "run", lambda self, step, end: ([], None))
    with pytest.raises(guard.TrainingFailed, match="step 4: the loss is nan"):
        train_module.train(model, tokenizer, DOCS, 20, 0.01)
    assert state(model) == expected
    assert_no_gradients(model)


@pytest.mark.parametrize("backend,mode", [("python", "fused"), ("c", "dense")])
def test_the_copy_is_arrays_of_doubles_refilled_in_place(monkeypatch, backend, mode):
    """A copy is 8 bytes a number, and a later copy overwrites it: never two at once (at d128 a
    copy as lists of floats was 77 MB, and a new one beside the old 150)."""
    from array import array
    require(backend)
    model, tokenizer = fresh(backend, mode)
    monkeypatch.setattr(guard, "SNAPSHOT_EVERY", 0)
    last_good = guard.LastGood(model.graph, 0)
    arrays = last_good.state
    assert all(isinstance(a, array) and a.typecode == "d" for a in arrays)
    train_module.train(model, tokenizer, DOCS, 20, 0.01, stop=3)
    last_good.before(3)
    assert last_good.step == 3 and last_good.state is arrays
    params, (m, v) = state(model)
    assert [list(a) for a in arrays] == [params, m, v]


def test_non_finite_loss_is_a_failure(monkeypatch):
    model, tokenizer = fresh("python", "fused")
    real_step = train_module.train_step
    monkeypatch.setattr(train_module, "train_step",
                        lambda m, t, step, n, lr, **kw: float("nan") if step == 3 else real_step(m, t, step, n, lr, **kw))
    with pytest.raises(guard.TrainingFailed, match="step 4: the loss is nan; the learning rate"):
        train_module.train(model, tokenizer, DOCS, 20, 0.01)


def test_first_step_failure_blames_the_model_not_the_learning_rate():
    assert "--n-embd" in guard.likely_cause(0, 0.01) and "--lr" in guard.likely_cause(3, 0.01)
