"""How `make test` shares the suite between pytest-xdist workers (``GROUPS`` in conftest): every file that writes
to the machine's one shared home runs on the same worker, so two workers never convert the model or ingest into
it at once."""

from pathlib import Path

from tests.conftest import GROUPS, file_group

TESTS = Path(__file__).resolve().parent


def test_every_file_using_the_shared_home_is_in_its_group():
    users = {p.stem for p in TESTS.glob("test_*.py") if "SHARED_HOME" in p.read_text(encoding="utf-8")
             and p.name != Path(__file__).name}
    assert users and users <= {name for name, group in GROUPS.items() if group == "shared-home"}, users
    assert all((TESTS / f"{name}.py").is_file() for name in GROUPS), "a grouped file was renamed or removed"


def test_a_file_is_one_work_unit_and_a_group_is_one_too():
    assert file_group("tests/test_api.py::test_healthz_ok") == file_group("tests/test_api.py::test_ui[x::y]")
    assert file_group("tests/test_api.py::a") != file_group("tests/test_chat.py::a")
    assert file_group("tests/test_smoke.py::a") == file_group("tests/test_replicas.py::b") == "shared-home"
