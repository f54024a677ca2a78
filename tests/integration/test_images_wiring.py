"""The image library wired into the Runtime: RUN steps in their own netns + cgroup, crash leftovers
removed at start-up, commit on top of a compressed image keeps truthful media types."""
from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import mounts_containing
from images_support import write_oci_layout, tar_bytes
from flotilla.runtime.cgroups import Resources
from flotilla.runtime.imaging.build import BuildOptions
from flotilla.runtime.imaging.sandbox import PREFIX
from flotilla.runtime.runtime import Runtime
from flotilla.runtime.spec import ContainerSpec

pytestmark = pytest.mark.root
CGROUPS = Path("/sys/fs/cgroup")


@pytest.fixture
def runtime(tmp_path, unique, busybox_tar):
    rt = Runtime(tmp_path / "root", cgroup_parent=f"flotilla-test-{unique}")
    rt.recover()
    rt.import_image(busybox_tar, "busybox:latest")
    yield rt
    for c in rt.list(all=True):
        rt.remove(c.id, force=True)
    rt.close()
    rt.close_cgroup_parent()
    assert not list(CGROUPS.glob(f"*/flotilla-test-{unique}")), "cgroups left behind"
    assert mounts_containing(str(tmp_path)) == []


def wait_for(predicate, timeout: float, what: str):
    """Poll until `predicate()` is truthy (no timing assumption beyond a generous upper bound)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def build_cgroups(rt: Runtime) -> list[Path]:
    return [p for h in set(rt.cgroups.hierarchies.values()) for p in (h / rt.cgroups.parent).glob(PREFIX + "*")]


def test_run_step_has_its_own_netns_and_a_cgroup_under_the_parent(runtime, tmp_path) -> None:
    """While a RUN step runs, its process is in a build-* cgroup under the runtime's parent and in
    a network namespace other than the host's; both are gone when the build ends."""
    svc = runtime.image_service()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox:latest\nRUN while [ ! -e /tmp/go ]; do sleep 0.05; done; ls /sys/class/net > /tmp/links\n")
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(image=svc.build(ctx, BuildOptions(tags=["sandboxed:1"]))),
                              daemon=True)
    thread.start()
    released = False
    try:
        procs = wait_for(lambda: [p for cg in build_cgroups(runtime) if (cg / "cgroup.procs").exists()
                                  for p in (cg / "cgroup.procs").read_text().split()], 60, what="the RUN step's cgroup")
        pid = int(procs[0])
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert runtime.net.nm.containers() and all(c.startswith(PREFIX) for c in runtime.net.nm.containers())
        Path(f"/proc/{pid}/root/tmp/go").write_text("")  # let the step finish
        released = True
    finally:
        if not released:  # a failed check must not leave the step waiting (and the build thread) forever
            for cg in build_cgroups(runtime):
                for p in (cg / "cgroup.procs").read_text().split():
                    os.kill(int(p), signal.SIGKILL)
        thread.join(60)
    image = result["image"]
    assert build_cgroups(runtime) == [] and runtime.net.nm.containers() == []
    cid = runtime.create(ContainerSpec(image=image.id, cmd=["cat", "/tmp/links"], network_mode="none")).id
    runtime.start(cid)
    assert runtime.wait(cid, 30) == 0
    assert b"".join(e.data for e in runtime.logs(cid)) == b"lo\n"


def test_recover_removes_what_a_crash_mid_run_left(runtime) -> None:
    """A kill -9 during RUN leaves a build cgroup and netns; the next start-up removes both."""
    name = PREFIX + "deadbeefdeadbeef"
    runtime.cgroups.cgroup(name).create(Resources())
    runtime.net.nm.prepare(name, "buildkitsandbox")
    assert build_cgroups(runtime) and runtime.net.nm.containers() == [name]
    runtime.recover()  # releases network state of anything not running
    runtime.image_service().recover()
    assert build_cgroups(runtime) == [] and runtime.net.nm.containers() == []


def test_commit_on_a_gzip_image_labels_each_layer_by_its_blob(runtime, tmp_path) -> None:
    """The lower layers of a commit on a pulled/loaded image stay gzip, the new one is a plain tar."""
    layout = tmp_path / "layout"
    write_oci_layout(layout, [tar_bytes({"bin/": None}), tar_bytes({"etc/motd": b"hi\n"})], compress="gzip", tag="1")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(layout, arcname=".")
    buf.seek(0)
    svc = runtime.image_service()
    [loaded] = svc.load(buf)
    cid = runtime.create(ContainerSpec(image=loaded.id, cmd=["/x"], network_mode="none")).id
    committed = runtime.commit(cid, "committed:1")
    manifest = json.loads(svc.images.content.read(committed.digest))
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar"]


def test_image_service_of_the_runtime_knows_its_containers(runtime) -> None:
    """Prune through the runtime's service keeps images that containers use; insecure list applies."""
    svc = runtime.image_service(insecure_registries=["reg.lan:5000"])
    assert svc.is_insecure("reg.lan:5000") and svc.is_insecure("127.0.0.1:5000") and not svc.is_insecure("reg.example.com")
    busybox = runtime.image("busybox:latest")
    cid = runtime.create(ContainerSpec(image="busybox:latest", cmd=["true"], network_mode="none")).id
    assert svc.prune(all_images=True)["deleted"] == []
    assert runtime.image("busybox:latest").id == busybox.id
    runtime.remove(cid)
    assert any(busybox.id in line for line in svc.prune(all_images=True)["deleted"])
    assert runtime.images() == []
