"""Epochs in turns (train/turns.py): processes' epochs strictly one at a time, the order
balanced over epochs, and none leaves training before the others' last epochs."""

import threading
import time
from collections import Counter

import pytest

from hpctrain.train.turns import Turns, order


def test_two_sides_take_epochs_in_turns_and_wait_for_each_other_at_the_end(tmp_path):
    path, order, finished = tmp_path / "turns", [], {}

    def side(role: int, pause: float) -> None:
        t = Turns(path, role, timeout_s=30)
        for epoch in range(4):
            t.begin(epoch)
            order.append((epoch, role))
            time.sleep(pause)  # the slower side must still be waited for
            t.end(epoch)
        t.last(4)
        finished[role] = len(order)

    threads = [threading.Thread(target=side, args=(r, p)) for r, p in ((0, 0.0), (1, 0.02))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert order == [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1), (3, 1), (3, 0)]
    assert finished == {0: 8, 1: 8} and path.read_text() == "8"


def test_a_side_left_alone_gives_up_with_a_clear_error(tmp_path):
    t = Turns(tmp_path / "turns", 1, timeout_s=0.05)
    with pytest.raises(TimeoutError, match="no turn 1 after"):
        t.begin(0)  # role 1 goes second in epoch 0: role 0 never came
    with pytest.raises(ValueError, match="role 2 is not 0..1 of 2"):
        Turns(tmp_path / "turns", 2)


def test_three_sides_take_every_place_and_follow_each_other_equally_often(tmp_path):
    path, order_seen = tmp_path / "turns", []

    def side(role: int) -> None:
        t = Turns.parse(f"{path}:{role}/3")
        for epoch in range(6):
            t.begin(epoch)
            order_seen.append((epoch, role))
            t.end(epoch)
        t.last(6)

    threads = [threading.Thread(target=side, args=(r,)) for r in (2, 0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    rows = [[r for e, r in order_seen if e == epoch] for epoch in range(6)]
    assert rows == [order(e, 3) for e in range(6)]
    assert {tuple(sorted({row.index(r) for row in rows})) for r in range(3)} == {(0, 1, 2)}
    follows = Counter((row[i], row[i + 1]) for row in rows for i in range(2))
    assert len(follows) == 6 and set(follows.values()) == {2}
    assert path.read_text() == "18"
