"""The AsyncAPI document: valid AsyncAPI 3.0, every reference resolves, and it names every frame
model, message type, close code and error code of the protocol, with examples its models accept.
(tests/e2e/test_frames_documented.py holds a real server to it.)

tests/data/asyncapi-3.0.0.schema.json is the official JSON schema of AsyncAPI 3.0.0
(`schemas/3.0.0-without-$id.json` of the npm package @asyncapi/specs 6.11.1, Apache-2.0),
minified."""

import json
from pathlib import Path
from typing import Any, get_args

import jsonschema_rs
import pytest

import shared.frames
import shared.protocol
from gateway.asyncapi import asyncapi_document, example, frame_models
from shared.frames import CHANNELS, CLOSE_SERVICE_RESTART, Channel, Frame

ASYNCAPI_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "asyncapi-3.0.0.schema.json"
DOCUMENT = asyncapi_document()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def payload_validator(document: dict[str, Any], message: str) -> jsonschema_rs.Validator:
    payload = document["components"]["messages"][message]["payload"]
    return jsonschema_rs.validator_for({**payload, "components": document["components"]})


def type_of(model: type[Frame]) -> str:
    message_type: str = get_args(model.model_fields["type"].annotation)[0]
    return message_type


def test_asyncapi_document_is_valid_asyncapi_3() -> None:
    validator = jsonschema_rs.validator_for(json.loads(ASYNCAPI_SCHEMA.read_text()))
    errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(DOCUMENT)]
    assert DOCUMENT["asyncapi"] == "3.0.0"
    assert errors == []


def test_asyncapi_schema_check_catches_an_invalid_document() -> None:
    """The validator above is not one that accepts anything."""
    broken = json.loads(json.dumps(DOCUMENT))
    broken["operations"]["sendToDrone"]["action"] = "publish"  # AsyncAPI 2's word
    validator = jsonschema_rs.validator_for(json.loads(ASYNCAPI_SCHEMA.read_text()))
    assert not validator.is_valid(broken)


def test_asyncapi_every_ref_resolves() -> None:
    found = refs(DOCUMENT)
    assert len(found) > 40
    for ref in found:
        assert resolve(DOCUMENT, ref) is not None, ref


@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.name)
def test_asyncapi_channel_names_every_frame_of_its_models(channel: Channel) -> None:
    spec = DOCUMENT["channels"][channel.name]
    models = (*channel.client_sends, *channel.server_sends)
    assert list(spec["messages"]) == [m.__name__ for m in models]
    assert spec["address"] == f"/ws/{channel.name}/{{{channel.parameter}}}"
    assert list(spec["parameters"]) == [channel.parameter]


def test_asyncapi_every_message_type_of_the_protocol_is_documented() -> None:
    constants = {
        value
        for name, value in vars(shared.protocol).items()
        if name.isupper()
        and isinstance(value, str)
        and value == name.lower()
        and not name.startswith(("ERR_", "CLOSE_"))
    }
    documented = {m["name"] for m in DOCUMENT["components"]["messages"].values()}
    assert constants and constants <= documented


def test_asyncapi_sent_and_received_messages_are_those_of_the_models() -> None:
    for channel in CHANNELS:
        title = channel.name.capitalize()
        for operation, models in [
            (f"receiveFrom{title}", channel.client_sends),
            (f"sendTo{title}", channel.server_sends),
        ]:
            messages = DOCUMENT["operations"][operation]["messages"]
            assert [ref["$ref"].rsplit("/", 1)[1] for ref in messages] == [
                m.__name__ for m in models
            ]


@pytest.mark.parametrize("model", frame_models(), ids=lambda m: m.__name__)
def test_asyncapi_example_of_each_message_is_valid(model: type[Frame]) -> None:
    message = DOCUMENT["components"]["messages"][model.__name__]
    payload = message["examples"][0]["payload"]
    assert model.model_validate(payload).model_dump(exclude_unset=True) == payload
    assert payload_validator(DOCUMENT, model.__name__).is_valid(payload)
    assert payload["type"] == message["name"] == type_of(model)


def test_asyncapi_payload_schema_refuses_a_frame_its_model_refuses() -> None:
    frame = example(shared.frames.ReportResult)
    del frame["data"]["success"]
    assert not payload_validator(DOCUMENT, "ReportResult").is_valid(frame)


def test_asyncapi_documents_every_close_code() -> None:
    codes = {
        value for name, value in vars(shared.protocol).items() if name.startswith("CLOSE_")
    } | {CLOSE_SERVICE_RESTART}
    for channel in DOCUMENT["channels"].values():
        assert set(channel["x-close-codes"]) == {str(code) for code in codes}
        assert all(channel["x-close-codes"].values())


def test_asyncapi_documents_every_error_code() -> None:
    codes = {value for name, value in vars(shared.protocol).items() if name.startswith("ERR_")}
    assert set(DOCUMENT["x-error-codes"]) == codes
