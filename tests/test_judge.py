"""Tests of ``colorray.judge``: statistics against hand computations, items from folders and
manifests, command-line errors, and real servers on 127.0.0.1 with real SQLite files: guards,
votes surviving SIGKILL, and headless Chromium rating by mouse and by keyboard.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from chromium import needs_chromium, open_chromium
from PIL import Image

from colorray.judge.__main__ import main
from colorray.judge.items import ItemsError, open_study
from colorray.judge.stats import (
    ResultRow,
    Vote,
    bradley_terry,
    mean_t_interval,
    result_rows,
    wilson_half_width,
    wilson_interval,
)
from colorray.judge.store import VoteRecord, open_store
from colorray.judge.tasks import GRADE, PAIRWISE, REAL_OR_FAKE, TASKS, TRUTH

ROOT = Path(__file__).parents[1]
SYSTEMS = ("alpha", "beta", "gamma")
TOKEN = "test-admin-token-0123456789"
T_975_3_DF = 3.182446305284263  # Student t, 97.5% quantile, 3 degrees of freedom (printed tables: 3.182)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_items(root: Path, photos: int = 4, systems=SYSTEMS, truth: str | None = "truth") -> Path:
    """``root/<system>/photo<i>.png`` for each system (and ``truth``): tiny PNGs, different per photo and system."""
    for number, system in enumerate(systems + ((truth,) if truth else ())):
        (root / system).mkdir(parents=True)
        for photo in range(photos):
            color = (40 * number, 10 * photo, 200 - 40 * number)
            Image.new("RGB", (24, 16), color).save(root / system / f"photo{photo}.png")
    return root


# --- statistics, by hand -------------------------------------------------------------------------

def test_wilson_interval_matches_the_known_value():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(1, 0)


def test_docs_table_of_interval_widths_matches_wilson():
    docs = (ROOT / "docs" / "judge.md").read_text(encoding="utf-8")
    for n in (25, 50, 100, 200, 400, 1000):
        assert f"| {n} | ±{wilson_half_width(n):.3f} |" in docs


def test_bradley_terry_recovers_strengths_that_fit_the_counts_exactly():
    # true strengths 4:2:1 and win counts in exactly those ratios: the MLE is (4, 2, 1) / 7
    wins = {("A", "B"): 4, ("B", "A"): 2, ("A", "C"): 8, ("C", "A"): 2, ("B", "C"): 4, ("C", "B"): 2}
    scores = bradley_terry(wins)
    assert scores == pytest.approx({"A": 4 / 7, "B": 2 / 7, "C": 1 / 7}, abs=1e-9)


def test_bradley_terry_solves_the_score_equations_orders_and_sums_to_one():
    wins = {("A", "B"): 7, ("B", "A"): 3, ("A", "C"): 6, ("C", "A"): 4, ("B", "C"): 6, ("C", "B"): 4}
    scores = bradley_terry(wins)
    assert sum(scores.values()) == pytest.approx(1.0)
    assert scores["A"] > scores["B"] > scores["C"]
    for i in scores:  # at the maximum likelihood, wins = expected wins for every system
        won = sum(count for (winner, _), count in wins.items() if winner == i)
        expected = sum((wins.get((i, j), 0) + wins.get((j, i), 0)) * scores[i] / (scores[i] + scores[j])
                       for j in scores if j != i)
        assert won == pytest.approx(expected, rel=1e-6)


def test_mean_t_interval_by_hand():
    mean, half = mean_t_interval([4, 5, 3, 4])
    # mean 4, s = sqrt((0 + 1 + 1 + 0) / 3), half width = t(0.975, 3) * s / sqrt(4)
    assert mean == 4 and half == pytest.approx(T_975_3_DF * math.sqrt(2 / 3) / 2)
    assert mean_t_interval([3]) == (3, math.inf)


def hand_made_votes() -> list[Vote]:
    """Pairwise counts A>B 4:2, A>C 8:2, B>C 4:2 (winners shown left and right); real_or_fake:
    truth judged real 8 of 10, A fooled 3 of 10; grades of A 4, 5, 3, 4. Raters r0..r3."""
    votes = []
    pairs = [("A", "B", 4), ("B", "A", 2), ("A", "C", 8), ("C", "A", 2), ("B", "C", 4), ("C", "B", 2)]
    for winner, loser, count in pairs:
        for n in range(count):
            shown_left = (winner, loser) if n % 2 else (loser, winner)
            answer = "left" if shown_left[0] == winner else "right"
            votes.append(Vote(PAIRWISE, f"r{n % 4}", shown_left[0], shown_left[1], answer))
    votes += [Vote(REAL_OR_FAKE, f"r{n % 2}", TRUTH, None, "real" if n < 8 else "fake") for n in range(10)]
    votes += [Vote(REAL_OR_FAKE, f"r{n % 3}", "A", None, "real" if n < 3 else "fake") for n in range(10)]
    votes += [Vote(GRADE, "r0", "A", None, grade) for grade in "4534"]
    return votes


def expected_rows() -> list[ResultRow]:
    a_grade_half = T_975_3_DF * math.sqrt(2 / 3) / 2
    return [
        ResultRow(PAIRWISE, "A", "preference", 12 / 16, *wilson_interval(12, 16), 16, 4),
        ResultRow(PAIRWISE, "B", "preference", 6 / 12, *wilson_interval(6, 12), 12, 4),
        ResultRow(PAIRWISE, "C", "preference", 4 / 16, *wilson_interval(4, 16), 16, 4),
        ResultRow(PAIRWISE, "A", "bradley_terry", 4 / 7, None, None, 16, 4),
        ResultRow(PAIRWISE, "B", "bradley_terry", 2 / 7, None, None, 12, 4),
        ResultRow(PAIRWISE, "C", "bradley_terry", 1 / 7, None, None, 16, 4),
        ResultRow(REAL_OR_FAKE, "A", "fooled", 0.3, *wilson_interval(3, 10), 10, 3),
        ResultRow(REAL_OR_FAKE, TRUTH, "judged_real", 0.8, 0.4901624715, 0.9433178485, 10, 2),
        ResultRow(GRADE, "A", "mean_grade", 4.0, 4 - a_grade_half, 4 + a_grade_half, 4, 1),
    ]


def assert_rows_equal(rows, expected):
    assert [(r.task, r.system, r.measure, r.votes, r.raters) for r in rows] == \
           [(r.task, r.system, r.measure, r.votes, r.raters) for r in expected]
    for row, hand in zip(rows, expected):
        assert [row.value, row.low, row.high] == pytest.approx([hand.value, hand.low, hand.high], abs=1e-8), row


def test_result_rows_equal_the_hand_computation():
    assert_rows_equal(result_rows(hand_made_votes()), expected_rows())


def test_results_command_reads_a_hand_made_vote_table(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'votes.sqlite'}"
    store = open_store(url)
    for number, vote in enumerate(hand_made_votes()):
        store.add(VoteRecord(vote.session, vote.task, f"{number:016x}", "photo", vote.system, vote.other_system,
                             vote.answer, 500))
    assert main(["results", "--db", url, "--csv", str(tmp_path / "results.csv")]) == 0
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["pairwise", "A", "preference", "0.750", "0.505-0.898", "16", "4"] in printed
    assert ["real_or_fake", "truth", "judged_real", "0.800", "0.490-0.943", "10", "2"] in printed
    with open(tmp_path / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    rows = [ResultRow(r["task"], r["system"], r["measure"], float(r["value"]),
                      float(r["low"]) if r["low"] else None, float(r["high"]) if r["high"] else None,
                      int(r["votes"]), int(r["raters"])) for r in table]
    assert_rows_equal(rows, expected_rows())


# --- items ---------------------------------------------------------------------------------------

def test_folder_items_per_task(tmp_path):
    items = make_items(tmp_path / "items", photos=2)
    pairwise = open_study(items, PAIRWISE)
    assert len(pairwise.items) == 2 * 3  # per photo: alpha-beta, alpha-gamma, beta-gamma
    assert all(TRUTH not in item.systems and len(item.images) == 2 for item in pairwise.items.values())
    assert len(open_study(items, GRADE).items) == 2 * 4  # each system and the truth
    real_or_fake = open_study(items, REAL_OR_FAKE)
    assert len(real_or_fake.items) == 2 * 4
    assert len(real_or_fake.queue("rater-0001")) == 2  # each photo once per rater
    assert open_study(items, PAIRWISE).items.keys() == pairwise.items.keys()  # ids stable across loads


def test_ground_truth_folder_name_and_matching_across_suffixes(tmp_path):
    items = make_items(tmp_path / "items", photos=2, truth=None)
    (items / "ground_truth" / "sub").mkdir(parents=True)
    for photo in range(2):  # truth as JPEG in a subfolder matches systems' PNGs of the same relative name
        for system in SYSTEMS:
            (items / system / "sub").mkdir(exist_ok=True)
            Image.new("RGB", (8, 8)).save(items / system / "sub" / f"p{photo}.png")
        Image.new("RGB", (8, 8)).save(items / "ground_truth" / "sub" / f"p{photo}.jpg")
    study = open_study(items, REAL_OR_FAKE)
    truths = sorted(image.photo for image in study.images.values() if image.system == TRUTH)
    assert truths == ["sub/p0", "sub/p1"]
    assert {item.photo for item in study.items.values() if item.systems == (TRUTH,)} == {"sub/p0", "sub/p1"}


def test_session_order_is_stable_random_and_pairwise_sides_are_flipped(tmp_path):
    study = open_study(make_items(tmp_path / "items", photos=6), PAIRWISE)
    first = [item.id for item in study.queue("rater-0001")]
    assert first == [item.id for item in study.queue("rater-0001")]
    assert first != [item.id for item in study.queue("rater-0002")]
    orders = {study.shown_order("rater-0001", item) for item in study.items.values()}
    assert orders == {(0, 1), (1, 0)}


def test_manifest_json_and_csv_make_the_same_study_as_the_folder(tmp_path):
    items = make_items(tmp_path / "items", photos=2)
    folders = {system: system for system in SYSTEMS} | {"ground_truth": "truth"}
    entries = [{"photo": f"photo{p}", "system": system, "path": f"items/{folder}/photo{p}.png"}
               for system, folder in folders.items() for p in range(2)]
    (tmp_path / "study.json").write_text(json.dumps(entries))
    with open(tmp_path / "study.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["photo", "system", "path"])
        writer.writeheader()
        writer.writerows(entries)
    expected = open_study(items, GRADE).items.keys()
    assert open_study(tmp_path / "study.json", GRADE).items.keys() == expected
    assert open_study(tmp_path / "study.csv", GRADE).items.keys() == expected


@pytest.mark.parametrize("case, message", [
    ("missing", "items folder not found"),
    ("empty", "no system folders in"),
    ("empty_system", "no images (.jpg"),
    ("corrupt", "photo1.png: not a readable image"),
    ("one_system", "pairwise needs at least two systems"),
    ("bad_manifest", "entry 1: needs non-empty photo, system and path"),
])
def test_unusable_items_say_what_is_wrong(tmp_path, case, message):
    source = tmp_path / "items"
    if case == "empty":
        source.mkdir()
    elif case == "empty_system":
        make_items(source, photos=1)
        (source / "delta").mkdir()
    elif case == "corrupt":
        make_items(source, photos=2)
        (source / "beta" / "photo1.png").write_bytes(b"\x89PNG not really")
    elif case == "one_system":
        make_items(source, photos=1, systems=("alpha",))
    elif case == "bad_manifest":
        source = tmp_path / "study.json"
        source.write_text(json.dumps([{"photo": "x", "system": "alpha"}]))
    with pytest.raises(ItemsError) as error:
        open_study(source, PAIRWISE)
    assert message in str(error.value)


def test_real_or_fake_needs_ground_truth(tmp_path):
    with pytest.raises(ItemsError, match="real_or_fake needs ground truth"):
        open_study(make_items(tmp_path / "items", photos=1, truth=None), REAL_OR_FAKE)


# --- command line errors -------------------------------------------------------------------------

def test_cli_errors_are_one_line(tmp_path, capsys):
    items = make_items(tmp_path / "items", photos=1)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--items", str(items), "--task", "ranking"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: argument --task: invalid choice: 'ranking'")
    cases = [
        (["serve", "--items", str(tmp_path / "none")], f"error: items folder not found: {tmp_path / 'none'}\n"),
        (["serve", "--items", str(items), "--db", "nonsense"], "error: bad database URL 'nonsense'"),
        (["serve", "--items", str(items), "--db", "sqlite:///" + str(tmp_path / "no" / "j.sqlite")],
         "error: folder of the SQLite database not found"),
        (["results", "--db", f"sqlite:///{tmp_path / 'none.sqlite'}"], "error: no votes database at"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(expected) and err.count("\n") == 1, err


def test_serve_refuses_a_busy_port(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        argv = ["serve", "--items", str(make_items(tmp_path / "items", photos=1)),
                "--db", f"sqlite:///{tmp_path / 'j.sqlite'}", "--port", str(busy.getsockname()[1])]
        assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: cannot listen on 127.0.0.1:")


# --- a real server -------------------------------------------------------------------------------

class JudgeServer:
    """``python -m colorray.judge serve`` as a subprocess on a free port of 127.0.0.1."""

    def __init__(self, items: Path, db: str, *options: str, token: str | None = TOKEN):
        self.url = f"http://127.0.0.1:{free_port()}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        env.pop("COLORRAY_JUDGE_TOKEN", None)
        if token:
            env["COLORRAY_JUDGE_TOKEN"] = token
        command = [sys.executable, "-m", "colorray.judge", "serve", "--items", str(items), "--db", db,
                   "--port", self.url.rsplit(":", 1)[1], *options]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.process.stderr.read()
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "judge server did not come up"
            time.sleep(0.05)

    def get(self, path: str, **options) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **options)

    def vote(self, session: str, item: str, answer: str, ms: int = 700) -> requests.Response:
        body = {"session": session, "item": item, "answer": answer, "ms": ms}
        return requests.post(f"{self.url}/api/vote", json=body, timeout=10)

    def next_item(self, session: str) -> dict:
        return self.get(f"/api/next?session={session}").json()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=15)
        self.process.stderr.close()


def export(server: JudgeServer) -> list[dict]:
    response = server.get("/admin/export?format=json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


def assert_refused(response: requests.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json" and text in response.json()["error"]


@pytest.mark.slow
def test_guards_and_votes_surviving_sigkill(tmp_path):
    items = make_items(tmp_path / "items", photos=4)
    db = f"sqlite:///{tmp_path / 'judge.sqlite'}"
    server = JudgeServer(items, db)
    try:
        progress = {}
        for session in ("rater-one", "rater-two", "rater-three"):
            progress[session] = server.next_item(session)
            for _ in range(4):
                reply = server.vote(session, progress[session]["item"]["id"], "left")
                assert reply.status_code == 200, reply.text
                progress[session] = reply.json()
        assert progress["rater-one"]["rated"] == 4 and progress["rater-one"]["total"] == 12
        voted = export(server)[0]

        assert_refused(server.vote(voted["session"], voted["item"], "right"), 409, "already voted")
        for bad_id in ("../x", "/etc/passwd", "a/b", "ZZZZZZZZZZZZZZZZ"):
            assert_refused(server.vote("rater-one", bad_id, "left"), 400, "bad item id")
        assert_refused(server.vote("rater-one", "0123456789abcdef", "left"), 404, "unknown item")
        assert_refused(server.vote("rater-one", voted["item"], "real"), 400, "answer must be one of left, right")
        assert_refused(server.vote("../../x", voted["item"], "left"), 400, "session must be")
        not_json = requests.post(f"{server.url}/api/vote", data="{", headers={"Content-Type": "application/json"})
        assert_refused(not_json, 400, "request body is not valid JSON")
        assert_refused(requests.post(f"{server.url}/api/vote", json=[voted["item"]]), 400, "must be a JSON object")
        assert_refused(requests.post(f"{server.url}/api/vote", json={"item": voted["item"]}), 400, "session: Field")
        for path in ("/api/image/..%2F..%2Fetc%2Fpasswd", "/api/image/%2Fetc%2Fpasswd", "/api/image/a/b"):
            assert_refused(server.get(path), 404, "no route")
        assert_refused(server.get("/api/image/not-an-id"), 400, "bad image id")
        assert_refused(server.get("/api/image/0123456789abcdef"), 404, "unknown image")
        image = server.get(progress["rater-one"]["item"]["images"][0])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"

        assert_refused(server.get("/admin/export"), 403, "Bearer")
        assert_refused(server.get("/admin/export", headers={"Authorization": "Bearer wrong"}), 403, "Bearer")
        csv_export = server.get("/admin/export", headers={"Authorization": f"Bearer {TOKEN}"})
        header = "id,created_at,session,task,item,photo,system,other_system,answer,response_ms"
        assert csv_export.text.splitlines()[0] == header and len(csv_export.text.splitlines()) == 1 + 12

        target = server.next_item("rater-fast")["item"]["id"]
        with ThreadPoolExecutor(8) as pool:  # 8 at once; the default limit is 5 votes per second per rater
            replies = list(pool.map(lambda _: server.vote("rater-fast", target, "right"), range(8)))
        statuses = sorted(reply.status_code for reply in replies)
        assert statuses == [200] + [409] * 4 + [429] * 3, statuses
        too_fast = next(reply for reply in replies if reply.status_code == 429)
        assert_refused(too_fast, 429, "more than 5 votes per second")
        before_kill = export(server)
        assert len(before_kill) == 12 + 1
    finally:
        server.stop(signal.SIGKILL)
    assert server.process.returncode == -signal.SIGKILL

    restarted = JudgeServer(items, db, token=None)
    try:
        assert_refused(restarted.get("/admin/export", headers={"Authorization": f"Bearer {TOKEN}"}), 404, "disabled")
        assert restarted.next_item("rater-two")["rated"] == 4
        assert open_store(db, create=False).export_rows() == before_kill
    finally:
        restarted.stop()


# --- the page in headless Chromium ---------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module's page tests."""
    with open_chromium(tmp_path_factory.mktemp("chromium-profile")) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def study_items(tmp_path_factory):
    return make_items(tmp_path_factory.mktemp("judge") / "items", photos=20)


# (how the rater answers, what the server stores) for ten mouse votes, then ten keyboard votes
MOUSE = {
    PAIRWISE: [("#answers [data-answer=left]", "left"), ("#images [data-answer=right]", "right")],
    REAL_OR_FAKE: [("#answers [data-answer=real]", "real"), ("#answers [data-answer=fake]", "fake")],
    GRADE: [(f"#answers [data-answer='{grade}']", str(grade)) for grade in range(1, 6)],
}
KEYBOARD = {
    PAIRWISE: [("ArrowRight", "right"), ("ArrowLeft", "left")],
    REAL_OR_FAKE: [("r", "real"), ("F", "fake"), ("ArrowRight", "fake"), ("ArrowLeft", "real")],
    GRADE: [(str(grade), str(grade)) for grade in (5, 3, 1, 4, 2)],
}
EXPOSURE_MS = 200


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("task", TASKS)
def test_page_rates_ten_items_by_mouse_and_ten_by_keyboard(browser, study_items, tmp_path, task):
    server = JudgeServer(study_items, f"sqlite:///{tmp_path / 'judge.sqlite'}", "--task", task,
                         "--exposure-ms", str(EXPOSURE_MS), "--max-votes-per-second", "50")
    try:
        browser.call("Page.navigate", url=f"{server.url}/")
        browser.wait_until(f"location.origin === '{server.url}' && document.body?.dataset.state === 'ready'")
        session = browser.evaluate("localStorage.getItem('colorray-judge-session')")
        upcoming = server.next_item(session)["after"]["images"]
        browser.wait_until(f"{json.dumps(upcoming)}.every(url => performance.getEntriesByType('resource')"
                           ".some(entry => entry.name.endsWith(url)))")  # the next item is preloaded
        plan = [(browser.click, how, stored) for how, stored in itertools.islice(itertools.cycle(MOUSE[task]), 10)]
        plan += [(browser.press, how, stored) for how, stored in itertools.islice(itertools.cycle(KEYBOARD[task]), 10)]
        for rated, (act, how, _) in enumerate(plan):
            browser.wait_until("document.body?.dataset.state === 'ready'")
            if task == REAL_OR_FAKE:  # the image is hidden before the rater may answer
                assert browser.evaluate("!!document.querySelector('#images .mask')")
            act(how)
            browser.wait_until(f"document.body?.dataset.rated === '{rated + 1}'")
        assert browser.evaluate("document.getElementById('progress').textContent") == "20 rated"
        votes = export(server)
        assert [vote["answer"] for vote in votes] == [stored for _, _, stored in plan]
        assert {vote["session"] for vote in votes} == {session} and {vote["task"] for vote in votes} == {task}
        assert len({vote["item"] for vote in votes}) == 20
        if task == REAL_OR_FAKE:
            assert min(vote["response_ms"] for vote in votes) >= EXPOSURE_MS
    finally:
        server.stop()
