"""The few exceptions the app raises on purpose. Messages say what was wrong and what to do.

The edges convert them: the web UI to ``gr.Error``, the API to HTTP 4xx with a JSON body, the CLI to
exit code 2 with the message. Anything else is a bug and is logged, never shown as a trace.
"""


class AssistantsError(Exception):
    """Base class: a problem the user or operator can fix; the message says how."""

    http_status = 400


class InvalidInput(AssistantsError):
    """The request itself is wrong (empty message, too long, unknown domain...)."""

    http_status = 400


class TooLarge(InvalidInput):
    """A message, upload or request exceeds a configured limit."""

    http_status = 413


class NotFound(AssistantsError):
    """Something named in the request does not exist (an answer id, a model name)."""

    http_status = 404


class Forbidden(AssistantsError):
    """The request names something this client may not touch (another conversation's answer)."""

    http_status = 403


class Busy(AssistantsError):
    """The server is at capacity; the client should retry shortly."""

    http_status = 429


class ConfigError(AssistantsError):
    """A setting or a spec file is invalid; the message names it."""

    http_status = 500


class ModelError(AssistantsError):
    """The model or an adapter cannot be loaded or used as configured."""

    http_status = 503
