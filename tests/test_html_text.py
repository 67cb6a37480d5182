"""`html_to_text`, the one road from HTML to text (Gmail bodies, Calendar descriptions)."""

from __future__ import annotations

import time

from ingestion.providers.html import MAX_DEPTH, html_to_text


def test_words_layout_and_links() -> None:
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<p>Hello <b>wo</b>rld &amp; co</p><ul><li>one</li><li>two</li></ul>"
        '<p>Join <a href="https://meet.example/abc">the call</a> or '
        '<a href="mailto:ana@example.com">ana@example.com</a>, '
        '<a href="javascript:alert(1)">not this</a>.</p>'
        "<table><tr><td>Room</td><td>4.12</td></tr></table>"
        '<img src="data:image/png;base64,' + "QUJD" * 200 + '">'
        "<script>var secret = 1;</script></body></html>"
    )
    text = html_to_text(html)
    assert text.splitlines()[0] == "Hello world & co"
    assert "one\ntwo" in text
    assert "Join the call (https://meet.example/abc) or ana@example.com, not this." in text
    assert "javascript" not in text
    assert "Room 4.12" in text
    for absent in ("color:red", "secret", "QUJD", "<", "T\n"):
        assert absent not in text


def test_hostile_nesting_stays_linear_and_keeps_the_words() -> None:
    deep = "<div>" * 60_000 + "deep words" + "</div>" * 60_000
    started = time.perf_counter()
    assert html_to_text(deep) == "deep words"
    unclosed = "<font><span>" * 30_000 + "still here"
    assert html_to_text(unclosed) == "still here"
    # An HTML5 tree builder costs depth x tags here (about 10 s); the pre-scan avoids it.
    assert time.perf_counter() - started < 3.0
    shallow = "<div>" * (MAX_DEPTH // 2) + "<p>kept <a href='https://x.org'>x</a></p>"
    assert html_to_text(shallow) == "kept x (https://x.org)"


def test_broken_and_empty_input() -> None:
    assert html_to_text("") == ""
    assert html_to_text("   ") == ""
    assert html_to_text("<p>unclosed <b>bold") == "unclosed bold"
    assert html_to_text("a < b and c > d") == "a < b and c > d"
    assert html_to_text("<a<a<a" * 1000) == ""
