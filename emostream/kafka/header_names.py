"""kafka-python reads header names strictly as UTF-8; emostream reads them as bytes where they are not.

Installed by every consumer `emostream.kafka.clients` builds: a record whose header name is not UTF-8 would
otherwise fail inside `poll` at the same position on every call, and its consumer would never move past it
(nor past the rest of its batch). Its consumers dead-letter such a record as bad headers instead.
"""

from __future__ import annotations

from kafka.record.default_records import DefaultRecordBatch


def wire_name(name: str | bytes) -> bytes:
    """A header name's bytes as they were on the wire (see `keep_undecodable_header_names`)."""
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


class _LenientNames(bytearray):
    """A record batch's buffer whose slices decode with `surrogateescape`: bytes that are not UTF-8 are kept."""

    def __getitem__(self, item):  # type: ignore[no-untyped-def]
        part = super().__getitem__(item)
        return _LenientSlice(part) if isinstance(item, slice) else part


class _LenientSlice(bytearray):
    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return _WireName(bytearray.decode(self, encoding, "surrogateescape"))


class _WireName(str):
    """A header name holding bytes that are not UTF-8 as surrogates; it encodes back to those bytes (kafka-python
    re-encodes names to count a record's size)."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, encoding, "surrogateescape")


def keep_undecodable_header_names() -> None:
    """Let kafka-python read a record whose header name is not UTF-8, instead of failing inside `poll`.

    kafka-python decodes header names strictly (`DefaultRecordBatch._read_msg`); the error is raised on every
    poll at the same position, so the read task would never move past that record, nor past the rest of its
    batch. When a record fails so, it is read again from a buffer whose name slices decode with
    `surrogateescape`: the record comes through with its name's bytes intact (`wire_name`), and the perception
    stage dead-letters it as bad headers. Records that decode are read exactly as before.
    """
    original = DefaultRecordBatch._read_msg
    if getattr(original, "keeps_undecodable_names", False):
        return

    def read_msg(self: DefaultRecordBatch, *args: object, **kwargs: object) -> object:
        start = self._pos
        try:
            return original(self, *args, **kwargs)
        except UnicodeDecodeError:
            self._buffer, self._pos = _LenientNames(self._buffer), start
            return original(self, *args, **kwargs)

    read_msg.keeps_undecodable_names = True  # type: ignore[attr-defined]
    DefaultRecordBatch._read_msg = read_msg
