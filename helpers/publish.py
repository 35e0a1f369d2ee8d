"""Publish sample messages: Cloud Build-style notifications, plus odd payloads on request.

    make publish ARGS="--count 3"            # while `make run` runs, from another terminal
    python helpers/publish.py --topic monitor-topic --count 100 --rate 20
    python helpers/publish.py --create --subscription monitor-sub --odd
    python helpers/publish.py --data '{"hello": 1}' --attribute status=SUCCESS --count 0
    python helpers/publish.py --count 1000 --json > published.jsonl

Project, topic and subscription default to GCP_PROJECT_ID, PUBSUB_TOPIC and
SUBSCRIPTION_NAME. With PUBSUB_EMULATOR_HOST set it talks to the emulator. Run as a
script, it first reads the settings `make run` wrote to .run/env, so it reaches the
running local stack with nothing set by hand.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if __name__ == "__main__":
    try:
        import google.cloud.pubsub_v1  # noqa: F401
    except ImportError:
        # Run with a Python that lacks the packages (`python helpers/publish.py`): use the project's.
        venv_python = ROOT / ".venv" / "bin" / "python"
        if not venv_python.exists() or os.environ.get("PUBLISH_REEXECUTED"):
            sys.exit("Cannot publish: the Python packages are not installed; run `make run` once (it installs them).")
        os.environ["PUBLISH_REEXECUTED"] = "1"
        os.execv(venv_python, [str(venv_python), __file__, *sys.argv[1:]])
    # Before config is imported, which reads the environment once.
    from helpers.devstack import load_stack_env

    load_stack_env()

from config import Config  # noqa: E402

STATUSES = ["QUEUED", "WORKING", "SUCCESS", "FAILURE", "TIMEOUT", "CANCELLED"]
# A publish request may be at most 10,000,000 bytes, attributes and framing included.
LARGE_MESSAGE_BYTES = 9_990_000


@dataclass
class Sample:
    kind: str
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)


def cloud_build_message(project: str, index: int, size: int = 0, rng: random.Random | None = None) -> Sample:
    """A Cloud Build notification as Cloud Build publishes it: JSON data, `status` and `buildId` attributes."""
    rng = rng or random.Random()
    build_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    status = rng.choice(STATUSES)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    build = {
        "id": build_id,
        "projectId": project,
        "status": status,
        "source": {"repoSource": {"projectId": project, "repoName": "pubsub-monitor", "branchName": "main"}},
        "steps": [
            {"name": "gcr.io/cloud-builders/docker", "args": ["build", "-t", f"gcr.io/{project}/app:{index}", "."]}
        ],
        "createTime": now,
        "logsBucket": f"gs://{project}_cloudbuild/logs",
        "logUrl": f"https://console.cloud.google.com/cloud-build/builds/{build_id}?project={project}",
        "sequence": index,
    }
    data = json.dumps(build).encode()
    if size > len(data):
        build["padding"] = "x" * (size - len(data) - len(', "padding": ""'))
        data = json.dumps(build).encode()
    return Sample("cloud-build", data, {"buildId": build_id, "status": status})


def odd_samples(project: str, kinds: set[str]) -> list[Sample]:
    """Payloads that must neither break the subscriber nor loop: one of each kind asked for."""
    build_id = str(uuid.uuid4())
    samples = []
    if "invalid-json" in kinds:
        samples.append(Sample("invalid-json", b'{"status": "SUCCESS", "buildId": "' + build_id.encode() + b'", ',
                              {"status": "SUCCESS", "buildId": build_id}))
    if "binary" in kinds:
        samples.append(Sample("binary", b"\xff\xfe\x00\x01 not utf-8 \xc3\x28" + bytes(range(256)),
                              {"status": "WORKING", "buildId": build_id}))
        samples.append(Sample("nul-text", b'{"note": "valid UTF-8 with a NUL"}\x00tail',
                              {"status": "WORKING", "buildId": build_id}))
    if "empty" in kinds:
        samples.append(Sample("empty", b"", {"status": "QUEUED", "buildId": build_id}))
    if "attributes" in kinds:
        samples.append(Sample("many-attributes", json.dumps({"attributes": 100}).encode(),
                              {f"attribute-{number:03d}": f"value {number}" for number in range(100)}))
    if "html" in kinds:
        samples.append(Sample(
            "html",
            b'<script>alert("data")</script><img src=x onerror="alert(1)"> & </td></tr>',
            {"status": "<script>alert('attribute')</script>", "buildId": '"><img src=x onerror=alert(2)>'},
        ))
    if "large" in kinds:
        large = cloud_build_message(project, 0, size=LARGE_MESSAGE_BYTES)
        samples.append(Sample("large", large.data, large.attributes))
    return samples


def make_publisher(config: type[Config] = Config):
    from google.cloud import pubsub_v1

    # The client library itself follows PUBSUB_EMULATOR_HOST, also when it is set after import.
    if config.PUBSUB_EMULATOR_HOST or os.environ.get("PUBSUB_EMULATOR_HOST"):
        return pubsub_v1.PublisherClient()
    from app.pubsub.client import load_credentials

    return pubsub_v1.PublisherClient(credentials=load_credentials(config.GOOGLE_APPLICATION_CREDENTIALS))


def ensure_topic_and_subscription(project: str, topic: str, subscription: str | None) -> None:
    """Create the topic (and subscription) when missing."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1

    publisher = make_publisher()
    topic_path = publisher.topic_path(project, topic)
    try:
        publisher.create_topic(name=topic_path)
        print(f"Created topic {topic_path}", file=sys.stderr)
    except AlreadyExists:
        pass
    if subscription:
        from app.pubsub.client import make_subscriber_client

        subscriber = make_subscriber_client({name: getattr(Config, name) for name in dir(Config) if name.isupper()})
        subscription_path = pubsub_v1.SubscriberClient.subscription_path(project, subscription)
        try:
            subscriber.create_subscription(name=subscription_path, topic=topic_path, ack_deadline_seconds=30)
            print(f"Created subscription {subscription_path}", file=sys.stderr)
        except AlreadyExists:
            pass
        subscriber.close()


class CannotPublish(Exception):
    """A reason to stop, said in one line."""


def check_pubsub_reachable() -> None:
    """Fail fast, in one line, when there is no Pub/Sub to talk to (instead of retrying for minutes)."""
    host = Config.PUBSUB_EMULATOR_HOST or os.environ.get("PUBSUB_EMULATOR_HOST")
    if host:
        name, _, port = host.rpartition(":")
        try:
            socket.create_connection((name or "127.0.0.1", int(port)), timeout=3).close()
        except (OSError, ValueError):
            raise CannotPublish(f"nothing answers at PUBSUB_EMULATOR_HOST={host}; is `make run` running?") from None
        return
    from app.pubsub.client import SetupError, load_credentials

    try:
        load_credentials(Config.GOOGLE_APPLICATION_CREDENTIALS)
    except SetupError as error:
        if Config.GOOGLE_APPLICATION_CREDENTIALS:
            raise CannotPublish(str(error)) from None
        raise CannotPublish("no Pub/Sub to talk to: start the local stack with `make run` (or set "
                            "PUBSUB_EMULATOR_HOST), or set GOOGLE_APPLICATION_CREDENTIALS for Google Cloud") from None


def publish(project: str, topic: str, samples, rate: float = 0.0, as_json: bool = False, out=sys.stdout) -> int:
    """Publish the samples (an iterable), at most `rate` per second when rate > 0; print each one.

    An empty sample (no data, no attributes) raises EmptyMessageError before anything is sent.
    """
    from app.admin.publishing import EmptyMessageError, is_empty_message

    publisher = make_publisher()
    topic_path = publisher.topic_path(project, topic)
    started = time.monotonic()
    pending = []
    count = 0
    for count, sample in enumerate(samples, start=1):
        if is_empty_message(sample.data, sample.attributes):
            raise EmptyMessageError()
        if rate > 0:
            delay = started + (count - 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        pending.append((sample, publisher.publish(topic_path, sample.data, **sample.attributes)))
        if rate > 0 or len(pending) >= 1000:
            flush(pending, as_json, out)
            pending = []
    flush(pending, as_json, out)
    return count


def flush(pending, as_json: bool, out) -> None:
    for sample, future in pending:
        message_id = future.result(timeout=120)
        if as_json:
            record = {"message_id": message_id, "kind": sample.kind,
                      "data_base64": base64.b64encode(sample.data).decode(), "attributes": sample.attributes}
            print(json.dumps(record), file=out)
        else:
            summary = ", ".join(f"{key}={value}" for key, value in list(sample.attributes.items())[:2])
            print(f"published {message_id} ({sample.kind}, {len(sample.data):,} bytes{', ' if summary else ''}"
                  f"{summary})", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=Config.GCP_PROJECT_ID, help="GCP project (default: GCP_PROJECT_ID)")
    parser.add_argument("--topic", default=Config.PUBSUB_TOPIC, help="topic name (default: PUBSUB_TOPIC)")
    parser.add_argument("--subscription", default=Config.SUBSCRIPTION_NAME,
                        help="subscription that --create makes (default: SUBSCRIPTION_NAME)")
    parser.add_argument("--create", action="store_true", help="create the topic and subscription when missing")
    parser.add_argument("--count", type=int, default=10, help="Cloud Build messages to publish (default 10)")
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second (default: as fast as possible)")
    parser.add_argument("--size", type=int, default=0, help="pad each Cloud Build message to about this many bytes")
    parser.add_argument("--seed", type=int, help="random seed, for repeatable build ids and statuses")
    parser.add_argument("--binary", action="store_true", help="also publish data that is not UTF-8")
    parser.add_argument("--invalid-json", action="store_true", help="also publish truncated JSON")
    parser.add_argument("--large", action="store_true", help="also publish a message of almost 10 MB")
    parser.add_argument("--odd", action="store_true",
                        help="also publish every odd payload: binary, invalid JSON, empty data with attributes "
                             "only, 100 attributes, HTML and script, almost 10 MB")
    parser.add_argument("--data", help="also publish one message with this text as its data")
    parser.add_argument("--attribute", action="append", default=[], metavar="KEY=VALUE",
                        help="an attribute of the --data message (repeat for more)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON line per message: message_id, kind, data_base64, attributes")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must be 0 or more")
    custom = []
    if args.data is not None or args.attribute:
        attributes = {}
        for pair in args.attribute:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                parser.error(f"--attribute {pair!r} is not KEY=VALUE")
            attributes[key] = value
        custom.append(Sample("custom", (args.data or "").encode("utf-8"), attributes))
    from app.admin.publishing import EmptyMessageError

    try:
        return run(args, custom)
    except (CannotPublish, EmptyMessageError) as error:
        print(f"Cannot publish: {error}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, custom: list[Sample]) -> int:
    from google.api_core import exceptions as api_exceptions

    from app.admin.publishing import EmptyMessageError, is_empty_message

    if any(is_empty_message(sample.data, sample.attributes) for sample in custom):
        raise EmptyMessageError()
    check_pubsub_reachable()
    try:
        return publish_all(args, custom)
    except api_exceptions.NotFound as error:
        raise CannotPublish(f"{error.message} (use --create to create the topic)") from None
    except (api_exceptions.GoogleAPICallError, api_exceptions.RetryError) as error:
        raise CannotPublish(f"{error.__class__.__name__}: {error}") from None


def publish_all(args: argparse.Namespace, custom: list[Sample]) -> int:
    if args.create:
        ensure_topic_and_subscription(args.project, args.topic, args.subscription)
    kinds = set()
    if args.odd:
        kinds = {"invalid-json", "binary", "empty", "attributes", "html", "large"}
    kinds |= {kind for kind, wanted in (("binary", args.binary), ("invalid-json", args.invalid_json),
                                        ("large", args.large)) if wanted}
    rng = random.Random(args.seed)
    samples = (cloud_build_message(args.project, index, args.size, rng) for index in range(args.count))
    odd = odd_samples(args.project, kinds)
    started = time.monotonic()
    total = publish(args.project, args.topic, [*custom, *odd, *samples], args.rate, args.json)
    elapsed = time.monotonic() - started
    print(f"Published {total} messages to projects/{args.project}/topics/{args.topic} in {elapsed:.1f} s",
          file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
