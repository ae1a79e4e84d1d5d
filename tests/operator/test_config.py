"""The operator's settings, read once from its environment; a bad value names the variable."""

from __future__ import annotations

import pytest

from vllm_operator.config import DEFAULT_IMAGES, Settings, SettingsError


def test_defaults():
    settings = Settings.from_env({})
    assert settings == Settings(images=DEFAULT_IMAGES, namespace="vllm-system")
    assert settings.drift_check_seconds == 60.0 and settings.metrics_port is None


def test_every_variable():
    settings = Settings.from_env(
        {
            "VLLM_SERVER_IMAGE_GPU": "r/gpu:1",
            "VLLM_SERVER_IMAGE_CPU": "r/cpu:1",
            "POD_NAMESPACE": "ops",
            "VLLM_OPERATOR_METRICS_PORT": "8081",
            "VLLM_OPERATOR_DRIFT_CHECK_SECONDS": "0.5",
            "POD_ID": "vllm-operator-0",
            "VLLM_OPERATOR_ADMIN_KEY_FILE": "/etc/vllm-operator/admin-key/private-key.pem",
            "VLLM_OPERATOR_PLATFORM_ASSIGNS_UIDS": "true",
        }
    )
    assert (settings.images.gpu, settings.images.cpu) == ("r/gpu:1", "r/cpu:1")
    assert (settings.namespace, settings.metrics_port) == ("ops", 8081)
    assert (settings.drift_check_seconds, settings.pod_id) == (0.5, "vllm-operator-0")
    assert settings.admin_key_file == "/etc/vllm-operator/admin-key/private-key.pem"
    assert settings.admin_public_key is None  # the key's, once loaded (lifecycle.start)
    assert settings.platform_assigns_uids is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VLLM_OPERATOR_METRICS_PORT": "http"}, "VLLM_OPERATOR_METRICS_PORT='http'"),
        ({"VLLM_OPERATOR_METRICS_PORT": "70000"}, "a port from 1 to 65535"),
        ({"VLLM_OPERATOR_DRIFT_CHECK_SECONDS": "0"}, "VLLM_OPERATOR_DRIFT_CHECK_SECONDS='0'"),
        ({"VLLM_OPERATOR_DRIFT_CHECK_SECONDS": "soon"}, "seconds, above 0"),
        ({"VLLM_OPERATOR_PLATFORM_ASSIGNS_UIDS": "yes"}, "PLATFORM_ASSIGNS_UIDS='yes': true or"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
