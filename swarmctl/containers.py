"""Container lifecycle commands: run, create, start, stop, restart, kill, pause, unpause, rm, wait."""
from __future__ import annotations

import argparse
import contextlib
import sys

from .distribution import ensure_image
from .errors import CLIError
from .runflags import add_container_flags, container_spec


def _add_pull_flag(p: argparse.ArgumentParser) -> None:
    """Docker's --pull on the commands that create containers (the pull itself: distribution.py)."""
    p.add_argument("--pull", choices=("missing", "always", "never"), default="missing",
                   help="pull the image before creating: missing (default), always, never")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="create and start a container", add_help=False)
    add_container_flags(p)
    _add_pull_flag(p)
    p.add_argument("-d", "--detach", action="store_true", help="run in the background and print the id")
    p.set_defaults(func=cmd_run, error_exit=125)

    p = sub.add_parser("create", help="create a container", add_help=False)
    add_container_flags(p)
    _add_pull_flag(p)
    p.set_defaults(func=cmd_create, error_exit=125)

    p = sub.add_parser("start", help="start stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="attach stdout/stderr and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_start)

    for name, text in (("stop", "stop running containers"), ("restart", "restart containers")):
        p = sub.add_parser(name, help=text)
        p.add_argument("-t", "--time", type=int, default=None, help="seconds to wait before killing it")
        p.add_argument("containers", nargs="+")
        p.set_defaults(func=cmd_stop if name == "stop" else cmd_restart)

    p = sub.add_parser("kill", help="send a signal to containers")
    p.add_argument("-s", "--signal", default="KILL", help="signal to send (default KILL)")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_kill)

    for name, text in (("pause", "freeze every process of containers"), ("unpause", "thaw paused containers")):
        p = sub.add_parser(name, help=text)
        p.add_argument("containers", nargs="+")
        p.set_defaults(func=cmd_pause if name == "pause" else cmd_unpause)

    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill and remove a running container")
    p.add_argument("-v", "--volumes", action="store_true", help="also remove anonymous volumes")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("wait", help="block until containers stop, print their exit codes")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_wait)


def cmd_run(client, args) -> int:
    from .interactive import session

    pb = client.pb
    spec = container_spec(pb, args)
    ensure_image(client, spec.image, args.pull)  # pulled first when missing, as Docker does
    if args.detach:
        info = client.stub.CreateContainer(spec)
        client.stub.StartContainer(pb.ContainerRef(ref=info.id))
        print(info.id)
        return 0
    first = pb.StreamInput(run=pb.RunStart(spec=spec))
    outcome = session(client, "Run", first, stdin=args.interactive, tty=args.tty,
                      forward_signal=lambda o, sig: signal_container(client, o.container_id, sig))
    if outcome.detached:
        return 0
    if outcome.exit_code is None:
        raise CLIError("the container's exit code is unknown: the agent closed the stream", 125)
    if args.rm:
        # Docker's CLI returns only once an --rm container is gone, so that the next command of a
        # script (rmi, run --name) never finds it. The agent's monitor removes it as well; the
        # runtime serializes the two and the loser gets NOT_FOUND.
        with contextlib.suppress(client.RpcError):
            client.stub.RemoveContainer(pb.RemoveRequest(ref=outcome.container_id, force=True, volumes=True))
    return outcome.exit_code


def cmd_create(client, args) -> int:
    spec = container_spec(client.pb, args)
    ensure_image(client, spec.image, args.pull)
    info = client.stub.CreateContainer(spec)
    print(info.id)
    return 0


def cmd_start(client, args) -> int:
    pb = client.pb
    if args.attach or args.interactive:
        if len(args.containers) > 1:
            raise CLIError("you cannot start and attach multiple containers at once")
        from .interactive import session
        from .inspecting import container_config

        ref = args.containers[0]
        config = container_config(client, ref)
        first = pb.StreamInput(attach=pb.AttachStart(ref=ref, start=True))
        outcome = session(client, "Attach", first, stdin=args.interactive and config.get("OpenStdin", False),
                          tty=bool(config.get("Tty", False)), forward_signal=lambda o, sig: signal_container(client, ref, sig))
        return outcome.exit_code if outcome.exit_code is not None else 0
    return _each(client, args.containers, lambda ref: client.stub.StartContainer(pb.ContainerRef(ref=ref)))


def signal_container(client, ref: str, signum: int) -> None:
    """Docker's --sig-proxy: a signal to the attached client goes to the container."""
    import signal as signals

    if ref:
        with contextlib.suppress(client.RpcError):
            client.stub.KillContainer(client.pb.KillRequest(ref=ref, signal=signals.Signals(signum).name))


def _stop_request(pb, ref: str, seconds: int | None):
    return pb.StopRequest(ref=ref, timeout=seconds or 0, timeout_set=seconds is not None)


def cmd_stop(client, args) -> int:
    return _each(client, args.containers, lambda ref: client.stub.StopContainer(_stop_request(client.pb, ref, args.time)))


def cmd_restart(client, args) -> int:
    return _each(client, args.containers,
                 lambda ref: client.stub.RestartContainer(_stop_request(client.pb, ref, args.time)))


def cmd_kill(client, args) -> int:
    return _each(client, args.containers,
                 lambda ref: client.stub.KillContainer(client.pb.KillRequest(ref=ref, signal=args.signal)))


def cmd_pause(client, args) -> int:
    return _each(client, args.containers, lambda ref: client.stub.PauseContainer(client.pb.ContainerRef(ref=ref)))


def cmd_unpause(client, args) -> int:
    return _each(client, args.containers, lambda ref: client.stub.UnpauseContainer(client.pb.ContainerRef(ref=ref)))


def cmd_rm(client, args) -> int:
    req = client.pb.RemoveRequest
    return _each(client, args.containers,
                 lambda ref: client.stub.RemoveContainer(req(ref=ref, force=args.force, volumes=args.volumes)))


def cmd_wait(client, args) -> int:
    def wait(ref: str) -> None:
        print(client.stub.WaitContainer(client.pb.ContainerRef(ref=ref)).exit_code, flush=True)
    return _each(client, args.containers, wait, echo=False)


def _each(client, refs: list[str], action, echo: bool = True) -> int:
    """Apply `action` to every ref like Docker: print each that worked, one error line for each that failed."""
    from .errors import from_rpc_error

    failed = False
    for ref in refs:
        try:
            action(ref)
        except client.RpcError as err:
            if err.code().name == "UNAVAILABLE":
                raise
            print(from_rpc_error(err, client.host), file=sys.stderr)
            failed = True
            continue
        if echo:
            print(ref, flush=True)
    return 1 if failed else 0
