"""The Value API on both backends: every op's value and gradient, edge inputs, deep graphs."""
import math

import pytest


def finite_difference(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


UNARY = {
    "add_const": (lambda v: v + 2.5, lambda x: x + 2.5),
    "radd_int": (lambda v: 3 + v, lambda x: 3 + x),
    "sub_const": (lambda v: v - 1.25, lambda x: x - 1.25),
    "rsub": (lambda v: 2 - v, lambda x: 2 - x),
    "mul_const": (lambda v: v * -3, lambda x: x * -3),
    "rmul": (lambda v: 0.5 * v, lambda x: 0.5 * x),
    "div_const": (lambda v: v / 4, lambda x: x / 4),
    "rdiv": (lambda v: 2 / v, lambda x: 2 * x**-1),  # the seed divides by multiplying with **-1
    "neg": (lambda v: -v, lambda x: -x),
    "pow_int": (lambda v: v ** 3, lambda x: x ** 3),
    "pow_neg": (lambda v: v ** -1, lambda x: x ** -1),
    "pow_frac": (lambda v: v ** -0.5, lambda x: x ** -0.5),
    "log": (lambda v: v.log(), math.log),
    "exp": (lambda v: v.exp(), math.exp),
    "relu": (lambda v: v.relu(), lambda x: max(0, x)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("x", [0.7, 1.9])
def test_unary_op_gradient_matches_finite_difference(Value, name, x):
    op, ref = UNARY[name]
    v = Value(x)
    out = op(v)
    out.backward()
    assert out.data == ref(x)
    assert v.grad == pytest.approx(finite_difference(ref, x), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("x,y", [(0.7, -1.3), (2.0, 0.25)])
def test_binary_ops_gradients(Value, x, y):
    # the seed divides as a * b**-1, which can differ from a / b in the last bit
    for op, ref in ((lambda a, b: a + b, None), (lambda a, b: a - b, None), (lambda a, b: a * b, None),
                    (lambda a, b: a / b, lambda a, b: a * b**-1)):
        a, b = Value(x), Value(y)
        out = op(a, b)
        out.backward()
        assert out.data == (ref or op)(x, y)
        assert a.grad == pytest.approx(finite_difference(lambda t: op(t, y), x), rel=1e-6)
        assert b.grad == pytest.approx(finite_difference(lambda t: op(x, t), y), rel=1e-6)


def test_shared_node_accumulates_in_seed_order(Value):
    # x*x makes two edges to x; a node used by two parents gets both contributions
    x = Value(3.0)
    y = x * x + x.exp() * x
    y.backward()
    assert y.data == 3.0 * 3.0 + math.exp(3.0) * 3.0
    assert x.grad == pytest.approx(2 * 3.0 + math.exp(3.0) * 4.0, rel=1e-12)


def test_relu_of_zero_and_negative_is_zero_with_zero_gradient(Value):
    for x in (0.0, -0.0, -2.0):
        v = Value(x)
        out = v.relu()
        out.backward()
        assert out.data == 0 and v.grad == 0


def test_deep_chain_backward_beyond_recursion_limit(backend, Value):
    n = 1_000_000 if backend == "c" else 100_000
    x = Value(1.0)
    y = x
    for _ in range(n):
        y = y + 1
    y.backward()
    assert y.data == n + 1.0
    assert x.grad == 1


@pytest.mark.parametrize("expr,exc", [
    (lambda V: V(0.0).log(), ValueError),
    (lambda V: V(-1.0).log(), ValueError),
    (lambda V: V(1000.0).exp(), OverflowError),
    (lambda V: V(0.0) ** -1, ZeroDivisionError),
    (lambda V: V(0.0) ** -0.5, ZeroDivisionError),
    (lambda V: V(-2.0) ** 0.5, ValueError),
    (lambda V: V(1e200) ** 2, OverflowError),
])
def test_edge_inputs_raise_like_python(Value, expr, exc):
    with pytest.raises(exc):
        expr(Value)


def test_complex_result_is_one_clear_error(Value):
    with pytest.raises(ValueError, match="complex"):
        Value(-8.0) ** (1 / 3)


def test_inf_and_nan_propagate(Value):
    inf, nan = float("inf"), float("nan")
    assert (Value(inf) + 1).data == inf
    assert math.isnan((Value(inf) * 0).data)
    assert math.isnan((Value(nan) + 1).data)
    assert (Value(inf).log()).data == inf
    assert (Value(-inf).exp()).data == 0.0
    assert Value(nan).relu().data == 0  # max(0, nan) is 0 in Python


def test_value_pow_value_is_type_error(Value):
    with pytest.raises(TypeError):
        Value(2.0) ** Value(3.0)


def test_data_and_grad_are_settable(Value):
    v = Value(1.5)
    v.data = 2.5
    v.grad = 0.25
    assert (v.data, v.grad) == (2.5, 0.25)


def test_mixing_backends_is_one_clear_type_error_in_both_orders():
    from conftest import require
    require("c")
    from microgpt.engine import Value as PythonValue
    from microgpt.native import CValue
    ops = {"+": lambda a, b: a + b, "*": lambda a, b: a * b, "-": lambda a, b: a - b, "/": lambda a, b: a / b}
    for name, op in ops.items():
        for left, right in ((PythonValue(2.0), CValue(3.0)), (CValue(3.0), PythonValue(2.0))):
            with pytest.raises(TypeError, match="cannot combine a (python|c)-backend Value with a (c|python)-backend") as e:
                op(left, right)
            assert "set_backend()" in str(e.value) and ".data" in str(e.value), name


def test_value_of_the_live_backend_is_looked_up_when_asked_for():
    """`microgpt.Value` follows set_backend(); a name imported before keeps its class."""
    from conftest import require
    require("c")
    import microgpt
    from microgpt.engine import Value as PythonValue
    from microgpt.native import CValue
    try:
        microgpt.set_backend("python")
        from microgpt import Value as imported
        microgpt.set_backend("c")
        assert microgpt.Value is CValue and imported is PythonValue
    finally:
        microgpt.set_backend(None)


def test_op_children_and_label(Value):
    a, b = Value(2.0), Value(-3.0)
    a.label, b.label = "a", "b"
    c = a * b + a.exp()
    assert (a.label, b.label, c.label) == ("a", "b", "")
    assert c._op == "+" and a._op == ""
    prod, ex = c._children
    assert (prod._op, ex._op) == ("*", "exp")
    assert [x.data for x in prod._children] == [2.0, -3.0]
    assert [x.label for x in prod._children] == ["a", "b"]
    sq = a * a
    assert len(sq._children) == 2 and len(sq._prev) == 1  # _prev: micrograd's set of distinct children
    ops = [(a + 1)._op, (a * 2)._op, (a ** 2)._op, a.log()._op, a.relu()._op, (-a)._op, (a - b)._op]
    assert ops == ["+", "*", "**", "log", "relu", "*", "+"]
