"""The ``.pyi`` stubs of the compiled modules must match the compiled modules and their twins.

For ``_frame`` and ``_window`` this compares, in both directions: the public names of the stub
(parsed with :mod:`ast`), of the compiled module and of the pure-Python twin; the public
members of each class and whether each is a property or a method; and every function's and
method's parameters (names, kinds, literal defaults, annotations) between the stub and the
twin. The compiled parts carry the ``c_extension`` marker. Stub drift fails the suite.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import types
from pathlib import Path
from typing import Any

import pytest

import mio
import mio.errors
import mio.wire

MODULES = ("_frame", "_window")
PACKAGE_DIR = Path(mio.__file__).parent

compiled = pytest.mark.c_extension


# --------------------------------------------------------------------------------------------
# The stub, as parsed with ast.


@dataclasses.dataclass(frozen=True)
class StubParam:
    name: str
    kind: object  # an inspect.Parameter kind
    annotation: str | None
    default: Any  # inspect.Parameter.empty, Ellipsis, or a literal value


@dataclasses.dataclass(frozen=True)
class StubFunc:
    name: str
    params: tuple[StubParam, ...]
    returns: str | None
    is_property: bool


@dataclasses.dataclass
class Stub:
    all: tuple[str, ...] | None
    constants: dict[str, str]  # name -> annotation
    functions: dict[str, StubFunc]
    classes: dict[str, dict[str, StubFunc]]  # class -> member -> function


def _norm(annotation: str | None) -> str | None:
    """Normalise an annotation's text so that spacing and quoting do not matter."""
    if annotation is None:
        return None
    return ast.unparse(ast.parse(annotation, mode="eval"))


def _stub_func(node: ast.FunctionDef) -> StubFunc:
    args = node.args
    params: list[StubParam] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[Any] = [inspect.Parameter.empty] * (len(positional) - len(args.defaults))
    defaults += [ast.literal_eval(d) for d in args.defaults]
    for i, arg in enumerate(positional):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if i < len(args.posonlyargs)
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        params.append(StubParam(arg.arg, kind, _annotation(arg), defaults[i]))
    if args.vararg is not None:
        params.append(
            StubParam(
                args.vararg.arg,
                inspect.Parameter.VAR_POSITIONAL,
                _annotation(args.vararg),
                inspect.Parameter.empty,
            )
        )
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        value = inspect.Parameter.empty if default is None else ast.literal_eval(default)
        params.append(StubParam(arg.arg, inspect.Parameter.KEYWORD_ONLY, _annotation(arg), value))
    if args.kwarg is not None:
        params.append(
            StubParam(
                args.kwarg.arg,
                inspect.Parameter.VAR_KEYWORD,
                _annotation(args.kwarg),
                inspect.Parameter.empty,
            )
        )
    is_property = any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)
    returns = ast.unparse(node.returns) if node.returns is not None else None
    return StubFunc(node.name, tuple(params), _norm(returns), is_property)


def _annotation(arg: ast.arg) -> str | None:
    return _norm(ast.unparse(arg.annotation)) if arg.annotation is not None else None


def parse_stub(name: str) -> Stub:
    tree = ast.parse((PACKAGE_DIR / f"{name}.pyi").read_text(encoding="utf-8"))
    stub = Stub(all=None, constants={}, functions={}, classes={})
    for node in tree.body:
        if isinstance(node, ast.Assign):
            (target,) = node.targets
            assert isinstance(target, ast.Name)
            if target.id == "__all__":
                stub.all = tuple(ast.literal_eval(node.value))
            else:
                stub.constants[target.id] = "Any"
        elif isinstance(node, ast.AnnAssign):
            assert isinstance(node.target, ast.Name)
            stub.constants[node.target.id] = ast.unparse(node.annotation)
        elif isinstance(node, ast.FunctionDef):
            stub.functions[node.name] = _stub_func(node)
        elif isinstance(node, ast.ClassDef):
            members: dict[str, StubFunc] = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members[item.name] = _stub_func(item)
                elif not (isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant)):
                    raise AssertionError(f"{name}.pyi: unexpected {ast.dump(item)} in a class")
            stub.classes[node.name] = members
        elif not isinstance(node, (ast.Import, ast.ImportFrom)):
            raise AssertionError(f"{name}.pyi: unexpected top-level {ast.dump(node)}")
    return stub


def stub_public(stub: Stub) -> set[str]:
    names = {*stub.constants, *stub.functions, *stub.classes}
    return {n for n in names if not n.startswith("_")}


# --------------------------------------------------------------------------------------------
# The runtime modules.


def twin(name: str) -> types.ModuleType:
    return importlib.import_module(f"mio.{name}_py")


def compiled_module(name: str) -> types.ModuleType:
    return importlib.import_module(f"mio.{name}")


def runtime_public(module: types.ModuleType) -> set[str]:
    """Public names a module defines itself (not those it imports from mio.wire/mio.errors)."""
    names = set()
    for n, value in vars(module).items():
        if n.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if value is getattr(mio.wire, n, object()) or value is getattr(mio.errors, n, object()):
            continue
        if getattr(value, "__module__", module.__name__) not in (module.__name__, "builtins"):
            continue  # e.g. typing.Any or collections.abc.Callable imported for annotations
        names.add(n)
    return names


def class_public(cls: type) -> dict[str, str]:
    """Public members of ``cls`` (not inherited from object) mapped to "property"/"method"."""
    members = {}
    for n in dir(cls):
        if n.startswith("_") or hasattr(object, n):
            continue
        attr = inspect.getattr_static(cls, n)
        members[n] = "property" if inspect.isdatadescriptor(attr) else "method"
    return members


def stub_class_public(members: dict[str, StubFunc]) -> dict[str, str]:
    return {
        n: "property" if f.is_property else "method"
        for n, f in members.items()
        if not n.startswith("_")
    }


def cases() -> list[tuple[str, str]]:
    """(module, qualified name) of every function and method of every stub."""
    out = []
    for name in MODULES:
        stub = parse_stub(name)
        out += [(name, f) for f in stub.functions]
        for cls, members in stub.classes.items():
            out += [(name, f"{cls}.{m}") for m, f in members.items() if not f.is_property]
    return out


def stub_func(name: str, qualname: str) -> StubFunc:
    stub = parse_stub(name)
    if "." in qualname:
        cls, member = qualname.split(".")
        return stub.classes[cls][member]
    return stub.functions[qualname]


def resolve(module: types.ModuleType, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------------------------
# Names.


@pytest.mark.parametrize("name", MODULES)
def test_stub_parses_and_declares_all(name: str) -> None:
    stub = parse_stub(name)
    assert stub.all is not None, f"{name}.pyi declares no __all__"
    assert len(stub.all) == len(set(stub.all)), "duplicate names in __all__"
    assert set(stub.all) == stub_public(stub)


@pytest.mark.parametrize("name", MODULES)
def test_twin_public_names_match_stub(name: str) -> None:
    stub = parse_stub(name)
    module = twin(name)
    assert runtime_public(module) == stub_public(stub)
    assert set(module.__all__) == stub_public(stub)


@compiled
@pytest.mark.parametrize("name", MODULES)
def test_compiled_public_names_match_stub(name: str) -> None:
    stub = parse_stub(name)
    module = compiled_module(name)
    assert runtime_public(module) == stub_public(stub)
    assert set(module.__all__) == stub_public(stub)


@pytest.mark.parametrize("name", MODULES)
def test_twin_class_members_match_stub(name: str) -> None:
    stub = parse_stub(name)
    module = twin(name)
    for cls, members in stub.classes.items():
        assert class_public(getattr(module, cls)) == stub_class_public(members), cls


@compiled
@pytest.mark.parametrize("name", MODULES)
def test_compiled_class_members_match_stub(name: str) -> None:
    stub = parse_stub(name)
    module = compiled_module(name)
    for cls, members in stub.classes.items():
        assert class_public(getattr(module, cls)) == stub_class_public(members), cls


@pytest.mark.parametrize("name", MODULES)
def test_stub_constants_are_ints_in_twin(name: str) -> None:
    stub = parse_stub(name)
    module = twin(name)
    for const, annotation in stub.constants.items():
        assert annotation == "int", const
        assert type(getattr(module, const)) is int, const


@compiled
@pytest.mark.parametrize("name", MODULES)
def test_stub_constants_have_twin_values_in_compiled(name: str) -> None:
    stub = parse_stub(name)
    for const in stub.constants:
        value = getattr(compiled_module(name), const)
        assert type(value) is int, const
        assert value == getattr(twin(name), const), const


def test_frame_kinds_match_wire() -> None:
    stub = parse_stub("_frame")
    kinds = {c for c in stub.constants if c.startswith("KIND_")}
    assert kinds == {f"KIND_{k.name}" for k in mio.wire.FrameKind}
    for kind in mio.wire.FrameKind:
        assert getattr(twin("_frame"), f"KIND_{kind.name}") == kind.value


# --------------------------------------------------------------------------------------------
# Signatures.


@pytest.mark.parametrize(("name", "qualname"), cases())
def test_twin_signature_matches_stub(name: str, qualname: str) -> None:
    expected = stub_func(name, qualname)
    # The twin uses ``from __future__ import annotations``: its annotations are strings.
    sig = inspect.signature(resolve(twin(name), qualname))
    params = list(sig.parameters.values())
    assert [p.name for p in params] == [p.name for p in expected.params]
    for actual, want in zip(params, expected.params, strict=True):
        assert actual.kind == want.kind, actual.name
        if want.default is not Ellipsis:
            assert actual.default == want.default, actual.name
        if want.name == "self":
            continue
        assert want.annotation is not None, f"stub parameter {want.name} has no annotation"
        assert _norm(actual.annotation) == want.annotation, actual.name
    assert expected.returns is not None, "stub function has no return annotation"
    assert _norm(sig.return_annotation) == expected.returns


@pytest.mark.parametrize("name", MODULES)
def test_twin_property_types_match_stub(name: str) -> None:
    stub = parse_stub(name)
    for cls, members in stub.classes.items():
        for member, func in members.items():
            if not func.is_property:
                continue
            prop = inspect.getattr_static(getattr(twin(name), cls), member)
            assert isinstance(prop, property), f"{cls}.{member}"
            assert [p.name for p in func.params] == ["self"]
            assert prop.fget is not None
            annotation = prop.fget.__annotations__["return"]
            assert _norm(annotation) == func.returns, f"{cls}.{member}"


def _compiled_param_names(obj: Any, qualname: str) -> list[str] | None:
    """Parameter names of a compiled function; for ``__init__``, from the embedded signature."""
    if not qualname.endswith(".__init__"):
        return list(inspect.signature(obj).parameters)
    cls = obj.__objclass__
    first_line = (cls.__doc__ or "").split("\n", 1)[0]
    if not first_line.startswith(f"{cls.__name__}("):
        return None  # built without embedsignature: nothing to compare
    fake = f"def f{first_line[len(cls.__name__) :]}: pass"
    func = ast.parse(fake).body[0]
    assert isinstance(func, ast.FunctionDef)
    return ["self", *(a.arg for a in func.args.args)]


@compiled
@pytest.mark.parametrize(("name", "qualname"), cases())
def test_compiled_signature_matches_stub(name: str, qualname: str) -> None:
    expected = stub_func(name, qualname)
    names = _compiled_param_names(resolve(compiled_module(name), qualname), qualname)
    if names is None:
        pytest.skip("compiled without embedsignature")
    assert names == [p.name for p in expected.params]
    if not qualname.endswith(".__init__"):
        sig = inspect.signature(resolve(compiled_module(name), qualname))
        for actual, want in zip(sig.parameters.values(), expected.params, strict=True):
            if want.default is not Ellipsis:
                assert actual.default == want.default, actual.name
