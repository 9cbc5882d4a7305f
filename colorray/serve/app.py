"""Ray Serve application: colorize uploaded photos over HTTP with dynamic batching.

One deployment, ``ColorizeService``, is the FastAPI ingress and the model:

- ``POST /colorize`` takes an image (raw body or multipart field ``image``),
  decodes it off the event loop, runs at once when the model is idle or else
  waits in a ``@serve.batch`` queue with other requests, colorizes the batch
  with ``colorray.inference.Colorizer`` (in a worker thread, one model call at
  a time) and returns the encoded result at the input's resolution;
- ``GET /`` is a small HTML page, ``GET /healthz`` a liveness probe, ``GET /info``
  the model's facts plus this replica's serving counters.

Bad input gets a 4xx JSON ``{"error": "..."}``. ``ServeSettings`` (model path,
batching, limits, device) come from the application ``args``; ``user_config``
overrides any of them on running replicas through ``reconfigure()`` (model
swap without a restart). ``app`` is the builder that Serve config files name
(``import_path: colorray.serve.app:app``).

No ``from __future__ import annotations`` here: FastAPI must see real
annotation objects on the routes that ``serve.ingress`` rewraps.
"""

import asyncio
import datetime
import functools
import importlib.metadata
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, AsyncGenerator, AsyncIterable, Mapping

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import Application
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from colorray.data.images import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageError,
    decode_image,
    encode_image,
    media_type,
)
from colorray.inference import Colorizer
from colorray.serve.errors import RequestError, add_json_error_handlers

SERVICE_NAME = "ColorizeService"
FORM_FIELD = "image"
OUTPUT_FORMATS = ("png", "jpeg")
QUERY_PARAMETERS = ("format", "temperature")
DEFAULT_MAX_BYTES = 25 * 1024 * 1024
JPEG_QUALITY = 95


class SettingsError(ValueError):
    """Serve settings (application args or user_config) that are unknown or out of range."""


class ServeSettings(BaseModel):
    """What a replica serves and how; every field can be changed live through ``user_config``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="export file, Tune best/ folder, checkpoint or run folder")
    device: str | None = Field(None, description="torch device; None: cuda when available, else cpu")
    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "ServeSettings":
        try:
            return cls.model_validate(dict(args))
        except ValidationError as error:
            raise SettingsError(f"serve settings: {describe_validation_error(error.errors())}") from None

    def merged(self, overrides: dict[str, Any] | None) -> "ServeSettings":
        return ServeSettings.from_args({**self.model_dump(), **(overrides or {})})


def describe_validation_error(errors: list[dict[str, Any]]) -> str:
    """Pydantic validation errors as one line naming each bad key."""
    parts = []
    for error in errors:
        key = ".".join(str(part) for part in error["loc"])
        got = "" if error["type"] == "missing" else f" (got {error['input']!r})"
        parts.append(f"{key}: {error['msg']}{got}")
    return "; ".join(parts)


@dataclass
class ColorizeJob:
    rgb: np.ndarray
    temperature: float | None


@dataclass
class ServingStats:
    requests: int = 0
    rejected: int = 0
    colorized: int = 0
    batches: int = 0
    largest_batch: int = 0

    def record_batch(self, size: int) -> None:
        self.batches += 1
        self.colorized += size
        self.largest_batch = max(self.largest_batch, size)

    def to_dict(self) -> dict[str, Any]:
        mean = self.colorized / self.batches if self.batches else 0.0
        return {**asdict(self), "mean_batch_size": round(mean, 3)}


def colorize_jobs(colorizer: Colorizer, jobs: list[ColorizeJob]) -> list[np.ndarray]:
    """Colorize a batch, one model call per distinct temperature, results in job order."""
    by_temperature: dict[float | None, list[int]] = defaultdict(list)
    for index, job in enumerate(jobs):
        by_temperature[job.temperature].append(index)
    results: list[np.ndarray] = [np.empty(0)] * len(jobs)
    for temperature, indices in by_temperature.items():
        images = colorizer.colorize([jobs[index].rgb for index in indices], temperature)
        for index, image in zip(indices, images):
            results[index] = image
    return results


def parse_query(query: dict[str, str], output_space: str) -> tuple[str, float | None]:
    """``(format, temperature)`` from the query of ``POST /colorize``; ``RequestError`` names what is wrong."""
    unknown = sorted(set(query) - set(QUERY_PARAMETERS))
    if unknown:
        raise RequestError(400, f"unknown query parameter '{unknown[0]}' (known: {', '.join(QUERY_PARAMETERS)})")
    fmt = query.get("format", "png").lower()
    if fmt not in OUTPUT_FORMATS:
        raise RequestError(400, f"format must be one of {', '.join(OUTPUT_FORMATS)}, got '{query['format']}'")
    if "temperature" not in query:
        return fmt, None
    if output_space != "bins":
        raise RequestError(
            400,
            f"temperature applies only to classification models (output 'bins'); this model predicts '{output_space}'",
        )
    try:
        temperature = float(query["temperature"])
    except ValueError:
        raise RequestError(400, f"temperature must be a number in 0..1, got '{query['temperature']}'") from None
    if not 0.0 <= temperature <= 1.0:
        raise RequestError(400, f"temperature must be in 0..1, got {temperature:g}")
    return fmt, temperature


@dataclass
class Upload:
    """A checked ``POST /colorize`` request: output format, temperature and the decoded image."""

    fmt: str
    temperature: float | None
    image: DecodedImage


async def parse_upload(query: Mapping[str, str], headers: Mapping[str, str], chunks: AsyncIterable[bytes],
                       settings: ServeSettings, output_space: str) -> Upload:
    """Everything ``POST /colorize`` checks before the model runs; ``RequestError`` names what is wrong.

    Plain data in (query, headers, body chunks), so it runs without Serve or a server.
    """
    fmt, temperature = parse_query(dict(query), output_space)
    headers = Headers(headers=dict(headers))
    body = await read_body(chunks, headers, settings.max_bytes)
    image = await asyncio.to_thread(decode_upload, headers, body, settings.max_pixels)
    return Upload(fmt, temperature, image)


async def read_body(chunks: AsyncIterable[bytes], headers: Headers, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass ``max_bytes``."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"upload has {declared} bytes, over the limit of {max_bytes}")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"upload is over the limit of {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


def decode_upload(headers: Headers, body: bytes, max_pixels: int) -> DecodedImage:
    """The uploaded image (raw body, or the multipart field ``image``) decoded; 400 if it is not one."""
    if headers.get("content-type", "").startswith("multipart/form-data"):
        body = asyncio.run(form_image(headers, body))
    try:
        return decode_image(body, max_pixels)
    except ImageError as error:
        raise RequestError(400, str(error)) from None


async def _replay(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def form_image(headers: Headers, body: bytes) -> bytes:
    """The bytes of the multipart form's ``image`` file field."""
    parser = MultiPartParser(headers, _replay(body), max_files=1, max_part_size=len(body) + 1)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise RequestError(400, f"malformed multipart form: {error.message}") from None
    try:
        upload = form.get(FORM_FIELD)
        if upload is None:
            sent = ", ".join(f"'{key}'" for key in form.keys()) or "none"
            raise RequestError(400, f"multipart form has no '{FORM_FIELD}' field (fields sent: {sent})")
        if isinstance(upload, str):
            raise RequestError(400, f"form field '{FORM_FIELD}' must be a file upload, not a text value")
        return await upload.read()
    finally:
        await form.close()


@functools.cache
def index_page() -> str:
    return (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")


api = FastAPI(title="colorray", description="Automatic image colorization", version="1")


add_json_error_handlers(api, log_name="replica")


@serve.deployment(name=SERVICE_NAME, max_ongoing_requests=16, ray_actor_options={"num_cpus": 1})
@serve.ingress(api)
class ColorizeService:
    """The model, loaded once per replica, behind the HTTP routes."""

    def __init__(self, settings: dict[str, Any]):
        self.base_settings = ServeSettings.from_args(settings)
        self.settings = self.base_settings
        self.colorizer = Colorizer.from_path(self.settings.model, device=self.settings.device)
        self.stats = ServingStats()
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.model_turn = asyncio.Lock()  # one model call at a time: the next batch fills while one runs
        self.wanting_model = 0  # decoded requests waiting for or inside a model call
        self._apply_batching()

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply ``user_config`` overrides of the base settings; reload the model only if it changed."""
        settings = self.base_settings.merged(user_config)
        if (settings.model, settings.device) != (self.settings.model, self.settings.device):
            self.colorizer = Colorizer.from_path(settings.model, device=settings.device)
        self.settings = settings
        self._apply_batching()

    def _apply_batching(self) -> None:
        self.colorize_batch.set_max_batch_size(self.settings.max_batch_size)
        self.colorize_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    async def colorize_job(self, job: ColorizeJob) -> np.ndarray:
        """A request that finds the model idle runs at once; under load requests wait in ``colorize_batch``.

        So a lone request never waits ``batch_wait_timeout_s`` for company that is not coming.
        """
        alone = self.wanting_model == 0
        self.wanting_model += 1
        try:
            if alone:
                return (await self.run_model([job]))[0]
            return await self.colorize_batch(job)
        finally:
            self.wanting_model -= 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def colorize_batch(self, jobs: list[ColorizeJob]) -> list[np.ndarray]:
        return await self.run_model(jobs)

    async def run_model(self, jobs: list[ColorizeJob]) -> list[np.ndarray]:
        async with self.model_turn:
            self.stats.record_batch(len(jobs))
            return await asyncio.to_thread(colorize_jobs, self.colorizer, jobs)

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(index_page())

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "model": self.colorizer.info.model}

    @api.get("/info")
    async def info(self) -> dict[str, Any]:
        context = serve.get_replica_context()
        return {
            **self.colorizer.info.to_dict(),
            "colorray_version": importlib.metadata.version("colorray"),
            "settings": self.settings.model_dump(),
            "replica": {"id": context.replica_tag, "pid": os.getpid(), "started": self.started},
            "counters": self.stats.to_dict(),
        }

    @api.post("/colorize", responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    async def colorize(
        self,
        request: Request,
        format: str = Query("png", description="output format: png or jpeg"),
        temperature: str | None = Query(None, description="annealing temperature 0..1 (classification models)"),
    ) -> Response:
        """Colorize the uploaded image (raw body or multipart field ``image``).

        The query parameters are declared for the OpenAPI page; ``parse_query``
        checks them (and refuses unknown ones) so that every refusal is counted.
        """
        self.stats.requests += 1
        try:
            return await self._colorize(request)
        except RequestError:
            self.stats.rejected += 1
            raise

    async def _colorize(self, request: Request) -> Response:
        upload = await parse_upload(request.query_params, request.headers, request.stream(), self.settings,
                                    self.colorizer.info.output_space)
        rgb = await self.colorize_job(ColorizeJob(upload.image.rgb, upload.temperature))
        encoded = await asyncio.to_thread(encode_image, rgb, upload.fmt, upload.image.alpha, JPEG_QUALITY)
        return Response(encoded, media_type=media_type(upload.fmt))


def build_app(settings: ServeSettings, **deployment_options: Any) -> Application:
    """The Serve application for ``settings``; ``deployment_options`` go to ``Deployment.options``.

    ``max_ongoing_requests`` defaults to twice ``max_batch_size`` (one batch runs
    while the next fills) and must be at least ``max_batch_size``.
    """
    options = {"max_ongoing_requests": max(2 * settings.max_batch_size, 4), "user_config": {}, **deployment_options}
    if options["max_ongoing_requests"] < settings.max_batch_size:
        raise SettingsError(
            f"max_ongoing_requests ({options['max_ongoing_requests']}) must be >= max_batch_size "
            f"({settings.max_batch_size}), else batches never fill"
        )
    return ColorizeService.options(**options).bind(settings.model_dump())


def app(args: dict[str, Any]) -> Application:
    """Application builder for Serve config files and ``serve run colorray.serve.app:app model=PATH``."""
    return build_app(ServeSettings.from_args(args))
