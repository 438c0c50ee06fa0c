"""Request/response parsing for the KServe v2 protocol (JSON and binary tensors)."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest

from modelpool.routing.v2 import (
    BadRequest,
    annotate,
    confidence,
    decode_content,
    drop_output,
    ensure_output,
    parse_header_length,
    parse_request,
    parse_response,
    request_texts,
)


def _req(inputs: list[dict[str, object]], **extra: object) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


TEXT = {"name": "TEXT", "datatype": "BYTES", "shape": [2, 1], "data": ["hi", "there"]}


def test_json_request_texts() -> None:
    body = parse_request(_req([TEXT]), None)
    assert request_texts(body) == ["hi", "there"]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{bad", "malformed JSON"),
        (b"[]", "must be a JSON object"),
        (_req([]), "inputs: must be a non-empty list"),
        (_req([{"datatype": "BYTES", "shape": [1], "data": ["x"]}]), r"inputs\[0\].name"),
        (_req([{**TEXT, "datatype": "STRING"}]), r"inputs\[0\].datatype: 'STRING'"),
        (_req([{**TEXT, "shape": [2, "1"]}]), r"inputs\[0\].shape"),
        (_req([{**TEXT, "shape": [-1, 1]}]), r"inputs\[0\].shape: dimensions must be >= 0"),
        (_req([{**TEXT, "shape": [3, 1]}]), r"shape \[3, 1\] needs 3 elements, data has 2"),
        (_req([{**TEXT, "data": ["a", 5]}]), "does not match datatype BYTES"),
        (
            _req([{"name": "X", "datatype": "FP32", "shape": [1], "data": ["a"]}]),
            "does not match datatype FP32",
        ),
        (
            _req([{"name": "X", "datatype": "INT64", "shape": [1], "data": [1.5]}]),
            "does not match datatype INT64",
        ),
        (_req([{"name": "X", "datatype": "FP32", "shape": [1]}]), r"inputs\[0\].data: missing"),
        (
            _req([{"name": "X", "datatype": "FP32", "shape": [1], "data": 0}]),
            r"inputs\[0\].data: must be a JSON array of the 1 elements, got 0",
        ),
        (_req([{**TEXT, "shape": [1], "data": "a"}]), r"inputs\[0\].data: must be a JSON array"),
        (
            _req([{"name": "X", "datatype": "INT64", "shape": [3], "data": [0, 0, 2**63]}]),
            r"inputs\[0\].data: element 9223372036854775808 is outside \[-9223372036854775808, "
            r"9223372036854775807\], what JSON can carry for INT64",
        ),
        (
            _req([{"name": "X", "datatype": "UINT8", "shape": [2, 1], "data": [[1], [-1]]}]),
            r"inputs\[0\].data: element -1 is outside \[0, 18446744073709551615\]",
        ),
        (
            _req([{"name": "X", "datatype": "UINT64", "shape": [1], "data": [2**64]}]),
            r"element 18446744073709551616 is outside",
        ),
        (_req([TEXT], id=5), "id: must be a string, got 5"),
        (
            _req([TEXT], parameters={"sequence_id": [1]}),
            r"parameters.sequence_id: must be a string or an integer",
        ),
        (_req([TEXT], parameters={"sequence_start": 1}), "parameters.sequence_start: must be true or false"),
        (_req([TEXT], parameters={"binary_data_output": "x"}), "parameters.binary_data_output: must be true"),
        (
            _req([TEXT], parameters={"priority": -1}),
            r"parameters.priority: must be an integer from 0 to 2\^64 - 1",
        ),
        (_req([TEXT], parameters={"timeout": True}), "parameters.timeout: must be an integer"),
        (
            _req([TEXT], outputs=[{"name": "PROBABILITIES", "parameters": {"binary_data": 1}}]),
            r"outputs\[0\].parameters.binary_data: must be true or false, got 1",
        ),
        (
            _req([TEXT], outputs=[{"name": "P", "parameters": {"classification": 2**64}}]),
            r"outputs\[0\].parameters.classification: must be an integer",
        ),
        (
            _req([TEXT], outputs=[{"name": "P", "parameters": {"shared_memory_region": 5}}]),
            r"outputs\[0\].parameters.shared_memory_region: must be a string",
        ),
        (_req([TEXT], outputs="PROBABILITIES"), "outputs: must be a list"),
        (_req([TEXT], parameters=[1]), "parameters: must be an object"),
    ],
)
def test_bad_requests_name_the_problem(raw: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        parse_request(raw, None)


def test_typed_parameters_triton_reads_pass() -> None:
    raw = _req(
        [TEXT],
        id="req-1",
        parameters={"sequence_id": 2**64 - 1, "sequence_start": True, "priority": 0, "timeout": 5, "x": [1]},
        outputs=[{"name": "PROBABILITIES", "parameters": {"classification": 3, "binary_data": True}}],
    )
    assert parse_request(raw, None).header["id"] == "req-1"
    parse_request(_req([TEXT], parameters={"sequence_id": "abc"}), None)


@pytest.mark.parametrize(
    ("datatype", "values"),
    [("INT8", [128, -129]), ("INT64", [-(2**63), 2**63 - 1]), ("UINT64", [0, 2**64 - 1]), ("UINT8", [256])],
)
def test_integers_pass_as_far_as_triton_reads_them(datatype: str, values: list[int]) -> None:
    """Triton reads JSON integers as int64/uint64 and casts narrower types itself (INT8 128 is
    accepted there), so the router refuses only what Triton would answer with 500."""
    raw = _req([{"name": "X", "datatype": datatype, "shape": [len(values)], "data": values}])
    parse_request(raw, None)


def _binary_text_request(texts: list[str]) -> tuple[bytes, int]:
    data = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    head = json.dumps(
        {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [len(texts), 1],
                     "parameters": {"binary_data_size": len(data)}}]}
    ).encode()  # fmt: skip
    return head + data, len(head)


def test_binary_request_texts_and_size_checks() -> None:
    raw, hl = _binary_text_request(["héllo", "", "abc"])
    assert request_texts(parse_request(raw, hl)) == ["héllo", "", "abc"]
    with pytest.raises(BadRequest, match=r"the body has \d+"):
        parse_request(raw + b"extra", hl)
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        parse_request(raw, len(raw) + 1)
    with pytest.raises(BadRequest, match="not an integer"):
        parse_header_length(b"abc")
    fp = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 16],
                                 "parameters": {"binary_data_size": 60}}]}).encode()  # fmt: skip
    with pytest.raises(BadRequest, match="needs 64"):
        parse_request(fp + b"\0" * 60, len(fp))


def test_texts_missing_or_wrong_type() -> None:
    with pytest.raises(BadRequest, match="routes by input 'TEXT'"):
        request_texts(
            parse_request(_req([{"name": "X", "datatype": "FP32", "shape": [1], "data": [1.0]}]), None)
        )
    with pytest.raises(BadRequest, match="TEXT must be BYTES"):
        request_texts(
            parse_request(_req([{"name": "TEXT", "datatype": "INT8", "shape": [1], "data": [1]}]), None)
        )


def _json_response(probs: list[list[float]]) -> bytes:
    return json.dumps(
        {"model_name": "m", "outputs": [
            {"name": "PROBABILITIES", "datatype": "FP32", "shape": [len(probs), len(probs[0])],
             "data": [x for row in probs for x in row]},
            {"name": "LABEL", "datatype": "INT64", "shape": [len(probs), 1], "data": [0] * len(probs)}]}
    ).encode()  # fmt: skip


def test_confidence_is_lowest_top_probability() -> None:
    body = parse_response(_json_response([[0.9, 0.1], [0.4, 0.6]]), None)
    assert confidence(body) == pytest.approx(0.6)


def test_binary_response_confidence_drop_and_annotate() -> None:
    probs = np.array([[0.2, 0.8], [0.95, 0.05]], dtype=np.float32)
    label = np.array([[1], [0]], dtype=np.int64)
    head = json.dumps(
        {"model_name": "m", "outputs": [
            {"name": "LABEL", "datatype": "INT64", "shape": [2, 1], "parameters": {"binary_data_size": 16}},
            {"name": "PROBABILITIES", "datatype": "FP32", "shape": [2, 2],
             "parameters": {"binary_data_size": 16}}]}
    ).encode()  # fmt: skip
    body = parse_response(head + label.tobytes() + probs.tobytes(), len(head))
    assert confidence(body) == pytest.approx(0.8)
    drop_output(body, "PROBABILITIES")
    annotate(body, "pool-model", modelpool_variant="small")
    data, hl = body.encode()
    assert hl is not None
    again = parse_response(data, hl)
    assert [o["name"] for o in again.header["outputs"]] == ["LABEL"]
    assert np.frombuffer(again.binary, dtype=np.int64).tolist() == [1, 0]
    assert again.header["model_name"] == "pool-model"
    assert again.header["parameters"] == {"modelpool_variant": "small"}
    assert confidence(again) is None


def test_classification_confidence_json_binary_and_unreadable() -> None:
    """Triton's classification output: top-k ``"score:index"`` strings per row, best first."""
    head = {"model_name": "m", "outputs": [
        {"name": "PROBABILITIES", "datatype": "BYTES", "shape": [2, 2],
         "data": ["0.900000:1", "0.100000:0", "0.600000:0:card", "0.400000:1:cash"]}]}  # fmt: skip
    assert confidence(parse_response(json.dumps(head).encode(), None)) == pytest.approx(0.6)
    items = [b"0.8:2", b"0.2:0", b"0.7:1", b"0.3:0"]
    binary = b"".join(struct.pack("<I", len(i)) + i for i in items)
    out = {"name": "PROBABILITIES", "datatype": "BYTES", "shape": [2, 2],
           "parameters": {"binary_data_size": len(binary)}}  # fmt: skip
    raw = json.dumps({"model_name": "m", "outputs": [out]}).encode()
    assert confidence(parse_response(raw + binary, len(raw))) == pytest.approx(0.7)
    head["outputs"][0]["data"] = ["not a score", "x"]
    assert confidence(parse_response(json.dumps(head).encode(), None)) is None  # the cascade escalates


def test_ensure_output_only_when_outputs_listed() -> None:
    body = parse_request(_req([TEXT]), None)
    assert not ensure_output(body, "PROBABILITIES")
    empty = parse_request(_req([TEXT], outputs=[]), None)
    assert not ensure_output(empty, "PROBABILITIES")  # an empty list: Triton sends every output
    assert empty.header["outputs"] == []
    body = parse_request(_req([TEXT], outputs=[{"name": "LABEL"}]), None)
    assert ensure_output(body, "PROBABILITIES")
    assert body.header["outputs"][-1] == {"name": "PROBABILITIES", "parameters": {"binary_data": False}}
    assert not ensure_output(body, "PROBABILITIES")


def test_compressed_bodies_decode_within_the_limit() -> None:
    plain = _req([TEXT])
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for encoding, packed in [
        (b"gzip", gzip.compress(plain)),
        (b" GZIP ", gzip.compress(plain)),
        (b"deflate", zlib.compress(plain)),
        (b"deflate", raw_deflate.compress(plain) + raw_deflate.flush()),
        (b"identity", plain),
    ]:
        assert decode_content(packed, encoding, 1 << 20) == plain
    bomb = gzip.compress(b" " * 2_000_000)  # 2 MB of spaces in about 2 kB
    with pytest.raises(BadRequest, match="decompresses to over the limit of 65536 bytes") as over:
        decode_content(bomb, b"gzip", 65536)
    assert over.value.status == 413
    with pytest.raises(BadRequest, match="truncated"):
        decode_content(gzip.compress(plain)[:-12], b"gzip", 1 << 20)
    with pytest.raises(BadRequest, match="does not decompress"):
        decode_content(plain, b"gzip", 1 << 20)
    with pytest.raises(BadRequest, match="'br' is not supported; use gzip, deflate or identity") as br:
        decode_content(plain, b"br", 1 << 20)
    assert br.value.status == 415


@pytest.mark.parametrize("depth", [600, 100_000])
def test_deeply_nested_requests_are_bad_requests(depth: int) -> None:
    """A RecursionError (json.loads past its depth, or the checks walking nested ``data``) was no
    BadRequest: the router answered 500 and did not count the response."""
    nested = "[" * depth + '"x"' + "]" * depth
    raw = ('{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":' + nested + "}]}").encode()
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_request(raw, None)
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_response(b'{"outputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}", None)
