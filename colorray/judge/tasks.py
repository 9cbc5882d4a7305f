"""The vocabulary of a study: task names, their questions and answers, the ground-truth system name."""

from __future__ import annotations

PAIRWISE = "pairwise"
REAL_OR_FAKE = "real_or_fake"
GRADE = "grade"
TASKS = (PAIRWISE, REAL_OR_FAKE, GRADE)

TRUTH = "truth"  # the system name of ground-truth photos (folder `truth` or `ground_truth`)

QUESTIONS = {
    PAIRWISE: "Which photo looks more natural?",
    REAL_OR_FAKE: "Was that a real color photo, or were its colors made up?",
    GRADE: "How natural do the colors look? (1 bad … 5 excellent)",
}

ANSWERS = {
    PAIRWISE: ("left", "right"),
    REAL_OR_FAKE: ("real", "fake"),
    GRADE: ("1", "2", "3", "4", "5"),
}
