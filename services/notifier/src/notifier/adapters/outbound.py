"""Where the notifier may connect: the shared outbound guard (`orderflow.outbound`,
decision 0015), which intake's file fetches use too."""

from orderflow.outbound import (
    ALLOW_SETTING,
    AllowList,
    GuardedBackend,
    GuardedTransport,
    IPAddress,
    IPNetwork,
    OutboundPolicy,
    OutboundRefused,
    address_class,
    connect_socket,
)

__all__ = [
    "ALLOW_SETTING",
    "AllowList",
    "GuardedBackend",
    "GuardedTransport",
    "IPAddress",
    "IPNetwork",
    "OutboundPolicy",
    "OutboundRefused",
    "address_class",
    "connect_socket",
]
