"""Each DIMSE handler's docstring lists exactly the statuses its code can answer.

The codes are read from the code itself, by walking its syntax tree: what the
handler returns or yields, what it and the functions it calls pass to the final
and pending responses (``call.final``, ``call.pending``, ``PendingSender``),
the statuses of the exceptions it raises for an answer (``BadRequest``), the
outcome table of dicom/status.py behind ``store_status``, and what the service
that calls the handler answers when it raises. An expression the walk cannot
resolve to constants fails the test: a new way of answering must be taught here,
not silently missed. docs/conformance.md is checked against the same docstrings
by tests/test_conformance*.py, so code, docstring and document agree.
"""
from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
from pathlib import Path

import pytest

from dsmpacs.dicom import commitment, echo, find, get, move, mpps, retrieve_service, store, worklist
from dsmpacs.dicom.engine.store_service import FastStorageServiceClass
from dsmpacs.dicom.status import STORE_STATUS

SUCCESS = 0x0000


class Unresolved(AssertionError):
    pass


def tree_of(func) -> ast.FunctionDef:
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(func)))
    node = ast.parse(source).body[0]
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)), func
    return node


def own_nodes(fn: ast.FunctionDef):
    """The nodes of ``fn`` without those of functions nested in it."""
    stack = list(fn.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


class Walk:
    """The status codes reachable from one function and the module functions it calls."""

    def __init__(self, func):
        self.func = inspect.unwrap(func)
        self.fn = tree_of(self.func)
        self.globals = self.func.__globals__

    def callees(self) -> list["Walk"]:
        """Plain functions of the dsmpacs.dicom package that this one calls by name."""
        out = []
        for node in own_nodes(self.fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                target = self.globals.get(node.func.id)
                if isinstance(target, types.FunctionType) and \
                        target.__module__.startswith("dsmpacs.dicom") and target is not self.func:
                    out.append(Walk(target))
        return out

    def closure(self) -> list["Walk"]:
        seen, todo, out = set(), [self], []
        while todo:
            walk = todo.pop()
            if walk.func in seen:
                continue
            seen.add(walk.func)
            out.append(walk)
            todo.extend(walk.callees())
        return out

    def where(self, node: ast.AST) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}: {ast.unparse(node)}"

    def codes(self, expr: ast.AST) -> set[int]:
        """The status codes an expression can evaluate to."""
        if isinstance(expr, ast.Tuple):              # (status, dataset) as pynetdicom takes it
            return self.codes(expr.elts[0])
        if isinstance(expr, ast.Constant) and isinstance(expr.value, int):
            return {expr.value}
        if isinstance(expr, ast.IfExp):
            return self.codes(expr.body) | self.codes(expr.orelse)
        if isinstance(expr, ast.Name):
            local = [n.value for n in own_nodes(self.fn) if isinstance(n, ast.Assign)
                     and any(isinstance(t, ast.Name) and t.id == expr.id for t in n.targets)]
            if local:
                return set().union(*(self.codes(value) for value in local))
            value = self.globals.get(expr.id)
            if isinstance(value, int) and not isinstance(value, bool):
                return {value}
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
            if expr.func.id == "status_dataset":
                return self.codes(expr.args[0])
            if expr.func.id == "store_status":
                return set(STORE_STATUS.values())
        if isinstance(expr, ast.Attribute) and expr.attr == "status":   # except BadRequest as exc
            return raised_statuses(self)
        raise Unresolved(f"cannot tell which status this is: {self.where(expr)}")

    def answered(self) -> set[int]:
        """What the handler itself returns or yields as its status."""
        out = set()
        for node in own_nodes(self.fn):
            if isinstance(node, (ast.Return, ast.Yield)) and node.value is not None:
                out |= self.codes(node.value)
        if any(isinstance(n, ast.Yield) for n in own_nodes(self.fn)):
            out.add(SUCCESS)       # pynetdicom answers Success when a C-FIND generator ends
        return out

    def responses(self) -> set[int]:
        """Statuses sent through response helpers, here or in any function called."""
        out = set()
        for walk in self.closure():
            for node in own_nodes(walk.fn):
                if not isinstance(node, ast.Call):
                    continue
                name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                    getattr(node.func, "id", "")
                if name == "final":
                    out |= walk.codes(node.args[0])
                elif name == "pending":
                    out.add(walk.globals["PENDING"])
                elif name == "PendingSender":
                    out |= walk.codes(node.args[3])
        return out

    def on_exception(self) -> set[int]:
        """What a service answers in its except clauses (the handler raised)."""
        out = set()
        for node in own_nodes(self.fn):
            if isinstance(node, ast.ExceptHandler):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Call) and getattr(inner.func, "attr", "") == "final":
                        out |= self.codes(inner.args[0])
                    elif isinstance(inner, ast.Assign):
                        out |= self.codes(inner.value)
        return out


def raised_statuses(walk: Walk) -> set[int]:
    """The first argument of every ``BadRequest(...)`` raised below the handler."""
    out = set()
    for w in walk.closure():
        for node in own_nodes(w.fn):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                    getattr(node.exc.func, "id", "") == "BadRequest":
                out |= w.codes(node.exc.args[0])
    return out


def code_statuses(handler, service=None) -> set[int]:
    walk = Walk(handler)
    found = walk.answered() | walk.responses()
    if service is not None:
        found |= Walk(service).on_exception()
    return found


def docstring_statuses(handler) -> set[int]:
    doc = inspect.unwrap(handler).__doc__
    assert "Statuses:" in doc, handler
    return {int(code, 16) for code in re.findall(r"0x([0-9A-F]{4})\b", doc[doc.index("Statuses:"):])}


HANDLERS = {
    "C-ECHO": (echo.handle_echo, None),
    "C-STORE": (store.handle_store, FastStorageServiceClass.SCP),
    "C-FIND": (find.handle_find, None),
    "C-MOVE": (move.handle_move, retrieve_service.serve),
    "C-GET": (get.handle_get, retrieve_service.serve),
    "N-ACTION": (commitment.handle_n_action, None),
    "MWL C-FIND": (worklist.handle_worklist, None),
    "MPPS N-CREATE": (mpps.handle_n_create, None),
    "MPPS N-SET": (mpps.handle_n_set, None),
}


@pytest.mark.parametrize("service", HANDLERS)
def test_docstring_lists_exactly_the_statuses_the_code_answers(service):
    handler, wrapper = HANDLERS[service]
    in_code, in_doc = code_statuses(handler, wrapper), docstring_statuses(handler)
    fmt = lambda codes: sorted(f"0x{c:04X}" for c in codes)     # noqa: E731
    assert in_code == in_doc, f"{service}: code answers {fmt(in_code - in_doc)} not in the docstring; " \
                              f"docstring lists {fmt(in_doc - in_code)} the code never answers"


def test_the_walk_sees_a_status_added_to_a_handler():
    """The walk is not vacuous: a handler that gains a status shows it."""
    def handler(event):
        """Statuses: 0x0000 Success."""
        if event:
            return 0xA7FF, None
        return SUCCESS

    assert code_statuses(handler) == {SUCCESS, 0xA7FF} != docstring_statuses(handler)

    def opaque(event):
        return event.compute_status()

    with pytest.raises(Unresolved):
        code_statuses(opaque)


def test_conformance_statement_lists_the_echo_and_store_statuses():
    """(C-FIND, C-MOVE, C-GET and N-ACTION: tests/test_conformance*.py.)"""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "conformance.md").read_text()
    store_section = doc[doc.index("## 3. Storage SCP"):doc.index("## 4. ")]
    echo_section = doc[doc.index("## 2. Verification SCP"):doc.index("## 3. ")]
    table = {int(code, 16) for code in re.findall(r"^\| 0x([0-9A-F]{4}) \|", store_section, re.M)}
    assert table == docstring_statuses(store.handle_store)
    assert {int(c, 16) for c in re.findall(r"0x([0-9A-F]{4})", echo_section)} == \
        docstring_statuses(echo.handle_echo)
