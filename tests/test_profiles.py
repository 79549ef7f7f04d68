"""Profiles: the packaged ones load, and bad files fail with the file and key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastapi_tune.core.errors import BadInputError, ExitCode
from fastapi_tune.plan.profiles import DEFAULT_PROFILE, Profile, list_profiles, load_profile

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


def test_packaged_profiles_are_listed_with_descriptions() -> None:
    listed = dict(list_profiles())
    assert {"vm", "container", "kubernetes", "small-memory"} <= set(listed)
    assert DEFAULT_PROFILE in listed
    assert all(desc.strip() for desc in listed.values())


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n, _ in list_profiles()])
def test_every_packaged_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert isinstance(profile, Profile)
    assert profile.name == name
    assert profile.workers.min <= profile.workers.max


def test_kubernetes_profile_is_one_worker_behind_a_balancer() -> None:
    p = load_profile("kubernetes")
    assert p.workers.fixed == 1
    assert p.behind_load_balancer
    assert p.lb_idle_timeout is not None


def test_a_path_loads_that_file(tmp_path: Path) -> None:
    data = yaml.safe_load((PROFILES_DIR / "vm.yaml").read_text())
    data["description"] = "my own"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    p = load_profile(str(path))
    assert (p.name, p.description, p.source) == ("mine", "my own", str(path))


def _write(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((PROFILES_DIR / "vm.yaml").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = data
        for part in parents:
            target = target[part]
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "key", "expected"),
    [
        pytest.param({"workres": 2}, "workres", "unknown key", id="unknown-top-key"),
        pytest.param({"workers__per_core": 1}, "workers.per_core", "unknown key", id="unknown-nested-key"),
        pytest.param({"keepalive": "5s"}, "keepalive", "an integer", id="string-for-int"),
        pytest.param({"keepalive": True}, "keepalive", "an integer", id="bool-for-int"),
        pytest.param(
            {"memory_headroom": 1.5}, "memory_headroom", "from 0 to 0.9", id="headroom-out-of-range"
        ),
        pytest.param(
            {"workers__min": 8, "workers__max": 4}, "workers.min", "at most workers.max", id="min-gt-max"
        ),
        pytest.param({"worker_class": "sync"}, "worker_class", "uvicorn-worker, asgi", id="bad-worker-class"),
        pytest.param({"bind": "localhost"}, "bind", "HOST:PORT", id="bind-without-port"),
        pytest.param({"behind_load_balancer": True}, "lb_idle_timeout", "idle timeout", id="lb-without-idle"),
        pytest.param({"timeout": [30]}, "timeout", "a mapping", id="list-for-mapping"),
        pytest.param({"backlog": _DELETE}, "backlog", "missing key", id="missing-key"),
        pytest.param(
            {"max_requests_jitter": 20000}, "max_requests_jitter", "at most max_requests", id="jitter-gt-max"
        ),
    ],
)
def test_bad_profile_names_file_and_key(
    tmp_path: Path, changes: dict[str, object], key: str, expected: str
) -> None:
    path = _write(tmp_path, **changes)
    with pytest.raises(BadInputError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: {key}:")
    assert expected in message
    assert info.value.exit_code == ExitCode.BAD_INPUT


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(BadInputError, match=r"nope\.yaml: cannot read profile"):
        load_profile(str(path))


def test_unknown_profile_name_lists_the_known_ones() -> None:
    with pytest.raises(BadInputError, match=r"no such profile \(known: container, kubernetes"):
        load_profile("openshift")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("workers: [1, 2\n", id="invalid-yaml"),
        pytest.param("- just\n- a list\n", id="not-a-mapping"),
        pytest.param("", id="empty"),
    ],
)
def test_unusable_documents(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=str(path)):
        load_profile(str(path))
