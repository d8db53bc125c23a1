"""The cost arithmetic of bench/price_per_message.py (prices x counts) and the billing units of
bench/aws_requests.py, on small made-up figures computed by hand."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_script(name: str) -> ModuleType:
    """bench/<name>.py, a script rather than a package's module, loaded from its file under its own
    name (as `python bench/<name>.py` makes its siblings importable to it)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


aws_requests = bench_script("aws_requests")
price_per_message = bench_script("price_per_message")
PRICES, Quantity = price_per_message.PRICES, price_per_message.Quantity
price_lines, total_usd = price_per_message.price_lines, price_per_message.total_usd

# Made-up prices in the shape of bench/prices.json, so the test holds whatever the real ones become.
PRICES_TABLE = {
    "requests": {"usd": 0.40, "per": 1_000_000, "unit": "requests"},
    "gb_s": {"usd": 0.0000133334, "per": 1, "unit": "GB-seconds"},
    "messages": {"usd": 1.00, "per": 1_000_000, "unit": "messages"},
    "hours": {"usd": 0.045, "per": 1, "unit": "hours"},
}


def test_a_million_messages_cost_each_count_times_its_unit_price():
    # GIVEN per message: 3 requests, 0.0125 GB-s (50 ms at 256 MB) and 50 frames
    quantities = [Quantity("requests", "requests", 3), Quantity("duration", "gb_s", 0.0125),
                  Quantity("frames", "messages", 50)]
    # WHEN priced per million messages
    lines = price_lines(quantities, PRICES_TABLE)
    # THEN by hand: 3 x 0.40 = 1.20; 0.0125 x 0.0000133334 x 10^6 = 0.1666675; 50 x 1.00 = 50.00
    assert [line.usd for line in lines] == pytest.approx([1.20, 0.1666675, 50.0])
    assert total_usd(lines) == pytest.approx(51.3666675)
    assert lines[1].usd_per_unit == pytest.approx(0.0000133334) and lines[0].unit == "requests"


def test_a_monthly_quantity_is_priced_once_with_scale_one():
    # GIVEN a NAT gateway for 730 hours WHEN priced for a month THEN 730 x 0.045 = 32.85
    [line] = price_lines([Quantity("NAT gateway", "hours", 730)], PRICES_TABLE, scale=1)
    assert line.usd == pytest.approx(32.85)


def test_every_price_in_the_table_has_its_unit_and_source():
    table = json.loads(PRICES.read_text())
    assert table["region"] == "us-east-1" and table["as_of"]
    for name, price in table["prices"].items():
        assert price["usd"] > 0 and price["per"] > 0 and price["unit"], name
        assert price["source"].startswith("https://aws.amazon.com/"), name


def test_item_sizes_follow_dynamodb_rules():
    # "id" (2) + "abc" (3); "n" (1) + 123 (3 digits: 2 bytes + 1); "ok" (2) + a boolean (1)
    item = {"id": {"S": "abc"}, "n": {"N": "123"}, "ok": {"BOOL": True}}
    assert aws_requests.item_size(item) == 5 + 4 + 3
    # a map: 3 bytes, plus per entry 1 byte, its name and its value
    assert aws_requests.value_size({"M": {"a": {"S": "xy"}}}) == 3 + 1 + 1 + 2


@pytest.mark.parametrize("size, writes, strong, eventual", [
    (0, 1, 1.0, 0.5), (1024, 1, 1.0, 0.5), (1025, 2, 1.0, 0.5), (4097, 5, 2.0, 1.0)])
def test_capacity_units_round_up_per_item(size, writes, strong, eventual):
    assert aws_requests.write_units(size) == writes
    assert aws_requests.read_units(size, consistent=True) == strong
    assert aws_requests.read_units(size, consistent=False) == eventual


def test_payloads_are_billed_in_chunks():
    assert aws_requests.sqs_chunks(0) == 1 and aws_requests.sqs_chunks(64 * 1024 + 1) == 2
    assert aws_requests.websocket_messages(300) == 1 and aws_requests.websocket_messages(32 * 1024 + 1) == 2
