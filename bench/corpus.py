"""The messages bench/ingest.py publishes: today's padded corpus, and a realistic one (issue 19).

Both are generated from a seed, so every run publishes the same bytes.

padded: Cloud Build notifications of about --size bytes, padded with "x" (the bench's old corpus).
real:   what subscriptions carry in practice, in these shares:
          30% Cloud Build notifications (steps, substitutions, a multi-line failure detail),
          35% Cloud Logging entries (multi-line stack traces, quotes and backslashes inside strings),
          20% audit-log-shaped entries (protoPayload with request, response and authorization info),
          10% non-ASCII text (plain text and JSON in several scripts, emoji),
           5% binary (not UTF-8);
        sizes log-normal (median 1 KB) and kept between 200 B and 64 KB.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

SEED = 19
MIN_SIZE, MAX_SIZE = 200, 64 * 1024
MEDIAN_SIZE, SIGMA = 1024, 1.0
STATUSES = ["QUEUED", "WORKING", "SUCCESS", "FAILURE", "TIMEOUT", "CANCELLED"]
SEVERITIES = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
WORDS = {
    "fr": "le déploiement a échoué à cause d'une dépendance « obsolète » à l'étape numéro".split(),
    "de": "Größenänderung fehlgeschlagen: Überprüfung der Schlüssel für Straße ergab".split(),
    "ja": "デプロイに失敗しました 設定ファイルを確認してください 東京リージョン".split(),
    "ru": "ошибка при обработке запроса пользователя сервис недоступен повторите".split(),
    "ar": "فشل النشر بسبب خطأ في إعدادات الخدمة يرجى المحاولة".split(),
    "zh": "构建 失败 请 检查 配置 文件 与 依赖 版本".split(),
    "emoji": "🚀 ✅ ❌ 🔥 ⚠️ 🐛 📦 👀".split(),
}
EPOCH = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class Message:
    kind: str
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)


def target_size(rng: random.Random) -> int:
    return int(min(MAX_SIZE, max(MIN_SIZE, rng.lognormvariate(math.log(MEDIAN_SIZE), SIGMA))))


def _when(rng: random.Random, index: int) -> str:
    return (EPOCH + timedelta(seconds=index, microseconds=rng.randrange(10**6))).isoformat().replace("+00:00", "Z")


def _frames(rng: random.Random, budget: int) -> str:
    """A Python or Java stack trace of about `budget` characters."""
    lines = []
    used = 0
    python = rng.random() < 0.5
    while used < budget:
        depth = len(lines)
        if python:
            line = (f'  File "/srv/app/{rng.choice(["api", "jobs", "store"])}/module_{depth}.py", line '
                    f"{rng.randrange(1, 900)}, in handle_{depth}\n"
                    '    raise ValueError(f"bad \\"{key}\\" in {path}")')
        else:
            line = (f"\tat com.example.service.Handler{depth}.process(Handler{depth}.java:{rng.randrange(1, 900)})"
                    f'\n\tat com.example.util.Retry.call(Retry.java:42) // "retry" C:\\build\\step{depth}')
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def cloud_build(rng: random.Random, index: int, project: str, size: int) -> Message:
    build_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    status = rng.choice(STATUSES)
    build = {
        "id": build_id, "projectId": project, "status": status,
        "source": {"repoSource": {"projectId": project, "repoName": "pubsub-monitor", "branchName": "main"}},
        "steps": [], "createTime": _when(rng, index), "logsBucket": f"gs://{project}_cloudbuild/logs",
        "logUrl": f"https://console.cloud.google.com/cloud-build/builds/{build_id}?project={project}",
        "substitutions": {"_DEPLOY_REGION": "europe-west1", "COMMIT_SHA": f"{rng.getrandbits(160):040x}"},
    }
    if status in ("FAILURE", "TIMEOUT"):
        build["failureInfo"] = {"type": "USER_BUILD_STEP",
                                "detail": 'Step #1 - "test": exit status 1\n' + _frames(rng, min(size // 3, 3000))}
    base = len(json.dumps(build))
    step = 0
    while base < size:
        entry = {"name": "gcr.io/cloud-builders/docker", "id": f"step-{step}",
                 "args": ["build", "--build-arg", f'LABEL="v{index}.{step}"', "-t", f"gcr.io/{project}/app:{index}",
                          "."], "status": status, "timing": {"startTime": _when(rng, index)}}
        build["steps"].append(entry)
        base += len(json.dumps(entry)) + 2
        step += 1
    return Message("cloud-build", json.dumps(build).encode(), {"buildId": build_id, "status": status})


def log_entry(rng: random.Random, index: int, project: str, size: int) -> Message:
    severity = rng.choice(SEVERITIES)
    entry = {
        "insertId": f"{rng.getrandbits(48):012x}", "logName": f"projects/{project}/logs/run.googleapis.com%2Fstderr",
        "severity": severity, "timestamp": _when(rng, index), "receiveTimestamp": _when(rng, index),
        "resource": {"type": "cloud_run_revision",
                     "labels": {"service_name": "api", "revision_name": "api-00042-xyz", "location": "europe-west1"}},
        "labels": {"instanceId": f"{rng.getrandbits(256):064x}"},
        "trace": f"projects/{project}/traces/{rng.getrandbits(128):032x}",
    }
    if rng.random() < 0.5:
        message = (f'Traceback (most recent call last):\n{{frames}}\nValueError: field "name" must not contain '
                   f"'\\\\' or \"\\t\" (got \"C:\\\\Users\\\\{index}\\\\app.log\")")
        entry["textPayload"] = message.replace("{frames}", _frames(rng, max(0, size - len(json.dumps(entry)) - 200)))
    else:
        entry["jsonPayload"] = {
            "message": f'request failed: "{rng.choice(["GET", "POST"])} /api/v1/items/{index}" -> 500',
            "stack_trace": _frames(rng, max(0, size - len(json.dumps(entry)) - 300)),
            "httpRequest": {"status": 500, "userAgent": 'Mozilla/5.0 (X11; Linux x86_64) "quoted"'},
        }
    return Message("logging", json.dumps(entry).encode(), {"logging.googleapis.com/timestamp": entry["timestamp"]})


def audit_log(rng: random.Random, index: int, project: str, size: int) -> Message:
    principal = f"user-{rng.randrange(100)}@example.com"
    payload = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "status": {}, "authenticationInfo": {"principalEmail": principal},
        "requestMetadata": {"callerIp": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                            "callerSuppliedUserAgent": "google-cloud-sdk gcloud/502.0.0 command/gcloud.iam"},
        "serviceName": "iam.googleapis.com", "methodName": "google.iam.admin.v1.SetIamPolicy",
        "authorizationInfo": [], "resourceName": f"projects/{project}/serviceAccounts/sa-{index}",
        "request": {"@type": "type.googleapis.com/google.iam.v1.SetIamPolicyRequest", "policy": {"bindings": []}},
    }
    entry = {"protoPayload": payload, "insertId": f"{rng.getrandbits(40):010x}", "severity": "NOTICE",
             "logName": f"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity",
             "timestamp": _when(rng, index), "resource": {"type": "service_account", "labels": {"project_id": project}}}
    used = len(json.dumps(entry))
    while used < size:
        grant = {"role": rng.choice(["roles/viewer", "roles/editor", "roles/pubsub.subscriber"]),
                 "members": [f"user:{rng.choice(['ana', 'bo', 'chen', 'dmitri'])}{rng.randrange(99)}@example.com"
                             for _ in range(3)]}
        payload["request"]["policy"]["bindings"].append(grant)
        check = {"resource": payload["resourceName"], "permission": "iam.serviceAccounts.setIamPolicy",
                 "granted": True}
        payload["authorizationInfo"].append(check)
        used += len(json.dumps(grant)) + len(json.dumps(check)) + 4
    return Message("audit", json.dumps(entry).encode(), {"logging.googleapis.com/timestamp": entry["timestamp"]})


def non_ascii(rng: random.Random, index: int, _project: str, size: int) -> Message:
    language = rng.choice(list(WORDS))
    words: list[str] = []
    used = 0
    while used < size:
        word = rng.choice(WORDS[language])
        words.append(word + ("\n" if rng.random() < 0.05 else ""))
        used += len(word.encode()) + 1
    text = " ".join(words)
    if rng.random() < 0.5:
        data = json.dumps({"lang": language, "seq": index, "message": text}, ensure_ascii=False).encode()
    else:
        data = text.encode()
    return Message("non-ascii", data, {"lang": language})


def binary(rng: random.Random, index: int, _project: str, size: int) -> Message:
    return Message("binary", b"\xff\xd8\xff\xe0" + rng.randbytes(size - 4), {"contentType": "image/jpeg"})


KINDS = [(cloud_build, 30), (log_entry, 35), (audit_log, 20), (non_ascii, 10), (binary, 5)]


def real_corpus(count: int, project: str, seed: int = SEED) -> list[Message]:
    rng = random.Random(seed)
    makers = [maker for maker, _ in KINDS]
    weights = [share for _, share in KINDS]
    messages = []
    for index in range(count):
        maker = rng.choices(makers, weights)[0]
        size = target_size(rng)
        while len((message := maker(rng, index, project, size)).data) > MAX_SIZE:
            size = int(size * 0.95)  # the generators overshoot their target by up to a frame or a step
        messages.append(message)
    return messages


def padded_corpus(count: int, project: str, size: int, seed: int = SEED) -> list[Message]:
    from helpers.publish import cloud_build_message

    rng = random.Random(seed)
    return [Message("padded", sample.data, sample.attributes)
            for sample in (cloud_build_message(project, index, size, rng) for index in range(count))]


def describe(messages: list[Message]) -> str:
    sizes = sorted(len(message.data) for message in messages)
    kinds: dict[str, int] = {}
    for message in messages:
        kinds[message.kind] = kinds.get(message.kind, 0) + 1
    share = ", ".join(f"{kind} {number / len(messages):.0%}" for kind, number in kinds.items())
    return (f"{len(messages):,} messages, {sum(sizes) / 1e6:.1f} MB; sizes min {sizes[0]:,} median "
            f"{sizes[len(sizes) // 2]:,} p95 {sizes[int(len(sizes) * 0.95)]:,} max {sizes[-1]:,} B; {share}")
