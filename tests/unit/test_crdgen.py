"""The CRD generator: structural schemas, the models' rules carried over, crds/ in sync."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from agent_identity.api import Agent, ApprovalPolicy, ApprovalRequest, AuthorityScope, crdgen
from agent_identity.cli.crds import crds as crds_cli
from tests.fixtures.crds import valid_bodies

REPO = Path(__file__).resolve().parents[2]
MODELS = {m.KIND: m for m in (Agent, AuthorityScope, ApprovalPolicy, ApprovalRequest)}
SCHEMAS = {
    c["spec"]["names"]["kind"]: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for c in crdgen.all_crds()
}


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (properties by name, items as [])."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _strip_k8s(node: Any) -> Any:
    """The schema without x-kubernetes-* keys, for a plain JSON-schema validator."""
    if isinstance(node, dict):
        out = {k: _strip_k8s(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if "properties" in node:
            out["properties"] = {k: _strip_k8s(v) for k, v in node["properties"].items()}
        return out
    if isinstance(node, list):
        return [_strip_k8s(v) for v in node]
    return node


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_schema_is_structural(kind: str) -> None:
    for path, node in _walk(SCHEMAS[kind]):
        assert "type" in node, f"{kind}{path} has no type"
        for banned in (
            "$ref",
            "$defs",
            "anyOf",
            "oneOf",
            "allOf",
            "title",
            "discriminator",
            "const",
        ):
            assert banned not in node, f"{kind}{path} has {banned}"
        if node.get("default", ...) is None:
            pytest.fail(f"{kind}{path} defaults to null")
    text = yaml.safe_dump(SCHEMAS[kind])
    assert "$ref" not in text and "anyOf" not in text and "title:" not in text


def test_names_categories_and_scope() -> None:
    crds = crdgen.all_crds()
    assert [c["metadata"]["name"] for c in crds] == [
        "agents.agentidentity.io",
        "authorityscopes.agentidentity.io",
        "approvalpolicies.agentidentity.io",
        "approvalrequests.agentidentity.io",
    ]
    short = [s for c in crds for s in c["spec"]["names"]["shortNames"]]
    assert len(short) == len(set(short)) == 4
    for c in crds:
        assert c["spec"]["names"]["categories"] == ["agentidentity"]
        assert c["spec"]["scope"] == "Namespaced"
        (version,) = c["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        root = version["schema"]["openAPIV3Schema"]
        assert root["properties"]["metadata"] == {"type": "object"}


def test_agent_schema_details() -> None:
    spec = SCHEMAS["Agent"]["properties"]["spec"]
    assert SCHEMAS["Agent"]["required"] == ["spec"]
    assert spec["required"] == ["owner"]
    lifecycle = spec["properties"]["lifecycle"]
    # Nested objects default to {} so their own defaults apply when the parent is omitted.
    assert lifecycle["default"] == {"state": "Active"}
    assert lifecycle["properties"]["state"]["default"] == "Active"
    assert lifecycle["properties"]["state"]["enum"] == [
        "Active",
        "Suspended",
        "Deprecated",
        "Retired",
    ]
    assert "sunsetAt" in lifecycle["description"] or "lifecycle" in lifecycle["description"]
    assert lifecycle["properties"]["sunsetAt"]["description"]
    assert spec["properties"]["token"]["default"] == {
        "audience": "agentidentity.io",
        "ttlSeconds": 900,
    }
    ttl = spec["properties"]["token"]["properties"]["ttlSeconds"]
    assert (ttl["minimum"], ttl["maximum"], ttl["default"]) == (600, 86400, 900)
    assert spec["properties"]["platform"]["properties"]["type"]["default"] == "kubernetes"
    # Optional fields are plain optional properties, not nullable unions.
    parent = spec["properties"]["parentRef"]
    assert parent["type"] == "object" and parent["required"] == ["name"] and "default" not in parent
    rules = [r["rule"] for r in SCHEMAS["Agent"]["x-kubernetes-validations"]]
    assert rules == ["self.metadata.name.size() <= 63"]
    assert any("oldSelf" in r["rule"] for r in lifecycle["x-kubernetes-validations"])
    conditions = SCHEMAS["Agent"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {"type", "status"}
    # Status is never defaulted (the operator owns it), except an ApprovalRequest's, whose
    # empty status means Pending (so every read of a new request says so).
    for kind in ("Agent", "AuthorityScope"):
        assert "default" not in SCHEMAS[kind]["properties"]["status"], kind
    assert SCHEMAS["ApprovalRequest"]["properties"]["status"]["default"] == {"state": "Pending"}


def test_other_kinds_schema_details() -> None:
    assert "required" not in SCHEMAS["AuthorityScope"]  # every scope field is optional
    assert SCHEMAS["ApprovalPolicy"]["required"] == ["spec"]
    context = SCHEMAS["ApprovalRequest"]["properties"]["spec"]["properties"]["context"]
    assert context == {
        "description": "The request's context, as the caller sent it.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    tools = SCHEMAS["AuthorityScope"]["properties"]["spec"]["properties"]["tools"]
    allow_item = tools["properties"]["allow"]["items"]
    assert allow_item["maxLength"] == 253 and "pattern" in allow_item
    assert any("**.**" in r["rule"] for r in allow_item["x-kubernetes-validations"])
    policy_spec = SCHEMAS["ApprovalPolicy"]["properties"]["spec"]
    assert policy_spec["properties"]["minApprovals"]["default"] == 1
    assert policy_spec["properties"]["timeoutSeconds"]["default"] == 3600
    assert policy_spec["properties"]["grantSeconds"]["default"] == 900


# Lists the API server keeps as sets or maps: duplicates are refused there (and by the
# models' validators, see test_api_models), and server-side apply merges them item by item.
LIST_TYPES = {
    ("Agent", ".spec.scopeRefs"): ("map", ["name"]),
    ("AuthorityScope", ".spec.tools.allow"): ("set", None),
    ("AuthorityScope", ".spec.tools.deny"): ("set", None),
    ("AuthorityScope", ".spec.sensitive"): ("set", None),
    ("AuthorityScope", ".spec.constraints[].tools"): ("set", None),
    ("ApprovalPolicy", ".spec.match.actions"): ("set", None),
    ("ApprovalPolicy", ".spec.match.scopes"): ("set", None),
    ("ApprovalPolicy", ".spec.approvers.users"): ("set", None),
    ("ApprovalPolicy", ".spec.approvers.groups"): ("set", None),
    ("ApprovalRequest", ".spec.policies"): ("set", None),
    ("ApprovalRequest", ".spec.approvers.users"): ("set", None),
    ("ApprovalRequest", ".spec.approvers.groups"): ("set", None),
    **{(kind, ".status.conditions"): ("map", ["type"]) for kind in MODELS},
}


def test_list_types() -> None:
    found = {
        (kind, path): (node["x-kubernetes-list-type"], node.get("x-kubernetes-list-map-keys"))
        for kind, schema in SCHEMAS.items()
        for path, node in _walk(schema)
        if "x-kubernetes-list-type" in node
    }
    assert found == LIST_TYPES
    for (kind, path), (list_type, keys) in found.items():
        node = dict(_walk(SCHEMAS[kind]))[path]
        assert node["type"] == "array", (kind, path)
        items = node["items"]
        if list_type == "set":
            # the API server accepts a set of scalars only
            assert items["type"] in ("string", "integer", "number", "boolean"), (kind, path)
        else:
            # a map list's keys must be required (or defaulted) scalar properties of its items
            assert items["type"] == "object", (kind, path)
            for key in keys or []:
                assert key in items.get("required", []), (kind, path, key)
                assert items["properties"][key]["type"] == "string", (kind, path, key)
    # uniqueItems is not allowed in a structural schema: duplicates are the list type's job
    for kind, schema in SCHEMAS.items():
        assert all(not node.get("uniqueItems") for _, node in _walk(schema)), kind


def test_policy_rule_needs_api_groups_resources_and_verbs() -> None:
    rule = SCHEMAS["AuthorityScope"]["properties"]["spec"]["properties"]["rules"]["items"]
    assert rule["required"] == ["apiGroups", "resources", "verbs"]
    for name in ("apiGroups", "resources", "verbs"):
        assert rule["properties"][name]["minItems"] == 1, name
    assert rule["properties"]["apiGroups"]["items"] == {"type": "string", "maxLength": 253}
    assert "minItems" not in rule["properties"]["resourceNames"]
    # The rule the API server shows for an empty apiGroups carries the fix, like the model's.
    (api_groups_rule,) = [r for r in rule["x-kubernetes-validations"] if "apiGroups" in r["rule"]]
    assert api_groups_rule["rule"] == "self.apiGroups.size() > 0"
    assert 'use apiGroups: [""] for the core group' in api_groups_rule["message"]


def test_every_model_rule_reaches_the_crd() -> None:
    """Each CEL rule declared on a model or field appears in the generated CRDs."""
    declared: set[str] = set()
    for model in MODELS.values():
        raw = model.model_json_schema(by_alias=True)
        text = yaml.safe_dump(raw)
        for doc in yaml.safe_load_all(text):
            for _, node in _walk_any(doc):
                for rule in node.get("x-kubernetes-validations", []):
                    declared.add(rule["rule"])
        declared.update(r["rule"] for r in model.ROOT_RULES)
    generated = {
        rule["rule"]
        for schema in SCHEMAS.values()
        for _, node in _walk(schema)
        for rule in node.get("x-kubernetes-validations", [])
    }
    assert declared and declared == generated


def _walk_any(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield "", node
        for value in node.values():
            yield from _walk_any(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_any(value)


def test_every_rule_has_a_message_naming_a_field() -> None:
    """A rule's message names the field it is on (the API server adds the full path)."""
    for kind, schema in SCHEMAS.items():
        for path, node in _walk(schema):
            names = [n for n in path.replace("[]", "").split(".") if n] or ["metadata"]
            for rule in node.get("x-kubernetes-validations", []):
                message = rule["message"]
                assert any(n in message for n in names) or path.endswith("[]"), (
                    f"{kind}{path}: {message!r} does not name the field"
                )
                assert len(message) > 25, f"{kind}{path}: {message!r} says too little to act on"


def test_printer_columns() -> None:
    by_kind = {
        c["spec"]["names"]["kind"]: [
            col["name"]
            for col in c["spec"]["versions"][0]["additionalPrinterColumns"]
            if "priority" not in col
        ]
        for c in crdgen.all_crds()
    }
    assert by_kind["Agent"] == ["Ready", "Phase", "Owner", "Scopes", "Age"]
    assert by_kind["AuthorityScope"] == ["Agents", "Ready", "Age"]
    assert by_kind["ApprovalPolicy"] == ["Actions", "Min Approvals", "Age"]
    assert by_kind["ApprovalRequest"] == ["Agent", "Action", "State", "Age"]


def test_rendering_is_deterministic_and_headed() -> None:
    first, second = crdgen.rendered_files(), crdgen.rendered_files()
    assert first == second
    for content in first.values():
        assert content.startswith("# generated by agent-identity crds generate; do not edit\n")
        assert yaml.safe_load(content)["kind"] == "CustomResourceDefinition"


def test_crds_directory_matches_the_generator() -> None:
    """The drift guard: crds/ is exactly what the models generate."""
    expected = crdgen.rendered_files()
    on_disk = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    assert set(on_disk) == set(expected), (
        "crds/ has other files than the generator writes: run `make crds`"
    )
    for name, content in expected.items():
        assert on_disk[name] == content, (
            f"crds/{name} is out of date with the models: run `make crds`"
        )


def test_cli_generate_writes_the_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(crds_cli, ["generate", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    assert written == crdgen.rendered_files()


def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = _strip_k8s(SCHEMAS[kind])
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


VALIDATORS = {kind: _validator(kind) for kind in SCHEMAS}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_bodies)
def test_valid_models_serialise_to_objects_the_schema_accepts(body: dict[str, Any]) -> None:
    model = MODELS[body["kind"]]
    wire = model.parse(body).to_wire()
    VALIDATORS[body["kind"]].validate(wire)  # raises with the failing path
    # and the wire form parses back to the same model (round trip through the schema)
    assert model.parse(wire).to_wire() == wire


def test_schema_rejects_what_the_models_reject() -> None:
    """A sample of the static bounds: the local validator refuses what the API server will."""
    bad = [
        ("Agent", {"spec": {"owner": ""}}),
        ("Agent", {"spec": {"owner": "x", "token": {"ttlSeconds": 599}}}),
        ("Agent", {"spec": {"owner": "x", "lifecycle": {"state": "Paused"}}}),
        ("Agent", {}),
        ("AuthorityScope", {"spec": {"tools": {"allow": ["GitHub.*"]}}}),
        ("AuthorityScope", {"spec": {"rules": [{"resources": ["pods"], "verbs": []}]}}),
        ("AuthorityScope", {"spec": {"rules": [{"resources": ["pods"], "verbs": ["get"]}]}}),
        (
            "AuthorityScope",
            {"spec": {"rules": [{"apiGroups": [], "resources": ["pods"], "verbs": ["get"]}]}},
        ),
        (
            "AuthorityScope",
            {"spec": {"rules": [{"apiGroups": [""], "resources": [], "verbs": ["get"]}]}},
        ),
        ("ApprovalPolicy", {"spec": {"match": {"actions": []}, "approvers": {"users": ["a"]}}}),
    ]
    for kind, body in bad:
        errors = list(
            VALIDATORS[kind].iter_errors(
                {
                    "apiVersion": "agentidentity.io/v1alpha1",
                    "kind": kind,
                    "metadata": {"name": "x"},
                    **body,
                }
            )
        )
        assert errors, f"{kind} {body} was accepted"
