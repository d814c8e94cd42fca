"""``examples/triage_llm.py``: the language-model triage, against a fake model.

The example's module is imported (``tests/test_examples.py`` runs it as a script); a fake
chat completions endpoint (an ``httpx.MockTransport``) answers, so no test ever reaches a
real model.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from syncrecon.queue import OperatorQueue, Suggestion
from syncrecon.storage import Discrepancy, Status, Storage
from syncrecon.testing import ManualClock
from test_queue import SYNC, World, amount_conflict

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def ex(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("triage_llm")


class FakeModel:
    """A chat completions endpoint that answers what the test says and keeps the requests."""

    def __init__(self, content: Any = None, status: int = 200) -> None:
        self.content = content
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "overloaded"}})
        content = self.content if isinstance(self.content, str) else json.dumps(self.content)
        message = {"role": "assistant", "content": content}
        return httpx.Response(200, json={"choices": [{"index": 0, "message": message}]})

    def sent(self, n: int = -1) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[n].content)
        return body


@pytest.fixture
def model() -> FakeModel:
    return FakeModel({"resolution": "left", "category": "typo", "reasons": ["left is right"]})


@pytest.fixture
def client(model: FakeModel) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.MockTransport(model)) as c:
        yield c


@pytest.fixture
def triage(ex: ModuleType, client: httpx.Client) -> Any:
    return ex.LLMTriage(
        client, base_url="https://llm.example/v1/", api_key="sk-test", model="small-model"
    )


def field_item() -> Discrepancy:
    return Discrepancy(
        sync=SYNC, field="company", status=Status.ESCALATED, detected_at=T0, left_key="L1",
        right_key="R1", left_value="ACME", right_value="Acme", note="call back", assignee="ada",
        explanation="edited on both sides", id=7,
    )  # fmt: skip


def record_item() -> Discrepancy:
    return Discrepancy(
        sync=SYNC, field="*", status=Status.ESCALATED, detected_at=T0, left_key="L1",
        category="possible_duplicate", id=8,
    )  # fmt: skip


def test_the_request_is_an_openai_compatible_chat_completion(triage: Any, model: FakeModel) -> None:
    found = triage.suggest(field_item(), [record_item()])
    assert found == Suggestion(
        category="typo", resolution="left", reasons=("left is right",), source="llm"
    )
    (request,) = model.requests
    assert str(request.url) == "https://llm.example/v1/chat/completions"
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = model.sent()
    assert body["model"] == "small-model"
    assert body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    told = json.loads(body["messages"][1]["content"])
    assert told["item"]["left_value"] == "ACME"
    assert told["item"]["explanation"] == "edited on both sides"
    assert "note" not in told["item"]
    assert "assignee" not in told["item"]
    assert [h["id"] for h in told["history"]] == [8]
    assert "sk-test" not in repr(triage)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"resolution": "right", "reasons": "one reason"}, ("right", None, ("one reason",))),
        ({"resolution": None, "category": "time_zone", "reasons": []}, (None, "time_zone", ())),
        ('```json\n{"resolution": "left"}\n```', ("left", None, ())),
        ({"resolution": "left", "reasons": ["a", 3, " ", "b", "c", "d"]},
         ("left", None, ("a", "b", "c"))),
        ({"resolution": "left", "category": "  "}, ("left", None, ())),
        ({"resolution": "left", "reasons": {"not": "a list"}}, ("left", None, ())),
    ],
    ids=str,
)  # fmt: skip
def test_answers_it_understands(
    ex: ModuleType, content: Any, expected: tuple[Any, Any, tuple[str, ...]]
) -> None:
    answer = FakeModel(content)(httpx.Request("POST", "https://x")).json()
    found = ex.parse_answer(answer, field_item())
    assert found is not None
    assert (found.resolution, found.category, found.reasons) == expected


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        "[1, 2]",
        {"resolution": {"value": 12}},  # a value of its own: never
        {"resolution": "middle"},
        {"resolution": "acknowledge"},  # a field item is not acknowledged
        {"resolution": None, "reasons": ["nothing to say"]},
        {},
    ],
    ids=str,
)
def test_answers_it_ignores(ex: ModuleType, content: Any) -> None:
    answer = FakeModel(content)(httpx.Request("POST", "https://x")).json()
    assert ex.parse_answer(answer, field_item()) is None


@pytest.mark.parametrize(
    "answer",
    [{}, {"choices": []}, {"choices": [{"message": {"content": None}}]}, None, "text"],
    ids=str,
)
def test_answers_without_a_message_are_ignored(ex: ModuleType, answer: Any) -> None:
    assert ex.parse_answer(answer, field_item()) is None


def test_record_level_items_are_acknowledged_or_nothing(ex: ModuleType) -> None:
    def parse(content: Any) -> Suggestion | None:
        answer = FakeModel(content)(httpx.Request("POST", "https://x")).json()
        found: Suggestion | None = ex.parse_answer(answer, record_item())
        return found

    found = parse({"resolution": "acknowledge", "category": "same_record"})
    assert found is not None
    assert found.resolution == "acknowledge"
    assert parse({"resolution": "left"}) is None


def test_the_environment_names_the_model(ex: ModuleType, client: httpx.Client) -> None:
    assert ex.LLMTriage.from_env(client, env={}) is None
    assert ex.LLMTriage.from_env(client, env={ex.ENV_BASE_URL: "https://x/v1"}) is None
    found = ex.LLMTriage.from_env(
        client,
        env={ex.ENV_BASE_URL: "https://x/v1/", ex.ENV_API_KEY: "k", ex.ENV_MODEL: "m"},
    )
    assert (found.base_url, found.model) == ("https://x/v1", "m")


@pytest.fixture
def world(storage: Storage, clock: ManualClock) -> World:
    return World(storage, clock)


def _queue(world: World, triage: Any) -> OperatorQueue:
    return OperatorQueue(world.storage, [world.sync], clock=world.clock, triage=triage)


def totals(storage: Storage, metric: str) -> list[tuple[dict[str, str], int]]:
    return [(dict(labels), n) for labels, n in storage.counter_totals(metric)]


def test_through_the_queue_it_is_asked_once_and_counted(
    world: World, triage: Any, model: FakeModel
) -> None:
    (_lk, rk), item_id = amount_conflict(world)
    queue = _queue(world, triage)
    view = queue.show(item_id)
    assert view.suggestion is not None
    assert view.suggestion.source == "llm"
    assert world.right.write_log == []  # shown, not applied
    assert queue.resolve(item_id, take="left", by="ada").closed
    assert len(model.requests) == 1  # not asked again to count the resolution
    assert totals(world.storage, "triage_suggestions_shown") == [
        ({"source": "llm", "sync": SYNC}, 1)
    ]
    assert totals(world.storage, "triage_suggestions_taken") == [
        ({"source": "llm", "sync": SYNC}, 1)
    ]
    assert world.right.get(rk).fields["Amount"] == 150


@pytest.mark.parametrize(
    "broken",
    [
        lambda: FakeModel(status=503),
        lambda: FakeModel("no json"),
    ],
)
def test_a_failing_model_shows_no_suggestion(
    ex: ModuleType, world: World, broken: Callable[[], FakeModel]
) -> None:
    _keys, item_id = amount_conflict(world)
    with httpx.Client(transport=httpx.MockTransport(broken())) as client:
        triage = ex.LLMTriage(client, base_url="https://llm.example/v1", api_key="k", model="m")
        queue = _queue(world, triage)
        assert queue.show(item_id).suggestion is None
        assert queue.resolve(item_id, take="left").closed
    assert world.storage.counter_totals("triage_suggestions_shown") == []
