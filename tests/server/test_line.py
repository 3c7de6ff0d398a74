"""The order workers take waiting jobs in, as arithmetic (``core.line``)."""

from __future__ import annotations

from server.core.line import Groups, Pick, front, position, rank, turns_needed

# heavy: 3 normal jobs waiting since "a1"; light: 1 normal since "b1", 1 high since "b9";
# late: 2 normal since "c1" (after heavy's and light's first).
GROUPS: Groups = {
    rank("high"): {"light": (1, "b9")},
    rank("normal"): {"heavy": (3, "a1"), "light": (1, "b1"), "late": (2, "c1")},
}


def test_rank_orders_priorities_and_takes_unknown_ones_as_normal() -> None:
    assert rank("high") < rank("normal") < rank("low")
    assert rank("urgent") == rank("normal")


def test_position_counts_higher_priorities_then_earlier_turns() -> None:
    assert position(GROUPS, user_id="light", priority="high", turn=1) == 0
    # turn 1 in start order: heavy, light, late; then turn 2: heavy, late; then heavy.
    assert position(GROUPS, user_id="heavy", priority="normal", turn=1) == 1
    assert position(GROUPS, user_id="light", priority="normal", turn=1) == 2
    assert position(GROUPS, user_id="late", priority="normal", turn=1) == 3
    assert position(GROUPS, user_id="heavy", priority="normal", turn=2) == 4
    assert position(GROUPS, user_id="late", priority="normal", turn=2) == 5
    assert position(GROUPS, user_id="heavy", priority="normal", turn=3) == 6
    assert position(GROUPS, user_id="nobody", priority="normal", turn=1) is None
    assert position(GROUPS, user_id="heavy", priority="low", turn=1) is None


def test_front_lists_the_first_places_in_start_order() -> None:
    assert front(GROUPS, 4) == [Pick("light", 1, "high"), Pick("heavy", 1, "normal"),
                                Pick("light", 1, "normal"), Pick("late", 1, "normal")]
    everyone = front(GROUPS, 100)
    assert len(everyone) == 7 and everyone[-1] == Pick("heavy", 3, "normal")
    assert front(GROUPS, 0) == [] and front({}, 5) == []


def test_turns_needed_says_how_deep_each_users_jobs_are_read() -> None:
    assert turns_needed(front(GROUPS, 6)) == {("light", "high"): 1, ("heavy", "normal"): 2,
                                              ("light", "normal"): 1, ("late", "normal"): 2}
