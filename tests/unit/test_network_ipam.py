"""IPAM: validation of subnet / gateway / ip-range, next-fit allocation, exhaustion."""
import pytest

from flotilla.runtime.network import Conflict, InvalidArgument
from flotilla.runtime.network import ipam


def test_defaults_gateway_to_first_host():
    pool = ipam.make_pool("198.51.100.0/24")
    assert str(pool.gateway) == "198.51.100.1"
    assert pool.usable == 253


@pytest.mark.parametrize("subnet, gateway, ip_range, message", [
    ("198.51.100.1/24", "", "", "invalid subnet"),
    ("not-a-net", "", "", "invalid subnet"),
    ("198.51.100.0/31", "", "", "too small"),
    ("198.51.100.0/24", "198.51.101.1", "", "not a host address"),
    ("198.51.100.0/24", "198.51.100.255", "", "not a host address"),
    ("198.51.100.0/24", "", "198.51.101.0/28", "not inside subnet"),
    ("198.51.100.0/24", "x", "", "invalid gateway"),
])
def test_invalid_plans(subnet, gateway, ip_range, message):
    with pytest.raises(InvalidArgument, match=message):
        ipam.make_pool(subnet, gateway, ip_range)


def test_allocation_is_next_fit_and_never_duplicates():
    pool = ipam.make_pool("198.51.100.0/29")  # .1 gateway, .2-.6 usable
    used: set[str] = set()
    last = ""
    for expected in ["198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5", "198.51.100.6"]:
        last = pool.allocate(used, "n", last)
        assert last == expected
        used.add(last)
    with pytest.raises(Conflict, match="no available IPv4 addresses on network n"):
        pool.allocate(used, "n", last)
    used.discard("198.51.100.3")
    assert pool.allocate(used, "n", last) == "198.51.100.3"


def test_next_fit_does_not_reuse_a_just_released_address_while_others_are_free():
    pool = ipam.make_pool("198.51.100.0/24")
    assert pool.allocate({"198.51.100.2"}, "n", after="198.51.100.3") == "198.51.100.4"


def test_ip_range_limits_dynamic_allocation():
    pool = ipam.make_pool("198.51.100.0/24", ip_range="198.51.100.128/30")
    got = set()
    for _ in range(4):
        got.add(pool.allocate(got, "n"))
    assert got == {"198.51.100.128", "198.51.100.129", "198.51.100.130", "198.51.100.131"}
    with pytest.raises(Conflict):
        pool.allocate(got, "n")
    # a static address outside the range but inside the subnet is fine (as in Docker)
    assert pool.check_static("198.51.100.9", got, "n") == "198.51.100.9"


def test_static_addresses_are_checked():
    pool = ipam.make_pool("198.51.100.0/24")
    with pytest.raises(InvalidArgument, match="not in subnet"):
        pool.check_static("203.0.113.5", set(), "n")
    with pytest.raises(InvalidArgument, match="gateway"):
        pool.check_static("198.51.100.1", set(), "n")
    with pytest.raises(Conflict, match="already in use"):
        pool.check_static("198.51.100.7", {"198.51.100.7"}, "n")
    with pytest.raises(InvalidArgument, match="invalid IPv4"):
        pool.check_static("198.51.100", set(), "n")


def test_pick_subnet_skips_taken_pools():
    assert ipam.pick_subnet([]) == "172.17.0.0/16"
    assert ipam.pick_subnet(["172.17.5.0/24", "172.18.0.0/16"]) == "172.19.0.0/16"


def test_mac_is_derived_from_the_address():
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"
