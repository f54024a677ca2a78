"""Images end to end: swarmctl -> a real agent -> Debian's docker-registry on loopback.

Build a two-stage Dockerfile, push, rmi, pull, run; save then load; login against an
htpasswd registry; bad input answered with one line and a non-zero exit; `run` of a missing
image pulls it. The agent keeps registry credentials in `$DOCKER_CONFIG/config.json`, which
these tests point into their tmp dir. The round trip with Docker starts a private dockerd of its
own where the docker.io package is installed.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from cli_harness import BIN, CGROUP_ROOT, IMAGE, shut_down, started_agent, wait_for
from docker_engine import dockerd_available, private_dockerd
from images_support import free_port, run_registry

pytestmark = pytest.mark.root

DOCKERFILE = """\
FROM busybox:latest AS build
ARG WHO=nobody
COPY greeting.txt /src/
RUN cat /src/greeting.txt > /out.txt && echo "built for $WHO" >> /out.txt && ls /sys/class/net >> /out.txt
FROM busybox:latest
COPY --from=build /out.txt /srv/out.txt
CMD ["cat", "/srv/out.txt"]
"""


@contextlib.contextmanager
def docker_config(path: Path):
    """DOCKER_CONFIG set for an agent started inside the block (it inherits the environment)."""
    saved = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["DOCKER_CONFIG"]
        else:
            os.environ["DOCKER_CONFIG"] = saved


@pytest.fixture(scope="module")
def agent(tmp_path_factory, busybox_tar):
    """An agent whose registry credentials live in this module's tmp dir (DOCKER_CONFIG)."""
    config = tmp_path_factory.mktemp("docker-config")
    with docker_config(config):
        agent = started_agent(tmp_path_factory.mktemp("agent"), busybox_tar)
    agent.docker_config = config
    yield agent
    shut_down(agent)
    assert not list((agent.root / "state" / "agent" / "tmp").glob("build-*")), "a build context was left behind"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def ctl(agent):
    yield agent.ctl
    agent.cleanup()


@pytest.fixture
def context_dir(tmp_path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "greeting.txt").write_text("hello from the context\n")
    (ctx / "secret.txt").write_text("never sent\n")
    (ctx / ".dockerignore").write_text("secret.txt\n")
    return ctx


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_build_push_rmi_pull_run(ctl, agent, registry, context_dir, unique) -> None:
    name = f"{registry.host}/e2e/app-{unique}:1"
    out = ctl("build", "-t", name, "--build-arg", "WHO=e2e", str(context_dir)).stdout
    assert "Step RUN cat /src/greeting.txt" in out and f"Successfully tagged {name}" in out
    history = ctl("history", name).stdout.splitlines()
    assert history[0].split()[:2] == ["IMAGE", "CREATED"] and "COPY" in history[2]
    doc = json.loads(ctl("image", "inspect", name).stdout)[0]
    assert doc["RepoTags"] == [name] and doc["Config"]["Cmd"] == ["cat", "/srv/out.txt"]

    pushed = ctl("push", name).stdout
    assert "Pushed" in pushed and "\n1: digest: sha256:" in pushed
    ctl("rmi", name)
    assert name not in ctl("images").stdout
    pulled = ctl("pull", name).stdout.splitlines()  # not a tty: plain lines, one per status change
    assert any(line.endswith(": Pull complete") for line in pulled) and pulled[-1] == name
    assert not any("[" in line for line in pulled), "byte bars are only for terminals"
    run = ctl("run", "--network", "none", "--rm", name).stdout
    # COPY and ARG reached RUN; RUN had its own network namespace with nothing but lo in it
    assert run == "hello from the context\nbuilt for e2e\nlo\n"

    ctl("rmi", name)
    res = ctl("run", "--network", "none", "--rm", name)  # a missing image is pulled first, as Docker does
    assert f"Unable to find image '{name}' locally" in res.stderr and res.stdout == run
    ctl("rmi", name)


def test_dockerignore_and_bad_dockerfile(ctl, tmp_path, context_dir, unique) -> None:
    (context_dir / "Dockerfile").write_text("FROM busybox:latest\nCOPY secret.txt /\n")
    err = one_line_error(ctl("build", "-t", f"ign-{unique}", str(context_dir), check=False))
    assert "secret.txt" in err and "dockerignore" in err
    (context_dir / "Dockerfile").write_text("FROM busybox:latest\nFROBNICATE now\n")
    err = one_line_error(ctl("build", "-t", f"bad-{unique}", str(context_dir), check=False))
    assert "Dockerfile:2" in err
    (context_dir / "Dockerfile").write_text("FROM busybox:latest\nRUN exit 3\n")
    err = one_line_error(ctl("build", "-t", f"fail-{unique}", str(context_dir), check=False))
    assert "returned a non-zero code: 3" in err
    assert f"-{unique}" not in ctl("images").stdout


def test_dockerfile_outside_the_context_and_target(ctl, tmp_path, context_dir, unique) -> None:
    outside = tmp_path / "other.Dockerfile"
    outside.write_text("FROM busybox:latest AS first\nCOPY greeting.txt /g\nFROM first\nCOPY secret.txt /s\n")
    out = ctl("build", "-q", "-f", str(outside), "--target", "first", "-t", f"outside-{unique}", str(context_dir)).stdout
    assert out.startswith("sha256:") and out.count("\n") == 1  # -q: only the id
    doc = json.loads(ctl("image", "inspect", f"outside-{unique}").stdout)[0]
    assert len(doc["RootFS"]["Layers"]) == 2  # busybox + COPY; the secret.txt stage was not built
    ctl("rmi", f"outside-{unique}")


def test_save_then_load(ctl, tmp_path, unique) -> None:
    tag = f"saved-{unique}:v1"
    ctl("tag", IMAGE, tag)
    archive = tmp_path / "images.tar"
    ctl("save", "-o", str(archive), tag)
    with tarfile.open(archive) as tar:
        assert {"manifest.json", "index.json", "oci-layout"} <= set(tar.getnames())
    ctl("rmi", tag)
    loaded = ctl("load", "-i", str(archive)).stdout
    assert f"Loaded image: {tag}" in loaded
    assert ctl("run", "--network", "none", "--rm", tag, "echo", "loaded").stdout == "loaded\n"
    ctl("rmi", tag)
    # a failed save leaves no file behind
    err = one_line_error(ctl("save", "-o", str(tmp_path / "none.tar"), f"nosuch-{unique}", check=False))
    assert "nosuch" in err and not (tmp_path / "none.tar").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["images.tar"]


def test_login_against_htpasswd_registry(ctl, agent, tmp_path, unique) -> None:
    with run_registry(tmp_path, htpasswd_user=("alice", "s3cret")) as reg:
        name = f"{reg.host}/private/app-{unique}:1"
        ctl("tag", IMAGE, name)
        err = one_line_error(ctl("push", name, check=False))
        assert err.startswith("Error response from daemon:")
        err = one_line_error(ctl("login", "-u", "alice", "--password-stdin", reg.host, input="wrong\n", check=False))
        assert err.startswith("Error response from daemon:")
        assert ctl("login", "-u", "alice", "--password-stdin", reg.host, input="s3cret\n").stdout == "Login Succeeded\n"
        config = json.loads((agent.docker_config / "config.json").read_text())
        assert reg.host in config["auths"]
        ctl("push", name)
        ctl("rmi", name)
        ctl("pull", name)
        assert ctl("logout", reg.host).stdout == f"Removing login credentials for {reg.host}\n"
        assert reg.host not in json.loads((agent.docker_config / "config.json").read_text()).get("auths", {})
        ctl("rmi", name)
        err = one_line_error(ctl("pull", name, check=False))  # logged out: refused again
        assert err.startswith("Error response from daemon:")


def test_bad_input_is_one_line(ctl, registry, unique) -> None:
    err = one_line_error(ctl("pull", f"{registry.host}/nosuch/image-{unique}:1", check=False))
    assert err.startswith("Error response from daemon:")
    err = one_line_error(ctl("pull", "Bad Reference!!", check=False))
    assert "Bad Reference!!" in err or "invalid" in err.lower()
    res = ctl("run", "--network", "none", "--rm", f"{registry.host}/nosuch/run-{unique}:1", check=False)
    assert res.returncode == 125 and "Unable to find image" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("Error response from daemon:")
    res = ctl("run", "--pull", "never", "--network", "none", "--rm", f"nosuch-{unique}:1", check=False)
    assert res.returncode == 125 and "no such image" in one_line_error(res)
    down = f"127.0.0.1:{free_port()}"  # nothing listens: the registry, not the agent, is unreachable
    err = one_line_error(ctl("pull", f"{down}/x/y:1", check=False))
    assert err.startswith("Error response from daemon:") and "Is the agent running" not in err
    err = one_line_error(ctl("history", f"nosuch-{unique}", check=False))
    assert "no such image" in err


def test_image_prune(ctl, unique) -> None:
    """A commit that takes over a tag leaves the old image dangling; prune removes only that one."""
    tag = f"prune-{unique}:1"
    ids = []
    for i in range(2):
        ctl("run", "--network", "none", "--name", f"c{i}-{unique}", IMAGE, "touch", f"/f{i}")
        ids.append(ctl("commit", f"c{i}-{unique}", tag).stdout.strip())
        ctl("rm", f"c{i}-{unique}")
    out = ctl("image", "prune", "-f").stdout
    assert f"deleted: {ids[0]}" in out and "Total reclaimed space:" in out
    assert ids[1] not in out
    images = ctl("images", "-q").stdout
    assert ids[1][7:19] in images and ids[0][7:19] not in images
    ctl("rmi", tag)


def test_agent_killed_mid_build_leaves_nothing(ctl, agent, tmp_path, unique) -> None:
    """kill -9 of the agent while a RUN step runs: the next agent removes the step's process,
    cgroup, network namespace, scratch dirs and the unpacked context; the store is as before."""
    from flotilla.runtime.netwiring import instance_for

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN while [ ! -e /tmp/go ]; do sleep 0.05; done\n")
    images_before = ctl("images", "-q").stdout
    build = subprocess.Popen([str(BIN / "swarmctl"), "build", "-t", f"killed-{unique}", str(ctx)], env=agent.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def step_cgroups() -> list[Path]:  # v1 hierarchies and the v2 root alike
        return [*CGROUP_ROOT.glob(f"*/{agent.cgroup_parent}/build-*"), *CGROUP_ROOT.glob(f"{agent.cgroup_parent}/build-*")]

    wait_for(lambda: any((cg / "cgroup.procs").read_text().strip() for cg in step_cgroups()),
             60, what="the RUN step to run in its build cgroup")
    agent.kill9()
    assert build.wait(30) != 0
    with docker_config(agent.docker_config):
        agent.start()
    netns = f"netns-{instance_for(agent.cgroup_parent)}/build-"
    assert not step_cgroups()
    assert not [line for line in open("/proc/self/mountinfo") if netns in line]
    state = agent.root / "state"
    assert not [p for p in (state / "layers").iterdir() if p.name.startswith(".tmp")]
    assert not list((state / "agent" / "tmp").glob("build-*"))
    assert ctl("images", "-q").stdout == images_before
    assert not agent.leaks()


@pytest.mark.skipif(not dockerd_available(), reason="dockerd and docker are not installed (Debian package docker.io)")
def test_docker_save_load_round_trip(ctl, tmp_path, unique) -> None:
    """`swarmctl save` -> `docker load`, `docker save` -> `swarmctl load`, against a private
    dockerd of this test's own (never the host's engine); the image runs after the trip."""
    tag = f"roundtrip-{unique}:1"
    ctl("tag", IMAGE, tag)
    with private_dockerd(unique) as engine:
        ours = tmp_path / "ours.tar"
        ctl("save", "-o", str(ours), tag)
        assert f"Loaded image: {tag}" in engine.docker("load", "-i", str(ours)).stdout
        theirs_doc = json.loads(engine.docker("image", "inspect", tag).stdout)[0]
        ours_doc = json.loads(ctl("image", "inspect", tag).stdout)[0]
        assert theirs_doc["Id"] == ours_doc["Id"] and theirs_doc["RootFS"] == ours_doc["RootFS"]
        theirs = tmp_path / "theirs.tar"
        engine.docker("save", "-o", str(theirs), tag)
        ctl("rmi", tag)
        assert f"Loaded image: {tag}" in ctl("load", "-i", str(theirs)).stdout
        assert ctl("run", "--network", "none", "--rm", tag, "echo", "ok").stdout == "ok\n"
        ctl("rmi", tag)
    assert engine.leftovers() == []
