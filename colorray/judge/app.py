"""The judgement web app (FastAPI): the rating page, its JSON API, images by id, the admin export.

Routes: ``GET /`` the page; ``GET /api/study`` task, question, answers,
exposure; ``GET /api/next?session=S`` progress, the item to show and the one
after it (to preload); ``POST /api/vote`` ``{"session", "item", "answer", "ms"}``
commits the vote, then answers like ``/api/next``; ``GET /api/image/{id}``;
``GET /admin/export?format=csv|json`` every vote, with
``Authorization: Bearer TOKEN``; ``GET /healthz``.

Clients only ever send ids. Every refusal is JSON ``{"error": "..."}``: 400 a
malformed request, 404 an unknown id or route, 403 a missing or wrong admin
token (404 when no token is configured), 409 a second vote on an item, 429
votes faster than the per-session limit.
"""

from __future__ import annotations

import csv
import functools
import hmac
import io
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from colorray.data.images import ImageError, encode_image, read_image_file
from colorray.judge.items import ID_PATTERN, Item, Study
from colorray.judge.store import EXPORT_COLUMNS, DuplicateVote, Store, VoteRecord
from colorray.judge.tasks import ANSWERS, PAIRWISE, QUESTIONS
from colorray.serve.errors import RequestError, add_json_error_handlers

SESSION_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
BROWSER_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
MAX_RESPONSE_MS = 3_600_000
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self' 'unsafe-inline'",
}


@dataclass(frozen=True)
class JudgeSettings:
    exposure_ms: int = 1000  # real_or_fake: how long the image is shown before it is hidden
    max_votes_per_second: int = 5  # per session
    admin_token: str | None = None  # None: the export endpoint is off


class Ballot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session: str
    item: str
    answer: str
    ms: int = Field(ge=0, le=MAX_RESPONSE_MS)


class RateLimiter:
    """At most ``limit`` attempts per key within any one second."""

    def __init__(self, limit: int):
        self.limit = limit
        self.recent: dict[str, deque[float]] = defaultdict(deque)
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            stamps = self.recent[key]
            while stamps and now - stamps[0] >= 1.0:
                stamps.popleft()
            if len(stamps) >= self.limit:
                return False
            stamps.append(now)
            return True


@functools.cache
def judge_page() -> str:
    return (Path(__file__).parent / "static" / "judge.html").read_text(encoding="utf-8")


def create_app(study: Study, store: Store, settings: JudgeSettings) -> FastAPI:
    app = FastAPI(title="colorray judge", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = RateLimiter(settings.max_votes_per_second)
    _add_error_handlers(app)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(judge_page(), headers=PAGE_HEADERS)

    @app.get("/healthz")
    def health() -> dict:
        return {"status": "ok", "task": study.task, "items": len(study.items)}

    @app.get("/api/study")
    def describe() -> dict:
        return {"task": study.task, "question": QUESTIONS[study.task], "answers": list(ANSWERS[study.task]),
                "exposure_ms": settings.exposure_ms}

    @app.get("/api/next")
    def next_item(session: str = "") -> dict:
        return progress(study, store, checked_session(session))

    @app.post("/api/vote")
    def vote(ballot: Ballot) -> dict:
        item = checked_ballot(study, ballot)
        if not limiter.allow(ballot.session):
            raise RequestError(429, f"more than {settings.max_votes_per_second} votes per second: slow down")
        if item.id not in {queued.id for queued in study.queue(ballot.session)}:
            raise RequestError(404, f"item {item.id} is not in this rater's queue")
        try:
            store.add(vote_record(study, ballot, item))
        except DuplicateVote as error:
            raise RequestError(409, str(error)) from None
        return progress(study, store, ballot.session)

    @app.get("/api/image/{image_id}")
    def image(image_id: str) -> Response:
        return image_response(study, checked_id(image_id, "image"))

    @app.get("/admin/export")
    def export(request: Request, format: str = "csv") -> Response:
        check_admin(request, settings.admin_token)
        if format not in ("csv", "json"):
            raise RequestError(400, f"format must be csv or json, got {format!r}")
        rows = store.export_rows()
        return JSONResponse(rows) if format == "json" else Response(csv_text(rows), media_type="text/csv")

    return app


def _add_error_handlers(app: FastAPI) -> None:
    add_json_error_handlers(app, log_name="server")

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(error.errors()[0])}, status_code=400)


def validation_message(first: dict) -> str:
    fields = [part for part in first.get("loc", ()) if isinstance(part, str) and part != "body"]
    if first["type"] == "json_invalid":
        return "request body is not valid JSON"
    if not fields:
        return f"request body must be a JSON object {{session, item, answer, ms}}: {first['msg']}"
    return f"{'.'.join(fields)}: {first['msg']}"


def checked_session(session: str) -> str:
    if not SESSION_PATTERN.fullmatch(session):
        raise RequestError(400, "session must be 8-64 letters, digits, '-' or '_'")
    return session


def checked_id(value: str, kind: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise RequestError(400, f"bad {kind} id {value!r}: ids are 16 hex digits")
    return value


def checked_ballot(study: Study, ballot: Ballot) -> Item:
    checked_session(ballot.session)
    item = study.items.get(checked_id(ballot.item, "item"))
    if item is None:
        raise RequestError(404, f"unknown item {ballot.item}")
    if ballot.answer not in ANSWERS[study.task]:
        raise RequestError(400, f"answer must be one of {', '.join(ANSWERS[study.task])}, got {ballot.answer!r}")
    return item


def vote_record(study: Study, ballot: Ballot, item: Item) -> VoteRecord:
    """The vote as stored: systems in the order the rater saw them (pairwise: left, right)."""
    shown = [item.systems[position] for position in study.shown_order(ballot.session, item)]
    return VoteRecord(session=ballot.session, task=study.task, item=item.id, photo=item.photo, system=shown[0],
                      other_system=shown[1] if study.task == PAIRWISE else None, answer=ballot.answer,
                      response_ms=ballot.ms)


def progress(study: Study, store: Store, session: str) -> dict:
    """How far the rater is, the item to show now and the one after it (None when there is none)."""
    rated = store.rated_items(session)
    queue = study.queue(session)
    pending = [item for item in queue if item.id not in rated]
    shown = [item_view(study, session, item) for item in pending[:2]]
    return {"rated": len(queue) - len(pending), "total": len(queue),
            "item": shown[0] if shown else None, "after": shown[1] if len(shown) > 1 else None}


def item_view(study: Study, session: str, item: Item) -> dict:
    return {"id": item.id,
            "images": [f"/api/image/{item.images[position]}" for position in study.shown_order(session, item)]}


def image_response(study: Study, image_id: str) -> Response:
    image = study.images.get(image_id)
    if image is None:
        raise RequestError(404, f"unknown image {image_id}")
    headers = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
    try:
        media_type = BROWSER_IMAGE_TYPES.get(image.path.suffix.lower())
        if media_type:
            return Response(image.path.read_bytes(), media_type=media_type, headers=headers)
        decoded = read_image_file(image.path)  # TIFF, BMP: converted for the browser
        return Response(encode_image(decoded.rgb, "png", decoded.alpha), media_type="image/png", headers=headers)
    except (OSError, ImageError) as error:
        raise RequestError(404, f"image {image_id} is no longer readable: {error}") from None


def check_admin(request: Request, token: str | None) -> None:
    if not token:
        raise RequestError(404, "admin export is disabled: start the server with --admin-token or COLORRAY_JUDGE_TOKEN")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise RequestError(403, "admin export needs the header 'Authorization: Bearer <token>' with the right token")


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
