"""Wire format: every registered type round-trips; bad input is a ProtocolError
naming the problem; decode and FrameDecoder let nothing else escape."""

from __future__ import annotations

import importlib
import pathlib
import pkgutil
from typing import Any, Optional

import attrs
import cbor2
import hypothesis.strategies as st
import pytest
from hypothesis import given, reject, settings

import txn
from hlc import Timestamp
from txn import wire
from txn.wire import Envelope, FrameDecoder, Kind, Ping, ProtocolError

# Import every txn module that registers message types (txn/wire/paxos.py,
# the api messages, ...) so all are in the registry before parametrizing; a
# module registers if its source calls `register_classes(`.
for _module in pkgutil.walk_packages(txn.__path__, prefix="txn."):
    _source = pathlib.Path(txn.__path__[0]).parent / (_module.name.replace(".", "/") + ".py")
    if _source.is_file() and "register_classes(" in _source.read_text():
        importlib.import_module(_module.name)

REGISTRY = wire.registered_types()
FUZZ = settings(max_examples=150, deadline=None)


def strategy_for(spec: wire.FieldSpec) -> st.SearchStrategy[Any]:
    kind, args = spec.kind, spec.args
    simple: dict[str, st.SearchStrategy[Any]] = {
        "int": st.integers(min_value=-(2**63), max_value=2**64 - 1),
        "str": st.text(max_size=20),
        "bytes": st.binary(max_size=40),
        "bool": st.booleans(),
        "float": st.floats(allow_nan=False),
        "timestamp": st.builds(Timestamp, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
        "any_message": st.builds(Ping, st.binary(max_size=8)),
    }
    if kind in simple:
        return simple[kind]
    if kind == "optional":
        return st.none() | strategy_for(args[0])
    if kind == "tuple":
        return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
    if kind == "fixed_tuple":
        return st.tuples(*(strategy_for(arg) for arg in args))
    if kind == "dict":
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    if kind == "enum":
        return st.sampled_from(list(args[0]))
    if kind == "nested":
        return instances(args[0])
    raise AssertionError(f"no strategy for field kind {kind}")


def instances(cls: type) -> st.SearchStrategy[Any]:
    examples = getattr(cls, "wire_examples", None)
    specs = wire.field_specs(cls)
    if specs is None:
        assert examples is not None, f"{cls.__name__} has custom to_wire(): give it a wire_examples() classmethod"
        return st.sampled_from(list(examples()))

    def build(values: tuple[Any, ...]) -> Any:
        try:
            return cls(*values)
        except (TypeError, ValueError):
            reject()

    built = st.tuples(*(strategy_for(spec) for spec in specs)).map(build)
    return built | st.sampled_from(list(examples())) if examples is not None else built


@pytest.mark.parametrize("type_id", sorted(REGISTRY), ids=lambda i: f"{i}-{REGISTRY[i].__name__}")
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_registered_type_round_trips(type_id: int, data: st.DataObject) -> None:
    cls = REGISTRY[type_id]
    msg = data.draw(instances(cls))
    encoded = wire.encode(msg)
    assert encoded[:1] == b"\x82", "a message is a 2-element array"
    decoded = wire.decode(encoded)
    assert type(decoded) is cls
    assert decoded == msg
    assert wire.encode(decoded) == encoded, "canonical: re-encoding gives the same bytes"
    # One-line __str__ for traces (text fields holding newlines are the caller's business).
    if "\\n" not in repr(msg):
        assert str(msg) and "\n" not in str(msg), f"{cls.__name__}: __str__ must be one line"


def test_the_one_table_is_the_registry() -> None:
    """Every id comes from txn/wire/type_ids.py, and every entry there is registered."""
    from txn.wire.type_ids import TYPE_IDS

    assert {cls.__name__: type_id for type_id, cls in REGISTRY.items()} == TYPE_IDS


def test_unlisted_classes_cannot_be_registered() -> None:
    with pytest.raises(ValueError, match="add it to txn/wire/type_ids.py"):
        wire.register_classes(_Probe)


def test_type_ids_sit_in_their_ranges() -> None:
    for type_id, cls in REGISTRY.items():
        if type_id in wire.TYPE_ID_RANGES["messaging"]:
            assert cls.__module__ == "txn.wire.envelope", f"{cls.__name__}: ids 1-99 are for messaging (txn/wire/envelope.py)"
        if type_id in wire.TYPE_ID_RANGES["paxos"]:
            assert cls.__module__.startswith(("paxos.", "txn.wire.paxos")), cls


@attrs.frozen
class _Probe:
    count: int
    name: str
    at: Timestamp
    items: tuple[int, ...]
    note: Optional[str]


def test_register_refuses_duplicates_and_bad_ids() -> None:
    with pytest.raises(ValueError, match="already registered to Ping"):
        wire.register(10, _Probe)
    with pytest.raises(ValueError, match="already registered under type id 10"):
        wire.register(398, Ping)
    with pytest.raises(ValueError, match="outside the ranges"):
        wire.register(1000, _Probe)
    with pytest.raises(ValueError, match="outside the ranges"):
        wire.register(0, _Probe)
    assert wire.register(10, Ping) is Ping, "re-registering the same pair is harmless"


def test_unsupported_annotation_is_refused_at_register() -> None:
    @attrs.frozen
    class Bad:
        value: list  # type: ignore[type-arg]

    with pytest.raises(TypeError, match="field value of Bad: unsupported annotation"):
        wire.register(399, Bad)
    assert 399 not in wire.registered_types()


@pytest.mark.parametrize(("plain", "problem"), [
    ([999, []], "unknown type id 999"),
    (["x", []], "type id must be an int, got str"),
    ([10], "expected [type_id, fields]"),
    ({"a": 1}, "expected [type_id, fields], got dict"),
    ([10, [1]], "field payload of Ping: expected bytes, got int"),
    ([10, [b"", b""]], "Ping: field count: expected 1, got 2"),
    ([10, "x"], "Ping: expected a list of fields, got str"),
    ([3, [b"\x00" * 12, 7, 1, [10, [b""]]]], "7 is not a Kind"),
    ([3, [b"\x00" * 11, 1, 1, [10, [b""]]]], "field ts of Envelope: expected a 12-byte timestamp"),
    ([3, [b"\x00" * 12, 1, -1, [10, [b""]]]], "request_id of Envelope: expected a non-negative int"),
    ([3, [b"\x00" * 12, 1, 1, [999, []]]], "field body of Envelope: unknown type id 999"),
    ([3, [b"\x00" * 12, 1, 1]], "Envelope: field count: expected 4, got 3"),
    ([1, [1, None, 5]], "field speaker of Handshake: expected str, got int"),
])
def test_decode_names_what_was_wrong(plain: Any, problem: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        wire.decode(cbor2.dumps(plain))
    assert problem in str(caught.value)


def test_decode_refuses_garbage_tags_and_trailing_bytes() -> None:
    with pytest.raises(ProtocolError, match="not valid CBOR"):
        wire.decode(b"\xff\x00garbage")
    with pytest.raises(ProtocolError, match="not valid CBOR: .*tag 35"):
        wire.decode(cbor2.dumps([10, [cbor2.CBORTag(35, "a+")]]))
    with pytest.raises(ProtocolError, match="3 trailing bytes"):
        wire.decode(wire.encode(Ping(b"x")) + b"abc")
    with pytest.raises(ProtocolError, match="not valid CBOR"):
        wire.decode(b"")


def test_encode_refuses_our_own_bad_values() -> None:
    with pytest.raises(TypeError, match="not a registered message type"):
        wire.encode(object())
    with pytest.raises(TypeError, match="field payload of Ping: expected bytes, got str"):
        wire.encode(Ping("text"))  # type: ignore[arg-type]


def test_derived_spec_converts_nested_and_optional_fields() -> None:
    specs = wire.field_specs(_Probe)
    assert specs is not None
    assert [(spec.name, spec.kind) for spec in specs] == [
        ("count", "int"), ("name", "str"), ("at", "timestamp"), ("items", "tuple"), ("note", "optional")]


@attrs.frozen
class _KeywordProbe:
    _secret: bytes = attrs.field(kw_only=True)  # its alias (the __init__ keyword) is "secret"
    ratio: float = attrs.field(kw_only=True)
    flag: bool = attrs.field(kw_only=True, validator=attrs.validators.instance_of(bool))


def test_generated_converters_convert_check_and_name_each_field() -> None:
    """The derived converters are generated per class (txn/wire/codec.py): keyword-only fields go
    by their aliases, a primitive of a convertible type is converted, and each field's check
    names that field, in field order."""
    codec = wire.codec._codec_for(_KeywordProbe)
    probe = _KeywordProbe(secret=b"s", ratio=0.5, flag=True)
    assert codec.from_fields(codec.to_fields(probe)) == probe
    assert codec.to_fields(_KeywordProbe(secret=bytearray(b"ab"), ratio=2, flag=False)) == [b"ab", 2.0, False]
    with pytest.raises(TypeError, match="field ratio of _KeywordProbe: expected float, got str"):
        codec.to_fields(_KeywordProbe(secret=b"", ratio="x", flag=False))
    for fields, problem in [
        ([b"s", 1, True], "field ratio of _KeywordProbe: expected float, got int"),
        (["s", "x", True], "field _secret of _KeywordProbe: expected bytes, got str"),  # the first bad field
        ([b"s", 0.5, 1], "field flag of _KeywordProbe: expected bool, got int"),
        ([b"s", 0.5], "_KeywordProbe: field count: expected 3, got 2"),
        ((b"s", 0.5, True), "_KeywordProbe: expected a list of fields, got tuple"),
    ]:
        with pytest.raises(ProtocolError) as caught:
            codec.from_fields(fields)
        assert str(caught.value) == problem
    probe_codec = wire.codec._codec_for(_Probe)
    with pytest.raises(ProtocolError, match="field at of _Probe: expected a 12-byte timestamp"):
        probe_codec.from_fields([1, "n", b"short", [], None])
    with pytest.raises(ProtocolError, match="invalid _Validated: .count. must be >= 0"):  # the validators refuse
        wire.codec._codec_for(_Validated).from_fields([-1])


@attrs.frozen
class _Validated:
    count: int = attrs.field(validator=attrs.validators.ge(0))


def test_frames_split_at_any_boundary() -> None:
    payloads = [b"", b"a", b"bc" * 100, wire.encode(Ping(b"x"))]
    stream = b"".join(wire.encode_frame(p) for p in payloads)
    for step in (1, 3, 7, len(stream)):
        decoder = FrameDecoder()
        got: list[bytes] = []
        for start in range(0, len(stream), step):
            got.extend(decoder.feed(stream[start:start + step]))
        assert got == payloads
        assert decoder.buffered_bytes() == 0


def test_oversized_length_is_refused_before_the_body() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(ProtocolError, match="frame length 1025 bytes exceeds the limit of 1024 bytes"):
        decoder.feed(b"\x04\x01")
    assert decoder.buffered_bytes() == 0, "nothing of the body is kept"
    with pytest.raises(ProtocolError):
        decoder.feed(b"more")


def test_truncation_is_described() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00\x00\x10abc")
    assert decoder.describe_truncation() == "truncated frame: connection closed after 3 of 16 payload bytes"


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_decode_raises_only_protocol_error(data: bytes) -> None:
    try:
        wire.decode(data)
    except ProtocolError:
        pass


def plain_values() -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=16) | st.text(max_size=8)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                        max_leaves=20)


@FUZZ
@given(st.sampled_from(sorted(REGISTRY)), plain_values())
def test_fuzz_well_formed_cbor_of_wrong_shape(type_id: int, fields: Any) -> None:
    try:
        wire.decode(cbor2.dumps([type_id, fields]))
    except ProtocolError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=8), st.integers(1, 64))
def test_fuzz_frame_decoder_raises_only_protocol_error(chunks: list[bytes], limit: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=limit)
    try:
        for chunk in chunks:
            for payload in decoder.feed(chunk):
                assert len(payload) <= limit
    except ProtocolError:
        pass


def test_envelope_str_is_one_line() -> None:
    envelope = Envelope(Timestamp(5, 1), Kind.REQUEST, 3, Ping(b"abc"))
    assert str(envelope) == "REQUEST #3 ts=5.1 Ping 3B"


def test_a_first_frame_limit_applies_to_the_first_frame_only() -> None:
    decoder = wire.FrameDecoder(1 << 20, first_frame_max_bytes=8)
    big = wire.encode_frame(b"y" * 100)
    assert decoder.feed(wire.encode_frame(b"hello") + big) == [b"hello", b"y" * 100]
    strict = wire.FrameDecoder(1 << 20, first_frame_max_bytes=8)
    with pytest.raises(wire.ProtocolError, match="handshake frame length 100 bytes exceeds the limit of 8 bytes"):
        strict.feed(big)
