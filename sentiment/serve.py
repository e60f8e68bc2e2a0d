"""`sentiment serve`: a trained text run behind HTTP (FastAPI + uvicorn).

    POST /predict  {"texts": [...]}  -> {"predictions": [{"label", "probability", "scores"}]}
                                        (a rating run: [{"rating"}]; a multi-label run:
                                        [{"labels", "label", "probability", "scores"}])
    POST /explain  {"text": "..."}   -> the label and every token's contribution (sentiment.explain)
    GET  /health                     -> the run's name, model and classes
    GET  /docs                       -> the OpenAPI page
    GET  /                           -> a page to try it: a text box, the label, the words highlighted

The model loads once. Texts of concurrent requests are gathered into one batch (`Batcher`: what is
queued when the model is free, plus what arrives within a short wait, up to a maximum batch), so
throughput grows with load while a lone request waits only the window. The model runs in one
worker thread with torch's threads sized to the cores this process may use; the event loop keeps
reading requests meanwhile. A bad request gets a 4xx with `{"error": "..."}` and the server goes on.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from sentiment import jsonlines
from sentiment.errors import SentimentError
from sentiment.runs import Run
from sentiment.text.saved_run import MAX_TEXT_CHARS, check_texts

MAX_TEXTS = 1000  # per request: more is a batch job for `sentiment predict --file`
MAX_BODY = 4 << 20  # bytes: MAX_TEXTS reviews of three times IMDb's mean length; more is for predict --file
RUN_ENV = "SENTIMENT_SERVE_RUN"  # the run for `create_app_from_env` (several uvicorn workers)
THREADS_ENV = "SENTIMENT_SERVE_THREADS"  # and each worker's torch threads
BATCH_ENV = "SENTIMENT_SERVE_BATCH"  # and its "max_batch,wait_ms"
BACKEND_ENV = "SENTIMENT_SERVE_BACKEND"  # and its backend (torch, onnx, onnx-int8)
DEVICE_ENV = "SENTIMENT_SERVE_DEVICE"  # and its device (cpu, cuda)


class ServedModel:
    """One text run, loaded once: batched `predict` and `explain`, each run in the caller's thread."""

    def __init__(self, run: Run, device: str = "cpu", backend: str = "torch"):
        from sentiment import export
        from sentiment.registry import family_of_run, open_classifier

        self.run = run
        self.family: str = family_of_run(run.read_meta("text"), "text")
        self.backend = backend
        self.clf = export.with_backend(open_classifier(run, device, kind="text"), backend)
        self.clf.serve()  # e.g. TextCNN: the form `predict` uses for a file, for every batch
        self.rating = getattr(self.clf, "rating", None)  # a rating run's `targets.Rating`
        self.multi_label = getattr(self.clf, "multi_label", None)  # a multi-label run's `targets.MultiLabel`
        self.classes: list[str] = self.clf.classes
        self._lock = threading.Lock()  # one batch at a time through the model
        self._explain_lock = threading.Lock()  # and one explanation at a time through the explainer's own

    def health(self) -> dict:
        return {
            "status": "ok",
            "run": self.run.path.name,
            "model": self.family,
            "classes": self.classes,
            "precision": "int8" if self.backend == "onnx-int8" else self.clf.precision,
            "backend": self.backend,
            "target": self.run.read_json("config.json").get("target", "label"),
        } | ({"thresholds": dict(zip(self.classes, self.multi_label.thresholds, strict=True))}
             if self.multi_label is not None else {})  # fmt: skip

    def predict(self, texts: Sequence[str]) -> list[dict]:
        """One prediction per text, flagged `no_known_words` where the text has no word the model knows."""
        with self._lock:
            probs, known = self.clf.scores(texts)
        if self.rating is not None:
            return [{"rating": p[0], "no_known_words": not k} for p, k in zip(probs.tolist(), known, strict=True)]
        out = []
        for p, k in zip(probs.tolist(), known, strict=True):
            best = max(range(len(p)), key=p.__getitem__)
            scores = dict(zip(self.classes, p, strict=True))
            answer = {"label": self.classes[best], "probability": p[best], "scores": scores, "no_known_words": not k}
            if self.multi_label is not None:
                answer = {"labels": self.multi_label.labels_of(p), **answer}
            out.append(answer)
        return out

    def explain(self, text: str) -> dict:
        """The explanation of one text, flagged as `predict` flags it. Explainers that need a model
        build one of their own."""
        known = self.clf.knows([text])[0]  # by encoding it, without the model
        with self._explain_lock:
            return self.clf.explain(text).to_json() | {"no_known_words": not known}


class Batcher:
    """Gathers the texts of concurrent requests into batches for `fn` (texts -> one result each)."""

    def __init__(self, fn: Callable[[list[str]], list], executor, *, max_batch: int = 64, wait_s: float = 0.002):
        self.fn, self.executor = fn, executor
        self.max_batch, self.wait_s = max_batch, wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batches = 0  # how many batches ran, and with how many texts: for /health and the tests
        self.texts = 0

    async def submit(self, texts: list[str]) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            size = len(items[0][0])
            deadline = loop.time() + self.wait_s
            while size < self.max_batch:
                try:
                    left = deadline - loop.time()
                    item = self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left)
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                items.append(item)
                size += len(item[0])
            texts = [t for chunk, _ in items for t in chunk]
            try:
                results = await loop.run_in_executor(self.executor, self.fn, texts)
            except Exception as e:  # the requests get the error; the batcher goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batches += 1
            self.texts += len(texts)
            at = 0
            for chunk, future in items:
                if not future.done():  # a client that went away leaves a cancelled future
                    future.set_result(results[at : at + len(chunk)])
                at += len(chunk)


# What the server accepts, stated in the schema: a text has a character that is not white space
# (Python's notion, as `check_texts` has it) and is at most MAX_TEXT_CHARS long.
Text = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=r"\S",
        description=f"a review: at most {MAX_TEXT_CHARS:,} characters, not only white space",
    ),
]


class Body(BaseModel):
    model_config = ConfigDict(regex_engine="python-re")  # `pattern` as Python (and the schema's readers) read it


class PredictRequest(Body):
    texts: list[Text] = Field(
        min_length=1,
        max_length=MAX_TEXTS,
        description=f"1 to {MAX_TEXTS:,} texts to classify",
        examples=[["this movie is so great"]],
    )


class Prediction(BaseModel):
    label: str
    probability: float
    scores: dict[str, float]
    no_known_words: bool = Field(
        description="the text has no word the model knows, so the label is only the model's prior"
    )


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class MultiLabelPrediction(Prediction):
    """A multi-label run's answer: `labels` are every label at or over its threshold (most probable
    first; possibly none), `scores` every label's probability, `label` the most probable one."""

    labels: list[str]


class MultiLabelPredictResponse(BaseModel):
    predictions: list[MultiLabelPrediction]


class RatingPrediction(BaseModel):
    rating: float = Field(description="the predicted rating, within the training data's range")
    no_known_words: bool = Field(
        description="the text has no word the model knows, so the rating is only the model's prior"
    )


class RatingPredictResponse(BaseModel):
    predictions: list[RatingPrediction]


class ExplainRequest(Body):
    text: Text = Field(examples=["this movie is so great"])


class Token(BaseModel):
    token: str
    start: int
    end: int
    contribution: float


class ExplainResponse(BaseModel):
    text: str
    label: str
    probability: float
    scores: dict[str, float]
    tokens: list[Token]
    method: str
    bias: float
    margin: float
    completeness_gap: float | None
    cut: bool
    no_known_words: bool


class RatingExplainResponse(ExplainResponse):
    """A rating run's explanation: `label` is "rating", `probability` null, `scores` empty; `margin`
    is the model's output (the rating before clipping) and the contributions add up to it less `bias`."""

    probability: None
    rating: float


class MultiLabelExplainResponse(ExplainResponse):
    """A multi-label run's explanation: of the most probable label (`label`), whose logit is `margin`;
    `labels` are every label at or over its threshold."""

    labels: list[str]


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong, in one line")


ERRORS = {
    400: {"model": ErrorResponse, "description": "the body is not valid JSON"},
    413: {"model": ErrorResponse, "description": f"the body is over {MAX_BODY:,} bytes (refused before it is read)"},
    422: {"model": ErrorResponse, "description": "the body does not follow the schema"},
}


def _json(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(jsonlines.dumps(obj).encode(), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    return _json({"error": message}, status, headers)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before it is read in full, whether
    its Content-Length says so or it comes in chunks (then the app sees the client leave, and what it
    would answer is dropped)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = _error(413, f"the request body is over {self.limit:,} bytes")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await too_big(scope, receive, send)
        seen, answered = 0, False

        async def counted():
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request" and not answered:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    answered = True
                    await too_big(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def unless_answered(message):
            if not answered:
                await send(message)

        await self.app(scope, counted, unless_answered)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "the body is not valid JSON"
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    said = {
        "too_short": "give at least one text",
        "too_long": f"at most {MAX_TEXTS:,} texts per request",
        "string_too_short": "the text is empty; give a review",
        "string_pattern_mismatch": "the text is empty (only white space); give a review",
        "string_too_long": f"the text is over {MAX_TEXT_CHARS:,} characters (is this the right input?)",
    }.get(first.get("type"), first.get("msg", "invalid request"))
    return 422, f"{where}: {said}"


def create_app(model: ServedModel, *, max_batch: int = 64, wait_ms: float = 2.0) -> FastAPI:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    # explanations (integrated gradients can take seconds) use models of their own, in a thread of
    # their own, so predictions do not queue behind them
    explainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
    batcher = Batcher(model.predict, executor, max_batch=max_batch, wait_s=wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            executor.shutdown(wait=False, cancel_futures=True)
            explainer.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="sentiment",
        summary=f"run {model.run.path.name}: {model.family}, classes {', '.join(model.classes)}",
        lifespan=lifespan,
    )
    app.state.model, app.state.batcher = model, batcher

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(*_validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))  # 405 keeps its Allow

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return _error(500, f"internal error: {type(exc).__name__}: {first}")

    def checked(texts: list[str]) -> Response | None:
        """What the schema already refused, checked again where the model needs it."""
        try:
            check_texts(texts)
        except SentimentError as e:
            return _error(422, str(e))
        return None

    rating, multi = model.rating is not None, model.multi_label is not None
    answers = RatingPredictResponse if rating else MultiLabelPredictResponse if multi else PredictResponse
    explained = RatingExplainResponse if rating else MultiLabelExplainResponse if multi else ExplainResponse

    @app.post("/predict", responses={200: {"model": answers}, **ERRORS})
    async def predict(body: PredictRequest) -> Response:
        """Classify texts: the label, its probability and every class's probability, one per text
        (a rating run: the rating; a multi-label run: also the labels over their thresholds). A text
        with no word the model knows is answered too, flagged
        `no_known_words`: its answer is then only the model's prior."""
        bad = checked(body.texts)
        if bad is not None:
            return bad
        return _json({"predictions": await batcher.submit(body.texts)})

    @app.post("/explain", responses={200: {"model": explained}, **ERRORS})
    async def explain(body: ExplainRequest) -> Response:
        """The label and, for every token, how much it pushed towards it (character offsets into the text)."""
        bad = checked([body.text])
        if bad is not None:
            return bad
        return _json(await asyncio.get_running_loop().run_in_executor(explainer, model.explain, body.text))

    @app.get("/health")
    async def health() -> dict:
        """The run this server answers with: its name, model family and classes."""
        return model.health() | {"batches": batcher.batches, "texts": batcher.texts}

    page = resources.files("sentiment").joinpath("page.html").read_text()
    page = page.replace("{{RUN}}", model.run.path.name).replace("{{MAX_CHARS}}", str(MAX_TEXT_CHARS))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_middleware(BodyLimit, limit=MAX_BODY)
    return app


def check_address(host: str, port: int) -> None:
    """A one-line error before the model loads if the server could not listen there."""
    import errno
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except socket.gaierror:
        raise SentimentError(f"--host {host}: no such address on this machine") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise SentimentError(f"port {port} on {host} is in use; pick another with --port") from None
        raise SentimentError(f"cannot listen on {host}:{port} ({e.strerror})") from None


def create_app_from_env():
    """The app for the run named by $SENTIMENT_SERVE_RUN: uvicorn's factory for several workers."""
    if os.environ.get(THREADS_ENV):
        import torch

        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    model = ServedModel(
        Run.open(os.environ.get(RUN_ENV), kind="text"),
        device=os.environ.get(DEVICE_ENV, "cpu"),
        backend=os.environ.get(BACKEND_ENV, "torch"),
    )
    max_batch, wait_ms = os.environ.get(BATCH_ENV, "64,2").split(",")
    return create_app(model, max_batch=int(max_batch), wait_ms=float(wait_ms))
