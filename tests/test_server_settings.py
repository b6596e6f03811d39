"""phihelpers.server.settings: one typed model for the server, and the `serve` flags it generates."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from phihelpers.server.settings import ServeSettings, ServeSettingsError, add_arguments

ENV = {"PHI_STATE_DIR": "/tmp/phi-state-test"}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_field_but_the_key_is_a_flag_with_its_help_and_default():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = parser.format_help()
    for name, field in ServeSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name == "api_key":
            assert flag not in text  # the key is never a flag (visible in `ps`)
        else:
            assert flag in text and field.description.split(" (")[0][:30] in " ".join(text.split())
    assert "(default 8)" in text and "(default 1024)" in text


def test_flags_not_given_leave_the_environment_and_the_defaults_in_charge():
    env = {
        **ENV,
        "PHI_LOCAL_PORT": "9999",
        "PHI_LOCAL_N_CTX": "2048",
        "PHI_LOCAL_API_KEY": "k" * 32,
    }
    s = ServeSettings.from_environment(env)
    assert (s.port, s.n_ctx, s.max_queue, s.default_max_tokens) == (9999, 2048, 8, 1024)
    assert s.api_key == "k" * 32 and s.state_dir == Path("/tmp/phi-state-test")
    given = ServeSettings.from_environment(env, port=0, max_queue=2)
    assert (given.port, given.n_ctx, given.max_queue) == (0, 2048, 2)


def test_the_command_line_round_trips():
    s = ServeSettings.build(
        port=0,
        max_queue=2,
        rate_limit_window=5.5,
        log_prompts=True,
        cors_origin=("http://a", "http://b"),
    )
    again = ServeSettings.build(**{k: v for k, v in vars(parse(*s.command_line())).items()})
    assert again == s
    assert s.command_line().count("--cors-origin") == 2
    assert "--access-log" not in s.command_line()  # only what was given


def test_only_the_settings_given_are_on_the_command_line():
    s = ServeSettings.build(port=0, state_dir=Path("/tmp/x"))
    assert s.command_line() == ["--port", "0", "--state-dir", "/tmp/x"]


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"rate_limit_window": 0}, "--rate-limit-window must be a positive number of seconds"),
        ({"default_max_tokens": 0}, "--default-max-tokens must be at least 1"),
        ({"port": 70000}, "--port must be a TCP port"),
        ({"max_queue": -1}, "--max-queue must not be negative"),
        ({"max_queu": 3}, "--max-queu"),  # a typo is named, not ignored
    ],
)
def test_a_bad_value_names_its_flag_and_rule(values, words):
    with pytest.raises(ServeSettingsError, match=words):
        ServeSettings.build(**values)


def test_limits_come_from_the_same_fields():
    limits = ServeSettings.build(
        max_queue=3, rate_limit_rpm=4, rate_limit_concurrency=2, rate_limit_window=10
    ).limits
    assert (limits.max_queue, limits.requests_per_minute) == (3, 4)
    assert (limits.concurrent_per_key, limits.window_seconds) == (2, 10)


def test_loopback_and_public_binds():
    assert ServeSettings.build(host="127.0.0.1").is_loopback
    assert ServeSettings.build(host="::1").is_loopback
    assert not ServeSettings.build(host="0.0.0.0").is_loopback
