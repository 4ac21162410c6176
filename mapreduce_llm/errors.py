"""One error hierarchy for the whole package.

Every message says what was wrong, with the offending value, and what to do about it. Errors that concern
a single document (:class:`DocumentError`) become ``status: "error"`` records in the results and the job
goes on; the others stop the job before (configuration) or while (engine) it runs.
"""

from __future__ import annotations


class MapReduceError(Exception):
    """Base class of every error raised on purpose by mapreduce-llm."""


class ConfigError(MapReduceError):
    """A job spec, engine config or CLI argument is invalid; raised before any work starts."""

    def __init__(self, message: str, *, parameter: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value


class DocumentError(MapReduceError):
    """One input document cannot be processed. Becomes an error record; the job goes on.

    ``code`` is a short stable identifier (``empty``, ``invalid_utf8``, ``duplicate_id`` ...) that tools
    can count on; the message is for people.
    """

    def __init__(self, message: str, *, document_id: str, code: str, source: str | None = None) -> None:
        super().__init__(message)
        self.document_id = document_id
        self.code = code
        self.source = source
        """Where the document was read from (``file`` or ``file:line``), when known."""


class PromptError(MapReduceError):
    """A prompt file is missing or invalid, or a prompt reference does not resolve."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.field = field


class BudgetError(MapReduceError):
    """A prompt cannot fit the model's context whatever the chunk size (template or reserve too large)."""


class OutputInUseError(MapReduceError):
    """Another job is writing into the output folder; raised before any work starts."""


class EngineError(MapReduceError):
    """The inference engine failed in a way that is not specific to one request. Stops the job loudly."""


class RequestError(MapReduceError):
    """One engine request failed. Retried (bounded) when ``transient``; then fails its document, not the job."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        """True for failures worth retrying (timeouts, engine errors); False for rejected requests."""

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments survive pickling across Ray processes.
        return (_rebuild_request_error, (str(self), self.transient))


def _rebuild_request_error(message: str, transient: bool) -> RequestError:
    return RequestError(message, transient=transient)
