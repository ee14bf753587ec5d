"""TIDs (core.tid): the spec's layout and alphabet, sorting like time, validation."""

import pytest

from core.tid import is_tid, tid


def test_layout_and_known_values():
    assert tid(0, 0) == "2222222222222"
    assert tid(1, 0) == "2222222222322"  # one microsecond: bit 10, the third-from-last character
    assert tid(0, 1023) == "22222222222zz"
    assert tid(2 ** 53 - 1, 1023) == "bzzzzzzzzzzzz"  # the top bit stays 0
    assert is_tid(tid()) and len(tid()) == 13


def test_sorts_like_time():
    keys = [tid(m, c) for m in (5, 1_000_000, 1_700_000_000_000_000, 1_800_000_000_000_000) for c in (0, 7, 1023)]
    assert keys == sorted(keys)


@pytest.mark.parametrize("text", ["", "222222222222", "22222222222222", "k222222222222", "222222222222A",
                                  "2222222222221", None, 12])
def test_is_tid_refuses(text):
    assert not is_tid(text)


def test_out_of_range():
    with pytest.raises(ValueError):
        tid(2 ** 53, 0)
    with pytest.raises(ValueError):
        tid(0, 1024)
