"""The statistics of a judgement study, as pure functions of the votes.

``result_rows`` turns votes into one row per system and measure (preference rate,
Bradley–Terry score, fooled rate, mean grade) with a 95% interval, the number of
votes and of distinct raters; ``colorray.evaluate`` can fold these rows into its
table. The formulas are written out in ``docs/judge.md``.

Every interval here treats votes as independent. Votes by one rater are not
(raters differ in taste and strictness), so with few raters the true
uncertainty is larger than these intervals say; the ``raters`` column is there
to make that visible.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scipy.special import stdtrit

from colorray.judge.tasks import GRADE, PAIRWISE, REAL_OR_FAKE, TRUTH

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal
BT_ITERATIONS = 1000


@dataclass(frozen=True)
class Vote:
    """One answer, as far as statistics care."""

    task: str
    session: str
    system: str  # the system shown; pairwise: the one on the left
    other_system: str | None  # pairwise: the one on the right; otherwise None
    answer: str  # pairwise: left/right; real_or_fake: real/fake; grade: "1".."5"


@dataclass(frozen=True)
class ResultRow:
    """One measure of one system; ``low``/``high`` bound its 95% interval (None: no interval)."""

    task: str
    system: str
    measure: str  # preference, bradley_terry, fooled, judged_real or mean_grade
    value: float
    low: float | None
    high: float | None
    votes: int
    raters: int


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    center = (p + z²/2n) / (1 + z²/n), half width = z·√(p(1−p)/n + z²/4n²) / (1 + z²/n)
    with p = successes/n. Unlike p ± z·√(p(1−p)/n) it stays inside [0, 1] and
    keeps its coverage near 0 and 1 and for small n. 8 of 10 gives (0.4902, 0.9433).
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes} of {trials}")
    p = successes / trials
    center, half = _wilson_center_and_half_width(p, trials, z)
    return max(0.0, center - half), min(1.0, center + half)


def wilson_half_width(trials: int, p: float = 0.5, z: float = Z95) -> float:
    """Half the width of the Wilson interval for an observed share ``p`` of ``trials`` votes."""
    return _wilson_center_and_half_width(p, trials, z)[1]


def _wilson_center_and_half_width(p: float, n: int, z: float) -> tuple[float, float]:
    shrink = 1 + z * z / n
    center = (p + z * z / (2 * n)) / shrink
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / shrink
    return center, half


def mean_t_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half width of its 95% Student-t interval: t(0.975, n−1) · s / √n.

    ``s`` is the sample standard deviation (n − 1 in the denominator). One value
    has no spread to estimate: its half width is infinite.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean of no values")
    mean = sum(values) / n
    if n == 1:
        return mean, math.inf
    variance = sum((value - mean) ** 2 for value in values) / (n - 1)
    return mean, float(stdtrit(n - 1, 0.975)) * math.sqrt(variance / n)


def bradley_terry(wins: Mapping[tuple[str, str], int], iterations: int = BT_ITERATIONS) -> dict[str, float]:
    """Bradley–Terry strengths from ``wins[(winner, loser)]`` counts, normalized to sum to 1.

    The model says P(i beats j) = γi / (γi + γj). The maximum-likelihood γ are
    found with Hunter's (2004) MM algorithm, a fixed number of iterations of
    γi ← Wi / Σj Nij / (γi + γj), then dividing by Σ γ, where Wi counts the wins of
    i and Nij the comparisons of i with j. A system that never won ends at 0 and
    one that never lost drifts towards taking all the mass: the maximum
    likelihood estimate does not exist then, and the scores only say "ranked
    first/last".
    """
    systems = sorted({system for pair in wins for system in pair})
    won = Counter()
    meetings: dict[str, Counter] = defaultdict(Counter)
    for (winner, loser), count in wins.items():
        won[winner] += count
        meetings[winner][loser] += count
        meetings[loser][winner] += count
    strength = {system: 1 / len(systems) for system in systems}
    for _ in range(iterations):
        updated = {
            i: won[i] / sum(n / (strength[i] + strength[j]) for j, n in meetings[i].items() if n)
            for i in systems
        }
        total = sum(updated.values())
        strength = {system: value / total for system, value in updated.items()}
    return strength


def result_rows(votes: Iterable[Vote]) -> list[ResultRow]:
    """Every measure of every system the votes name: the rows that ``results`` prints and writes."""
    by_task: dict[str, list[Vote]] = defaultdict(list)
    for vote in votes:
        by_task[vote.task].append(vote)
    return (
        pairwise_rows(by_task[PAIRWISE])
        + real_or_fake_rows(by_task[REAL_OR_FAKE])
        + grade_rows(by_task[GRADE])
    )


def pairwise_rows(votes: Sequence[Vote]) -> list[ResultRow]:
    """Per system: share of its comparisons it won (Wilson); with more than two systems also Bradley–Terry."""
    wins: Counter = Counter()
    for vote in votes:
        winner, loser = (vote.system, vote.other_system) if vote.answer == "left" else (vote.other_system, vote.system)
        wins[winner, loser] += 1
    involved = _votes_by_system(votes, lambda vote: (vote.system, vote.other_system))
    rows = [_proportion_row(PAIRWISE, system, "preference", _won(wins, system), shown)
            for system, shown in involved.items()]
    if len(involved) > 2:
        rows += [ResultRow(PAIRWISE, system, "bradley_terry", score, None, None,
                           len(involved[system]), _raters(involved[system]))
                 for system, score in bradley_terry(wins).items()]
    return _ranked(rows)


def real_or_fake_rows(votes: Sequence[Vote]) -> list[ResultRow]:
    """Per colorizing system: share of its images judged real (fooled rate); for the truth: share judged real."""
    shown = _votes_by_system(votes, lambda vote: (vote.system,))
    rows = []
    for system, seen in sorted(shown.items(), key=lambda entry: entry[0] == TRUTH):  # the truth row last
        judged_real = sum(vote.answer == "real" for vote in seen)
        measure = "judged_real" if system == TRUTH else "fooled"
        rows.append(_proportion_row(REAL_OR_FAKE, system, measure, judged_real, seen))
    return _ranked(rows)


def grade_rows(votes: Sequence[Vote]) -> list[ResultRow]:
    """Per system: mean grade (1–5) with its 95% t-interval."""
    rows = []
    for system, graded in _votes_by_system(votes, lambda vote: (vote.system,)).items():
        mean, half = mean_t_interval([int(vote.answer) for vote in graded])
        rows.append(ResultRow(GRADE, system, "mean_grade", mean, mean - half, mean + half,
                              len(graded), _raters(graded)))
    return _ranked(rows)


def _votes_by_system(votes: Sequence[Vote], systems_of) -> dict[str, list[Vote]]:
    grouped: dict[str, list[Vote]] = defaultdict(list)
    for vote in votes:
        for system in systems_of(vote):
            grouped[system].append(vote)
    return dict(grouped)


def _won(wins: Mapping[tuple[str, str], int], system: str) -> int:
    return sum(count for (winner, _), count in wins.items() if winner == system)


def _proportion_row(task: str, system: str, measure: str, successes: int, votes: Sequence[Vote]) -> ResultRow:
    low, high = wilson_interval(successes, len(votes))
    return ResultRow(task, system, measure, successes / len(votes), low, high, len(votes), _raters(votes))


def _raters(votes: Sequence[Vote]) -> int:
    return len({vote.session for vote in votes})


def _ranked(rows: list[ResultRow]) -> list[ResultRow]:
    """Grouped by measure (in order of first appearance), best value first, then by name."""
    order = {measure: index for index, measure in enumerate(dict.fromkeys(row.measure for row in rows))}
    return sorted(rows, key=lambda row: (order[row.measure], -row.value, row.system))
