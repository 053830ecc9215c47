"""Request and response bodies of the API (pydantic: FastAPI validates requests against them).

Requests are strict about types (``"max_tokens": "ten"`` is an error, not a coercion) and forbid unknown keys in
``/v1/answer``; the OpenAI-compatible chat body ignores fields it does not use, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

ModelChoice = Literal["router", "student", "teacher"]


class AnswerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelChoice = Field(default="router", description="router (default), or force student / teacher")
    max_tokens: StrictInt | None = Field(default=None, ge=1, description="answer length bound")
    temperature: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=2)
    include_documents: StrictBool = Field(default=False, description="return the retrieved documents too")
    fallback: StrictBool = Field(default=True, description="let a failed student answer fall back to the teacher")


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: StrictStr
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
    score: float
    threshold: float
    verdict: str  # the verdict the answer opens with
    student_verdict_probs: dict[str, float]
    escalation_waste_s: float  # the student's verdict step (discarded when escalated)


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
    cascade: CascadeOut | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: StrictStr


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=1)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    n: StrictInt = Field(default=1, ge=1, le=1, description="only one choice per request")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
