"""The generated model is what vLLM's loaders expect: HF config, named tensors, a tokenizer."""

import json

from safetensors.numpy import load_file
from tokenizers import Tokenizer

from vllm_testkit.tiny_model import BOS, SPECIAL_TOKENS, TinyLlamaConfig, generate_model


def test_model_files_and_shapes(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == 32  # CPU attention needs it
    tensors = load_file(str(tiny_model / "model.safetensors"))
    assert tensors["model.embed_tokens.weight"].shape == (1024, 128)
    assert tensors["model.layers.1.self_attn.k_proj.weight"].shape == (64, 128)
    assert tensors["lm_head.weight"].dtype.name == "float32"


def test_tokenizer_round_trips_and_adds_bos(tiny_model):
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    encoded = tokenizer.encode("hello world, the quick brown fox")
    assert encoded.ids[0] == BOS
    assert max(encoded.ids) < 1024
    assert tokenizer.decode(encoded.ids) == "hello world, the quick brown fox"
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert "chat_template" in json.loads((tiny_model / "tokenizer_config.json").read_text())


def test_generation_is_deterministic(tmp_path):
    a = generate_model(tmp_path / "a", config=TinyLlamaConfig(num_hidden_layers=1))
    b = generate_model(tmp_path / "b", config=TinyLlamaConfig(num_hidden_layers=1))
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_every_file_is_readable_by_other_users(tiny_model, tiny_lora):
    """Pods run as a non-root user of their own (the kind suite mounts these files into them)."""
    for path in [*tiny_model.iterdir(), *tiny_lora.iterdir()]:
        assert path.stat().st_mode & 0o004, path


def test_lora_tensor_names_and_shapes(tiny_lora):
    tensors = load_file(str(tiny_lora / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.0.self_attn"
    assert tensors[f"{prefix}.q_proj.lora_A.weight"].shape == (8, 128)
    assert tensors[f"{prefix}.q_proj.lora_B.weight"].shape == (128, 8)
    assert tensors[f"{prefix}.v_proj.lora_B.weight"].shape == (64, 8)
    config = json.loads((tiny_lora / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["r"] == 8
