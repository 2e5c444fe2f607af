"""The extension's stubs (python/difflog/_native.pyi) against the extension
itself (issue 31): every class, function, method, property and constant the
built `difflog._native` has is in the stubs and the other way round, with
the same parameter names, order, defaults present, and kinds (method,
static method, property). mypy checks the package against the stubs; this
checks the stubs against what pyo3 really built, so the two cannot drift.
"""

import ast
import inspect
import os
import unittest

import difflog._native as native

# The stubs as they are in the source tree (the installed copy is made from them).
STUBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python", "difflog", "_native.pyi")


def _params(args: ast.arguments, drop_first: bool):
    """(name, has default) of each parameter of a stub's def."""
    pos = args.posonlyargs + args.args
    defaults = [False] * (len(pos) - len(args.defaults)) + [True] * len(args.defaults)
    out = [(a.arg, d) for a, d in zip(pos, defaults)]
    out += [(a.arg, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return out[1:] if drop_first else out


def stub_api():
    """What the stubs declare: {name: ("function", params) | ("class", {member: (kind, params)}) | ("value", None)}."""
    with open(STUBS, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    api = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            api[node.name] = ("function", _params(node.args, False))
        elif isinstance(node, ast.ClassDef):
            members = {}
            for item in node.body:
                if not isinstance(item, ast.FunctionDef):
                    continue
                decorators = {d.id for d in item.decorator_list if isinstance(d, ast.Name)}
                if "property" in decorators:
                    members[item.name] = ("property", None)
                elif "staticmethod" in decorators:
                    members[item.name] = ("staticmethod", _params(item.args, False))
                else:
                    members[item.name] = ("method", _params(item.args, True))
            api[node.name] = ("class", members)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            api[node.target.id] = ("value", None)
    return api


def _signature(obj, drop_first: bool):
    sig = inspect.signature(obj)
    out = [(p.name, p.default is not inspect.Parameter.empty) for p in sig.parameters.values()]
    return out[1:] if drop_first and out and out[0][0] in ("self", "$self") else out


def runtime_api():
    """What the built extension has, in the same shape."""
    api = {}
    for name, obj in vars(native).items():
        if name.startswith("__") and name != "__version__":
            continue
        if isinstance(obj, type):
            if issubclass(obj, BaseException):
                api[name] = ("class", {})
                continue
            members = {}
            if obj.__text_signature__:
                members["__init__"] = ("method", _signature(obj, False))
            for m, v in vars(obj).items():
                if m.startswith("__"):
                    continue
                if inspect.isdatadescriptor(v):
                    members[m] = ("property", None)
                elif isinstance(v, staticmethod) or type(v).__name__ == "builtin_function_or_method":
                    members[m] = ("staticmethod", _signature(getattr(obj, m), False))
                else:
                    members[m] = ("method", _signature(v, True))
            api[name] = ("class", members)
        elif callable(obj):
            api[name] = ("function", _signature(obj, False))
        else:
            api[name] = ("value", None)
    return api


class Stubs(unittest.TestCase):
    def test_the_stubs_say_what_the_extension_is(self):
        stubs, real = stub_api(), runtime_api()
        # The stubs' own alias (Cell) is a typing construct, not in the module.
        stubs.pop("Cell", None)
        self.assertEqual(sorted(stubs), sorted(real), "names in the stubs vs the extension")
        for name, (kind, detail) in real.items():
            with self.subTest(name=name):
                self.assertEqual(stubs[name][0], kind, f"{name}: a {kind} in the extension")
                if kind == "function":
                    self.assertEqual(stubs[name][1], detail, f"{name}'s parameters")
                if kind == "class" and detail:
                    self.assertEqual(sorted(stubs[name][1]), sorted(detail), f"{name}'s members")
                    for m, (mk, params) in detail.items():
                        self.assertEqual(stubs[name][1][m][0], mk, f"{name}.{m}: a {mk} in the extension")
                        self.assertEqual(stubs[name][1][m][1], params, f"{name}.{m}'s parameters")

    def test_the_checker_sees_a_difference(self):
        # The comparison itself: a stub with a renamed parameter differs.
        real = runtime_api()
        kind, members = real["Recorder"]
        self.assertEqual(kind, "class")
        self.assertIn(("seeds", False), members["begin_call"][1])
        self.assertEqual(members["run_id"][0], "property")
        self.assertEqual(real["read_call"], ("function", [("run_dir", False), ("call", False)]))


if __name__ == "__main__":
    unittest.main()
