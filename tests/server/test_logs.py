import json
import logging

from vllm_server_ext.logs import JsonFormatter, TextFormatter


def record(**extra: object) -> logging.LogRecord:
    fields = {"name": "vllm_server_ext", "levelname": "INFO", "levelno": logging.INFO}
    return logging.makeLogRecord({**fields, "msg": "phase %s", "args": ("ready",), **extra})


def test_json_lines_carry_message_and_extra_fields():
    line = JsonFormatter().format(record(uptime=1.5))
    parsed = json.loads(line)
    assert parsed["message"] == "phase ready"
    assert parsed["level"] == "INFO"
    assert parsed["uptime"] == 1.5
    assert parsed["time"].endswith("Z")


def test_text_lines_append_key_values_without_vllm_noise():
    line = TextFormatter().format(record(uptime=1.5, vllm_process_name="MainProcess"))
    assert line.endswith("INFO vllm_server_ext phase ready uptime=1.5")
