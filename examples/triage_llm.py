"""A triage hook that asks a language model for a suggestion: any OpenAI-compatible chat
completions endpoint, over httpx.

The operator queue shows what the model proposes next to the item; an operator decides. The
model may propose taking the left or the right value, acknowledging a record-level item, or
nothing; never a value of its own (an answer with anything else is ignored).

Run it against a real model::

    export TRIAGE_LLM_BASE_URL=https://api.openai.com/v1   # or a local server's /v1
    export TRIAGE_LLM_API_KEY=sk-...
    export TRIAGE_LLM_MODEL=gpt-4o-mini
    python examples/triage_llm.py

Without those variables it runs against a canned answer (an ``httpx.MockTransport``), so it
runs anywhere; ``tests/test_triage_llm.py`` checks the parsing against a fake model.

What the model is sent: the item (its keys, field, category, values, base and explanation) and
its record's recent history. That is your customers' data leaving your systems: check that
your provider may see it, or point the base URL at a model you run yourself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from syncrecon import FieldMap, NaturalKey, Reconciler, SyncDefinition, escalate
from syncrecon.queue import OperatorQueue, Suggestion, is_record_level, item_data
from syncrecon.storage import Discrepancy
from syncrecon.storage.memory import MemoryStorage
from syncrecon.testing import ManualClock, SimulatedSystem

ENV_BASE_URL = "TRIAGE_LLM_BASE_URL"
ENV_API_KEY = "TRIAGE_LLM_API_KEY"
ENV_MODEL = "TRIAGE_LLM_MODEL"

SYSTEM_PROMPT = """\
You help an operator settle a discrepancy between two business systems (left and right).
You get one queue item as JSON (its field, category, left and right values, the base value
both systems last agreed on, and why a rule could not settle it) and the record's history.
Answer with one JSON object and nothing else:
{"resolution": "left" | "right" | "acknowledge" | null,
 "category": a short snake_case label for what you think happened, or null,
 "reasons": [one to three short sentences an operator can check]}
"left"/"right" takes that side's value (a field item only); "acknowledge" closes an item
about a whole record (field "*") without writing; null proposes nothing. When unsure, answer
null. Never invent a value."""

_FIELD_ONLY = ("left", "right")
_MAX_REASONS = 3
_MAX_TEXT = 300


class LLMTriage:
    """A :class:`syncrecon.queue.Triage` that asks an OpenAI-compatible chat completions API.

    ``repeatable = False``: a model is slow, costs money and may answer differently the next
    time, so the queue asks it only to show a suggestion (and counts a resolution as taking
    the suggestion only when it showed one).
    """

    repeatable: ClassVar[bool] = False

    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        api_key: str,
        model: str,
        source: str = "llm",
        timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.model = model
        self.source = source
        self.timeout = timeout

    def __repr__(self) -> str:  # never the key
        return f"LLMTriage({self.base_url!r}, model={self.model!r})"

    @classmethod
    def from_env(
        cls, client: httpx.Client, env: Mapping[str, str] | None = None
    ) -> LLMTriage | None:
        """The triage the environment names, or ``None`` when it names none."""
        env = os.environ if env is None else env
        base_url, api_key = env.get(ENV_BASE_URL), env.get(ENV_API_KEY)
        if not base_url or not api_key:
            return None
        return cls(client, base_url=base_url, api_key=api_key, model=env.get(ENV_MODEL, ""))

    def suggest(self, item: Discrepancy, history: Sequence[Discrepancy]) -> Suggestion | None:
        """Ask the model; raise on a failed request (the queue then shows no suggestion)."""
        body = {
            "model": self.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": json.dumps(prompt_data(item, history))},
            ],
        }
        response = self.client.post(
            f"{self.base_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {self._api_key}"},
            timeout=self.timeout,
        )
        response.raise_for_status()
        return parse_answer(response.json(), item, source=self.source)


def prompt_data(item: Discrepancy, history: Sequence[Discrepancy]) -> dict[str, Any]:
    """What the model is told: the item and up to ten items of its history, without who works
    on them or their notes."""

    def shown(d: Discrepancy) -> dict[str, Any]:
        data = item_data(d)
        for private in ("note", "assignee"):
            data.pop(private, None)
        return data

    return {"item": shown(item), "history": [shown(h) for h in history[:10]]}


def parse_answer(answer: Any, item: Discrepancy, *, source: str = "llm") -> Suggestion | None:
    """The suggestion in a chat completions answer, or ``None`` for anything unexpected."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(content, str):
        return None
    text = content.strip()
    if text.startswith("```"):  # a fenced block, although JSON alone was asked for
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    resolution = data.get("resolution")
    if resolution not in (*_FIELD_ONLY, "acknowledge", None):
        return None  # a value of its own, or nonsense
    record_level = is_record_level(item)
    if (resolution in _FIELD_ONLY and record_level) or (
        resolution == "acknowledge" and not record_level
    ):
        return None
    category = data.get("category")
    if category is not None and (not isinstance(category, str) or not category.strip()):
        category = None
    raw = data.get("reasons", [])
    raw = [raw] if isinstance(raw, str) else raw
    reasons = (
        [r.strip()[:_MAX_TEXT] for r in raw if isinstance(r, str) and r.strip()]
        if isinstance(raw, list)
        else []
    )
    if resolution is None and category is None:
        return None
    return Suggestion(
        category=category.strip()[:64] if category else None,
        resolution=resolution,
        reasons=tuple(reasons[:_MAX_REASONS]),
        source=source,
    )


def _canned(request: httpx.Request) -> httpx.Response:
    """A stand-in model: it takes the left value of anything that differs only in case."""
    sent = json.loads(request.content)
    item = json.loads(sent["messages"][1]["content"])["item"]
    left, right = item["left_value"], item["right_value"]
    same = isinstance(left, str) and isinstance(right, str) and left.lower() == right.lower()
    answer = {
        "resolution": "left" if same else None,
        "category": "formatting" if same else None,
        "reasons": ["the two names differ only in capitalization; the left one is the CRM's"],
    }
    message = {"role": "assistant", "content": json.dumps(answer)}
    return httpx.Response(200, json={"choices": [{"index": 0, "message": message}]})


def main() -> None:
    clock = ManualClock()
    crm = SimulatedSystem("crm", clock=clock)
    erp = SimulatedSystem("erp", clock=clock)
    account = crm.create({"email": "ops@acme.example", "company": "Acme GmbH"})
    customer = erp.create({"Email": "ops@acme.example", "Company": "Acme GmbH"})
    sync = SyncDefinition(
        name="accounts",
        left=crm,
        right=erp,
        fields=[FieldMap(left="company", right="Company", policy=escalate("company_name"))],
        natural_key=NaturalKey(left="email", right="Email"),
    )
    storage = MemoryStorage()
    reconciler = Reconciler(sync, storage, clock=clock)
    reconciler.run_cycle()
    crm.edit(account, company="ACME GmbH")
    erp.edit(customer, Company="acme gmbh")
    reconciler.run_cycle()

    real = bool(os.environ.get(ENV_BASE_URL) and os.environ.get(ENV_API_KEY))
    transport = None if real else httpx.MockTransport(_canned)
    with httpx.Client(transport=transport) as client:
        triage = LLMTriage.from_env(client) or LLMTriage(
            client, base_url="https://model.invalid/v1", api_key="not-a-key", model="canned"
        )
        print(f"asking {'the model at ' + triage.base_url if real else 'a canned model'}")
        queue = OperatorQueue(storage, [sync], clock=clock, triage=triage)
        (item,) = queue.list(category="company_name")
        assert item.id is not None
        view = queue.show(item.id)
        print(view)
        suggestion = view.suggestion
        if suggestion is None or suggestion.resolution not in _FIELD_ONLY:
            print("no suggestion to take: an operator decides alone")
            return
        # An operator reads the suggestion and agrees: the queue writes, not the model.
        take = "left" if suggestion.resolution == "left" else "right"
        result = queue.resolve(item.id, take=take, by="ada")
        print(result)
        taken = storage.counter_totals("triage_suggestions_taken")
        print(f"suggestions taken: {sum(n for _, n in taken)}")
        assert reconciler.run_cycle().total_writes == 0
        print("converged: the next cycle wrote nothing")


if __name__ == "__main__":
    main()
