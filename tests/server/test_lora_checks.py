import json

from vllm_server_ext.lora_checks import adapter_rank, lora_rank_error


def test_rank_read_from_a_generated_adapter(tiny_lora, tiny_lora_r16):
    assert adapter_rank(tiny_lora) == 8
    assert adapter_rank(tiny_lora_r16) == 16


def test_rank_pattern_counts(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"q": 32}}))
    assert adapter_rank(tmp_path) == 32


def test_unreadable_configs_are_left_to_vllm(tmp_path):
    assert adapter_rank(tmp_path / "missing") is None
    assert adapter_rank("org/hub-adapter") is None
    (tmp_path / "adapter_config.json").write_text("{not json")
    assert adapter_rank(tmp_path) is None


def test_error_names_both_ranks(tiny_lora, tiny_lora_r16):
    assert lora_rank_error("ok", str(tiny_lora), 8) is None
    message = lora_rank_error("big", str(tiny_lora_r16), 8)
    assert message is not None
    assert "rank 16" in message
    assert "--max-lora-rank 8" in message
