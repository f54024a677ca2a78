"""Issue 3: image distribution and building on top of the runtime's content store.

The runtime (`flotilla.runtime.images.ImageStore`) owns blobs, image metadata, tags and the
unpacked layers. This package adds what Docker's distribution and builder code does: registry
references, manifests and indexes, a registry v2 client with auth, pull/push, `docker save` /
`docker load`, Dockerfile parsing and building. `service.ImageService` is the one entry point
the agent's API server calls (docs/images.md).

The package is called `imaging`, not `images`, because `runtime/images.py` (the runtime's
module) already owns the import name `flotilla.runtime.images`.
"""
