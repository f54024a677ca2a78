"""Content store, image import/tag/remove and hostile layer tars (no root needed)."""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from flotilla.runtime import archive
from flotilla.runtime.errors import Conflict, InvalidArgument, NotFound
from flotilla.runtime.images import DEFAULT_PATH, ImageStore, chain_ids
from flotilla.runtime.store import ContentStore, digest_bytes


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with content) and dir below root: to assert that a failed call changed nothing."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = b"<link>" if os.path.islink(p) else Path(p).read_bytes()
    return out


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


def test_blob_write_verifies_digest(tmp_path):
    store = ContentStore(tmp_path)
    digest = store.write(b"hello")
    assert digest == digest_bytes(b"hello") and store.read(digest) == b"hello"
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        store.write(b"other", expected=digest_bytes(b"something else"))
    assert store.digests() == [digest]
    assert os.listdir(store.dir) == [digest[7:]]  # no temp file left behind
    with pytest.raises(InvalidArgument, match="invalid digest"):
        store.read("sha256:../../etc/passwd")
    with pytest.raises(NotFound):
        store.read(digest_bytes(b"missing"))


def test_import_writes_oci_config_and_manifest(tmp_path, busybox_tar):
    images = ImageStore(tmp_path)
    info = images.import_image(busybox_tar, "busybox:1", {"Cmd": ["sh"], "Labels": {"a": "b"}})
    assert info.repo_tags == ["busybox:1"] and info.id.startswith("sha256:")
    diff_id = digest_bytes(busybox_tar.read_bytes())
    assert info.layers == [diff_id] and chain_ids([diff_id]) == [diff_id]
    cfg = json.loads(images.content.read(info.id))
    assert cfg["os"] == "linux" and cfg["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert cfg["config"]["Env"] == [DEFAULT_PATH] and cfg["config"]["Cmd"] == ["sh"] and cfg["history"]
    manifest = json.loads(images.content.read(info.digest))
    assert manifest["config"]["digest"] == info.id
    assert manifest["layers"][0]["digest"] == diff_id and manifest["layers"][0]["size"] == busybox_tar.stat().st_size
    layer = images.layer_dir(diff_id)
    assert (layer / "bin" / "busybox").is_file() and os.readlink(layer / "bin" / "sh") == "/bin/busybox"
    assert images.lower_dirs(info.id) == [str(layer)]
    # gzip input is stored uncompressed: same layer, same diff id
    again = images.import_image(io.BytesIO(gzip.compress(busybox_tar.read_bytes())), "busybox:gz")
    assert again.layers == [diff_id]


def test_lookup_by_tag_id_and_prefix(tmp_path, busybox_tar):
    images = ImageStore(tmp_path)
    info = images.import_image(busybox_tar, "busybox")
    for ref in ("busybox", "busybox:latest", info.id, info.id[7:], info.id[7:19], info.id[:19]):
        assert images.image(ref).id == info.id
    for ref in ("nope", "busybox:other", "0000000000000"):
        with pytest.raises(NotFound, match="no such image"):
            images.image(ref)


def test_tag_and_remove_deletes_everything_unreferenced(tmp_path, busybox_tar):
    images = ImageStore(tmp_path)
    info = images.import_image(busybox_tar, "busybox")
    images.tag("busybox", "mirror/bb:v2")
    assert images.image("mirror/bb:v2").repo_tags == ["busybox:latest", "mirror/bb:v2"]
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        images.remove(info.id[7:19], False, lambda i: [])
    assert images.remove("mirror/bb:v2", False, lambda i: []) == ["Untagged: mirror/bb:v2"]
    with pytest.raises(Conflict, match="container abc is using"):
        images.remove("busybox", False, lambda i: ["abc"])
    assert images.remove("busybox", False, lambda i: []) == ["Untagged: busybox:latest", f"Deleted: {info.id}"]
    assert images.list() == [] and images.content.digests() == [] and os.listdir(images.layers_dir) == []


def test_force_remove_of_used_image_only_untags(tmp_path, busybox_tar):
    images = ImageStore(tmp_path)
    info = images.import_image(busybox_tar, "busybox")
    assert images.remove("busybox", True, lambda i: ["abc"]) == ["Untagged: busybox:latest"]
    assert images.image(info.id).repo_tags == [] and images.lower_dirs(info.id)


@pytest.mark.parametrize("tar_bytes,message", [
    (b"", "invalid tar archive"),
    (b"this is not a tar file at all" * 40, "invalid tar archive"),
    (make_tar([(entry("../evil"), b"x")]), "'..' would leave"),
    (make_tar([(entry("a/../../evil"), b"x")]), "'..' would leave"),
    (make_tar([(entry("link", tarfile.LNKTYPE, "../../etc/passwd"), None)]), "'..' would leave"),
    (make_tar([(entry("sym", tarfile.SYMTYPE, "/"), None), (entry("sym/evil"), b"x")]), "symlink or not a directory"),
    (make_tar([(entry("d", tarfile.SYMTYPE, "../../.."), None), (entry("d/x"), b"x")]), "symlink or not a directory"),
    (make_tar([(entry("hl", tarfile.LNKTYPE, "missing"), None)]), "does not exist in the archive"),
])
def test_hostile_or_broken_tars_leave_the_store_as_before(tmp_path, busybox_tar, tar_bytes, message):
    images = ImageStore(tmp_path / "root")
    images.import_image(busybox_tar, "busybox")
    before = snapshot(tmp_path)
    with pytest.raises(InvalidArgument, match=message):
        images.import_image(io.BytesIO(tar_bytes), "evil")
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_bad_reference_is_refused_before_reading(tmp_path):
    images = ImageStore(tmp_path)
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        images.import_image(io.BytesIO(b""), "Bad:Ref:x")
    with pytest.raises(NotFound, match="no such file"):
        images.import_image(tmp_path / "missing.tar", "x")
    assert images.content.digests() == []


def test_absolute_names_stay_inside_and_links_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    data = make_tar([
        (entry("/etc/abs"), b"abs"),
        (entry("./rel/file"), b"rel"),
        (entry("escape", tarfile.SYMTYPE, str(outside)), None),   # a symlink may point anywhere: never followed
        (entry("rel/hard", tarfile.LNKTYPE, "/etc/abs"), None),
        (entry("escape", tarfile.REGTYPE), b"replaced the link"),   # replaces the link, does not write through it
    ])
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        archive.extract(io.BytesIO(data), fd)
    finally:
        os.close(fd)
    assert (dest / "etc" / "abs").read_bytes() == b"abs" and (dest / "rel" / "file").read_bytes() == b"rel"
    assert os.stat(dest / "rel" / "hard").st_ino == os.stat(dest / "etc" / "abs").st_ino
    assert (dest / "escape").read_bytes() == b"replaced the link" and not (dest / "escape").is_symlink()
    assert os.listdir(outside) == []


def test_whiteouts_round_trip(tmp_path):
    """`.wh.x` becomes a 0/0 char device on unpack, and the device becomes `.wh.x` again on tar."""
    dest = tmp_path / "layer"
    dest.mkdir()
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        archive.extract(io.BytesIO(make_tar([(entry("dir", tarfile.DIRTYPE, mode=0o755), None),
                                             (entry("dir/.wh.gone"), b"")])), fd, whiteouts=True)
        st = os.stat(dest / "dir" / "gone", follow_symlinks=False)
        assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0 and (st.st_mode & 0o170000) == 0o020000
        names = tarfile.open(fileobj=io.BytesIO(b"".join(archive.tar_tree(fd, whiteouts=True)))).getnames()
    finally:
        os.close(fd)
    assert names == ["dir", "dir/.wh.gone"]


def test_tar_tree_keeps_hard_links_and_symlinks(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x" * 1000)
    os.link(src / "d" / "f", src / "d" / "g")
    os.symlink("/nowhere", src / "s")
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        data = b"".join(archive.tar_tree(fd))
    finally:
        os.close(fd)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["d/g"].islnk() and members["d/g"].linkname == "d/f"
        assert members["s"].issym() and members["s"].linkname == "/nowhere"
        assert tar.extractfile("d/f").read() == b"x" * 1000


def test_container_store_drops_a_torn_never_started_record(tmp_path):
    """A never-started container's record is not fsynced; a power loss may leave it empty."""
    from flotilla.runtime.containers import ContainerStore, new_state

    store = ContainerStore(tmp_path)
    good, torn = "a" * 64, "b" * 64
    for cid in (good, torn):
        store.create({"id": cid, "name": cid[:4], "state": new_state()})
    (store.bundle(torn) / "config.json").write_bytes(b"")
    reloaded = ContainerStore(tmp_path)
    assert list(reloaded.records) == [good]
    assert not store.bundle(torn).exists()
    reloaded.sweep()
    assert os.listdir(reloaded.dir) == [good]


def test_container_store_never_drops_a_bundle_that_ran(tmp_path):
    """An unreadable record next to a shim.pid is not a torn create: refuse to guess."""
    from flotilla.runtime.containers import ContainerStore, new_state
    from flotilla.runtime.errors import RuntimeFault

    store = ContainerStore(tmp_path)
    cid = "c" * 64
    store.create({"id": cid, "name": "ran", "state": new_state()})
    (store.bundle(cid) / "shim.pid").write_text("1\n")
    (store.bundle(cid) / "config.json").write_bytes(b"{")
    with pytest.raises(RuntimeFault, match="unreadable"):
        ContainerStore(tmp_path)
    assert (store.bundle(cid) / "shim.pid").exists()


def test_reaper_deletes_trashed_trees_off_the_callers_thread(tmp_path):
    from flotilla.runtime.fsutil import Reaper, sweep_temps, to_trash

    trees = []
    for i in range(3):
        tree = tmp_path / f"obj{i}"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "file").write_text("x")
        trees.append(tree)
    assert to_trash(tmp_path / "missing") is None
    reaper = Reaper()
    trashed = [to_trash(t) for t in trees]
    assert all(not t.exists() for t in trees)  # gone for everyone at once
    for t in trashed:
        assert t is not None and t.name.startswith(".trash-obj")
        reaper.delete(t)
    reaper.drain()
    assert os.listdir(tmp_path) == []
    (tmp_path / "obj0").mkdir()
    leftover = to_trash(tmp_path / "obj0")
    sweep_temps(tmp_path)  # what a crash before the reaper got to it leaves, recover() removes
    assert leftover is not None and os.listdir(tmp_path) == []


def test_container_store_journal_keeps_the_newest_complete_record(tmp_path):
    """Saves append to state.log; a torn last line (power loss) falls back to the line before."""
    from flotilla.runtime.containers import JOURNAL, ContainerStore, new_state

    store = ContainerStore(tmp_path)
    cid = "d" * 64
    record = {"id": cid, "name": "j", "state": new_state()}
    store.create(record)
    for n in (1, 2):
        record["state"]["restart_count"] = n
        store.save(record, durable=n == 2)
    journal = store.bundle(cid) / JOURNAL
    assert len(journal.read_bytes().splitlines()) == 2
    assert ContainerStore(tmp_path).records[cid]["state"]["restart_count"] == 2
    with open(journal, "ab") as f:
        f.write(b'{"id": "' + cid.encode() + b'", "sta')  # the newest line, torn
    assert ContainerStore(tmp_path).records[cid]["state"]["restart_count"] == 2
    journal.write_bytes(b"{torn\n")  # nothing complete in the journal: config.json (the create) holds
    assert ContainerStore(tmp_path).records[cid]["state"]["restart_count"] == 0


def test_container_store_journal_is_compacted_into_config_json(tmp_path):
    from flotilla.runtime.containers import COMPACT_AFTER, JOURNAL, ContainerStore, new_state

    store = ContainerStore(tmp_path)
    cid = "e" * 64
    record = {"id": cid, "name": "k", "state": new_state()}
    store.create(record)
    for n in range(1, COMPACT_AFTER + 2):
        record["state"]["restart_count"] = n
        store.save(record, durable=False)
    journal = store.bundle(cid) / JOURNAL
    assert json.loads((store.bundle(cid) / "config.json").read_text())["state"]["restart_count"] == COMPACT_AFTER + 1
    assert not journal.exists()
    record["state"]["restart_count"] = 99
    store.save(record, durable=False)  # a new journal on top of the compacted record
    assert len(journal.read_bytes().splitlines()) == 1
    assert ContainerStore(tmp_path).records[cid]["state"]["restart_count"] == 99
