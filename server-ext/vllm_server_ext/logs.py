"""Logging: quiet key=value text by default, JSON lines with `--log-format json`.

JSON mode also reaches vLLM's own loggers through `VLLM_LOGGING_CONFIG_PATH` (vLLM's documented
way to replace its logging config), so a log pipeline gets one format from the whole process,
the engine process included (it inherits the environment).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time

LOGGER_NAME = "vllm_server_ext"
log = logging.getLogger(LOGGER_NAME)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra=` fields."""

    _RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out |= {k: v for k, v in vars(record).items() if k not in self._RESERVED}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...` with the `extra=` fields appended."""

    _RESERVED = JsonFormatter._RESERVED

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        # vLLM's record factory adds vllm_* attributes: noise in a line that names its logger.
        extra = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in self._RESERVED and not k.startswith("vllm_")
        )
        return f"{line} {extra}" if extra else line


def configure(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    if fmt == "json" and "VLLM_LOGGING_CONFIG_PATH" not in os.environ:
        level = os.environ.get("VLLM_LOGGING_LEVEL", "INFO")
        config = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
            "handlers": {
                "json": {
                    "class": "logging.StreamHandler",
                    "formatter": "json",
                    "stream": "ext://sys.stdout",
                }
            },
            "loggers": {"vllm": {"handlers": ["json"], "level": level, "propagate": False}},
        }
        fd, path = tempfile.mkstemp(prefix="vllm-ext-logging-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = path
