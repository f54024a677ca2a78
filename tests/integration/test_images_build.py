"""Dockerfile builds into a real store: RUN through the shim, COPY/ADD, stages, cache, bad input."""
from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from images_support import processes_mentioning, store_listing
from conftest import mounts_containing
from flotilla.runtime.errors import InvalidArgument
from flotilla.runtime.images import ImageStore
from flotilla.runtime.imaging.auth import CredentialStore
from flotilla.runtime.imaging.build import BuildOptions
from flotilla.runtime.imaging.layerview import LayerView
from flotilla.runtime.imaging.service import ImageService

pytestmark = pytest.mark.root

TWO_STAGE = """\
# a two-stage build: compile in busybox, ship a scratch image
ARG BASE=busybox
FROM ${BASE} AS build
ARG GREETING=hello
WORKDIR /src
COPY . .
ADD bundle.tar.gz /opt/
RUN echo "$GREETING from $(cat /src/name.txt)" > /src/out.txt \\
 && rm /etc/group \\
 && mkdir -p /var/empty && touch /var/empty/keep
FROM scratch
COPY --from=build /src/out.txt /srv/greeting.txt
COPY --from=build /bin/busybox /bin/busybox
COPY --from=build /opt/bundle/ /opt/
ENV MODE=prod PATH=/bin
LABEL org.example.stage="final"
EXPOSE 8080
USER 1000
WORKDIR /srv
ENTRYPOINT ["/bin/busybox"]
CMD ["cat", "greeting.txt"]
"""


@pytest.fixture
def service(tmp_path, busybox_tar):
    svc = ImageService(ImageStore(tmp_path / "root"), CredentialStore(tmp_path / "docker" / "config.json"))
    svc.images.import_image(busybox_tar, "busybox:latest")
    yield svc
    # No RUN shim, container process or mount of this store survives the test.
    assert processes_mentioning(str(tmp_path / "root")) == []
    assert mounts_containing(str(tmp_path / "root")) == []
    assert not [p for p in (tmp_path / "root" / "layers").iterdir() if p.name.startswith(".")]


@pytest.fixture
def context(tmp_path, unique) -> Path:
    ctx = tmp_path / f"ctx-{unique}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(TWO_STAGE)
    (ctx / "name.txt").write_text("flotilla")
    (ctx / "notes.md").write_text("ignored")
    (ctx / ".dockerignore").write_text("*.md\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("bundle/a.txt", b"A"), ("bundle/sub/b.txt", b"B")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (ctx / "bundle.tar.gz").write_bytes(buf.getvalue())
    return ctx


def view(svc: ImageService, image_id: str) -> LayerView:
    return LayerView(svc.images.lower_dirs(image_id))


def test_two_stage_build_and_warm_rebuild(service, context, unique) -> None:
    out: list[str] = []
    img = service.build(context, BuildOptions(tags=[f"app-{unique}:1"], build_args={"GREETING": "hi"}),
                        progress=lambda e: out.append(e.status))
    assert img.repo_tags == [f"app-{unique}:1"]
    cfg = service.images.oci_config(img.id)["config"]
    assert cfg["Entrypoint"] == ["/bin/busybox"] and cfg["Cmd"] == ["cat", "greeting.txt"]
    assert cfg["User"] == "1000" and cfg["WorkingDir"] == "/srv" and cfg["ExposedPorts"] == {"8080/tcp": {}}
    assert "MODE=prod" in cfg["Env"] and cfg["Labels"] == {"org.example.stage": "final"}
    v = view(service, img.id)
    greeting = v.lookup("srv/greeting.txt")
    assert greeting and greeting[0].read_text() == "hi from flotilla\n"
    assert v.lookup("opt/a.txt")[0].read_text() == "A" and v.lookup("opt/sub/b.txt")[0].read_text() == "B"
    assert v.lookup("bin/busybox") is not None and v.lookup("src/notes.md") is None
    assert len(img.layers) == 3
    assert not any("Using cache" in line for line in out)
    # The build stage's RUN deleted /etc/group: its layer carries an overlay whiteout.
    build_layers = [p for p in (service.images.layers_dir).iterdir() if (p / "diff/etc/group").exists()]
    assert any(stat.S_ISCHR(os.lstat(p / "diff/etc/group").st_mode) for p in build_layers)
    # Unchanged Dockerfile and context: every step comes from the cache, same image id.
    warm: list[str] = []
    again = service.build(context, BuildOptions(tags=[f"app-{unique}:1"], build_args={"GREETING": "hi"}),
                          progress=lambda e: warm.append(e.status))
    assert again.id == img.id
    cacheable = [line for line in warm if line.startswith("Step ") and not line.startswith(("Step FROM", "Step ARG"))]
    assert sum("Using cache" in line for line in warm) == len(cacheable) == 14
    # A changed source file invalidates the COPY and everything after it.
    (context / "name.txt").write_text("changed")
    changed = service.build(context, BuildOptions(tags=[f"app-{unique}:2"], build_args={"GREETING": "hi"}))
    assert view(service, changed.id).lookup("srv/greeting.txt")[0].read_text() == "hi from changed\n"
    # A different build arg re-runs the RUN step.
    other = service.build(context, BuildOptions(tags=[f"app-{unique}:3"], build_args={"GREETING": "yo"}))
    assert view(service, other.id).lookup("srv/greeting.txt")[0].read_text() == "yo from changed\n"
    assert [h.created_by for h in service.history(img.id)][0] == 'CMD ["cat", "greeting.txt"]'
    assert mounts_containing(unique) == []


def test_target_stage_and_history(service, context, unique) -> None:
    img = service.build(context, BuildOptions(tags=[f"b-{unique}"], target="build"))
    v = view(service, img.id)
    assert v.lookup("src/out.txt")[0].read_text() == "hello from flotilla\n"
    assert v.lookup("etc/group") is None and v.lookup("etc/passwd") is not None
    hist = service.history(img.id)
    assert hist[0].id == img.id and hist[0].created_by.startswith("RUN /bin/sh -c")
    assert any(h.empty_layer and h.created_by.startswith("WORKDIR") for h in hist)


@pytest.mark.parametrize("dockerfile,fragment", [
    ("FROM busybox\nFROOM x\n", "Dockerfile:2: unknown instruction: FROOM"),
    ("FROM busybox\nRUN echo partial > /f && exit 3\n", "returned a non-zero code: 3"),
    ("FROM busybox\nCOPY missing.txt /\n", "file not found in build context"),
    ("FROM busybox\nCOPY notes.md /\n", "excluded by .dockerignore"),
    ("FROM busybox\nCOPY ../outside /\n", "outside the build context"),
    ("FROM busybox\nCOPY name.txt /a\nRUN false\n", "non-zero code: 1"),
    ("FROM nosuchimage-local\n", "no such image"),
])
def test_failed_build_leaves_store_unchanged(tmp_path, service, context, unique, dockerfile, fragment) -> None:
    (context / "Dockerfile").write_text(dockerfile)
    before = store_listing(tmp_path / "root")
    with pytest.raises(Exception) as e:
        service.build(context, BuildOptions(tags=[f"bad-{unique}"]), pull_missing=False)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, (InvalidArgument,)) or type(e.value).__name__ == "NotFound"
    assert store_listing(tmp_path / "root") == before
    assert not [p for p in (tmp_path / "root" / "layers").iterdir() if p.name.startswith(".")]
    assert mounts_containing(unique) == []


def test_args_and_proxy_args_in_run(service, tmp_path, unique) -> None:
    ctx = tmp_path / f"p-{unique}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nARG WHO=arg\nENV SHADOW=env\nARG SHADOW=arg\n"
                                    'RUN echo "$WHO $SHADOW ${HTTP_PROXY:-none}" > /p.txt\n')
    first = service.build(ctx, BuildOptions(tags=[f"p-{unique}"], build_args={"HTTP_PROXY": "http://127.0.0.1:3128"}))
    assert view(service, first.id).lookup("p.txt")[0].read_text() == "arg env http://127.0.0.1:3128\n"
    assert not any("PROXY" in e for e in service.images.oci_config(first.id)["config"]["Env"])
    seen: list[str] = []
    again = service.build(ctx, BuildOptions(tags=[f"p-{unique}"], build_args={"HTTP_PROXY": "http://127.0.0.1:9"}),
                          progress=lambda e: seen.append(e.status))
    assert again.id == first.id and " ---> Using cache" in seen  # proxy settings never bust the cache
    other = service.build(ctx, BuildOptions(tags=[f"p-{unique}"], build_args={"WHO": "cli"}))
    assert view(service, other.id).lookup("p.txt")[0].read_text() == "cli env none\n"


def test_chown_names_healthcheck_and_onbuild(service, tmp_path, unique) -> None:
    ctx = tmp_path / f"h-{unique}"
    ctx.mkdir()
    (ctx / "f.txt").write_text("x")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nCOPY --chown=app:staff f.txt /owned/\nCOPY --chown=app f.txt /same/\n"
        'HEALTHCHECK --interval=1m30s --retries=4 CMD ["true"]\n'
        "ONBUILD COPY f.txt /from-trigger.txt\n")
    parent = service.build(ctx, BuildOptions(tags=[f"parent-{unique}"]))
    v = view(service, parent.id)
    st_owned, st_same = os.lstat(v.lookup("owned/f.txt")[0]), os.lstat(v.lookup("same/f.txt")[0])
    assert (st_owned.st_uid, st_owned.st_gid, st_same.st_uid, st_same.st_gid) == (1000, 50, 1000, 1000)
    cfg = service.images.oci_config(parent.id)["config"]
    assert cfg["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 90 * 10**9, "Retries": 4}
    assert cfg["OnBuild"] == ["COPY f.txt /from-trigger.txt"] and v.lookup("from-trigger.txt") is None
    child_ctx = tmp_path / f"c-{unique}"
    child_ctx.mkdir()
    (child_ctx / "f.txt").write_text("child")
    (child_ctx / "Dockerfile").write_text(f"FROM parent-{unique}\nHEALTHCHECK NONE\n")
    child = service.build(child_ctx, BuildOptions(tags=[f"child-{unique}"]))
    assert view(service, child.id).lookup("from-trigger.txt")[0].read_text() == "child"
    child_cfg = service.images.oci_config(child.id)["config"]
    assert "OnBuild" not in child_cfg and child_cfg["Healthcheck"] == {"Test": ["NONE"]}
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY --chown=nobody-here f.txt /\n")
    with pytest.raises(InvalidArgument, match="unable to find user 'nobody-here'"):
        service.build(ctx, BuildOptions())
