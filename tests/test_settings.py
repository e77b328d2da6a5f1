import pytest

from assistants import settings as settings_module
from assistants.settings import Settings


@pytest.fixture
def storage(tmp_path, monkeypatch):
    """A stand-in for a Space's /data mount."""
    mount = tmp_path / "data"
    mount.mkdir()
    monkeypatch.setattr(settings_module, "SPACES_STORAGE", mount)
    return mount


def test_no_storage_warning_off_a_space_even_in_a_temp_dir(monkeypatch, tmp_path, storage):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not Settings.from_env(home=tmp_path / "home").space_without_storage


@pytest.mark.parametrize("home,warned", [("data/assistants", False), ("data", False), ("elsewhere", True)])
def test_storage_warning_on_a_space_unless_home_is_its_storage(monkeypatch, tmp_path, storage, home, warned):
    monkeypatch.setenv("SPACE_ID", "user/assistants")
    assert Settings.from_env(home=tmp_path / home).space_without_storage is warned


def test_storage_warning_on_a_space_without_storage(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACE_ID", "user/assistants")
    monkeypatch.setattr(settings_module, "SPACES_STORAGE", tmp_path / "not-mounted")
    assert Settings.from_env(home=tmp_path / "not-mounted" / "x").space_without_storage
