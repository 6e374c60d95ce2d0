"""Teaching tools over Values of either backend: the graph below a value as Graphviz DOT text, and a
gradient check against finite differences.

Both read only the Value API the two backends share: data, grad, label, and micrograd's _op and
_children (the children in order, repeats kept: x * x has x twice).
"""
import math

DEFAULT_MAX_NODES = 10_000


def _key(v):
    """What makes two Value objects one node: the object on the python backend; on the c backend,
    the node (its Value objects are not unique: _children makes new ones)."""
    return (id(v._a), v._node()) if v.backend == "c" else id(v)


def _escape(text):
    """Text inside a DOT record label: its special characters escaped."""
    out = str(text).replace("\\", "\\\\")
    for ch in '"{}|<>':
        out = out.replace(ch, "\\" + ch)
    return out


def _number(x):
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def to_dot(value, max_nodes=DEFAULT_MAX_NODES, rankdir="LR"):
    """The graph below `value` as Graphviz DOT text: one box per node (label, data, grad) and,
    for a node made by an op, a small node with the op's name pointing at it. No Graphviz is
    needed to make it; `dot -Tsvg` draws it (or graphviz.Source(text) in a notebook).
    Refuses graphs over max_nodes nodes (None: no limit), which Graphviz would not draw legibly."""
    nodes, edges = {}, []
    stack = [value]
    while stack:
        v = stack.pop()
        k = _key(v)
        if k in nodes:
            continue
        nodes[k] = v
        if max_nodes is not None and len(nodes) > max_nodes:
            raise ValueError(f"the graph below this value has more than {max_nodes} nodes; "
                             f"pass max_nodes=None to draw it anyway")
        children = v._children
        for child in children:
            edges.append((_key(child), k))
        stack.extend(reversed(children))
    names = {k: f"n{i}" for i, k in enumerate(nodes)}
    lines = ["digraph value {", f"  rankdir={rankdir};", '  node [shape=record, fontname="Helvetica"];']
    for k, v in nodes.items():
        name, label = names[k], v.label
        fields = ([_escape(label)] if label else []) + [f"data {_escape(_number(v.data))}",
                                                        f"grad {_escape(_number(v.grad))}"]
        lines.append(f'  {name} [label="{{ {" | ".join(fields)} }}"];')
        op = v._op
        if op:
            lines.append(f'  {name}_op [label="{_escape(op)}", shape=circle];')
            lines.append(f"  {name}_op -> {name};")
    for child, parent in edges:
        lines.append(f"  {names[child]} -> {names[parent]}_op;")
    lines.append("}")
    return "\n".join(lines) + "\n"


def gradcheck(f, inputs, eps=1e-6, backend=None):
    """Compare backward() with central finite differences: f maps a list of Values (made from
    the floats `inputs`, on `backend` or the live one) to one Value. Returns the worst error over
    the inputs, |analytic - numeric| / max(1, |analytic|, |numeric|): relative for gradients
    above 1 in size, absolute below (so a zero gradient divides by nothing). Around 1e-6 or
    less means backward agrees with the function; a wrong local gradient gives far more."""
    from .backend import value_class
    Value = value_class(backend)
    xs = [float(x) for x in inputs]
    if not xs:
        raise ValueError("gradcheck needs at least one input")
    leaves = [Value(x) for x in xs]
    out = f(leaves)
    if not hasattr(out, "backward"):
        raise TypeError(f"f must return one Value, got {type(out).__name__}")
    out.backward()
    analytic = [v.grad for v in leaves]

    def at(i, x):
        return f([Value(x if j == i else xj) for j, xj in enumerate(xs)]).data

    worst = 0.0
    for i, x in enumerate(xs):
        numeric = (at(i, x + eps) - at(i, x - eps)) / (2 * eps)
        a = analytic[i]
        if math.isnan(a) or math.isnan(numeric):
            return math.nan
        worst = max(worst, abs(a - numeric) / max(1.0, abs(a), abs(numeric)))
    return worst
