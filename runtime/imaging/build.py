"""`docker build`: run a parsed Dockerfile stage by stage, with a layer cache keyed like Docker's.

Each step's cache key is sha256 over (the parent step's key, the instruction after variable
expansion, the ARG values it sees, and for COPY/ADD the checksum of the files it reads). The
cache (`<root>/buildcache.json`) maps a key to the image state after the step; a hit is used
only while every layer it names is still stored, so `prune`/`rmi` can never make the cache
lie. An unchanged Dockerfile and context therefore rebuild without running anything and give
the same image id (the cached steps keep their creation times).

Layers are committed through `layerwriter` and the image is published with
`ImageStore.register_image`; a failed build leaves the store as it was (`StoreTransaction`).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import secrets
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import archive
from ..clock import now, rfc3339
from ..errors import InvalidArgument
from ..fsutil import atomic_write_json, read_json, remove_tree
from ..images import DEFAULT_PATH, ImageInfo, ImageStore, chain_ids
from ..spec import merge_env
from .buildcontext import BuildContext, Source
from .dockerfile import Dockerfile, Instruction, Stage, duration_ns, expand, pairs, parse, parse_instruction
from .layerview import LayerView
from .layerwriter import commit_tree
from .manifest import OCI_CONFIG, OCI_MANIFEST, Descriptor, Manifest, manifest_json, parse_manifest
from .progress import Progress, ProgressEvent, ignore
from .reference import parse as parse_ref
from .runstep import ensure_root, run_step
from .sandbox import BuildSandbox
from .transaction import StoreTransaction

DEFAULT_SHELL = ["/bin/sh", "-c"]
# ARGs Docker predefines: usable without an ARG line, never stored in the image.
PREDEFINED_ARGS = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}
CACHE_FILE = "buildcache.json"
CACHE_LIMIT = 4096


@dataclass
class State:
    """The image being built: OCI config parts, layer descriptors, history, stage-local settings."""

    config: dict[str, Any]
    layers: list[dict[str, Any]]     # descriptors (mediaType, digest, size)
    diff_ids: list[str]
    history: list[dict[str, Any]]
    created: str
    key: str                          # cache key of the last step (or the base image id)
    author: str = ""
    architecture: str = "amd64"
    args: dict[str, str] = field(default_factory=dict)   # ARG values in scope (not stored in the image)
    proxy: dict[str, str] = field(default_factory=dict)  # predefined proxy ARGs: RUN sees them, the cache key does not
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))

    def cached(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("config", "layers", "diff_ids", "history", "created", "author", "architecture", "shell")}

    def env(self) -> dict[str, str]:
        out = dict(self.args)
        for item in self.config.get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def chain(self) -> str | None:
        return chain_ids(self.diff_ids)[-1] if self.diff_ids else None


@dataclass
class BuildOptions:
    """What `docker build` takes besides the context."""

    tags: list[str] = field(default_factory=list)
    dockerfile: str = "Dockerfile"        # path inside the context (or absolute)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    labels: dict[str, str] = field(default_factory=dict)


class Builder:
    """Builds images into an ImageStore. `base_image(ref, platform)` returns an image id (pulling if needed)."""

    def __init__(self, images: ImageStore, base_image: Callable[[str, str], str], sandbox: BuildSandbox | None = None) -> None:
        """`sandbox`: the runtime's netns + cgroup for RUN steps (none: the shim's own empty netns, no cgroup)."""
        self.images = images
        self.base_image = base_image
        self.sandbox = sandbox
        self.cache_path = images.layers_dir.parent / CACHE_FILE

    # -- cache ----------------------------------------------------------------------------
    def _cache(self) -> dict[str, Any]:
        try:
            return read_json(self.cache_path)
        except (FileNotFoundError, ValueError):
            return {}

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        entry = self._cache().get(key)
        if entry is None:
            return None
        chains = chain_ids(entry["diff_ids"])
        for desc, chain in zip(entry["layers"], chains):
            if not self.images.content.has(desc["digest"]) or not (self.images.layers_dir / chain[7:] / "diff").is_dir():
                return None
        return entry

    def _cache_put(self, entries: dict[str, dict[str, Any]]) -> None:
        with self.images.lock:
            cache = self._cache()
            cache.update(entries)
            if len(cache) > CACHE_LIMIT:
                cache = dict(list(cache.items())[-CACHE_LIMIT:])
            atomic_write_json(self.cache_path, cache)

    # -- build ----------------------------------------------------------------------------
    def build(self, context_dir: Path, opts: BuildOptions, progress: Progress = ignore) -> ImageInfo:
        """Build and tag; returns the image. Errors name the Dockerfile line."""
        tags = [parse_ref(t).familiar() for t in opts.tags]
        df_path = Path(opts.dockerfile) if os.path.isabs(opts.dockerfile) else Path(context_dir) / opts.dockerfile
        try:
            text = df_path.read_text()
        except FileNotFoundError:
            raise InvalidArgument(f"cannot read the Dockerfile: {df_path} does not exist") from None
        dockerfile = parse(text)
        context = BuildContext(Path(context_dir))
        final = dockerfile.stage(opts.target) if opts.target else dockerfile.stages[-1]
        new_cache: dict[str, dict[str, Any]] = {}
        with StoreTransaction(self.images) as tx:
            results: dict[int, State] = {}
            for stage in dockerfile.stages[: final.index + 1]:
                results[stage.index] = self._stage(dockerfile, stage, results, context, opts, tx, new_cache, progress)
            state = results[final.index]
            if opts.labels:
                state.config["Labels"] = {**(state.config.get("Labels") or {}), **opts.labels}
            info = self._publish(state, tags, tx)
        if new_cache:
            self._cache_put(new_cache)
        progress(ProgressEvent("", f"Successfully built {info.id[7:19]}"))
        for t in tags:
            progress(ProgressEvent("", f"Successfully tagged {t}"))
        return info

    def _stage(self, df: Dockerfile, stage: Stage, results: dict[int, State], ctx: BuildContext, opts: BuildOptions,
               tx: StoreTransaction, new_cache: dict[str, dict[str, Any]], progress: Progress) -> State:
        meta_env = {}
        for inst in df.meta_args:
            name, eq, default = inst.args[0].partition("=")
            meta_env[name] = opts.build_args.get(name, expand(default, meta_env, inst.line) if eq else "")
        base_text = expand(stage.base, meta_env, stage.line)
        platform = expand(stage.platform, meta_env, stage.line)
        progress(ProgressEvent("", f"Step FROM {base_text}{' AS ' + stage.name if stage.name else ''}"))
        state = self._base(base_text, platform, df, stage, results)
        state.proxy = {k: v for k, v in opts.build_args.items() if k in PREDEFINED_ARGS}
        # The base image's ONBUILD triggers run first, then are dropped from the new image (Docker).
        triggers = [parse_instruction(stage.line, text) for text in state.config.pop("OnBuild", None) or []]
        for inst in triggers + stage.instructions:
            progress(ProgressEvent("", f"Step {inst.original}"))
            self._step(state, inst, df, results, ctx, opts, meta_env, tx, new_cache, progress)
        return state

    def _base(self, base: str, platform: str, df: Dockerfile, stage: Stage, results: dict[int, State]) -> State:
        for prev in df.stages[: stage.index]:
            if prev.name and prev.name == base.lower():
                s = copy.deepcopy(results[prev.index])
                s.args, s.shell = {}, list(DEFAULT_SHELL)
                return s
        if base.lower() == "scratch":
            return State(config={"Env": [DEFAULT_PATH]}, layers=[], diff_ids=[], history=[], created=rfc3339(now()),
                         key="scratch")
        image_id = self.base_image(base, platform)
        cfg = self.images.oci_config(image_id)
        m = parse_manifest(self.images.content.read(self.images._meta()["images"][image_id]["manifest"]))
        assert isinstance(m, Manifest)
        return State(config=dict(cfg.get("config") or {}), layers=[d.to_json() for d in m.layers],
                     diff_ids=list(cfg["rootfs"]["diff_ids"]), history=list(cfg.get("history") or []),
                     created=cfg.get("created", rfc3339(now())), key=image_id, author=cfg.get("author", ""),
                     architecture=cfg.get("architecture", "amd64"))

    # -- one instruction ------------------------------------------------------------------
    def _step(self, state: State, inst: Instruction, df: Dockerfile, results: dict[int, State], ctx: BuildContext,
              opts: BuildOptions, meta_env: dict[str, str], tx: StoreTransaction,
              new_cache: dict[str, dict[str, Any]], progress: Progress) -> None:
        env = state.env()
        words = [expand(a, env, inst.line) for a in inst.args] if inst.cmd not in ("RUN", "CMD", "ENTRYPOINT", "SHELL") else list(inst.args)
        if inst.cmd == "ARG":
            name, eq, default = inst.args[0].partition("=")
            value = opts.build_args.get(name, expand(default, env, inst.line) if eq else meta_env.get(name, ""))
            state.args[name] = value
            state.key = "sha256:" + hashlib.sha256(f"{state.key}\nARG {name}={value}".encode()).hexdigest()
            return
        extra = ""
        sources: list[tuple[str, Any]] = []
        if inst.cmd in ("COPY", "ADD"):
            sources, extra = self._sources(inst, words[:-1], df, results, ctx)
        if inst.cmd == "RUN":
            run_args = inst.args if inst.json_form else state.shell + inst.args
            used_args = sorted(f"{k}={v}" for k, v in state.args.items())
            key_text = json.dumps(["RUN", run_args, used_args])
        else:
            key_text = json.dumps([inst.cmd, words, inst.flags, inst.json_form, extra])
        key = "sha256:" + hashlib.sha256(f"{state.key}\n{key_text}".encode()).hexdigest()
        hit = None if opts.no_cache else (new_cache.get(key) or self._cache_get(key))
        if hit is not None:
            for k, v in copy.deepcopy(hit).items():
                setattr(state, k, v)
            state.key = key
            progress(ProgressEvent("", " ---> Using cache"))
            return
        created = rfc3339(now())
        if inst.cmd == "RUN":
            self._run(state, inst, run_args, tx, progress)
            state.history.append({"created": created, "created_by": f"RUN {' '.join(run_args)}", "comment": "flotilla build"})
        elif inst.cmd in ("COPY", "ADD"):
            self._copy(state, inst, sources, words[-1], ctx, tx)
            flags = "".join(f"--{k}={v} " for k, v in sorted(inst.flags.items()))
            state.history.append({"created": created, "created_by": f"{inst.cmd} {flags}{' '.join(words)}", "comment": "flotilla build"})
        else:
            self._apply_metadata(state, inst, words)
            shown = json.dumps(inst.args) if inst.json_form else " ".join(words)
            state.history.append({"created": created, "created_by": f"{inst.cmd} {shown}",
                                  "comment": "flotilla build", "empty_layer": True})
        state.created = created
        state.key = key
        new_cache[key] = copy.deepcopy(state.cached())

    def _apply_metadata(self, state: State, inst: Instruction, words: list[str]) -> None:
        cfg = state.config
        if inst.cmd == "ENV":
            items = [f"{k}={expand(v, state.env(), inst.line)}" for k, v in pairs(Instruction(inst.line, "ENV", inst.args))]
            cfg["Env"] = merge_env(cfg.get("Env") or [], items)
        elif inst.cmd == "LABEL":
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(pairs(Instruction(inst.line, "LABEL", words)))}
        elif inst.cmd == "WORKDIR":
            path = words[0]
            cfg["WorkingDir"] = os.path.normpath(path if path.startswith("/") else os.path.join(cfg.get("WorkingDir") or "/", path))
        elif inst.cmd == "USER":
            cfg["User"] = words[0]
        elif inst.cmd in ("CMD", "ENTRYPOINT"):
            value = inst.args if inst.json_form else (state.shell + inst.args if inst.args else [])
            cfg["Cmd" if inst.cmd == "CMD" else "Entrypoint"] = value
            if inst.cmd == "ENTRYPOINT":
                cfg.pop("Cmd", None)  # Docker resets an inherited CMD when ENTRYPOINT is set
        elif inst.cmd == "EXPOSE":
            ports = {}
            for p in words:
                num, _, proto = p.partition("/")
                if not num.isdigit() or not 0 < int(num) < 65536 or proto not in ("", "tcp", "udp", "sctp"):
                    raise inst.error(f"invalid port {p!r}: use PORT[/tcp|udp|sctp]")
                ports[f"{num}/{proto or 'tcp'}"] = {}
            cfg["ExposedPorts"] = {**(cfg.get("ExposedPorts") or {}), **ports}
        elif inst.cmd == "VOLUME":
            vols = inst.args if inst.json_form else words
            cfg["Volumes"] = {**(cfg.get("Volumes") or {}), **{v: {} for v in vols}}
        elif inst.cmd == "STOPSIGNAL":
            cfg["StopSignal"] = words[0]
        elif inst.cmd == "SHELL":
            state.shell = list(inst.args)
        elif inst.cmd == "MAINTAINER":
            state.author = words[0]
        elif inst.cmd == "HEALTHCHECK":
            check: dict[str, Any] = {"Test": list(inst.args)}
            for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                              ("start-interval", "StartInterval")):
                if flag in inst.flags:
                    check[key] = duration_ns(inst.flags[flag], inst)
            if "retries" in inst.flags:
                check["Retries"] = int(inst.flags["retries"])
            cfg["Healthcheck"] = check
        elif inst.cmd == "ONBUILD":
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), inst.args[0]]

    # -- RUN --------------------------------------------------------------------------------
    def _lower_dirs(self, state: State) -> list[str]:
        return [str(self.images.layers_dir / c[7:] / "diff") for c in chain_ids(state.diff_ids)][::-1]

    def _run(self, state: State, inst: Instruction, args: list[str], tx: StoreTransaction, progress: Progress) -> None:
        ensure_root()
        image_env = state.config.get("Env") or [DEFAULT_PATH]
        # ARG values are visible to RUN unless an ENV of the same name overrides them (Docker's rule).
        visible = {**state.proxy, **state.args}
        env = merge_env([f"{k}={v}" for k, v in visible.items()], image_env)
        with self.sandbox.placement() if self.sandbox else contextlib.nullcontext() as placement:
            result = run_step(self.images.layers_dir, self._lower_dirs(state), args, env,
                              state.config.get("WorkingDir") or "/", state.config.get("User") or "", placement)
        try:
            for line in result.output:
                progress(ProgressEvent("", line))
            if result.exit_code != 0:
                raise inst.error(f"The command '{' '.join(args)}' returned a non-zero code: {result.exit_code}")
            self._add_layer(state, result.upper, tx)
        finally:
            result.discard()

    def _add_layer(self, state: State, tree: Path, tx: StoreTransaction) -> None:
        desc, diff_id = commit_tree(self.images, tx, tree, state.chain())
        state.layers.append(desc.to_json())
        state.diff_ids.append(diff_id)

    # -- COPY / ADD -------------------------------------------------------------------------
    def _sources(self, inst: Instruction, patterns: list[str], df: Dockerfile, results: dict[int, State],
                 ctx: BuildContext) -> tuple[list[tuple[str, Any]], str]:
        """Resolve sources; returns ([(kind, source)], checksum text for the cache key)."""
        src_from = inst.flags.get("from", "")
        if src_from:
            view_state = None
            for st in df.stages:
                if (st.name == src_from.lower() or str(st.index) == src_from) and st.index in results:
                    view_state = results[st.index]
            if view_state is None:
                view_state = self._base(src_from, "", df, df.stages[0], {})  # an image name
            view = LayerView(self._lower_dirs(view_state))
            found = []
            for p in patterns:
                rel = "/".join(archive.split_path(p, "COPY --from source"))
                if view.lookup(rel) is None:
                    raise inst.error(f"COPY failed: {p} not found in {src_from}")
                found.append(("view", (view, rel)))
            return found, f"{view_state.key}:{patterns}"
        srcs: list[Source] = []
        for p in patterns:
            if inst.cmd == "ADD" and "://" in p:
                raise inst.error(f"ADD from a URL ({p}) is not supported: download it in a RUN step")
            srcs.extend(ctx.match(p, inst.line))
        return [("ctx", s) for s in srcs], ctx.checksum(srcs)

    def _copy(self, state: State, inst: Instruction, sources: list[tuple[str, Any]], dest: str, ctx: BuildContext,
              tx: StoreTransaction) -> None:
        workdir = state.config.get("WorkingDir") or "/"
        dest_abs = dest if dest.startswith("/") else os.path.join(workdir, dest)
        dest_is_dir = dest.endswith("/") or len(sources) > 1 or dest in (".", "./")
        lower = LayerView(self._lower_dirs(state))
        dest_rel = "/".join(archive.split_path(dest_abs, "COPY destination"))
        dest_is_dir = dest_is_dir or lower.is_dir(dest_rel)
        uid, gid = _chown(inst, lower)
        mode = int(inst.flags["chmod"], 8) if inst.flags.get("chmod") else None
        staging = self.images.layers_dir / f".tmp-copy-{secrets.token_hex(8)}"
        staging.mkdir()
        try:
            for kind, src in sources:
                if kind == "ctx":
                    self._stage_ctx(staging, lower, ctx, src, dest_rel, dest_is_dir, inst, uid, gid, mode)
                else:
                    view, rel = src
                    self._stage_view(staging, lower, view, rel, dest_rel, dest_is_dir, uid, gid, mode)
            self._add_layer(state, staging, tx)
        finally:
            remove_tree(staging)

    def _stage_ctx(self, staging: Path, lower: LayerView, ctx: BuildContext, src: Source, dest_rel: str, dest_is_dir: bool,
                   inst: Instruction, uid: int | None, gid: int | None, mode: int | None) -> None:
        is_dir = src.path.is_dir() and not src.path.is_symlink()
        if inst.cmd == "ADD" and not is_dir and _is_tar(src.path):
            target = _make_parents(staging, lower, dest_rel, leaf_dir=True)
            fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with open(src.path, "rb") as f:
                    archive.extract(f, fd)
            finally:
                os.close(fd)
            return
        if is_dir:
            target = _make_parents(staging, lower, dest_rel, leaf_dir=True)
            for rel in ctx.below(src.rel):
                _copy_entry(src.path / rel, target / rel, uid, gid, mode)
            return
        name = src.path.name
        target_rel = f"{dest_rel}/{name}" if dest_is_dir else dest_rel
        parent = _make_parents(staging, lower, os.path.dirname(target_rel), leaf_dir=True)
        _copy_entry(src.path, parent / os.path.basename(target_rel), uid, gid, mode)

    def _stage_view(self, staging: Path, lower: LayerView, view: LayerView, rel: str, dest_rel: str, dest_is_dir: bool,
                    uid: int | None, gid: int | None, mode: int | None) -> None:
        found = view.lookup(rel)
        assert found is not None
        path, st = found
        if stat.S_ISDIR(st.st_mode):
            target = _make_parents(staging, lower, dest_rel, leaf_dir=True)
            for child, host, _ in view.walk(rel):
                _copy_entry(host, target / child[len(rel):].lstrip("/"), uid, gid, mode)
            return
        target_rel = f"{dest_rel}/{os.path.basename(rel)}" if dest_is_dir else dest_rel
        parent = _make_parents(staging, lower, os.path.dirname(target_rel), leaf_dir=True)
        _copy_entry(path, parent / os.path.basename(target_rel), uid, gid, mode)

    # -- publish ----------------------------------------------------------------------------
    def _publish(self, state: State, tags: list[str], tx: StoreTransaction) -> ImageInfo:
        oci: dict[str, Any] = {"architecture": state.architecture, "os": "linux", "created": state.created,
                               "config": state.config, "rootfs": {"type": "layers", "diff_ids": state.diff_ids},
                               "history": state.history}
        if state.author:
            oci["author"] = state.author
        cfg_bytes = json.dumps(oci, sort_keys=True, separators=(",", ":")).encode()
        cfg_digest = self.images.content.write(cfg_bytes)
        tx.blob(cfg_digest)
        layers = [Descriptor(d["mediaType"], d["digest"], d["size"]) for d in state.layers]
        body = manifest_json(Descriptor(OCI_CONFIG, cfg_digest, len(cfg_bytes)), layers, OCI_MANIFEST)
        mdigest = self.images.content.write(body)
        tx.blob(mdigest)
        return self.images.register_image(mdigest, tags)


def _lookup(view: LayerView, path: str, name: str, inst: Instruction) -> int:
    """The numeric id of `name` in the image's /etc/passwd or /etc/group."""
    found = view.lookup(path)
    if found is not None and stat.S_ISREG(found[1].st_mode):
        for line in found[0].read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
                return int(fields[2])
    raise inst.error(f"--chown: unable to find {'user' if path == 'etc/passwd' else 'group'} {name!r} in the image's /{path}")


def _chown(inst: Instruction, view: LayerView) -> tuple[int, int]:
    """Owner of copied files: root, or `--chown=user[:group]` with names from the image's files.

    As Docker: a user without a group uses the same numeric id as the gid.
    """
    spec = inst.flags.get("chown", "")
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")
    uid = int(user) if user.isdigit() else _lookup(view, "etc/passwd", user, inst)
    if not group:
        return uid, uid
    return uid, int(group) if group.isdigit() else _lookup(view, "etc/group", group, inst)


def _is_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:*"):
            return True
    except (tarfile.TarError, OSError):
        return False


def _make_parents(staging: Path, lower: LayerView, rel: str, leaf_dir: bool) -> Path:
    """Create `rel` in the staging tree; each dir copies mode/owner from the image if it exists there."""
    cur = staging
    so_far = ""
    for part in archive.split_path(rel, "destination"):
        so_far = f"{so_far}/{part}" if so_far else part
        cur = cur / part
        if cur.is_dir():
            continue
        found = lower.lookup(so_far)
        if found is not None and not stat.S_ISDIR(found[1].st_mode):
            raise InvalidArgument(f"cannot copy to {rel!r}: {so_far!r} is not a directory in the image")
        cur.mkdir()
        if found is not None:
            os.chmod(cur, stat.S_IMODE(found[1].st_mode))
            if os.geteuid() == 0:
                os.chown(cur, found[1].st_uid, found[1].st_gid)
        else:
            os.chmod(cur, 0o755)
    return cur


def _copy_entry(src: Path, dst: Path, uid: int | None, gid: int | None, mode: int | None) -> None:
    """Copy one file, symlink or directory entry (not its contents) with Docker's COPY ownership."""
    st = os.lstat(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_ISDIR(st.st_mode):
        dst.mkdir(exist_ok=True)
        os.chmod(dst, mode if mode is not None else stat.S_IMODE(st.st_mode))
    elif stat.S_ISLNK(st.st_mode):
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        if dst.is_symlink():
            dst.unlink()
        shutil.copyfile(src, dst, follow_symlinks=False)
        os.chmod(dst, mode if mode is not None else stat.S_IMODE(st.st_mode))
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        return  # devices, fifos, sockets in a context are skipped, as Docker does
    if os.geteuid() == 0 and uid is not None:
        os.chown(dst, uid, gid if gid is not None else uid, follow_symlinks=False)
