"""The cross-protocol contract (DESIGN.md rules 1-9, RFC 2180), one transcript each.

Every file in ``scenarios/`` is played against a real server (twistd on
loopback, see tests/conftest.py), once per combination of its ``vary:``
options.  The format is described in :mod:`tests.contract.transcript`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.contract.transcript import (
    Scenario,
    TranscriptMismatch,
    iter_cases,
    match_line,
    parse_scenario,
    run_scenario,
)

SCENARIOS = Path(__file__).parent / "scenarios"


def _cases() -> list[Any]:
    cases = []
    for scenario, variant in iter_cases(SCENARIOS):
        label = "-".join(f"{k.split('.')[-1]}={v}" for k, v in variant.items())
        marks = []
        if scenario.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=scenario.xfail))
        cases.append(
            pytest.param(
                scenario, variant, id=scenario.name + (f"[{label}]" if label else ""), marks=marks
            )
        )
    return cases


@pytest.mark.parametrize(("scenario", "variant"), _cases())
def test_contract_scenario(
    scenario: Scenario, variant: dict[str, Any], start_mail_server: Callable[..., Any]
) -> None:
    failure = None
    try:
        run_scenario(scenario, variant, start_mail_server)
    except TranscriptMismatch as e:
        failure = str(e)
    if failure is not None:
        # The message holds the scenario, the line, expected vs got and the
        # transcript; a Python traceback of the runner would only hide it.
        pytest.fail(failure, pytrace=False)


def test_every_scenario_names_its_rule() -> None:
    for path in sorted(SCENARIOS.glob("*.txt")):
        scenario = parse_scenario(path)
        assert scenario.rule, f"{path.name} has no 'rule:' header"
        assert scenario.steps, f"{path.name} has no script"


# --- the runner itself: it must be able to fail ---------------------------------


def test_pattern_binds_then_checks_variables() -> None:
    bound: dict[str, str] = {}
    assert match_line("+OK $n messages ($size octets)", "+OK 2 messages (40 octets)", bound) == {
        "n": "2",
        "size": "40",
    }
    bound = {"uid1": "7"}
    assert match_line("* 1 FETCH (UID $uid1)", "* 1 FETCH (UID 7)", bound) == {}
    assert match_line("* 1 FETCH (UID $uid1)", "* 1 FETCH (UID 8)", bound) is None


def test_pattern_ellipsis_and_formatted_variable() -> None:
    assert match_line("+OK ...", "+OK ready <1.2@host>", {}) == {}
    assert match_line("+OK ...", "-ERR no", {}) is None
    bound = {"uidvalidity": "1800000000"}
    assert match_line("1 00000001${uidvalidity:08x}", "1 000000016b49d200", bound) == {}
    assert match_line("1 00000001${uidvalidity:08x}", "1 000000016B49D200", bound) is None


def test_same_new_variable_twice_in_a_line_must_agree() -> None:
    assert match_line("$a $a", "x x", {}) == {"a": "x"}
    assert match_line("$a $a", "x y", {}) is None


def test_mismatch_names_scenario_line_and_transcript(
    tmp_path: Path, start_mail_server: Callable[..., Any]
) -> None:
    path = tmp_path / "wrong.txt"
    path.write_text(
        "title: a deliberately wrong expectation\nrule: none\nconnections: pop=pop3\n\n"
        "pop connect\npop< +OK ...\npop> CAPA\npop< -ERR this is not what a server says\n",
        encoding="utf-8",
    )
    scenario = parse_scenario(path)
    with pytest.raises(TranscriptMismatch) as info:
        run_scenario(scenario, {}, start_mail_server)
    text = str(info.value)
    assert "scenario wrong" in text and "line 8" in text
    assert "expected '-ERR this is not what a server says'" in text
    assert "pop C: CAPA" in text


# --- every scenario fails when its rule is broken --------------------------------

BREAKS_DIR = Path(__file__).parent / "rule_breaks"

#: break name (see rule_breaks/sitecustomize.py) -> the scenarios (and the
#: variant) that must fail on a server with that break.
MUST_FAIL: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "rule1-pop3-lists-deleted": [("rule1_listing_skips_deleted", {})],
    "rule2-uidl-follows-flags": [("rule2_uidl_stable_restart_flags", {})],
    "rule2-uidl-changes-on-restart": [("rule2_uidl_stable_restart_flags", {})],
    "rule3-retr-does-not-set-seen": [
        ("rule3_retr_sets_seen_idle", {"pop3.retr_sets_seen": True}),
    ],
    "rule3-top-and-retr-always-set-seen": [
        ("rule3_top_does_not_set_seen", {"pop3.retr_sets_seen": True}),
        ("rule3_retr_sets_seen_idle", {"pop3.retr_sets_seen": False}),
    ],
    "rule4-dele-only-in-session": [("rule4_dele_rset_quit", {})],
    "rule4-rset-keeps-flags": [
        ("rule4_dele_rset_quit", {}),
        ("rule4_drop_commits_nothing", {}),
    ],
    "rule4-quit-expunges-nothing": [("rule4_dele_rset_quit", {})],
    "rule4-drop-commits": [("rule4_drop_commits_nothing", {})],
    "rule5-pop3-ignores-expunge": [
        ("rule5_imap_expunge_during_pop3", {}),
        ("rule7_two_pop3_sessions_delete_same", {}),
    ],
    "rule6-pop3-sees-new-mail": [
        ("rule6_delivery_pop3_and_idle", {}),
        ("rule6_file_dropped_into_new", {}),
    ],
    "rule6-imap-misses-new-mail": [
        ("rule6_delivery_pop3_and_idle", {}),
        ("rule6_imap_append_idle", {}),
        ("rule6_file_dropped_into_new", {}),
    ],
    "rule7-exclusive-ignored": [("rule7_exclusive_in_use", {"pop3.exclusive": True})],
    "rule7-always-exclusive": [
        ("rule7_exclusive_in_use", {"pop3.exclusive": False}),
        ("rule7_two_pop3_sessions_delete_same", {}),
    ],
    "rule8-expunge-any-time": [("rule8_no_expunge_during_fetch_store_search", {})],
    "rule9-append-ok-before-disk": [("rule9_append_durable_across_crash", {})],
}


def _break_cases() -> list[Any]:
    return [
        pytest.param(name, scenario, variant, id=f"{name}-{scenario}")
        for name, targets in MUST_FAIL.items()
        for scenario, variant in targets
    ]


@pytest.fixture
def broken_servers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Like start_mail_server, without failing on the tracebacks a break may cause."""
    from tests.conftest import MailServer

    servers: list[Any] = []

    def start(**overrides: Any) -> Any:
        server = MailServer(tmp_path_factory.mktemp("broken") / "setup", overrides)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize(("break_name", "scenario_name", "variant"), _break_cases())
def test_scenario_fails_when_its_rule_is_broken(
    break_name: str,
    scenario_name: str,
    variant: dict[str, Any],
    broken_servers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scenario = parse_scenario(SCENARIOS / f"{scenario_name}.txt")
    full_variant = {**{k: v[0] for k, v in scenario.vary.items()}, **variant}
    # The server subprocess imports rule_breaks/sitecustomize.py at start-up.
    monkeypatch.setenv("PYTHONPATH", str(BREAKS_DIR))
    monkeypatch.setenv("MAILACCESS_BREAK", break_name)
    with pytest.raises(TranscriptMismatch):
        run_scenario(scenario, full_variant, broken_servers)


def test_every_rule_has_a_break_check() -> None:
    names = {p.stem for p in SCENARIOS.glob("*.txt")}
    checked = {scenario for targets in MUST_FAIL.values() for scenario, _ in targets}
    assert names - checked == set(), f"scenarios no break is checked against: {names - checked}"
    assert checked - names == set(), f"MUST_FAIL names missing scenarios: {checked - names}"
