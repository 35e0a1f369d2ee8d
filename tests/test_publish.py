"""helpers/publish.py, run as a user runs it, against the emulator."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from google.cloud import pubsub_v1

from app.pubsub import make_subscriber_client
from tests.conftest import ROOT, TEST_PROJECT

STATUSES = {"QUEUED", "WORKING", "SUCCESS", "FAILURE", "TIMEOUT", "CANCELLED"}


def run_publish(emulator, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PUBSUB_EMULATOR_HOST": emulator.host}
    return subprocess.run([sys.executable, "helpers/publish.py", "--project", TEST_PROJECT, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def pull_all(emulator, subscription: str, expected: int) -> list:
    client = make_subscriber_client({"PUBSUB_EMULATOR_HOST": emulator.host})
    path = pubsub_v1.SubscriberClient.subscription_path(TEST_PROJECT, subscription)
    received = []
    for _attempt in range(20):
        response = client.pull(subscription=path, max_messages=1000, timeout=10)
        received += list(response.received_messages)
        if received and len(received) >= expected:
            break
    if received:
        client.acknowledge(subscription=path, ack_ids=[message.ack_id for message in received])
    client.close()
    return received


def test_create_makes_topic_and_subscription_and_cloud_build_messages_arrive(emulator):
    suffix = uuid.uuid4().hex[:8]
    topic, subscription = f"topic-{suffix}", f"sub-{suffix}"
    result = run_publish(emulator, "--topic", topic, "--create", "--subscription", subscription, "--count", "5")
    assert result.returncode == 0, result.stderr
    assert f"Created subscription projects/{TEST_PROJECT}/subscriptions/{subscription}" in result.stderr
    assert result.stdout.count("published ") == 5
    assert f"Published 5 messages to projects/{TEST_PROJECT}/topics/{topic}" in result.stdout
    received = pull_all(emulator, subscription, 5)
    assert len(received) == 5
    for message in received:
        build = json.loads(message.message.data)
        assert message.message.attributes["buildId"] == build["id"]
        assert message.message.attributes["status"] == build["status"] in STATUSES
    # Running it again with --create is harmless.
    again = run_publish(emulator, "--topic", topic, "--create", "--subscription", subscription, "--count", "0")
    assert again.returncode == 0 and "Created" not in again.stderr


def test_odd_payloads_are_published_as_asked(emulator):
    suffix = uuid.uuid4().hex[:8]
    topic, subscription = f"topic-{suffix}", f"sub-{suffix}"
    result = run_publish(emulator, "--topic", topic, "--create", "--subscription", subscription,
                         "--count", "1", "--odd", "--json")
    assert result.returncode == 0, result.stderr
    kinds = [json.loads(line)["kind"] for line in result.stdout.splitlines()]
    assert sorted(kinds) == sorted(["invalid-json", "binary", "nul-text", "empty", "many-attributes", "html",
                                    "large", "cloud-build"])
    received = {message.message.message_id: message.message for message in pull_all(emulator, subscription, 8)}
    by_kind = {json.loads(line)["kind"]: received[json.loads(line)["message_id"]]
               for line in result.stdout.splitlines()}
    assert by_kind["empty"].data == b"" and by_kind["empty"].attributes["status"] == "QUEUED"
    assert len(by_kind["many-attributes"].attributes) == 100
    assert len(by_kind["large"].data) > 9_900_000
    assert "<script>" in by_kind["html"].data.decode()
    for kind in ("binary", "invalid-json"):
        data = by_kind[kind].data
        try:
            json.loads(data)
        except ValueError:
            pass
        else:
            raise AssertionError(f"{kind} payload is valid JSON")


def test_rate_limits_publishing(emulator):
    suffix = uuid.uuid4().hex[:8]
    result = run_publish(emulator, "--topic", f"topic-{suffix}", "--create", "--subscription", f"sub-{suffix}",
                         "--count", "6", "--rate", "10")
    assert result.returncode == 0, result.stderr
    seconds = float(result.stdout.rsplit(" in ", 1)[1].split(" s")[0])
    assert seconds >= 0.45
