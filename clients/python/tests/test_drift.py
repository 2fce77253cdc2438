"""The client against the API document, `crates/paddock/openapi.json`: every operation
(method + path) has a method on `Client` and on `AsyncClient` taking its parameters, and
every schema has a Python type whose fields (names, and which are required) are the
schema's properties, whose enums have the same values, whose unions the same variants.
A change of the API that the client does not follow fails here. No daemon needed."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import typing

import pytest

from paddock_client import OPERATIONS, AsyncClient, Client
from paddock_client import models as m

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DOC_PATH = os.environ.get("PADDOCK_OPENAPI", os.path.join(REPO, "crates", "paddock", "openapi.json"))

with open(DOC_PATH, encoding="utf-8") as _f:
    DOC = json.load(_f)
SCHEMAS = DOC["components"]["schemas"]

# Every component schema: the client type that models it.
MODELS: dict[str, object] = {
    # answers
    "DrainFailure": m.DrainFailure, "DrainReport": m.DrainReport, "ErrorBody": m.ErrorBody,
    "EventsGone": m.EventsGone, "EventStreamItem": m.EventStreamItem, "JailStatus": m.JailStatus,
    "KilledProcess": m.KilledProcess, "Lagged": m.Lagged, "MainExit": m.MainExit,
    "NetStatus": m.NetStatus, "NodeCgroup": m.NodeCgroup, "NodeInfo": m.NodeInfo,
    "NodeMemory": m.NodeMemory, "NodeResources": m.NodeResources,
    "PendingRestart": m.PendingRestart, "PsiLine": m.PsiLine, "PsiStats": m.PsiStats,
    "SandboxCounts": m.SandboxCounts, "SandboxInfo": m.SandboxInfo,
    "SandboxPressure": m.SandboxPressure, "SandboxStats": m.SandboxStats,
    "StatusBody": m.StatusBody, "StopReport": m.StopReport, "StuckProcess": m.StuckProcess,
    "UndrainReport": m.UndrainReport,
    # requests
    "CreateRequest": m.CreateRequest, "DrainRequest": m.DrainRequest,
    "FilesystemSpec": m.FilesystemSpec, "IdMapSpec": m.IdMapSpec,
    "IoDeviceLimit": m.IoDeviceLimit, "JailSpec": m.JailSpec, "LandlockSpec": m.LandlockSpec,
    "Limits": m.Limits, "LimitsUpdate": m.LimitsUpdate, "NamedRlimit": m.NamedRlimit,
    "PrivilegesSpec": m.PrivilegesSpec, "PublishSpec": m.PublishSpec,
    "RestartPolicy": m.RestartPolicy, "RlimitRange": m.RlimitRange,
    "SandboxSpec": m.SandboxSpec, "StdioSpec": m.StdioSpec, "StopPolicy": m.StopPolicy,
    "TapSpec": m.TapSpec, "UpdateRequest": m.UpdateRequest, "UserNsSpec": m.UserNsSpec,
    "UserSpec": m.UserSpec,
    # enums
    "CgroupFsSpec": m.CgroupFsSpec, "LandlockModeSpec": m.LandlockModeSpec,
    "OnMainExit": m.OnMainExit, "Protocol": m.Protocol, "RestartMode": m.RestartMode,
    "SeccompBuiltin": m.SeccompBuiltin, "State": m.State, "StopReason": m.StopReason,
    "UnlimitedWord": m.UnlimitedWord,
    # unions
    "EventKind": m.EventKind, "MountSpec": m.MountSpec, "Network": m.Network,
    "SeccompSpec": m.SeccompSpec, "IdOrName": m.IdOrName, "LimitValue": m.LimitValue,
    "RlimitsSpec": m.RlimitsSpec,
    # events: the common fields (each kind's own are checked with EventKind)
    "Event": m.Event, "SequencedEvent": m.SequencedEvent,
    # strings and lists
    "Duration": m.Duration, "LifecycleId": m.LifecycleId, "SandboxId": m.SandboxId,
    "LabelSelectors": m.LabelSelectors,
}


def resolve(s: dict) -> dict:
    while "$ref" in s:
        s = SCHEMAS[s["$ref"].rsplit("/", 1)[1]]
    return s


def is_typeddict(tp: object) -> bool:
    return isinstance(tp, type) and hasattr(tp, "__required_keys__")


def py_fields(tp: type) -> tuple[set[str], set[str]]:
    """(every JSON key, the required ones) of a dataclass or TypedDict."""
    if is_typeddict(tp):
        return set(tp.__required_keys__ | tp.__optional_keys__), set(tp.__required_keys__)
    assert dataclasses.is_dataclass(tp), tp
    keys, required = set(), set()
    for f in dataclasses.fields(tp):
        keys.add(f.name)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.add(f.name)
    return keys, required


def check_object(name: str, schema: dict, tp: object, base: set[str] = frozenset()) -> None:
    props = set(schema.get("properties", {}))
    required = set(schema.get("required", []))
    keys, req = py_fields(tp)
    keys -= base
    req -= base
    assert keys == props, (
        f"{name}: the document's properties and {tp.__name__}'s fields differ: "
        f"only in the document {sorted(props - keys)}, only in the client {sorted(keys - props)}"
    )
    if name.startswith("EventKind"):
        return  # subclasses of Event need defaults; the kind's fields are all sent
    assert req == required, (
        f"{name}: required in the document {sorted(required)}, in {tp.__name__} {sorted(req)}"
    )


def union_members(tp: object) -> list:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        out = []
        for a in typing.get_args(tp):
            out += union_members(a)
        return out
    return [tp]


def literal_values(tp: object) -> set:
    vals: set = set()
    for member in union_members(tp):
        if typing.get_origin(member) is typing.Literal:
            vals |= set(typing.get_args(member))
    return vals


def tag_of(tp: type) -> str:
    if hasattr(tp, "TYPE"):
        return tp.TYPE
    t = typing.get_type_hints(tp)["type"]
    while typing.get_origin(t) is not typing.Literal:  # Required[...] on 3.10
        t = typing.get_args(t)[0]
    return typing.get_args(t)[0]


def test_every_schema_is_modelled():
    missing = sorted(set(SCHEMAS) - set(MODELS))
    assert not missing, f"schemas of the document without a client type: {missing}"
    gone = sorted(set(MODELS) - set(SCHEMAS))
    assert not gone, f"client types of schemas the document no longer has: {gone}"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_matches_client_type(name):
    schema = SCHEMAS[name]
    tp = MODELS[name]
    if "properties" in schema:
        check_object(name, schema, tp)
    elif "enum" in schema:
        assert literal_values(tp) == set(schema["enum"]), name
    elif name in ("Event", "SequencedEvent"):
        parts = [resolve(p) for p in schema["allOf"]]
        props: dict = {}
        required: list = []

        def add(part: dict) -> None:
            # the parts are one JSON object: a key in two of them would be in it twice
            again = set(part["properties"]) & set(props)
            assert not again, f"{name}: {sorted(again)} in two parts of its allOf"
            props.update(part["properties"])
            required.extend(part.get("required", []))

        for p in parts:
            if "properties" in p:
                add(p)
            elif "allOf" in p:  # SequencedEvent: Event's own part
                for q in p["allOf"]:
                    q = resolve(q)
                    if "properties" in q:
                        add(q)
        props["type"] = {}  # the kind's tag, a field of every event here
        required.append("type")
        if name == "Event":
            props.pop("seq", None)
            check_object(name, {"properties": props, "required": required}, m.Event, base={"seq"})
        else:
            check_object(name, {"properties": props, "required": required}, m.Event)
    elif name == "EventKind":
        variants = {v["properties"]["type"]["enum"][0]: v for v in schema["oneOf"]}
        assert set(variants) == set(m.EVENT_TYPES), (
            f"event types: only in the document {sorted(set(variants) - set(m.EVENT_TYPES))}, "
            f"only in the client {sorted(set(m.EVENT_TYPES) - set(variants))}"
        )
        assert {tag_of(c) for c in union_members(m.EventKind)} == set(variants)
        base, _ = py_fields(m.Event)  # seq, id, lifecycle, at_ms, type
        for tag, v in variants.items():
            props = set(v["properties"]) - {"type"}
            # A kind's keys are flattened into the event's object: one the event has too
            # would be in it twice.
            assert not props & base, f"event {tag}: {sorted(props & base)} are the event's own keys too"
            cls = m.EVENT_TYPES[tag]
            keys, _ = py_fields(cls)
            own = keys - base
            assert own == props, f"event {tag}: document {sorted(props)}, client {sorted(own)}"
        # the stream's `event:` names are the kinds and `lagged`
        names = set(SCHEMAS["EventStreamItem"]["properties"]["event"]["enum"])
        assert names == set(variants) | {"lagged"}
    elif name == "MountSpec":
        variants = {v["properties"]["type"]["enum"][0]: v for v in schema["oneOf"]}
        members = {tag_of(t): t for t in union_members(m.MountSpec)}
        assert set(members) == set(variants)
        for tag, v in variants.items():
            check_object(f"MountSpec[{tag}]", v, members[tag])
    elif name == "Network":
        words, named, veth = schema["oneOf"]
        assert literal_values(m.Network) == set(words["enum"])
        check_object("Network[named]", named, m.NamedNetwork)
        check_object("Network[veth]", veth, m.VethNetwork)
        check_object("Network[veth].veth", veth["properties"]["veth"], m.VethSpec)
    elif name == "SeccompSpec":
        builtin, profile = schema["oneOf"]
        check_object("SeccompSpec[profile]", profile, m.SeccompProfile)
        check_object("SeccompSpec[profile].syscalls", profile["properties"]["syscalls"]["items"], m.SeccompRule)
        assert literal_values(m.SeccompSpec) == set(resolve(builtin)["enum"])
    elif name == "IdOrName":
        assert [v["type"] for v in schema["oneOf"]] == ["integer", "string"]
        assert set(typing.get_args(m.IdOrName)) == {int, str}
    elif name == "LimitValue":
        kinds = [v.get("type") or resolve(v)["enum"] for v in schema["oneOf"]]
        assert kinds[0] == "integer" and int in typing.get_args(m.LimitValue)
        assert literal_values(m.LimitValue) == set(kinds[1])
    elif name == "RlimitsSpec":
        by_name, listed = schema["oneOf"]
        assert resolve(by_name["additionalProperties"]) is SCHEMAS["RlimitRange"]
        assert resolve(listed["items"]) is SCHEMAS["NamedRlimit"]
        by_name_t, listed_t = typing.get_args(m.RlimitsSpec)
        assert typing.get_args(by_name_t) == (str, m.RlimitRange)
        assert typing.get_args(listed_t) == (m.NamedRlimit,)
    elif name in ("Duration", "LifecycleId", "SandboxId"):
        assert schema["type"] == "string" and tp is str
    elif name == "LabelSelectors":
        assert schema["type"] == "array" and schema["items"]["type"] == "string"
    else:
        pytest.fail(f"{name}: no rule to compare this schema with {tp!r}")


def test_stdio_targets():
    # the inline `{"file": PATH}` objects of StdioSpec
    for stream, spec in SCHEMAS["StdioSpec"]["properties"].items():
        words, obj = spec["oneOf"]
        check_object(f"StdioSpec.{stream}[file]", obj, m.FileTarget)
        hint = typing.get_type_hints(m.StdioSpec)[stream]
        assert literal_values(hint) == set(words["enum"]), stream


def operations():
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method.upper(), path, op


# A parameter's name in Python where it differs.
PY_PARAM = {"Last-Event-ID": "last_event_id"}


def test_every_operation_has_a_method():
    doc_ops = {(meth, path) for meth, path, _ in operations()}
    missing = sorted(doc_ops - set(OPERATIONS))
    assert not missing, f"operations of the document without a client method: {missing}"
    extra = sorted(set(OPERATIONS) - doc_ops)
    assert not extra, f"client methods of operations the document no longer has: {extra}"


@pytest.mark.parametrize("method,path", sorted((a, b) for a, b, _ in operations()))
def test_method_takes_the_operations_parameters(method, path):
    op = next(o for a, b, o in operations() if (a, b) == (method, path))
    name = OPERATIONS[(method, path)]
    assert name == op["operationId"], f"{method} {path}: method {name}, operationId {op['operationId']}"
    for cls in (Client, AsyncClient):
        fn = getattr(cls, name, None)
        assert fn is not None, f"{cls.__name__} has no {name} for {method} {path}"
        if cls is AsyncClient and name != "events":
            assert inspect.iscoroutinefunction(fn), f"AsyncClient.{name} is not async"
        sig = inspect.signature(fn)
        params = set(sig.parameters) - {"self"}
        wanted = {PY_PARAM.get(p["name"], p["name"]) for p in op.get("parameters", [])}
        assert wanted <= params, f"{cls.__name__}.{name}: lacks {sorted(wanted - params)}"
        # each required parameter is required in Python too
        for p in op.get("parameters", []):
            pp = sig.parameters[PY_PARAM.get(p["name"], p["name"])]
            assert (pp.default is inspect.Parameter.empty) == bool(p.get("required")), (cls, name, p["name"])
        body = op.get("requestBody")
        if body:
            schema = body["content"]["application/json"]["schema"]
            ref = schema.get("$ref") or next(s["$ref"] for s in schema["oneOf"] if "$ref" in s)
            props = set(SCHEMAS[ref.rsplit("/", 1)[1]]["properties"])
            if ref.endswith("/CreateRequest"):
                assert "spec" in params
            else:
                # the body's fields are the method's keyword arguments
                assert props <= params, f"{cls.__name__}.{name}: body fields {sorted(props - params)} missing"


PERTURBATIONS = {
    "a new field of an answer": lambda d: d["components"]["schemas"]["SandboxInfo"]["properties"].update(new_field={"type": "string"}),
    "a field of a request renamed": lambda d: d["components"]["schemas"]["Limits"]["properties"].update(
        memory_maximum=d["components"]["schemas"]["Limits"]["properties"].pop("memory_max")),
    "a field made required": lambda d: d["components"]["schemas"]["MainExit"]["required"].append("code"),
    "a new operation": lambda d: d["paths"]["/v1/sandboxes/{id}"].update(put={"operationId": "replace_sandbox", "responses": {}}),
    "a new query parameter": lambda d: d["paths"]["/v1/sandboxes/{id}/logs"]["get"]["parameters"].append(
        {"in": "query", "name": "tail", "required": False, "schema": {"type": "integer"}}),
    "a new event type": lambda d: d["components"]["schemas"]["EventKind"]["oneOf"].append(
        {"properties": {"type": {"enum": ["exploded"], "type": "string"}}, "required": ["type"], "type": "object"}),
    "an event kind repeating the event's key": lambda d: next(
        v for v in d["components"]["schemas"]["EventKind"]["oneOf"] if v["properties"]["type"]["enum"] == ["restarting"]
    )["properties"].update(at_ms={"type": "integer", "format": "int64", "minimum": 0}),
    "a new enum value": lambda d: d["components"]["schemas"]["State"]["enum"].append("zombie"),
    "a new schema": lambda d: d["components"]["schemas"].update(Thing={"type": "object", "properties": {}}),
}


@pytest.mark.skipif(os.environ.get("PADDOCK_DRIFT_SELFTEST") == "1", reason="inside the self-test")
@pytest.mark.parametrize("what", sorted(PERTURBATIONS))
def test_drift_check_fails_on_a_changed_document(what, tmp_path):
    """The check above can fail: against a copy of the document with one change, it does."""
    import copy
    import subprocess
    import sys

    doc = copy.deepcopy(DOC)
    PERTURBATIONS[what](doc)
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(doc))
    env = dict(os.environ, PADDOCK_OPENAPI=str(path), PADDOCK_DRIFT_SELFTEST="1")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1 and " failed" in r.stdout, f"{what}: the drift check passed:\n{r.stdout[-2000:]}"


def test_package_is_typed():
    import importlib.resources

    assert importlib.resources.files("paddock_client").joinpath("py.typed").is_file()


def sample(s: dict, depth: int = 0):
    """A value of schema s with every property present (the first variant of a union)."""
    s = resolve(s)
    if "allOf" in s:
        out: dict = {}
        for p in s["allOf"]:
            v = sample(p, depth + 1)
            if isinstance(v, dict):
                out.update(v)
        return out
    if "oneOf" in s:
        variants = [v for v in s["oneOf"] if v.get("type") != "null"]
        return sample(variants[0], depth + 1)
    if "enum" in s:
        return s["enum"][0]
    t = s.get("type")
    if isinstance(t, list):
        t = next(x for x in t if x != "null")
    if t == "object" or "properties" in s:
        return {k: sample(v, depth + 1) for k, v in s.get("properties", {}).items()}
    if t == "array":
        return [sample(s.get("items", {}), depth + 1)]
    return {"integer": 1, "number": 1.5, "boolean": True, "string": "s"}.get(t, "s")


def check_built(value, tp, where: str) -> None:
    """value holds instances of every dataclass its type names."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            check_built(value, args[0], where)
        return
    if origin is list:
        (item,) = typing.get_args(tp)
        for i, v in enumerate(value):
            check_built(v, item, f"{where}[{i}]")
        return
    if dataclasses.is_dataclass(tp):
        assert isinstance(value, tp), f"{where}: {type(value).__name__}, not {tp.__name__}"
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            check_built(getattr(value, f.name), hints[f.name], f"{where}.{f.name}")


# `Event` without its seq is no answer: the stream sends SequencedEvents.
@pytest.mark.parametrize("name", sorted(n for n, t in MODELS.items() if dataclasses.is_dataclass(t) and n != "Event"))
def test_answers_are_built_from_the_documents_shape(name):
    tp = MODELS[name]
    obj = sample(SCHEMAS[name])
    built = tp.from_json(obj)
    check_built(built, tp, name)
    # every field the document names came through (none lost to a name mismatch)
    for f in dataclasses.fields(tp):
        if f.name in obj:
            assert getattr(built, f.name) is not None, f"{name}.{f.name}"


@pytest.mark.parametrize("variant", range(len(SCHEMAS["EventKind"]["oneOf"])))
def test_every_event_kind_is_built_from_the_documents_shape(variant):
    common = sample(SCHEMAS["SequencedEvent"])
    kind = sample(SCHEMAS["EventKind"]["oneOf"][variant])
    data = json.dumps({**common, **kind})
    ev = m.parse_event(data)
    cls = m.EVENT_TYPES[kind["type"]]
    assert type(ev) is cls and ev.type == kind["type"] and ev.seq == common["seq"]
    check_built(ev, cls, kind["type"])
    for k in kind:
        assert getattr(ev, k) is not None, (kind["type"], k)
