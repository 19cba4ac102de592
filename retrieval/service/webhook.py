"""``POST /webhook``: Rasa's action endpoint, running the shop's custom actions in this
process (the one that holds the models and indexes).

Only the Rasa server may call it: every call must carry the shared ``webhook_token`` as
``Authorization: Bearer <token>`` (Rasa sends it from the ``headers`` of its
``action_endpoint`` in endpoints.yml). Without the setting, the route refuses every call.
The token is checked before the body is read; the action call is then checked for the
shape the actions read (a tracker object with a ``latest_message`` object, a list of
events, ...), so a malformed call gets 422 naming the field, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..errors import InputError, NotLoggedIn, Unavailable
from .keys import has_secret

__all__ = ["MAX_BODY", "check_action_call", "executor", "router"]

MAX_BODY = 8 * 1024 * 1024  # the tracker of a long conversation, with every event

router = APIRouter(tags=["rasa"])


def executor(
    retriever: Callable[[], Any],
    uploads: Callable[[], Any],
    contexts: Callable[[], Any] | None = None,
    interests: Callable[[], Any] | None = None,
    gate: Any = None,
) -> Any:
    """The rasa_sdk executor with the shop's actions registered; ``contexts`` gives the
    conversation-context store (None: the bot remembers nothing between turns); ``gate``
    the service's query gate, which the actions' retrieval calls pass."""
    from rasa_sdk.executor import ActionExecutor

    from .actions import (
        ActionAnswerFollowup,
        ActionAnswerPhoto,
        ActionAnswerQuestion,
        ActionSmallTalk,
    )

    out = ActionExecutor()
    answer = ActionAnswerQuestion(retriever, contexts=contexts, interests=interests, gate=gate)
    out.register_action(ActionSmallTalk(retriever, answer=answer, gate=gate))
    out.register_action(answer)
    out.register_action(
        ActionAnswerFollowup(retriever, contexts=contexts, interests=interests, gate=gate)
    )
    out.register_action(ActionAnswerPhoto(retriever, uploads, contexts=contexts, gate=gate))
    return out


def _kind(value: object, kind: type, where: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise InputError(
            f"{where} must be {'an object' if kind is dict else 'a list' if kind is list else 'text'}"
        )


def check_action_call(call: object) -> dict[str, Any]:
    """The action call if it has the shape the actions read; else :class:`InputError`."""
    if not isinstance(call, dict):
        raise InputError("the action call must be a JSON object")
    if not isinstance(call.get("next_action"), str) or not call["next_action"]:
        raise InputError("next_action must name the action to run")
    _kind(call.get("domain"), dict, "domain")
    tracker = call.get("tracker")
    if not isinstance(tracker, dict):
        raise InputError("tracker must be an object")
    if not isinstance(tracker.get("sender_id"), str) or not tracker["sender_id"]:
        raise InputError("tracker.sender_id must be text")
    _kind(tracker.get("slots"), dict, "tracker.slots")
    _kind(tracker.get("latest_message"), dict, "tracker.latest_message")
    _kind(tracker.get("events"), list, "tracker.events")
    for event in tracker.get("events") or ():
        if not isinstance(event, dict):
            raise InputError("tracker.events must hold objects")
    message = tracker.get("latest_message") or {}
    _kind(message.get("text"), str, "tracker.latest_message.text")
    _kind(message.get("intent"), dict, "tracker.latest_message.intent")
    _kind(message.get("entities"), list, "tracker.latest_message.entities")
    for entity in message.get("entities") or ():
        if not isinstance(entity, dict):
            raise InputError("tracker.latest_message.entities must hold objects")
    return call


@router.post("/webhook", include_in_schema=False)
async def rasa_webhook(request: Request) -> JSONResponse:
    """Rasa's action endpoint: runs the shop's custom actions in this process.
    Needs `Authorization: Bearer <webhook_token>`."""
    from rasa_sdk.interfaces import ActionExecutionRejection, ActionNotFoundException

    token = request.app.state.settings.webhook_token
    if token is None or not token.get_secret_value():
        raise Unavailable(
            "the action endpoint is off: set webhook_token (RETRIEVAL_WEBHOOK_TOKEN) here and "
            "in Rasa's endpoints.yml (docs/security.md)"
        )
    if not has_secret(request, token):
        raise NotLoggedIn("the action endpoint needs the Rasa server's token")
    try:
        action_call = check_action_call(await request.json())
    except ValueError:
        raise InputError("the action call is not valid JSON") from None
    try:
        result = await request.app.state.executor.run(action_call)
    except ActionNotFoundException as exc:
        return JSONResponse({"error": exc.message, "action_name": exc.action_name}, status_code=404)
    except ActionExecutionRejection as exc:
        return JSONResponse({"error": exc.message, "action_name": exc.action_name}, status_code=400)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise InputError(f"malformed action call: {type(exc).__name__}: {exc}") from None
    return JSONResponse(result.model_dump(by_alias=True) if result else {})
