"""iptables rules of one instance, rendered from state and applied as one atomic batch.

Why iptables (through iptables-restore) and not a private nftables table: a DROP verdict in any
base chain is final, so a private nft table could never let our traffic through a host whose
iptables FORWARD policy is DROP (Docker sets that whenever it runs). Our accept rules have to
live in the iptables FORWARD chain itself, at the top, exactly as Docker's DOCKER-USER does.
On this host iptables is the nf_tables backend, so the rules are still nftables underneath.

Everything lives in chains of our own, named with the instance, reached by one jump from each
built-in chain. A sync renders the complete desired content of those chains from the manager's
state and loads it with `iptables-restore --noflush` (declaring a chain flushes it, so a sync is
idempotent and heals any drift after a crash); when the instance has no network left, the jumps
and chains are deleted, so nothing of the instance remains.

These rules depend on the networks only, so a sync runs when a network appears or goes, never
per container. Published ports (per container) are DNAT elements in nftables (portnat.py).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass

from .errors import NetworkError
from .names import Names

SUFFIXES = {"filter": ("FWD", "ISO1", "ISO2", "IN"), "nat": ("POST",)}


@dataclass(frozen=True)
class FwNetwork:
    bridge: str
    subnet: str
    internal: bool
    masquerade: bool



def _run(args: list[str], stdin: str = "") -> str:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["(no message)"])[0]
        raise NetworkError(f"{args[0]} failed: {msg}")
    return proc.stdout


class Firewall:
    """The rules of one instance."""

    def __init__(self, names: Names) -> None:
        self.n = names
        c = names.chain
        self.jumps = {
            "filter": [("FORWARD", f"-j {c('FWD')}", True), ("INPUT", f"-j {c('IN')}", True)],
            "nat": [("POSTROUTING", f"-j {c('POST')}", False)],
        }
        # Published ports were DNAT rules in this chain before they moved to nftables: an agent
        # upgraded on a running host deletes it, or its stale DNATs would win over the maps.
        self.legacy_chain = c("DNAT")
        self.legacy_jumps = [("PREROUTING", f"-m addrtype --dst-type LOCAL -j {c('DNAT')}"),
                             ("OUTPUT", f"-m addrtype --dst-type LOCAL -j {c('DNAT')}")]

    def render(self, networks: list[FwNetwork]) -> dict[str, list[str]]:
        """The rules of every chain of ours, per table, in iptables-restore syntax."""
        c = self.n.chain
        fwd, iso1, iso2, post, inp = c("FWD"), c("ISO1"), c("ISO2"), c("POST"), c("IN")
        filt = [f"-A {fwd} -j {iso1}"]
        nat: list[str] = []
        for net in networks:
            br = net.bridge
            # Published ports stay reachable from other networks (as through Docker's proxy).
            filt.append(f"-A {iso1} -i {br} ! -o {br} -m conntrack ! --ctstate DNAT -j {iso2}")
            filt.append(f"-A {iso2} -o {br} -j DROP")
            if net.internal:
                filt += [f"-A {fwd} -i {br} ! -o {br} -j DROP", f"-A {fwd} -o {br} ! -i {br} -j DROP",
                         f"-A {fwd} -i {br} -o {br} -j ACCEPT"]
            else:
                filt += [f"-A {fwd} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                         f"-A {fwd} -o {br} -m conntrack --ctstate DNAT -j ACCEPT",
                         f"-A {fwd} -i {br} -j ACCEPT",
                         f"-A {fwd} -o {br} -j DROP"]
                if net.masquerade:
                    nat.append(f"-A {post} -s {net.subnet} ! -o {br} -j MASQUERADE")
            # route_localnet on the bridge must not let a container reach the host's loopback
            # services with forged 127.x destinations (CVE-2020-8558); replies of our own
            # 127.0.0.1 -> published port connections are ESTABLISHED and pass.
            filt.append(f"-A {inp} -i {br} -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP")
            # 127.0.0.1 -> published port: the source must become the bridge's address.
            nat.append(f"-A {post} -o {br} -m addrtype --src-type LOCAL -j MASQUERADE")
            # Hairpin: a container reaching a published port of its own bridge through the host.
            nat.append(f"-A {post} -s {net.subnet} -o {br} -m conntrack --ctstate DNAT -j MASQUERADE")
        return {"filter": filt, "nat": nat}

    def sync(self, networks: list[FwNetwork]) -> None:
        """Make our chains exactly what the state says; remove everything when no network is left."""
        if not networks:
            self.teardown()
            return
        rules = self.render(networks)
        present = self._save()
        batch: list[str] = []
        for table in ("filter", "nat"):
            batch.append(f"*{table}")
            batch += [f":{self.n.chain(s)} - [0:0]" for s in SUFFIXES[table]]
            batch += rules[table]
            for chain, spec, insert in self.jumps[table]:
                if f"-A {chain} {spec}" not in present[table]:
                    batch.append(f"-I {chain} 1 {spec}" if insert else f"-A {chain} {spec}")
            if table == "nat":
                batch += self._legacy(present["nat"])
            batch.append("COMMIT")
        _run(["iptables-restore", "-w", "--noflush"], "\n".join(batch) + "\n")

    def teardown(self) -> None:
        """Delete our jumps and chains; a no-op when none exist."""
        present = self._save()
        batch: list[str] = []
        for table in ("filter", "nat"):
            ours = [self.n.chain(s) for s in SUFFIXES[table] if f":{self.n.chain(s)} " in present[table]]
            jumps = [f"-D {chain} {spec}" for chain, spec, _ in self.jumps[table]
                     for _ in range(present[table].count(f"-A {chain} {spec}"))]
            legacy = self._legacy(present[table]) if table == "nat" else []
            if not ours and not jumps and not legacy:
                continue
            batch += [f"*{table}"] + jumps + [f"-F {c}" for c in ours] + [f"-X {c}" for c in ours] + legacy + ["COMMIT"]
        if batch:
            _run(["iptables-restore", "-w", "--noflush"], "\n".join(batch) + "\n")

    def _legacy(self, nat: list[str]) -> list[str]:
        """iptables-restore lines that delete the old DNAT chain and its jumps, where present."""
        lines = [f"-D {chain} {spec}" for chain, spec in self.legacy_jumps for _ in range(nat.count(f"-A {chain} {spec}"))]
        if f":{self.legacy_chain} " in nat:
            lines += [f"-F {self.legacy_chain}", f"-X {self.legacy_chain}"]
        return lines

    def _save(self) -> dict[str, list[str]]:
        """The filter and nat tables, from one `iptables-save` (each run costs ~10 ms)."""
        out: dict[str, list[str]] = {"filter": [], "nat": []}
        table = ""
        for line in _run(["iptables-save"]).splitlines():
            line = line.strip()
            if line.startswith("*"):
                table = line[1:]
            elif table in out:
                # ":CHAIN - [0:0]" lines keep their trailing policy part; compare by prefix.
                out[table].append(line if not line.startswith(":") else line.split(" ")[0] + " ")
        return out

    def leftovers(self) -> list[str]:
        """Every iptables line that mentions a chain of this instance (for tests and recovery checks)."""
        text = _run(["iptables-save"])
        return [line for line in text.splitlines() if any(self.n.chain(s) in line.split() or f":{self.n.chain(s)}" == line.split(" ")[0]
                                                          for t in SUFFIXES for s in SUFFIXES[t])]
