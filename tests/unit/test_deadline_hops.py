"""Deadline arithmetic on a fake clock, and the ``X-Denis-Hop`` guard."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from denis.api.errors import status_for
from denis.errors import HopLimitError, InvalidInputError
from denis.resilience import HOP_HEADER, MAX_HOPS, Deadline, ManualClock, check_hops, next_hop
from denis.resilience.hops import next_hop_headers, parse_hop_header

# -- deadline ----------------------------------------------------------------------------


def test_deadline_shrinks_with_the_clock() -> None:
    clock = ManualClock()
    deadline = Deadline.start(clock, 15.0)
    assert deadline.budget_s == 15.0
    assert deadline.remaining_s() == 15.0
    assert not deadline.expired
    clock.advance(5.0)
    assert deadline.remaining_s() == 10.0
    assert deadline.timeout_s(2.0) == 2.0, "its own limit when that is smaller"
    assert deadline.timeout_s(20.0) == 10.0, "what is left when that is smaller"
    clock.advance(9.5)
    assert deadline.timeout_s(2.0) == 0.5
    assert not deadline.expired


def test_deadline_expires_exactly_at_its_budget_and_never_goes_negative() -> None:
    clock = ManualClock()
    deadline = Deadline.start(clock, 15.0)
    clock.advance(15.0)
    assert deadline.expired
    assert deadline.remaining_s() == 0.0
    assert deadline.timeout_s(2.0) == 0.0
    clock.advance(100.0)
    assert deadline.remaining_s() == 0.0
    assert deadline.timeout_s(2.0) == 0.0
    assert deadline.expired


def test_deadline_is_measured_from_its_start_not_from_the_clocks_origin() -> None:
    clock = ManualClock(start_s=123_456.0)
    clock.advance(1_000.0)
    deadline = Deadline.start(clock, 2.0)
    assert deadline.expires_at_s == 124_458.0
    assert deadline.remaining_s() == 2.0


@pytest.mark.parametrize("budget_s", [0.0, -1.0])
def test_deadline_needs_a_positive_budget(budget_s: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadline.start(ManualClock(), budget_s)


@given(
    budget_s=st.floats(0.001, 1_000.0),
    elapsed_s=st.floats(0.0, 2_000.0),
    own_s=st.floats(0.0, 1_000.0),
)
def test_timeout_is_the_smaller_of_own_limit_and_what_is_left(
    budget_s: float, elapsed_s: float, own_s: float
) -> None:
    clock = ManualClock()
    deadline = Deadline.start(clock, budget_s)
    clock.advance(elapsed_s)
    left = max(0.0, budget_s - elapsed_s)
    assert deadline.remaining_s() == pytest.approx(left, abs=1e-9)
    assert deadline.timeout_s(own_s) == pytest.approx(min(own_s, left), abs=1e-9)
    assert 0.0 <= deadline.timeout_s(own_s) <= own_s
    assert deadline.timeout_s(own_s) <= deadline.remaining_s()
    assert deadline.expired == (deadline.remaining_s() == 0.0)
    if elapsed_s < budget_s - 1e-6:
        assert not deadline.expired
    if elapsed_s > budget_s + 1e-6:
        assert deadline.expired


# -- hops --------------------------------------------------------------------------------


def test_missing_header_means_a_request_from_outside() -> None:
    assert parse_hop_header(None) == 0
    assert check_hops(parse_hop_header(None)) == 0


@pytest.mark.parametrize("raw", ["0", "1", "2", "3"])
def test_counts_up_to_the_limit_are_accepted(raw: str) -> None:
    assert check_hops(parse_hop_header(raw)) == int(raw)


def test_one_hop_over_the_limit_is_refused_with_508() -> None:
    assert MAX_HOPS == 3
    hops = parse_hop_header("4")
    assert hops == 4
    with pytest.raises(HopLimitError) as caught:
        check_hops(hops)
    assert caught.value.code == "hop_limit"
    assert status_for(caught.value) == 508


def test_check_hops_takes_another_limit() -> None:
    assert check_hops(5, max_hops=5) == 5
    with pytest.raises(HopLimitError):
        check_hops(2, max_hops=1)


@pytest.mark.parametrize(
    ("raw", "hops"),
    [(" 2", 2), ("2 ", 2), ("\t3\t", 3), ("003", 3), ("99999999", 99_999_999)],
)
def test_surrounding_whitespace_and_leading_zeros_are_tolerated(raw: str, hops: int) -> None:
    assert parse_hop_header(raw) == hops


def test_a_large_but_parseable_count_is_a_hop_limit_not_a_crash() -> None:
    with pytest.raises(HopLimitError):
        check_hops(parse_hop_header("99999999"))


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "abc",
        "two",
        "1.5",
        "1e3",
        "0x1",
        "+1",
        "-1",
        "-0",
        "1 2",
        "999999999",  # nine digits: longer than any real count
        "9" * 10_000,  # huge: refused before int() sees it
        "\uff13",  # fullwidth digit three: str.isdigit() says yes, HTTP says no
        "\u0663",  # Arabic-Indic digit three
        "\u00b2",  # superscript two
        "1\x00",
    ],
)
def test_anything_else_is_invalid_input_with_422(raw: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_hop_header(raw)
    assert type(caught.value) is InvalidInputError
    assert caught.value.code == "invalid_input"
    assert status_for(caught.value) == 422
    assert HOP_HEADER in caught.value.detail


@given(st.text(max_size=12))
def test_parsing_any_text_either_gives_a_count_or_invalid_input(raw: str) -> None:
    try:
        hops = parse_hop_header(raw)
    except InvalidInputError:
        return
    assert raw.strip().isascii()
    assert raw.strip().isdigit()
    assert hops == int(raw.strip()) >= 0


def test_next_hop_adds_one_and_its_header_round_trips() -> None:
    assert next_hop(0) == 1
    assert next_hop(3) == 4
    assert next_hop_headers(0) == {HOP_HEADER: "1"}
    assert HOP_HEADER == "X-Denis-Hop"
    for hops in range(MAX_HOPS + 1):
        assert parse_hop_header(next_hop_headers(hops)[HOP_HEADER]) == hops + 1


def test_a_loop_is_cut_after_max_hops() -> None:
    """A request that keeps calling back into Denis is refused on the fourth internal hop."""
    hops = parse_hop_header(None)
    served: list[int] = []
    while hops < 100:
        try:
            check_hops(hops)
        except HopLimitError:
            break
        served.append(hops)
        hops = parse_hop_header(next_hop_headers(hops)[HOP_HEADER])
    assert served == [0, 1, 2, 3]
    assert hops == MAX_HOPS + 1
