"""Request metering lives in :mod:`syncrecon._metering` (the engine uses it without loading the
HTTP toolkit); this module keeps the toolkit's import path."""

from .._metering import RequestMeter, SendState, count_request, metering, sending

__all__ = ["RequestMeter", "SendState", "count_request", "metering", "sending"]
