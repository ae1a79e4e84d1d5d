"""Generate a tiny Llama model and PEFT LoRA adapters for it, offline, in seconds.

The demo, the tests and the kind e2e suite serve these: no hub download is possible (or wanted)
there. The model is real as far as vLLM is concerned: a Hugging Face `config.json`
(`LlamaForCausalLM`), random weights in safetensors under the Hugging Face parameter names, and a
byte-level BPE tokenizer trained here with a chat template. Its output is gibberish.

Shapes are chosen for vLLM's CPU attention, which supports only some head sizes (32, 64, 80, ...):
hidden 128 with 4 heads gives head_dim 32.

    vllm-tiny-model model ./tiny-llama
    vllm-tiny-model lora ./tiny-lora --base ./tiny-llama --rank 8
    vllm-tiny-model cpu-args        # the vLLM flags that serve it fast on a CPU
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where weights are made: its import costs ~0.1 s
    import numpy as np

# The one definition of how the tiny model is served on a CPU: float32 and eager mode (no
# compilation), a short context, a 16 MiB KV cache and 8 sequences, so a server starts in about
# 25 s on 2 cores. `CPU_ENGINE` is the same as a VLLMDeployment's `spec.engine`.
CPU_ARGS = (
    "--dtype", "float32",
    "--enforce-eager",
    "--max-model-len", "512",
    "--kv-cache-memory-bytes", "16777216",
    "--max-num-seqs", "8",
)  # fmt: skip
CPU_ENGINE = {
    "dtype": "float32",
    "enforceEager": True,
    "maxModelLen": 512,
    "maxNumSeqs": 8,
    "extraArgs": ["--kv-cache-memory-bytes", "16777216"],
}

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
PAD, BOS, EOS = 0, 1, 2

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

_WORDS = (
    "the a an of to in on for with by from model server token request pod node cluster load "
    "adapter ready live health metric queue cache kernel batch engine prompt reply stream "
    "kubernetes vllm llama small fast slow big quick brown fox jumps over lazy dog is are was "
    "were be been has have had do does did will would can could should may might must shall "
    "one two three four five six seven eight nine ten hundred thousand red green blue yellow "
    "we you they he she it i me my our your their this that these those here there when where "
    "why how what which who whom whose all any some many much more most few less least "
    "hello world data science compute memory network disk time space code test run build ship"
).split()


@dataclass(frozen=True)
class TinyLlamaConfig:
    hidden_size: int = 128
    intermediate_size: int = 256
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    num_hidden_layers: int = 2
    vocab_size: int = 1024
    max_position_embeddings: int = 2048

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _corpus(seed: int, lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    punctuation = [".", ",", "!", "?", ":", ";", " -", "'s", "\n", " 42", " 7", " 2026"]
    out = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
        if rng.random() < 0.5:
            words[0] = words[0].capitalize()
        out.append(" ".join(words) + rng.choice(punctuation))
    return out


def _write_tokenizer(out: Path, vocab_size: int, seed: int, model_max_length: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(seed), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS)]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "model_max_length": model_max_length,
                "chat_template": CHAT_TEMPLATE,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}, indent=2)
    )


def _save(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})
    # safetensors writes 0600: the kind suite mounts these files into pods that run as another
    # (non-root) user, who must read them like the other files (0644 under a usual umask).
    path.chmod(0o644)


def generate_model(
    out_dir: str | Path, *, config: TinyLlamaConfig | None = None, seed: int = 0
) -> Path:
    """Write a servable tiny Llama to `out_dir` (created if needed) and return its path."""
    cfg = config or TinyLlamaConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import numpy as np

    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    h, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim
    tensors = {
        "model.embed_tokens.weight": weight(cfg.vocab_size, h),
        "model.norm.weight": np.ones(h, dtype=np.float32),
        "lm_head.weight": weight(cfg.vocab_size, h),
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        tensors |= {
            f"{p}.self_attn.q_proj.weight": weight(h, h),
            f"{p}.self_attn.k_proj.weight": weight(kv, h),
            f"{p}.self_attn.v_proj.weight": weight(kv, h),
            f"{p}.self_attn.o_proj.weight": weight(h, h),
            f"{p}.mlp.gate_proj.weight": weight(cfg.intermediate_size, h),
            f"{p}.mlp.up_proj.weight": weight(cfg.intermediate_size, h),
            f"{p}.mlp.down_proj.weight": weight(h, cfg.intermediate_size),
            f"{p}.input_layernorm.weight": np.ones(h, dtype=np.float32),
            f"{p}.post_attention_layernorm.weight": np.ones(h, dtype=np.float32),
        }
    _save(tensors, out / "model.safetensors")

    hf_config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **{k: v for k, v in asdict(cfg).items()},
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
    }
    (out / "config.json").write_text(json.dumps(hf_config, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}, indent=2)
    )
    _write_tokenizer(out, cfg.vocab_size, seed, cfg.max_position_embeddings)
    return out


def generate_lora(
    out_dir: str | Path,
    *,
    base_model: str | Path,
    rank: int = 8,
    alpha: int | None = None,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
    seed: int = 1,
) -> Path:
    """Write a PEFT LoRA adapter for the tiny model at `base_model` and return its path.

    lora_B is random (PEFT initialises it to zero), so the adapter visibly changes the output.
    """
    base = Path(base_model)
    cfg = json.loads((base / "config.json").read_text())
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim", hidden // cfg["num_attention_heads"])
    out_features = {
        "q_proj": cfg["num_attention_heads"] * head_dim,
        "k_proj": cfg["num_key_value_heads"] * head_dim,
        "v_proj": cfg["num_key_value_heads"] * head_dim,
        "o_proj": hidden,
    }
    unknown = set(target_modules) - out_features.keys()
    if unknown:
        supported = sorted(out_features)
        raise ValueError(f"unsupported target modules {sorted(unknown)}; use {supported}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import numpy as np

    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(cfg["num_hidden_layers"]):
        for module in target_modules:
            prefix = f"base_model.model.model.layers.{i}.self_attn.{module}"
            a = rng.standard_normal((rank, hidden)) * 0.1
            b = rng.standard_normal((out_features[module], rank)) * 0.1
            tensors[f"{prefix}.lora_A.weight"] = a.astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = b.astype(np.float32)
    _save(tensors, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": str(base),
                "r": rank,
                "lora_alpha": alpha if alpha is not None else 2 * rank,
                "lora_dropout": 0.0,
                "bias": "none",
                "target_modules": list(target_modules),
                "fan_in_fan_out": False,
                "inference_mode": True,
            },
            indent=2,
        )
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vllm-tiny-model", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    model = sub.add_parser("model", help="generate a tiny Llama model directory")
    model.add_argument("out", type=Path)
    model.add_argument("--seed", type=int, default=0)
    lora = sub.add_parser("lora", help="generate a PEFT LoRA adapter for a tiny model")
    lora.add_argument("out", type=Path)
    lora.add_argument("--base", type=Path, required=True, help="the tiny model directory")
    lora.add_argument("--rank", type=int, default=8)
    lora.add_argument("--seed", type=int, default=1)
    sub.add_parser("cpu-args", help="print the vLLM flags that serve the tiny model on a CPU")
    args = parser.parse_args(argv)
    if args.what == "cpu-args":
        print(" ".join(CPU_ARGS))
    elif args.what == "model":
        print(generate_model(args.out, seed=args.seed))
    else:
        print(generate_lora(args.out, base_model=args.base, rank=args.rank, seed=args.seed))


if __name__ == "__main__":
    main()
