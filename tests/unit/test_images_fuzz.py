"""Hypothesis fuzz of what an image brings in from outside: manifests, configs, references.

Each parser must either return a well-formed value or refuse with the runtime's one-line
errors (InvalidArgument / NotFound); any other exception is a crash of the agent's request on
hostile input. A config that passes `check_config` must then also make a container process
without surprises (`resolve_process`). Cases hypothesis found are kept as @example.
"""
from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from flotilla.runtime.containers import resolve_process
from flotilla.runtime.errors import InvalidArgument, NotFound
from flotilla.runtime.imaging import manifest as mf
from flotilla.runtime.imaging import reference
from flotilla.runtime.spec import ContainerSpec

DIGEST = "sha256:" + "a" * 64
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
media_types = st.sampled_from(list(mf.LAYER_TYPES) + list(mf.MANIFEST_TYPES + mf.INDEX_TYPES + mf.CONFIG_TYPES)) | st.text(max_size=20)


def descriptors() -> st.SearchStrategy[Any]:
    good = st.fixed_dictionaries({"mediaType": media_types, "digest": st.just(DIGEST) | st.text(max_size=20),
                                  "size": st.integers(-5, 2**40) | json_values},
                                 optional={"platform": json_values, "annotations": json_values})
    return good | json_values


manifests = st.fixed_dictionaries(
    {"schemaVersion": st.just(2) | json_values},
    optional={"mediaType": media_types, "config": descriptors(), "layers": st.lists(descriptors(), max_size=3) | json_values,
              "manifests": st.lists(descriptors(), max_size=3) | json_values})


@settings(max_examples=400, deadline=None)
@given(manifests)
@example({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": {"mediaType": mf.OCI_CONFIG, "digest": DIGEST, "size": True}, "layers": []})
def test_manifest_parser_returns_or_refuses(obj: dict) -> None:
    try:
        parsed = mf.parse_manifest(json.dumps(obj).encode())
    except InvalidArgument:
        return
    if isinstance(parsed, mf.Index):
        for d in parsed.manifests:
            assert isinstance(d.size, int) and d.size >= 0 and d.digest.startswith("sha256:")
        try:
            mf.select_platform(parsed, "linux/amd64")
        except NotFound:
            pass
    else:
        assert parsed.config.media_type in mf.CONFIG_TYPES
        assert all(layer.media_type in mf.LAYER_TYPES for layer in parsed.layers)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_manifest_parser_on_raw_bytes(data: bytes) -> None:
    try:
        mf.parse_manifest(data)
    except InvalidArgument:
        pass


run_configs = st.fixed_dictionaries({}, optional={
    key: json_values | st.lists(st.text(max_size=8), max_size=3)
    for key in ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "StopSignal", "ExposedPorts", "Volumes", "Labels")}) | json_values


@settings(max_examples=400, deadline=None)
@given(run_configs, st.sampled_from([None, ["x"]]))
@example({"Entrypoint": "sh"}, None)
@example({"Env": [1]}, None)
@example({"WorkingDir": 5, "Cmd": ["sh"]}, None)
@example({"Cmd": ["a\0b"]}, None)
def test_config_checked_then_usable(run: Any, cmd: list[str] | None) -> None:
    cfg = {"os": "linux", "rootfs": {"type": "layers", "diff_ids": [DIGEST]}, "config": run}
    try:
        checked = mf.check_config(json.dumps(cfg).encode())
    except InvalidArgument:
        return
    run_cfg = checked.get("config") or {}
    assert all(isinstance(run_cfg.get(k) or [], list) for k in ("Cmd", "Entrypoint", "Env"))
    try:
        proc = resolve_process(ContainerSpec(image="x", cmd=cmd), checked.get("config") or {}, "c" * 64)
    except InvalidArgument:
        return
    assert all(isinstance(a, str) and "\0" not in a for a in proc["args"]) and isinstance(proc["cwd"], str)
    assert all(isinstance(e, str) and "=" in e for e in proc["env"]) and isinstance(proc["user"], str)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60) | st.from_regex(r"[a-z0-9.:/@_-]{1,40}", fullmatch=True))
@example("localhost:5000/a/b:t@sha256:" + "0" * 64)
def test_reference_parse_round_trips(text: str) -> None:
    try:
        ref = reference.parse(text)
    except InvalidArgument:
        return
    again = reference.parse(str(ref))
    assert (again.domain, again.path, again.tag, again.digest) == (ref.domain, ref.path, ref.tag, ref.digest)
