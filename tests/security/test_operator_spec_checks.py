"""The operator's own checks of a VLLMDeployment (`spec.py`), exactly: each InvalidSpec with its
message, and the boundaries that are still accepted. Pure and fast (no admission emulation, no
hypothesis), so the mutation run (`make mutate`) can use them; test_crd_admission_rules.py and
test_crd_properties.py show the same rules against the CRD."""

from __future__ import annotations

import re
from typing import Any

import pytest

from vllm_operator.model.spec import (
    InvalidSpec,
    SecretRef,
    _check_labels,
    _label_key_error,
    _prefix_trie,
    _secret,
    parse_deployment,
)
from vllm_testkit.samples import IMAGES, vllmd

MODEL = {"uri": "hf://org/model"}
NAME_ERROR = "its name must be 1 to 63 letters, digits, '-', '_' or '.', alphanumeric at the ends"
PREFIX_ERROR = "its prefix must be a DNS subdomain"
VALUE_RULE = "(at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends)"


def parse(spec: dict[str, Any], name: str = "m"):
    return parse_deployment(vllmd(name, {"model": MODEL, **spec}), IMAGES)


def refusal(spec: dict[str, Any], name: str = "m") -> str:
    with pytest.raises(InvalidSpec) as info:
        parse(spec, name)
    return str(info.value)


def test_a_minimal_spec_passes_every_check():
    spec = parse({})
    assert (spec.name, spec.accelerator, spec.gpus, spec.replicas) == ("m", "GPU", 1, 1)


# metadata.name


@pytest.mark.parametrize("name", ["a", "a1", "a-b", "a" * 63, "x" + "-0" * 31])
def test_names_that_can_name_the_service(name: str):
    assert parse({}, name).name == name


@pytest.mark.parametrize("name", ["a" * 64, "a-", "1a", "-a", "Test", "a_b", "a.b", ""])
def test_names_that_cannot_name_the_service(name: str):
    assert refusal({}, name) == (
        f"metadata.name {name!r} cannot name the Service: at most 63 lowercase letters, digits "
        "and '-', starting with a letter and not ending with '-'"
    )


# replicas


def test_replicas_up_to_1000():
    assert parse({"replicas": 1000}).replicas == 1000
    assert refusal({"replicas": 1001}) == "replicas 1001 is above the maximum, 1000"


# engine.extraArgs


@pytest.mark.parametrize(
    "arg",
    [
        "--model",
        "--model=x",
        "--model.x",
        "--host",
        "--port=1",
        "--root-pa",  # vLLM takes unambiguous abbreviations
        "--root_path",
        "--api-key",
        "--api_key=x\ny",
        "--max-model-len",
        "--max_model_len=4096",
        "--m",
        "--te",
        "-tp",
        "-tp=2",
        "-t",
        "--no-enable-lora",
        "--admin-port=9",
        "--orca",  # abbreviates every --orca-* flag
        "--orca-",
        "--orca-anything",
        "--orca_oob.x",
        "--lora-allowed-roots=/",
    ],
)
def test_extra_args_must_not_set_a_managed_flag(arg: str):
    assert refusal({"engine": {"extraArgs": ["--trust-remote-code", arg]}}) == (
        f"engine.extraArgs must not set a flag the operator manages: {arg!r} "
        "(set it through the spec's own fields)"
    )


def test_extra_args_refusal_quotes_the_first_80_characters():
    arg = "--model=" + "x" * 100
    message = refusal({"engine": {"extraArgs": [arg]}})
    assert f"{arg[:80]!r} (set it" in message
    assert arg[:81] not in message


@pytest.mark.parametrize(
    "arg",
    [
        "--trust-remote-code",
        "--max-num-batched-tokens",  # shares "--max-num-" with --max-num-seqs
        "--kv-cache-memory-bytes",
        "16777216",
        "--models",
        "--api-keys=x",
        "-x",
        "--api-key\n",  # CEL's `$` is the end of the text: the newline is not a [=.] suffix
        "model",
        "",
    ],
)
def test_extra_args_that_are_not_managed_flags(arg: str):
    assert parse({"engine": {"extraArgs": [arg]}}).engine.extra_args == (arg,)


def test_prefix_trie_exact_regex():
    assert _prefix_trie(["ab"], "D") == "a(b)?"
    assert _prefix_trie(["ab", "ac"], "D") == "a((b|c))?"
    assert _prefix_trie(["ab", "b", "c"], "D") == "(a(b)?|b|c)"
    assert _prefix_trie(["a-b*"], "[-_]") == "a([-_](b([^=.]*)?)?)?"
    assert _prefix_trie(["x.y"], "-") == r"x(\.(y)?)?"
    assert _prefix_trie([], "-") == ""


def test_prefix_trie_matches_every_prefix_and_nothing_else():
    regex = re.compile(_prefix_trie(["max-loras", "model", "orca-*"], "[-_]"))
    for word in ("max-loras", "model", "orca-anything"):
        for end in range(1, len(word) + 1):
            assert regex.fullmatch(word[:end]), word[:end]
    assert regex.fullmatch("max_lo")
    assert regex.fullmatch("orca-")
    for other in ("", "max-lorass", "mx", "models", "maxloras", "orca.x", "orca-a=b", "x"):
        assert not regex.fullmatch(other), other


# orca.minReportInterval


@pytest.mark.parametrize("interval", ["0.001", "1", "0.5", "86399", "86399.999"])
def test_report_intervals_above_0_and_below_a_day(interval: str):
    assert parse({"orca": {"minReportInterval": interval}}).orca.min_report_interval == interval


@pytest.mark.parametrize("interval", ["0", "0.0", "86400", "86400.0", "100000", "1e3", "-1", ".5"])
def test_report_intervals_out_of_range_or_not_decimal(interval: str):
    assert refusal({"orca": {"minReportInterval": interval}}) == (
        f"orca.minReportInterval {interval!r} must be seconds above 0 and below 86400"
    )


# Label keys and values


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "A.b-c_d",
        "n" * 63,
        "example.org/x",
        "a-b.c1/x",
        "kubernetes.io/hostname",
        ("p" * 63 + ".") * 3 + "p" * 61 + "/x",  # a prefix of 253 characters
    ],
)
def test_label_keys(key: str):
    assert _label_key_error(key) is None
    _check_labels("podLabels", {key: "v"})


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("", NAME_ERROR),
        ("n" * 64, NAME_ERROR),
        ("-a", NAME_ERROR),
        ("a-", NAME_ERROR),
        ("a b", NAME_ERROR),
        ("example.org/", NAME_ERROR),
        ("a/b/c", PREFIX_ERROR),  # the name follows the last '/': "a/b" is no subdomain
        ("/x", PREFIX_ERROR),
        ("Example.org/x", PREFIX_ERROR),
        ("-a.org/x", PREFIX_ERROR),
        ("a..org/x", PREFIX_ERROR),
        ("a_b/x", PREFIX_ERROR),
        (("p" * 63 + ".") * 3 + "p" * 62 + "/x", PREFIX_ERROR),  # 254 characters
    ],
)
def test_not_label_keys(key: str, error: str):
    assert _label_key_error(key) == error


@pytest.mark.parametrize("value", ["", "a", "A-b_c.d", "1", "v" * 63])
def test_label_values(value: str):
    _check_labels("f", {"k": value})
    assert parse({"podLabels": {"k": value}}).pod_labels == {"k": value}


@pytest.mark.parametrize("value", ["v" * 64, "-a", "a-", "a b", "a/b", "é", 5, None, True])
def test_not_label_values(value: Any):
    with pytest.raises(InvalidSpec) as info:
        _check_labels("f", {"k": value})
    assert str(info.value) == f"f: k={value!r} is not a label value {VALUE_RULE}"


def test_check_labels_skips_values_only_when_told():
    _check_labels("f", {"k": "not a label value"}, values=False)
    with pytest.raises(InvalidSpec):
        _check_labels("f", {"k": "not a label value"})


@pytest.mark.parametrize("field", ["podLabels", "nodeSelector", "podAnnotations"])
def test_keys_of_every_map_are_checked(field: str):
    assert refusal({field: {"ok": "v", "bad key": "v"}}) == (
        f"{field}: key 'bad key' is not a label key: {NAME_ERROR}"
    )
    assert refusal({field: {"-x.org/k": "v"}}) == (
        f"{field}: key '-x.org/k' is not a label key: {PREFIX_ERROR}"
    )


def test_monitoring_label_keys_are_checked():
    assert refusal({"monitoring": {"labels": {"bad key": "v"}}}) == (
        f"monitoring.labels: key 'bad key' is not a label key: {NAME_ERROR}"
    )


@pytest.mark.parametrize("field", ["podLabels", "nodeSelector"])
def test_values_of_label_maps_are_checked(field: str):
    assert refusal({field: {"k": "a b"}}) == f"{field}: k='a b' is not a label value {VALUE_RULE}"


def test_monitoring_label_values_are_checked():
    assert refusal({"monitoring": {"labels": {"release": "-x"}}}) == (
        f"monitoring.labels: release='-x' is not a label value {VALUE_RULE}"
    )


def test_annotation_values_are_free_text():
    note = "any text: spaces, '/', unicode é and more than 63 characters " + "x" * 100
    spec = parse({"podAnnotations": {"example.org/note": note}})
    assert spec.pod_annotations == {"example.org/note": note}


@pytest.mark.parametrize("pool", ["-pool", "p" * 254, "a b", "Pool", "pool_1"])
def test_inference_pool_name_must_name_an_object(pool: str):
    assert refusal({"inferencePool": {"name": pool}}) == (
        f"inferencePool.name {pool!r} cannot name an InferencePool: at most 253 lowercase "
        "letters, digits, '-' and '.' (a DNS subdomain)"
    )


def test_inference_pool_name_defaults_to_the_deployments_and_takes_253_characters():
    assert parse({"inferencePool": {}}, name="llama").inference_pool.name == "llama"
    name = ".".join(["p" * 63] * 4)[:253]
    assert parse({"inferencePool": {"name": name}}).inference_pool.name == name


def test_an_endpoint_picker_service_needs_its_port():
    ref = {"name": "epp"}
    assert refusal({"inferencePool": {"endpointPickerRef": ref}}) == (
        "inferencePool.endpointPickerRef.port is required when kind is Service (the default)"
    )
    ref = {"name": "epp", "kind": "Picker", "group": "example.org"}
    assert (
        parse({"inferencePool": {"endpointPickerRef": ref}}).inference_pool.endpoint_picker_ref
        == ref
    )


# GPUs


def gpu_resources(requests: Any = None, limits: Any = None) -> dict[str, Any]:
    def block(value: Any) -> dict[str, Any]:
        return {} if value is None else {"nvidia.com/gpu": value}

    return {"resources": {"requests": block(requests), "limits": block(limits)}}


def test_gpus_from_the_resources_up_to_16():
    spec = parse(gpu_resources(limits=16))
    assert (spec.gpus, spec.limits) == (16, {})
    assert parse(gpu_resources(requests="2", limits=2)).gpus == 2
    assert parse({"gpusPerReplica": 4, **gpu_resources(limits="4")}).gpus == 4


def test_gpus_from_the_resources_above_16():
    assert refusal(gpu_resources(limits=17)) == "nvidia.com/gpu 17 is above the maximum, 16"


@pytest.mark.parametrize("value", ["1.5", "²", "-1", "1e1", " 1", "one"])
def test_gpus_in_the_resources_must_be_whole_numbers(value: str):
    assert refusal(gpu_resources(limits=value)) == (
        f"nvidia.com/gpu must be a whole number, not {value!r}"
    )


def test_gpu_request_and_limit_must_agree():
    assert refusal(gpu_resources(requests=1, limits=2)) == (
        "nvidia.com/gpu request and limit differ: ['1', '2']"
    )


def test_gpus_per_replica_and_resources_must_agree():
    assert refusal({"gpusPerReplica": 2, **gpu_resources(limits=1)}) == (
        "gpusPerReplica 2 and nvidia.com/gpu 1 disagree"
    )


def test_gpu_accelerator_needs_a_gpu():
    message = "accelerator GPU needs at least 1 GPU (nvidia.com/gpu is 0)"
    assert refusal({"gpusPerReplica": 0}) == message
    assert refusal(gpu_resources(limits=0)) == message


def test_cpu_accelerator_runs_without_gpus():
    assert parse({"accelerator": "CPU"}).gpus == 0
    message = "accelerator CPU runs without GPUs: set gpusPerReplica to 0"
    assert refusal({"accelerator": "CPU", "gpusPerReplica": 1}) == message
    assert refusal({"accelerator": "CPU", **gpu_resources(limits=1)}) == message


def test_tensor_parallel_size_up_to_the_gpus():
    spec = parse({"gpusPerReplica": 2, "engine": {"tensorParallelSize": 2}})
    assert spec.engine.tensor_parallel_size == 2
    assert parse({"engine": {"tensorParallelSize": 1}}).engine.tensor_parallel_size == 1
    assert refusal({"gpusPerReplica": 2, "engine": {"tensorParallelSize": 3}}) == (
        "engine.tensorParallelSize 3 exceeds the 2 GPUs per replica"
    )
    assert refusal({"engine": {"tensorParallelSize": 2}}) == (
        "engine.tensorParallelSize 2 exceeds the 1 GPUs per replica"
    )
    assert refusal({**gpu_resources(limits=4), "engine": {"tensorParallelSize": 8}}) == (
        "engine.tensorParallelSize 8 exceeds the 4 GPUs per replica"
    )


def test_tensor_parallel_size_is_not_checked_against_gpus_on_cpu():
    spec = parse({"accelerator": "CPU", "engine": {"tensorParallelSize": 2}})
    assert (spec.gpus, spec.engine.tensor_parallel_size) == (0, 2)


# The rest of parse_deployment's refusals


def test_model_uri_is_required():
    with pytest.raises(InvalidSpec, match=r"^spec\.model\.uri is required$"):
        parse_deployment(vllmd("m", {}), IMAGES)
    with pytest.raises(InvalidSpec, match=r"^spec\.model\.uri is required$"):
        parse_deployment(vllmd("m", {"model": {"uri": ""}}), IMAGES)


def test_ports_must_differ():
    assert refusal({"port": 9000, "adminPort": 9000}) == (
        "port, adminPort and orca.grpcPort must differ: [9000, 9000, None]"
    )
    assert refusal({"port": 8000, "adminPort": 8001, "orca": {"grpcPort": 8001}}) == (
        "port, adminPort and orca.grpcPort must differ: [8000, 8001, 8001]"
    )


def test_secret_refs_default_their_key():
    assert _secret({"name": "s"}, "api-key") == SecretRef("s", "api-key")
    assert _secret({"name": "s", "key": "k"}, "api-key") == SecretRef("s", "k")
    assert _secret(None, "api-key") is None
    spec = parse({"apiKeySecret": {"name": "a"}, "hfTokenSecret": {"name": "h"}})
    assert (spec.api_key, spec.hf_token) == (SecretRef("a", "api-key"), SecretRef("h", "token"))


def test_enforce_eager_defaults_to_false():
    assert parse({}).engine.enforce_eager is False
    assert parse({"engine": {"enforceEager": True}}).engine.enforce_eager is True
