"""The one route table: every route has a handler, every frame action a route."""
import ast

from cloudia import frames, routes
from local_runtime.lambda_runtime import FUNCTIONS_DIR


def test_every_route_is_served_by_a_handler_module_with_a_handler_function():
    for route_key, module in routes.ROUTES.items():
        path = FUNCTIONS_DIR / f"{module}.py"
        assert path.exists(), f"route {route_key} names {module}, but there is no {path}"
        defined = {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}
        assert "handler" in defined, f"{path} has no `handler` for route {route_key}"


def test_the_table_describes_each_handler_and_only_those_that_serve_a_route():
    assert set(routes.HANDLERS) == set(routes.ROUTES.values())
    assert {path.stem for path in FUNCTIONS_DIR.glob("*.py")} == set(routes.HANDLERS)


def test_every_frame_action_has_its_own_route_and_no_route_lacks_a_frame():
    assert set(frames.ACTIONS) == set(routes.MESSAGE_ROUTES)
    assert len(frames.ACTIONS) == len(set(frames.ACTIONS))


def test_construct_ids_are_the_modules_in_pascal_case():
    assert routes.pascal("send_message") == "SendMessage"
    assert routes.function_id("default") == "DefaultFunction"
