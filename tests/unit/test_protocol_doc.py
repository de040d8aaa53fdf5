"""docs/protocol.md: the committed file is what the generator writes now (regenerate with
`python -m gateway.protocol_doc > docs/protocol.md`), it shows every frame of every channel with
an example its model accepts, and every close code and REST operation."""

import json
import re
from pathlib import Path

import pytest

import shared.protocol
from gateway.protocol_doc import gateway_openapi, protocol_markdown
from shared import frames
from shared.frames import CHANNELS, CLOSE_SERVICE_RESTART

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
MESSAGE = re.compile(
    r"^#### `(?P<type>\w+)` \((?P<model>\w+), (?P<sender>\w+) → (?P<receiver>\w+)\)\n"
    r"(?P<body>.*?)```json\n(?P<example>.*?)\n```",
    re.MULTILINE | re.DOTALL,
)
TEXT = PROTOCOL_MD.read_text()


def test_protocol_doc_is_what_the_generator_writes() -> None:
    assert protocol_markdown() == TEXT, (
        "docs/protocol.md is stale: python -m gateway.protocol_doc > docs/protocol.md"
    )


def test_protocol_doc_shows_every_frame_of_every_channel_in_each_direction() -> None:
    shown = {(m["model"], m["sender"], m["receiver"]) for m in MESSAGE.finditer(TEXT)}
    expected = {
        (model.__name__, channel.name, "server")
        for channel in CHANNELS
        for model in channel.client_sends
    } | {
        (model.__name__, "server", channel.name)
        for channel in CHANNELS
        for model in channel.server_sends
    }
    assert shown == expected


@pytest.mark.parametrize(
    "match", list(MESSAGE.finditer(TEXT)), ids=lambda m: f"{m['sender']}-{m['model']}"
)
def test_protocol_doc_example_is_accepted_by_its_model(match: re.Match[str]) -> None:
    model = getattr(frames, match["model"])
    example = json.loads(match["example"])
    assert example["type"] == match["type"]
    assert model.model_validate(example).model_dump(exclude_unset=True) == example
    for field in model.model_fields:  # each field of the model has a row
        assert f"| `{field}` |" in match["body"]


def test_protocol_doc_lists_every_close_code() -> None:
    codes = {v for k, v in vars(shared.protocol).items() if k.startswith("CLOSE_")}
    section = TEXT.split("## Close codes", 1)[1].split("\n## ", 1)[0]
    listed = {int(code) for code in re.findall(r"^\| (\d{4}) \|", section, re.MULTILINE)}
    assert listed == codes | {CLOSE_SERVICE_RESTART}


def test_protocol_doc_lists_every_rest_operation() -> None:
    section = TEXT.split("## REST endpoints", 1)[1]
    for path, operations in gateway_openapi()["paths"].items():
        for method in operations:
            assert f"| {method.upper()} | `{path}` |" in section
