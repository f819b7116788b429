"""Webhook deliveries reach public receivers only: each class of internal address is refused, by the address a name
resolves to when the delivery is made; GENDEF_WEBHOOK_ALLOW lets internal receivers through. Deliveries go over
real HTTP to a receiver on a loopback port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from core import webhooks
from core.settings import Settings
from tests.e2e.test_webhooks import Receiver
from worker.webhooks import post

SECRET = "w" * 32


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("10.1.2.3", "private"),
        ("172.18.0.5", "private"),  # a compose network
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "not public"),  # carrier-grade NAT
        ("192.0.2.10", "private"),  # documentation range
    ],
)
def test_every_internal_address_class_is_refused(address: str, kind: str):
    assert webhooks.refusal(Settings(), address) == f"{address.removeprefix('::ffff:')} is a {kind} address"


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str):
    assert webhooks.refusal(Settings(), address) is None


def test_the_allow_list_opens_its_networks_only():
    settings = Settings(webhook_allow="10.0.0.0/8, fd00::/8")
    assert webhooks.refusal(settings, "10.9.9.9") is None and webhooks.refusal(settings, "fd00::5") is None
    assert webhooks.refusal(settings, "192.168.0.1") == "192.168.0.1 is a private address"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def deliver(settings: Settings, url: str) -> None:
    post(settings, url, "completed", "0" * 32, b"{}")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", socket.gethostname()])
def test_a_delivery_to_an_internal_receiver_is_refused_by_default(receiver: Receiver, host: str):
    """A literal address, a name for loopback, and this machine's own name (loopback, or a container's private
    address)."""
    url = receiver.url.replace("127.0.0.1", host)
    with pytest.raises(webhooks.Refused, match="resolves to .* address"):
        deliver(Settings(webhook_secret=SECRET), url)
    assert receiver.requests == []


@pytest.mark.parametrize("allow", ["127.0.0.1/32,::1/128", "localhost"])
def test_an_allowed_receiver_gets_the_delivery_at_the_checked_address(receiver: Receiver, allow: str):
    url = receiver.url.replace("127.0.0.1", "localhost")
    deliver(Settings(webhook_secret=SECRET, webhook_allow=allow), url)
    ((headers, body, status),) = receiver.requests
    port = url.split(":")[2].split("/")[0]
    assert headers["host"] == f"localhost:{port}" and body == b"{}" and status == 200  # the name, as Host
