"""Emulated stop sequences (gateway/openai/stop.py)."""
import pytest
from hypothesis import given, strategies as st

from gateway.openai.stop import StopScanner, cut


@pytest.mark.parametrize("text, stops, expected", [
    pytest.param("Hello END world", ["END"], ("Hello ", True), id="found"),
    pytest.param("Hello world", ["END"], ("Hello world", False), id="absent"),
    pytest.param("a.b\nc", ["\n", "."], ("a", True), id="earliest-of-several"),
    pytest.param("STOP", ["STOP"], ("", True), id="at-start"),
])
def test_cut(text, stops, expected):
    assert cut(text, stops) == expected


def test_scanner_holds_back_only_a_possible_partial_match():
    scanner = StopScanner(["END"])
    assert scanner.feed("Hello E") == "Hello "
    assert scanner.feed("x") == "Ex"
    assert scanner.feed(" wE") == " w"
    assert scanner.feed("N") == ""
    assert scanner.feed("D and more") == "" and scanner.stopped
    assert scanner.feed("later") == "" and scanner.flush() == ""


def test_scanner_flushes_an_unfinished_partial_match():
    scanner = StopScanner(["END"])
    assert scanner.feed("the EN") == "the "
    assert scanner.flush() == "EN"


@given(st.text(alphabet="abEND", max_size=40), st.lists(st.integers(0, 40), max_size=8))
def test_scanner_matches_cut_whatever_the_split(text, cuts):
    stops = ["END", "bb"]
    scanner = StopScanner(stops)
    points = sorted({c for c in cuts if c <= len(text)} | {0, len(text)})
    out = "".join(scanner.feed(text[a:b]) for a, b in zip(points, points[1:]))
    if not scanner.stopped:
        out += scanner.flush()
    assert out == cut(text, stops)[0]
    assert scanner.stopped == cut(text, stops)[1]
