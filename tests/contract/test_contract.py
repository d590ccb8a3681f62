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
