"""The order in which workers take the waiting jobs of one queue family (pure arithmetic).

Workers take a priority's jobs round-robin across users (``server.infra.fair``): a user's
first waiting job has turn 1, their second turn 2, and so on; every turn 1 goes before any
turn 2. Within a turn, users go in the order they started waiting (their oldest waiting
job). Higher priorities go first. So a job's place follows from, per priority and user,
how many jobs wait and which is the oldest: no sort of the whole line.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.core.jobs import PRIORITY_ORDER

# rank -> user -> (how many of theirs wait, the id of their oldest waiting job)
Groups = dict[int, dict[str, tuple[int, str]]]


@dataclass(frozen=True)
class Pick:
    """One place at the front of the line: the user's ``turn``-th job of ``priority``."""

    user_id: str
    turn: int
    priority: str


def rank(priority: str) -> int:
    """Lower goes first; an unknown priority counts as normal."""
    return PRIORITY_ORDER.get(priority, PRIORITY_ORDER["normal"])


def position(groups: Groups, *, user_id: str, priority: str, turn: int) -> int | None:
    """How many waiting jobs start before the user's ``turn``-th job of ``priority``
    (None if the user has none waiting there)."""
    mine = rank(priority)
    users = groups.get(mine, {})
    if user_id not in users:
        return None
    first = users[user_id][1]
    higher = sum(n for group_rank, group in groups.items() if group_rank < mine
                 for n, _ in group.values())
    same = turn - 1 + sum(min(n, turn - 1) + (1 if n >= turn and oldest < first else 0)
                          for other, (n, oldest) in users.items() if other != user_id)
    return higher + same


def front(groups: Groups, limit: int) -> list[Pick]:
    """The first ``limit`` places of the line, in start order."""
    picks: list[Pick] = []
    for group_rank in sorted(groups):
        users = sorted(groups[group_rank].items(), key=lambda item: item[1][1])
        priority = next(p for p, r in PRIORITY_ORDER.items() if r == group_rank)
        turn = 1
        while len(picks) < limit:
            takers = [user for user, (n, _) in users if n >= turn]
            if not takers:
                break
            picks += [Pick(user, turn, priority) for user in takers[:limit - len(picks)]]
            turn += 1
        if len(picks) >= limit:
            break
    return picks


def turns_needed(picks: list[Pick]) -> dict[tuple[str, str], int]:
    """(user, priority) → how many of that user's oldest jobs of that priority the picks
    reach into."""
    need: dict[tuple[str, str], int] = {}
    for pick in picks:
        key = (pick.user_id, pick.priority)
        need[key] = max(need.get(key, 0), pick.turn)
    return need
