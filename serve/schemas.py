"""Request and response bodies of the API (pydantic: FastAPI validates requests against them).

Requests are strict about types (``"max_tokens": "ten"`` is an error, not a coercion) and forbid unknown keys in
``/v1/answer``. The OpenAI-compatible chat body refuses every field it does not honour (``tools``,
``response_format``, ``logprobs``, ...: :meth:`ChatCompletionRequest.unsupported`) unless its value asks for
nothing (null, false, 0, empty): a client that relies on a field must be told, not answered as if it were
honoured. Only pure bookkeeping fields (:data:`IGNORED_CHAT_FIELDS`) are accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_serializer,
)

ModelChoice = Literal["router", "student", "teacher"]
INT64 = 2**63  # seeds are 64-bit integers in the engines (OpenAI documents the same range)


def _valid_unicode(text: str) -> str:
    """JSON may carry lone surrogates ("\\ud800") that no tokenizer can encode: a client error, not a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode: a lone surrogate at character {exc.start}") from None
    return text


Text = Annotated[StrictStr, AfterValidator(_valid_unicode)]


class SamplingOptions(BaseModel):
    """Per-request overrides of the served system's sampling (unset: the system's own)."""

    max_tokens: StrictInt | None = Field(default=None, ge=1, description="answer length bound")
    min_tokens: StrictInt | None = Field(default=None, ge=0, description="generate at least this many tokens")
    temperature: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=1)
    stop: Text | list[Text] | None = Field(default=None, description="stop strings (limits.max_stop, max_stop_chars)")
    repetition_penalty: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=2)
    seed: StrictInt | None = Field(default=None, ge=-INT64, lt=INT64)


class AnswerOptions(SamplingOptions):
    model_config = ConfigDict(extra="forbid")

    model: ModelChoice = Field(default="router", description="router (default), or force student / teacher")
    include_documents: StrictBool = Field(default=False, description="return the retrieved documents too")
    fallback: StrictBool = Field(default=True, description="let a failed student answer fall back to the teacher")


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: Text
    options: AnswerOptions = Field(default_factory=AnswerOptions)


class Citation(BaseModel):
    index: int
    pmid: str
    title: str


class DocumentOut(BaseModel):
    index: int
    pmid: str
    title: str
    score: float
    text: str


class RouterDecisionOut(BaseModel):
    score: float | None
    threshold: float | None
    source: str  # router file, heuristic, teacher-only policy, or forced by the request


class CascadeOut(BaseModel):
    escalated: bool  # the student's verdict step sent the question to the teacher
    score: float | None  # the rule's P(teacher needed); None when the student could not take its verdict step
    threshold: float
    student_verdict_probs: dict[str, float] | None  # the student's raw P(yes/no/maybe)
    escalation_waste_s: float  # the student's verdict step (thrown away when escalated; never sent to the client)


class FallbackOut(BaseModel):
    from_model: str
    reason: str  # error, timeout, empty
    detail: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AnswerResponse(BaseModel):
    id: str
    question: str
    answer: str
    citations: list[Citation]
    routed_to: Literal["student", "teacher"]  # the model the router (or the request) chose
    answered_by: Literal["student", "teacher"]  # differs from routed_to after a fallback
    model: str
    router: RouterDecisionOut
    fallback: FallbackOut | None
    finish_reason: str
    usage: Usage
    timings: dict[str, float]  # seconds per stage: retrieval, rerank, filter, prompt, route, generation, total
    documents: list[DocumentOut] | None = None
    verdict: str | None = None  # verdict-first answers: the verdict the answer opens with
    verdict_probs: dict[str, float] | None = None  # P(yes/no/maybe) of the model that answered
    cascade: CascadeOut | None = None  # cascade mode (routing.cascade_rule): the student's verdict step and decision


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: Text


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


# OpenAI chat fields that change nothing about the answer (bookkeeping on OpenAI's side): accepted, ignored.
IGNORED_CHAT_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"})


class ChatCompletionRequest(SamplingOptions):
    model_config = ConfigDict(extra="allow")  # kept, so that :meth:`unsupported` can name them

    model: Text
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    n: StrictInt = Field(default=1, ge=1, le=1, description="only one choice per request")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None

    def unsupported(self) -> list[str]:
        """The fields sent that this server does not honour and whose value asks for something (``tools``,
        ``response_format``, ``logprobs: true``, ``frequency_penalty: 0.5``, any unknown key...)."""
        extra = self.model_extra or {}
        return sorted(name for name, value in extra.items()
                      if name not in IGNORED_CHAT_FIELDS and value not in (None, False, 0, "", [], {}))

    @classmethod
    def supported(cls) -> list[str]:
        return sorted(cls.model_fields)


# ------------------------------------------------------------------------------------ chat completion responses


class _OmitNone(BaseModel):
    """Optional fields left unset (None) are left out of the JSON, as in OpenAI's stream deltas and chunks."""

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class RagrouteInfo(BaseModel):
    """Which model the router chose, which one answered, why, and any fallback (the ``ragroute`` extension)."""

    routed_to: Literal["student", "teacher"]
    answered_by: Literal["student", "teacher"]
    router: RouterDecisionOut
    fallback: FallbackOut | None
    cascade: CascadeOut | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    ragroute: RagrouteInfo


class ChunkDelta(_OmitNone):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(_OmitNone):
    """One server-sent event of a streamed chat completion; ``ragroute`` rides on the first, ``usage`` on the
    extra last one (``stream_options.include_usage``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    ragroute: RagrouteInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ragroute"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ------------------------------------------------------------------------------------------------- probes


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    engines: Literal["loading", "ready", "failed"]
    system: dict[str, Any] | None = None  # what is served: system hashes, where they came from, any override
    # per role: model, circuit (closed, half_open, open), consecutive_failures, last_error, last_probe_s_ago
    backends: dict[str, dict[str, Any]] | None = None
