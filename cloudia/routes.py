"""The WebSocket API's routes: which handler module in functions/ serves each route key.

The one table the CDK constructs (one function per handler, one route per key), the local gateway,
the discovery of the deployed functions and the tests read. A new route is one line here and its
handler's module; the frame it carries is a model in `cloudia.frames`, and a test holds the frames'
actions equal to `MESSAGE_ROUTES`.
"""
from __future__ import annotations

# API Gateway's own route keys.
CONNECT = "$connect"
DISCONNECT = "$disconnect"
DEFAULT = "$default"
# The REQUEST authorizer of `$connect`: not a route, but a function run before it, as API Gateway does.
AUTHORIZER = "$authorizer"

# handler module -> what it is for (each one Lambda function, its description says this)
HANDLERS = {
    "authorizer": "verifies the Cognito token of $connect (REQUEST authorizer)",
    "connect": "$connect: registers the connection for its user",
    "disconnect": "$disconnect: removes the registration",
    "send_message": "sendMessage: validates, rate-limits and enqueues a job",
    "default": "ping, history/resume and every other frame",
}

# Frame `action` -> handler module: the routes chosen by `$request.body.action`, each returning the
# handler's body as the caller's reply. Any other action goes to `$default`, which answers it with an
# error event.
MESSAGE_ROUTES = {
    "sendMessage": "send_message",
    "retry": "send_message",  # the function with the grants to queue a job
    "ping": "default",
    "history": "default",
    "resume": "default",
}

# Every route key (and the authorizer) -> handler module.
ROUTES = {
    AUTHORIZER: "authorizer",
    CONNECT: "connect",
    DISCONNECT: "disconnect",
    **MESSAGE_ROUTES,
    DEFAULT: "default",
}


def pascal(module: str) -> str:
    """`send_message` -> `SendMessage`: a handler module's name in construct ids."""
    return "".join(part.capitalize() for part in module.split("_"))


def function_id(module: str) -> str:
    """The construct id of a handler's function ("...Function": a plain "Default" is special to the CDK)."""
    return f"{pascal(module)}Function"
