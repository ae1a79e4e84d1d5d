"""Tool and reasoning parser plugins (`--tool-parser-plugin`, `--reasoning-parser-plugin`) work
as with `vllm serve`: the server starts with parsers named by a plugin file, and a chat
completion goes through them. One server start covers both."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from vllm_testkit.servers import SERVED_NAME, ext_server

pytestmark = pytest.mark.vllm

TOOL_PARSER = "ext_test_fixed_call"
REASONING_PARSER = "ext_test_fixed_reasoning"
# What the plugins answer whatever the (random) model says, so a response shows they ran.
TOOL_ARGUMENTS = {"city": "Paris", "parsed_by": TOOL_PARSER}
REASONING = f"reasoning from {REASONING_PARSER}"

TOOL_PLUGIN = f'''
import json

from vllm.entrypoints.generate.base.protocol import (
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
)
from vllm.tool_parsers import ToolParser, ToolParserManager


@ToolParserManager.register_module("{TOOL_PARSER}")
class FixedCallToolParser(ToolParser):
    def extract_tool_calls(self, model_output, request):
        call = FunctionCall(name="get_weather", arguments=json.dumps({TOOL_ARGUMENTS!r}))
        return ExtractedToolCallInformation(
            tools_called=True, tool_calls=[ToolCall(function=call)], content=None
        )

    def extract_tool_calls_streaming(self, *args, **kwargs):
        return None
'''

REASONING_PLUGIN = f'''
from vllm.reasoning import ReasoningParser, ReasoningParserManager


@ReasoningParserManager.register_module("{REASONING_PARSER}")
class FixedReasoningParser(ReasoningParser):
    def is_reasoning_end(self, input_ids):
        return True

    def extract_content_ids(self, input_ids):
        return input_ids

    def extract_reasoning(self, model_output, request):
        return {REASONING!r}, model_output

    def extract_reasoning_streaming(self, *args, **kwargs):
        return None
'''

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_parser_plugins_are_loaded_and_used(tiny_model: Path, tmp_path: Path):
    tool_plugin = tmp_path / "ext_test_tool_plugin.py"
    tool_plugin.write_text(TOOL_PLUGIN)
    reasoning_plugin = tmp_path / "ext_test_reasoning_plugin.py"
    reasoning_plugin.write_text(REASONING_PLUGIN)
    server = ext_server(
        tiny_model,
        tmp_path / "server.log",
        "--enable-auto-tool-choice",
        "--tool-parser-plugin", str(tool_plugin),
        "--tool-call-parser", TOOL_PARSER,
        "--reasoning-parser-plugin", str(reasoning_plugin),
        "--reasoning-parser", REASONING_PARSER,
    )  # fmt: skip
    server.start()
    try:
        server.wait_ready()
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": SERVED_NAME,
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tools": [WEATHER_TOOL],
                "tool_choice": "auto",
                "max_tokens": 4,
            },
            timeout=60,
        )
    finally:
        returncode = server.stop()
    assert returncode == 0, server.log()[-3000:]  # a clean SIGTERM shutdown
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == TOOL_ARGUMENTS
    assert choice["message"]["reasoning"] == REASONING
