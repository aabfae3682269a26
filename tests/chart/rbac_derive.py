"""Derive the controller's RBAC from its code: every Kubernetes API call under controller/.

The controller sends its requests through controller/kubeapi.py: each method of
`KubeApi` builds its request(s) with the HTTP method and path in the open
(`self.request("GET", PODS, ...)`, `param_serialize(method=..., resource_path=...)`),
which this module reads from the source. Any attribute elsewhere in controller/ that
names such a method -- or a method of the kubernetes client's generated API classes
(resolved from their `_<method>_serialize`) -- is a call, turned into
(apiGroup, resource[/subresource], verb) the way the API server's authorizer sees it. A
generated method name several API classes share (`create_namespaced_event`: core/v1 and
events.k8s.io/v1) resolves to the class the module names (annotation or constructor).
A `list_*` method referenced inside a ListWatcher subclass is streamed, so it is also
a `watch`. Raw calls through `param_serialize(method=..., resource_path=CONSTANT)`
outside KubeApi count too.
"""

from __future__ import annotations

import ast
import inspect
import re
from functools import cache
from pathlib import Path

from kubernetes.client import api as client_api

from controller.pool import GROUP, PLURAL

CONTROLLER = Path(__file__).resolve().parents[2] / "controller"
Atom = tuple[str, str, str]  # (apiGroup, resource, verb)

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_METHOD = re.compile(r"method='(\w+)'")
_PATH = re.compile(r"resource_path='([^']+)'")


@cache
def _client_methods() -> dict[str, dict[str, tuple[str, str]]]:
    """Every API method of the generated client -> {API class: (HTTP method, path)}."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for class_name, cls in inspect.getmembers(client_api, inspect.isclass):
        for name, _func in inspect.getmembers(cls, inspect.isfunction):
            serializer = getattr(cls, f"_{name}_serialize", None)
            if name.startswith("_") or serializer is None:
                continue
            src = inspect.getsource(serializer)
            method, path = _METHOD.search(src), _PATH.search(src)
            if method and path:
                found.setdefault(name, {})[class_name] = (method.group(1), path.group(1))
    return found


def _resolve(name: str, classes_named: set[str], where: str) -> tuple[str, str]:
    candidates = _client_methods()[name]
    if len(candidates) > 1:
        candidates = {c: v for c, v in candidates.items() if c in classes_named}
    if len(candidates) != 1:
        raise AssertionError(f"{where}: cannot tell which API class {name} belongs to "
                             f"({sorted(_client_methods()[name])}); name the class in "
                             "that module (an annotation will do)")
    return next(iter(candidates.values()))


def atom(http_method: str, path: str) -> Atom | None:
    """(group, resource, verb) of one request; None for a non-resource URL (/version)."""
    path = path.replace("{group}", GROUP).replace("{plural}", PLURAL)
    parts = [p for p in path.strip("/").split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]                       # namespaced: drop namespaces/{namespace}
    resource, named, sub = rest[0], len(rest) > 1, rest[2] if len(rest) > 2 else ""
    if http_method == "GET":
        verb = "get" if named else "list"
    elif http_method == "DELETE" and not named:
        verb = "deletecollection"
    else:
        verb = _VERBS[http_method]
    return group, f"{resource}/{sub}" if sub else resource, verb


def _watchers(tree: ast.Module) -> list[ast.ClassDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id == "ListWatcher" for b in node.bases)]


def _constants(tree: ast.Module) -> dict[str, str]:
    return {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


_HTTP = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _kubeapi_methods() -> dict[str, list[tuple[str, str]]]:
    """KubeApi method -> the (HTTP method, path) of each request it builds."""
    source = CONTROLLER / "kubeapi.py"
    tree = ast.parse(source.read_text(), str(source))
    constants = _constants(tree)
    found: dict[str, list[tuple[str, str]]] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KubeApi"):
        for func in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            for call in (n for n in ast.walk(func) if isinstance(n, ast.Call)):
                args = list(call.args)
                kw = {k.arg: k.value for k in call.keywords}
                method, path = (args[0], args[1]) if len(args) >= 2 else (
                    kw.get("method"), kw.get("resource_path"))
                if (isinstance(method, ast.Constant) and method.value in _HTTP
                        and isinstance(path, ast.Name) and path.id in constants):
                    found.setdefault(func.name, []).append(
                        (str(method.value), constants[path.id]))
    return found


def derived_calls() -> dict[Atom, set[str]]:
    """Every (group, resource, verb) the controller's code requests, with where."""
    methods = _client_methods()
    own = _kubeapi_methods()
    calls: dict[Atom, set[str]] = {}

    def add(found: Atom | None, where: str) -> None:
        if found is not None:
            calls.setdefault(found, set()).add(where)

    for source in sorted(CONTROLLER.rglob("*.py")):
        if source.name == "kubeapi.py":  # the definitions; their uses are the calls
            continue
        tree = ast.parse(source.read_text(), str(source))
        where = str(source.relative_to(CONTROLLER.parent))
        streamed = {id(n) for cls in _watchers(tree) for n in ast.walk(cls)}
        constants = _constants(tree)
        classes_named = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                         and n.attr.endswith("Api")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in own:
                for http_method, path in own[node.attr]:
                    add(atom(http_method, path), f"{where}:{node.lineno} {node.attr}")
                    if id(node) in streamed and node.attr.startswith("list_"):
                        found = atom(http_method, path)
                        add(found and (found[0], found[1], "watch"),
                            f"{where}:{node.lineno} watch {node.attr}")
            elif isinstance(node, ast.Attribute) and node.attr in methods:
                http_method, path = _resolve(node.attr, classes_named,
                                             f"{where}:{node.lineno}")
                add(atom(http_method, path), f"{where}:{node.lineno} {node.attr}")
                if id(node) in streamed and node.attr.startswith("list_"):
                    add(atom("GET", path) and (*atom("GET", path)[:2], "watch"),  # type: ignore[index]
                        f"{where}:{node.lineno} watch {node.attr}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "param_serialize"):
                kw = {k.arg: k.value for k in node.keywords}
                method, path = kw.get("method"), kw.get("resource_path")
                if isinstance(method, ast.Constant) and isinstance(path, ast.Name):
                    add(atom(str(method.value), constants[path.id]),
                        f"{where}:{node.lineno} param_serialize")
    return calls
