"""Which namespaces the operator serves (model/scope.py), pure: all, or the exact names of
Kopf's `--namespace` flags."""

from __future__ import annotations

import pytest

from vllm_operator.cli import kopf_argv
from vllm_operator.model.scope import served_namespaces


def test_all_namespaces_is_none():
    assert served_namespaces([], clusterwide=True) is None


def test_namespaces_in_order_each_once():
    flags = ["team-a", "b", "team-a", "x" * 63]
    assert served_namespaces(flags, clusterwide=False) == ("team-a", "b", "x" * 63)


@pytest.mark.parametrize(
    "flag", ["team-*", "!kube-system", "a,b", "Team", "-a", "a-", "", "x" * 64, "a b", "a.b"]
)
def test_patterns_and_bad_names_are_refused_naming_the_flag(flag):
    with pytest.raises(ValueError) as e:
        served_namespaces(["ok", flag], clusterwide=False)
    assert str(e.value) == (
        f"--namespace={flag!r}: the operator serves namespaces by their exact names "
        "(no patterns), or every namespace with --all-namespaces"
    )


def test_no_namespace_at_all_is_refused():
    with pytest.raises(ValueError) as e:
        served_namespaces([], clusterwide=False)
    assert str(e.value) == "no --namespace and no --all-namespaces: which namespaces to serve?"


def test_vllm_operator_serves_all_namespaces_unless_told():
    assert "--all-namespaces" in kopf_argv(["--standalone"])
    for scoped in (["--namespace=a"], ["-n", "a"], ["--namespace", "a", "--namespace=b"]):
        assert "--all-namespaces" not in kopf_argv(scoped)
