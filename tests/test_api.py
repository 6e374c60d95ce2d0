"""The Python API (microgpt.train, microgpt.load, Model): the README's example, the CLI's numbers,
checkpoints both ways, parameters by name, and its own random state."""
import json
import random
import re

import pytest

import microgpt
from conftest import require, run_microgpt

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def readme_example():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- the block below runs in tests/test_api.py -->\n```python\n(.*?)```", text, re.S)
    assert block, "README's Python example is missing"
    return block.group(1)


def test_readme_example_gives_the_clis_losses_and_names(tmp_path, monkeypatch, capsys):
    require("c")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MICROGPT_BACKEND", "c")
    scope = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)
    printed = capsys.readouterr().out
    model = scope["model"]
    result = run_microgpt("train", "--backend", "c", "--metrics", tmp_path / "m.jsonl", check=True)
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert model.losses == [x["loss"] for x in lines if "loss" in x]
    cli_names = re.findall(r"^sample +\d+: (.*)$", result.stdout, re.M)
    assert len(cli_names) == 20 and str(cli_names) in printed
    assert lines[-1]["params_sha256"] == model.params_sha256()
    # the example wrote a checkpoint that the CLI reads, and changed wte of the loaded copy only
    assert scope["again"].params["wte"][0][0] == 0.5 * model.params["wte"][0][0]
    sampled = run_microgpt("sample", tmp_path / "run.ckpt", "--samples", "3", check=True).stdout
    assert re.findall(r"^sample +\d+: (.*)$", sampled, re.M) == model.sample(3)


DOCS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper", "evelyn", "abigail"]
SMALL = dict(steps=12, n_embd=8, n_head=2, block_size=8)


@pytest.mark.parametrize("graph", ["seed", "fused", "kernels", "replay", "dense"])
def test_load_and_train_the_rest_is_the_uninterrupted_run(backend, graph, tmp_path):
    if backend == "python" and graph in ("kernels", "replay", "dense"):
        pytest.skip("a c-only graph mode")
    whole = microgpt.train(DOCS, backend=backend, graph=graph, **SMALL)
    half = microgpt.Model.new(DOCS, backend=backend, graph=graph, **SMALL).train(5)
    half.save(tmp_path / "half.ckpt")
    rest = microgpt.load(tmp_path / "half.ckpt", backend=backend, graph=graph)
    rest.load_data(DOCS)
    rest.train()
    assert half.losses + rest.losses == whole.losses
    assert rest.params_sha256() == whole.params_sha256()
    assert rest.sample(5) == whole.sample(5)


def test_params_by_name_read_and_write_on_every_mode(graph_mode):
    backend, graph = graph_mode
    model = microgpt.Model.new(DOCS, backend=backend, graph=graph, **SMALL)
    params = model.params
    assert list(params)[:3] == ["wte", "wpe", "lm_head"] and len(params) == 3 + 6
    wpe = params["wpe"]
    assert len(wpe) == SMALL["block_size"] and all(len(row) == SMALL["n_embd"] for row in wpe)
    params["wpe"] = [[1.0] * SMALL["n_embd"] for _ in wpe]
    assert params["wpe"][3] == [1.0] * SMALL["n_embd"]
    assert params["wte"] == model.params["wte"]  # the rest untouched
    with pytest.raises(ValueError):
        params["wpe"] = [[1.0]]


def test_own_random_state(backend):
    """Other uses of random between the calls change nothing the model draws."""
    a = microgpt.Model.new(DOCS, backend=backend, **SMALL)
    random.seed(123)
    b = microgpt.Model.new(DOCS, backend=backend, **SMALL)
    random.random()
    assert a.params_sha256() == b.params_sha256()
    state = random.getstate()
    assert a.sample(4) == b.sample(4)
    assert random.getstate() == state  # and the caller's state is left as it was


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="lr must be a finite number"):
        microgpt.train(DOCS, lr=float("nan"), **{k: v for k, v in SMALL.items()})
    with pytest.raises(ValueError, match="steps must be >= 0"):
        microgpt.train(DOCS, steps=-1)
    with pytest.raises(ValueError, match="list of strings"):
        microgpt.train([1, 2, 3])
    for threads in (0, 65, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a whole number from 1 to 64"):
            microgpt.train(DOCS, threads=threads, **SMALL)
    model = microgpt.Model.new(DOCS, **SMALL)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=0)


def test_thread_counts_give_the_same_run(backend):
    """threads only splits the dense graph's work (tests/test_adam.py and tests/test_dense.py
    check the splits themselves, with parts small enough to split): the same run for any count."""
    runs = [microgpt.train(DOCS, backend=backend, threads=t, **SMALL) for t in (1, 2, 3)]
    assert runs[0].losses == runs[1].losses == runs[2].losses
    assert runs[0].params_sha256() == runs[1].params_sha256() == runs[2].params_sha256()


def test_training_failure_keeps_the_state_before_the_step(backend):
    settings = dict(SMALL, steps=200)
    model = microgpt.Model.new(DOCS, backend=backend, lr=1e6, **settings)
    with pytest.raises(microgpt.TrainingFailed) as failed:
        model.train()
    assert model.step == failed.value.step > 0
    clean = microgpt.Model.new(DOCS, backend=backend, lr=1e6, **settings).train(failed.value.step)
    assert model.params_sha256() == clean.params_sha256()


def test_threads_sharing_a_model_or_sampling_two_models_take_turns(backend):
    """Two threads on one model: each call runs whole, so the result is a serial run's. Two
    threads sampling two models at once: each gets its own names (the random module is shared)."""
    import sys
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as the interpreter can: they do meet
    try:
        check_threads_take_turns(backend)
    finally:
        sys.setswitchinterval(switch)


def test_sampling_hands_its_random_state_on_before_the_lock_goes(backend):
    """Another thread may take the lock the moment a sample() lets it go: it must start from
    where that call left the random state (it once read the state before the call had put it back)."""
    serial = microgpt.Model.new(DOCS, backend=backend, **SMALL).train(3).sample(8)
    model = microgpt.Model.new(DOCS, backend=backend, **SMALL).train(3)
    lock, taken, inner = model.gpt.graph.lock, [0], []

    class LetGo:  # once the lock is let go entirely, sample at once, as a waiting thread would
        def __enter__(self):
            lock.__enter__()
            taken[0] += 1

        def __exit__(self, *exc):
            taken[0] -= 1
            lock.__exit__(*exc)
            if taken[0] == 0 and not inner:
                inner.append(None)
                inner[0] = model.sample(4)

    model.gpt.graph.lock = LetGo()
    first = model.sample(4)
    assert [first, inner[0]] == [serial[:4], serial[4:]]


def check_threads_take_turns(backend):
    import threading
    serial = microgpt.Model.new(DOCS, backend=backend, **SMALL).train(10)
    expected = serial.sample(8)
    shared = microgpt.Model.new(DOCS, backend=backend, **SMALL)
    threads = [threading.Thread(target=shared.train, args=(5,)) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert shared.step == 10 and shared.params_sha256() == serial.params_sha256()
    got = {}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, shared.sample(4))) for k in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted([got[0], got[1]]) == sorted([expected[:4], expected[4:]])
    others = [microgpt.Model.new(DOCS, backend=backend, seed=s, **SMALL).train(3) for s in (1, 2)]
    alone = [microgpt.Model.new(DOCS, backend=backend, seed=s, **SMALL).train(3).sample(30) for s in (1, 2)]
    results = [None, None]

    def draw(k):
        results[k] = others[k].sample(30)
    threads = [threading.Thread(target=draw, args=(k,)) for k in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results == alone


def test_random_draws_in_the_middle_of_sampling_change_nothing(backend):
    """The model draws from a random.Random of its own: the program's own draws (here in a
    callback; in another thread alike) neither take the model's numbers nor get them."""
    model = microgpt.Model.new(DOCS, backend=backend, **SMALL).train(3)
    state = model.random_state
    alone = model.sample(6)
    model.random_state = state
    random.seed(7)
    drawn = []
    assert model.sample(6, on_sample=lambda i, name: drawn.append(random.random())) == alone
    random.seed(7)
    assert drawn == [random.random() for _ in range(6)]


@pytest.mark.parametrize("what", ["int", "bool", "bytes"])
def test_a_path_that_is_not_a_path_is_refused_not_read(tmp_path, what):
    """An int would be taken for a file descriptor: read, then closed under its owner."""
    import os
    path = tmp_path / "docs.txt"
    path.write_text("anna\nbob\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        value = {"int": fd, "bool": False, "bytes": os.fsencode(path)}[what]
        with pytest.raises(TypeError, match="path"):
            microgpt.Model.new(value, steps=1)
        with pytest.raises(TypeError, match="path"):
            microgpt.load(value)
        model = microgpt.Model.new(DOCS, **SMALL)
        with pytest.raises(TypeError, match="path"):
            model.save(value)
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


@pytest.mark.parametrize("seed", [None, "42", 4.2, True])
def test_a_seed_that_is_not_a_whole_number_is_refused(seed):
    with pytest.raises(ValueError, match="seed must be a whole number"):
        microgpt.Model.new(DOCS, seed=seed, **SMALL)


def test_a_whole_number_learning_rate_saves_a_run_that_loads(tmp_path):
    microgpt.Model.new(DOCS, lr=1, **SMALL).save(tmp_path / "a.ckpt")
    assert microgpt.load(tmp_path / "a.ckpt").lr == 1.0
    with pytest.raises(ValueError, match="lr must be"):
        microgpt.Model.new(DOCS, lr=True, **SMALL)


@pytest.mark.parametrize("limit", [float("nan"), "1G", 0, -5, True])
def test_a_bad_memory_limit_is_refused(limit):
    with pytest.raises(ValueError, match="max_memory must be"):
        microgpt.Model.new(DOCS, max_memory=limit, **SMALL)


def test_save_never_replaces_a_device_or_a_pipe(tmp_path):
    import os
    import stat
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        microgpt.Model.new(DOCS, **SMALL).save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_train_from_inside_a_callback_is_refused(backend):
    model = microgpt.Model.new(DOCS, backend=backend, steps=20, **{k: v for k, v in SMALL.items() if k != "steps"})
    with pytest.raises(RuntimeError, match="inside train"):
        model.train(5, on_step=lambda step, loss: model.train(1) if step == 1 else None)
    assert model.step == 2 and len(model.losses) == 2
    model.train(3)   # and the model trains on afterwards
    assert model.step == 5


def test_nothing_to_train_reads_no_data(tmp_path):
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS) + "\n")
    model = microgpt.Model.new(str(data), steps=3, **{k: v for k, v in SMALL.items() if k != "steps"}).train()
    model.save(tmp_path / "done.ckpt")
    data.unlink()
    again = microgpt.load(tmp_path / "done.ckpt")
    assert again.train() is again and again.train(0) is again and again.step == 3


def test_ctrl_c_in_the_middle_of_a_step_ends_train_after_it(backend):
    """SIGINT that lands inside a step (here: while its backward runs) ends train() with
    KeyboardInterrupt after that step: the model holds whole steps, and trained on, it gives the
    uninterrupted run's parameters."""
    import os
    import signal
    settings = dict(SMALL, steps=12)
    whole = microgpt.Model.new(DOCS, backend=backend, **settings).train()
    model = microgpt.Model.new(DOCS, backend=backend, **settings)
    graph, calls = model.gpt.graph, [0]
    real_backward = graph.backward

    def backward(loss):
        calls[0] += 1
        if calls[0] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real_backward(loss)

    graph.backward = backward
    with pytest.raises(KeyboardInterrupt):
        model.train()
    assert 4 <= model.step < 12 and len(model.losses) == model.step
    del graph.backward
    assert model.train().params_sha256() == whole.params_sha256()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("graph", ["seed", "kernels", "fused", "replay", "dense"])
def test_a_dropped_model_frees_its_c_memory_at_once(graph):
    """No reference cycle holds a graph: its arena (C memory Python's cycle collector does not
    count) and its executor's threads go when the last reference does, collector or not."""
    import gc
    import weakref
    require("c")
    gc.collect()
    gc.disable()
    try:
        model = microgpt.Model.new(DOCS, backend="c", graph=graph, threads=2, **SMALL).train(3)
        model.sample(2)
        arena = weakref.ref(model.gpt.graph.arena)
        del model
        assert arena() is None
    finally:
        gc.enable()


def test_ctrl_c_while_the_data_is_read_is_not_held(tmp_path, monkeypatch):
    """Only steps wait for Ctrl-C to land between them: reading the documents (which can take
    seconds) is interrupted at once."""
    import os
    import signal
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS) + "\n")
    microgpt.Model.new(str(data), **SMALL).save(tmp_path / "ck")
    model = microgpt.load(tmp_path / "ck")
    read = []

    def load_data(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        read.append("after the signal")   # not reached: the interrupt is not held

    monkeypatch.setattr(model, "load_data", load_data)
    with pytest.raises(KeyboardInterrupt):
        model.train()
    assert read == [] and model.step == 0


def test_checks_that_keep_a_saved_run_loadable(tmp_path):
    with pytest.raises(ValueError, match="seed must be less than 2\\*\\*64"):
        microgpt.Model.new(DOCS, seed=10 ** 30, **SMALL)
    with pytest.raises(ValueError, match="names a folder"):
        microgpt.Model.new(DOCS, **SMALL).save(f"{tmp_path}/folder/")
    assert list(tmp_path.iterdir()) == []


def test_a_run_trained_on_a_list_says_how_to_give_its_documents_back(tmp_path):
    microgpt.Model.new(DOCS, **SMALL).train(2).save(tmp_path / "ck")
    model = microgpt.load(tmp_path / "ck")
    with pytest.raises(microgpt.checkpoint.CheckpointError, match="given as a list"):
        model.train(1)
    model.load_data(DOCS)
    assert model.train(1).step == 3
