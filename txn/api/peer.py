"""Node-to-node messages: Paxos traffic of a tablet and clock probes. Pure."""

from __future__ import annotations

from typing import ClassVar

import attrs

from txn.wire.codec import register_classes


@attrs.frozen
class PaxosEnvelope:
    """A Paxos message of one tablet, node to node (payload: wire-encoded).

    `physical_ns`: on an `Accepted`, the sender's physical clock as it sent it
    (0 on everything else). The Accepted echoes the leader's send time of the
    Accept it answers, so the leader has a round trip to measure the
    follower's clock by, as a `ClockProbe` gives (txn/node/clock_watch.py)."""

    tablet_id: str
    payload: bytes
    physical_ns: int = 0


@attrs.frozen
class ClockProbe:
    """Node to node, every probe interval: what is your physical clock?

    Exempt from the HLC rejection of messages from too far ahead (it is not
    absorbed into the clock either): a node whose clock ran off must still be
    able to measure that it did, or it could never fence itself."""

    hlc_exempt: ClassVar[bool] = True


@attrs.frozen
class ClockProbeReply:
    hlc_exempt: ClassVar[bool] = True
    physical_ns: int


register_classes(PaxosEnvelope, ClockProbe, ClockProbeReply)
