"""`agent-identity whoami` / `check`: argument parsing, output and exit codes.

Against the in-process decision app of test_client.py (the same stand-in token table).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent_identity.authz import engine
from agent_identity.cli.main import SUBCOMMANDS, cli
from tests.unit.test_client import (
    NS,
    UID,
    Server,
    TableReviewer,
    approval_body,
    make_registry,
    make_reviewer,
)

AR = f"{NS}/" + engine.approval_request_name(UID, "deploy.production", "service", "api", 0)


@pytest.fixture
def reviewer() -> TableReviewer:
    return make_reviewer()


@pytest.fixture
def server(reviewer: TableReviewer) -> Iterator[Server]:
    srv = Server(make_registry(), reviewer, None)
    yield srv
    srv.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("tok-bot\n")
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def conn(server: Server, token_file: Path) -> list[str]:
    return ["--url", server.url, "--token-file", str(token_file)]


def test_subcommands_are_registered_lazily() -> None:
    assert SUBCOMMANDS["whoami"] == "agent_identity.cli.agentclient:whoami"
    assert SUBCOMMANDS["check"] == "agent_identity.cli.agentclient:check"


def test_whoami_prints_agent_and_identity(server: Server, token_file: Path) -> None:
    code, out, _ = run("whoami", *conn(server, token_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{NS}/bot"
    assert lines[1] == f"identity: agent://test/{NS}/bot"
    code, out, _ = run("whoami", *conn(server, token_file), "-o", "json")
    assert code == 0 and json.loads(out)["identity"] == f"agent://test/{NS}/bot"


def test_whoami_of_a_non_agent_exits_1(server: Server, token_file: Path) -> None:
    token_file.write_text("tok-person")
    code, out, _ = run("whoami", *conn(server, token_file))
    assert code == 1 and "not a registered agent" in out


def test_check_exit_codes(server: Server, token_file: Path) -> None:
    c = conn(server, token_file)
    code, out, _ = run("check", "github.pulls.create", "--resource", "repo/org/app", *c)
    assert code == 0 and out.startswith("allow github.pulls.create on repo/org/app")
    code, out, _ = run("check", "github.admin.delete", *c)
    assert code == 1 and out.startswith("deny github.admin.delete on any/*")
    code, out, _ = run("check", "deploy.production", "--resource", "service/api", *c)
    assert code == 3 and out.startswith("escalate")
    assert f"approval request: {AR}" in out and "sre-lead@example.com" in out


def test_check_sends_resource_and_action_properties(server: Server, token_file: Path) -> None:
    # deploy.staging is allowed only for env=staging and dry=true (a constraint in the scope).
    c = ["check", "deploy.staging", "--resource", "service/api", *conn(server, token_file)]
    code, out, _ = run(*c, "--resource-prop", "env=staging", "--action-prop", "dry=true")
    assert code == 0 and out.startswith("allow deploy.staging on service/api"), out
    code, out, _ = run(*c, "--resource-prop", "env=production", "--action-prop", "dry=true")
    assert code == 1 and "staging only, dry runs only" in out, out
    code, out, _ = run(*c, "--resource-prop", "env=staging")  # action.properties.dry missing
    assert code == 1 and out.startswith("deny"), out
    code, _, err = run(*c, "--resource-prop", "novalue")
    assert code == 2 and "--resource-prop" in err and "KEY=VALUE" in err


def test_check_json_output(server: Server, token_file: Path) -> None:
    code, out, _ = run(
        "check",
        "deploy.production",
        "--resource",
        "service/api",
        "-o",
        "json",
        "--context",
        "ticket=42",
        *conn(server, token_file),
    )
    view = json.loads(out)
    assert code == 3
    assert view["outcome"] == "escalate" and view["approvalRequest"] == AR
    assert view["resource"] == "service/api" and view["decision"] is False


def test_check_wait_times_out_with_3(server: Server, token_file: Path) -> None:
    code, out, err = run(
        "check",
        "deploy.production",
        "--resource",
        "service/api",
        "--wait",
        "0.3",
        "--poll-interval",
        "0.1",
        *conn(server, token_file),
    )
    assert code == 3
    assert "waiting up to 0.3s" in err and "still Pending" in out


def test_check_wait_returns_allow_once_approved(server: Server, token_file: Path) -> None:
    server.call(server.registry.upsert, approval_body("Approved"))
    code, out, _ = run(
        "check",
        "deploy.production",
        "--resource",
        "service/api",
        "--wait",
        "5",
        *conn(server, token_file),
    )
    assert code == 0 and out.startswith("allow deploy.production on service/api")


def test_check_wait_ends_in_deny_when_a_person_denies(server: Server, token_file: Path) -> None:
    timer = threading.Timer(0.5, server.call, (server.registry.upsert, approval_body("Denied")))
    timer.start()
    try:
        code, out, _ = run(
            "check",
            "deploy.production",
            "--resource",
            "service/api",
            "--wait",
            "10",
            "--poll-interval",
            "0.1",
            *conn(server, token_file),
        )
    finally:
        timer.cancel()
    assert code == 1
    assert "\ndeny deploy.production on service/api\n" in out and "was denied" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check"], "Missing argument 'ACTION'"),
        (["check", "x", "--resource", "nope"], "expected TYPE/ID"),
        (["check", "x", "--context", "novalue"], "expected KEY=VALUE"),
        (["check", "x", "--wait", "-1"], "--wait"),
        (["whoami", "-o", "yaml"], "'yaml' is not one of"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code == 2 and message in out + err


def test_no_token_exits_4_with_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "token"
    code, _, err = run("check", "x", "--url", "http://127.0.0.1:9", "--token-file", str(missing))
    assert code == 4 and str(missing) in err and "admitted agent pod" in err


def test_unreachable_exits_4(token_file: Path) -> None:
    code, _, err = run(
        "whoami", "--url", "http://127.0.0.1:9", "--token-file", str(token_file), "--timeout", "2"
    )
    assert code == 4 and "cannot reach the decision API" in err
