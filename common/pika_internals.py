"""Every use of pika's private attributes, in one module that checks them when it is imported.

Two fast paths need what pika keeps private:

* the producer hands pre-encoded row frames to the connection in one write
  (`Connection._output_marshaled_frames`) and reads how many bytes wait unsent
  (`BaseConnection._transport.get_write_buffer_size()`), which bounds its
  memory (producer.row_publisher, UNSENT_BYTES);
* a worker publishes with confirms by callback on the asynchronous channel
  under a BlockingChannel (`BlockingChannel._impl`), instead of waiting for
  each confirm (workers.confirmed_publisher).

A pika release may rename or drop any of these without notice; a renamed
`_transport` read as "nothing unsent" would silently lift the producer's
memory bound. So importing this module (which both publishers do, so every
producer and worker process at start) checks that the installed pika is a
release this was written for and that each attribute exists, and raises
`PikaInternalsError` naming the version and the attribute otherwise; at use,
an attribute that is set on instances is checked again and fails the same way.
"""

from __future__ import annotations

import inspect
from typing import Any

import pika
from pika.adapters.base_connection import BaseConnection
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.nbio_interface import AbstractStreamTransport
from pika.channel import Channel
from pika.connection import Connection

from common.errors import AutoscalerError

#: pika releases (major.minor) whose private attributes this module was written against and tested with.
SUPPORTED_RELEASES = ("1.4",)


class PikaInternalsError(AutoscalerError):
    """The installed pika lacks a private attribute the project relies on; the message names both."""


def _fail(what: str) -> PikaInternalsError:
    return PikaInternalsError(
        f"pika {pika.__version__} (supported: {', '.join(SUPPORTED_RELEASES)}.x): {what}; "
        "pin a supported pika or update common/pika_internals.py"
    )


def check() -> None:
    """Raise PikaInternalsError unless pika's release is supported and every private attribute used exists."""
    release = ".".join(pika.__version__.split(".")[:2])
    if release not in SUPPORTED_RELEASES:
        raise _fail("this pika release is not one the private attributes were checked against")
    for owner, attribute in (
        (Connection, "_output_marshaled_frames"),
        (AbstractStreamTransport, "get_write_buffer_size"),
    ):
        if not callable(getattr(owner, attribute, None)):
            raise _fail(f"{owner.__module__}.{owner.__name__}.{attribute} is missing")
    for owner, attribute in ((BaseConnection, "_transport"), (BlockingChannel, "_impl")):
        if f"self.{attribute} =" not in inspect.getsource(owner):
            raise _fail(f"{owner.__module__}.{owner.__name__} no longer sets {attribute}")


def write_frames(connection: Connection, data: bytes) -> None:
    """Hand already-marshaled frames to the connection as one buffer (what basic_publish does frame by frame)."""
    connection._output_marshaled_frames([data])


def unsent_bytes(connection: BaseConnection) -> int:
    """Bytes handed to an open connection that its socket has not taken yet."""
    transport = getattr(connection, "_transport", None)
    if transport is None:
        if connection.is_open:
            raise _fail("an open connection has no _transport, so unsent bytes cannot be bounded")
        return 0
    return transport.get_write_buffer_size()


def async_channel(channel: BlockingChannel) -> Channel:
    """The asynchronous channel under a BlockingChannel: confirms by callback, publishes without waiting."""
    impl: Any = getattr(channel, "_impl", None)
    if not isinstance(impl, Channel):
        raise _fail("BlockingChannel._impl is not a pika.channel.Channel")
    return impl


check()
