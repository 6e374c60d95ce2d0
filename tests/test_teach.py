"""microgpt.to_dot and microgpt.gradcheck on both backends."""
import math
import shutil
import subprocess

import pytest

import microgpt


def expression(v):
    a, b = v
    return (a * b + a.exp() - b ** 2).relu() + (a * a).log()


def test_to_dot_shows_every_node_with_data_grad_op_and_label(Value):
    a, b = Value(2.0), Value(-3.0)
    a.label, b.label = "a", "b"
    out = a * b + a.exp()
    out.label = "out"
    out.backward()
    dot = microgpt.to_dot(out)
    assert dot.startswith("digraph value {") and dot.rstrip().endswith("}")
    assert '{ a | data 2 | grad 4.38906 }' in dot
    assert '{ b | data -3 | grad 2 }' in dot
    assert '{ out | data 1.38906 | grad 1 }' in dot
    assert dot.count("shape=circle") == 3  # *, exp, +
    for op in ('label="*"', 'label="exp"', 'label="+"'):
        assert op in dot
    assert dot.count("->") == 5 + 3  # child -> op links, op -> node links


def test_to_dot_is_the_same_text_on_both_backends():
    from conftest import require
    require("c")
    from microgpt.engine import Value as PythonValue
    from microgpt.native import CValue
    texts = []
    for V in (PythonValue, CValue):
        x, y = V(1.5), V(0.5)
        x.label, y.label = "x{1}", 'y"|<'
        out = expression([x, y])
        out.backward()
        texts.append(microgpt.to_dot(out))
    assert texts[0] == texts[1]
    assert 'x\\{1\\}' in texts[0] and 'y\\"\\|\\<' in texts[0]  # record-label characters escaped


def test_to_dot_refuses_a_huge_graph_unless_asked(Value):
    y = Value(1.0)
    for _ in range(50):
        y = y + 1.0
    with pytest.raises(ValueError, match="more than 10 nodes"):
        microgpt.to_dot(y, max_nodes=10)
    assert microgpt.to_dot(y, max_nodes=None).count("[label=\"{") == 51


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (to_dot itself needs none)")
def test_graphviz_renders_to_dot_output(Value):
    out = expression([Value(1.5), Value(0.5)])
    out.backward()
    svg = subprocess.run(["dot", "-Tsvg"], input=microgpt.to_dot(out), capture_output=True, text=True, check=True)
    assert "<svg" in svg.stdout


def test_gradcheck_agrees_on_a_correct_backward(backend):
    err = microgpt.gradcheck(expression, [1.5, 0.5], backend=backend)
    assert 0 <= err < 1e-6


def test_gradcheck_finds_a_wrong_gradient(backend):
    """A function whose Value graph differs from its numbers: x * 3 computed as data, gradient of x * 2."""
    def wrong(v):
        x = v[0]
        out = x * 2.0
        out.data = x.data * 3.0  # the value moves as 3x; backward still says 2
        return out
    assert microgpt.gradcheck(wrong, [0.7], backend=backend) > 0.3


def test_gradcheck_of_the_model_loss_shape_function(backend):
    """A softmax cross-entropy over three logits, as the model computes it."""
    def loss(v):
        m = max(x.data for x in v)
        exps = [(x - m).exp() for x in v]
        total = sum(exps)
        return -(exps[1] / total).log()
    assert microgpt.gradcheck(loss, [0.3, -1.2, 2.0], backend=backend) < 1e-6


def test_gradcheck_refuses_bad_input(backend):
    with pytest.raises(ValueError):
        microgpt.gradcheck(lambda v: v, [], backend=backend)
    with pytest.raises(TypeError, match="one Value"):
        microgpt.gradcheck(lambda v: 1.0, [1.0], backend=backend)
    assert math.isnan(microgpt.gradcheck(lambda v: v[0] * float("nan"), [1.0], backend=backend))


def test_the_readme_values_example_runs_on_both_backends(backend, capsys):
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    if not path.exists():
        pytest.skip("README.md is not beside the tests (a copied tree, as .ci/sanitize makes)")
    readme = path.read_text(encoding="utf-8")
    section = readme.split("### Values from Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    microgpt.set_backend(backend)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        microgpt.set_backend(None)
    out = capsys.readouterr().out
    assert out.startswith("digraph value {") and "{ a | data 2 | grad 4.38906 }" in out
    assert float(out.split()[-1]) < 1e-6
