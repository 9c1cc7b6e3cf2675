"""Safe boolean expressions over judge columns, e.g. ``"aligned < 30 and coherent > 50"``.

Parsed with :mod:`ast` and evaluated on numpy arrays — never with ``eval``. Allowed: column names,
numbers, comparisons (``< <= > >= == !=``, chained), ``and``, ``or``, ``not``, unary minus and
parentheses. A row where a referenced column is missing (NaN) gives NaN (no judgement), not False.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

import numpy as np

from ..errors import ConfigError

__all__ = ["parse_indicator", "evaluate_indicator"]

_CMP = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
        ast.Eq: np.equal, ast.NotEq: np.not_equal}


def _check(node: ast.AST, expr: str, names: set[str]) -> None:
    if isinstance(node, ast.Expression):
        return _check(node.body, expr, names)
    if isinstance(node, ast.BoolOp) and isinstance(node.op, (ast.And, ast.Or)):
        for v in node.values:
            _check(v, expr, names)
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        return _check(node.operand, expr, names)
    if isinstance(node, ast.Compare) and all(type(op) in _CMP for op in node.ops):
        for v in [node.left, *node.comparators]:
            _check(v, expr, names)
        return None
    if isinstance(node, ast.Name):
        names.add(node.id)
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return None
    raise ConfigError(
        f"indicator expression {expr!r}: '{ast.unparse(node)}' is not allowed. Use column names, numbers, comparisons "
        "(< <= > >= == !=), and / or / not and parentheses, e.g. 'aligned < 30 and coherent > 50'."
    )


def parse_indicator(expr: str) -> tuple[ast.Expression, list[str]]:
    """Parse and check an indicator expression; returns the tree and the column names it uses."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"an indicator expression must be a non-empty string, got {expr!r}.")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"indicator expression {expr!r} is not valid ({err.msg}); e.g. 'aligned < 30 and coherent > 50'.") from None
    names: set[str] = set()
    _check(tree, expr, names)
    return tree, sorted(names)


def _eval(node: ast.AST, cols: Mapping[str, np.ndarray]):
    """Returns (value, missing mask)."""
    if isinstance(node, ast.Expression):
        return _eval(node.body, cols)
    if isinstance(node, ast.Name):
        v = np.asarray(cols[node.id], dtype=float)
        return v, ~np.isfinite(v)
    if isinstance(node, ast.Constant):
        return float(node.value), np.zeros((), dtype=bool)
    if isinstance(node, ast.UnaryOp):
        v, m = _eval(node.operand, cols)
        return (np.logical_not(v) if isinstance(node.op, ast.Not) else -np.asarray(v, dtype=float)), m
    if isinstance(node, ast.BoolOp):
        vals = [_eval(v, cols) for v in node.values]
        out, miss = vals[0]
        for v, m in vals[1:]:
            out = np.logical_and(out, v) if isinstance(node.op, ast.And) else np.logical_or(out, v)
            miss = miss | m
        return out, miss
    if isinstance(node, ast.Compare):
        left, miss = _eval(node.left, cols)
        out = True
        for op, right_node in zip(node.ops, node.comparators):
            right, m = _eval(right_node, cols)
            with np.errstate(invalid="ignore"):
                out = np.logical_and(out, _CMP[type(op)](left, right))
            miss = miss | m
            left = right
        return out, miss
    raise ConfigError(f"unsupported expression node {ast.dump(node)}")  # unreachable after _check


def evaluate_indicator(expr: str, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Evaluate ``expr`` row-wise: 1.0 where true, 0.0 where false, NaN where a used column is NaN."""
    tree, names = parse_indicator(expr)
    missing = [n for n in names if n not in columns]
    if missing:
        raise ConfigError(f"indicator expression {expr!r} uses column(s) {missing} that the table lacks; "
                          f"it has {sorted(columns)}.")
    value, miss = _eval(tree, columns)
    n = len(next(iter(columns.values())))
    value = np.broadcast_to(np.asarray(value, dtype=float), (n,))
    return np.where(np.broadcast_to(miss, (n,)), np.nan, value)
