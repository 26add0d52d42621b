"""First-run `.env` creation (gateway/dotenv_setup.py)."""
import re
import stat
from pathlib import Path

import pytest

from gateway.dotenv_setup import create_env

TEMPLATE = Path(__file__).resolve().parents[1] / ".env.example"
KEY_LINE = re.compile(r"^API_KEYS=(sk-[A-Za-z0-9_-]{32,})$", re.MULTILINE)


@pytest.fixture
def template(tmp_path):
    path = tmp_path / "template.env"
    path.write_text("# client keys\nAPI_KEYS=\n# Cloudflare\nCLOUDFLARE_ACCOUNT_ID=\n"
                    "CLOUDFLARE_API_TOKEN=\nMODELS=\n", encoding="utf-8")
    return path


def test_create_env_writes_fresh_key_and_returns_it(tmp_path, template):
    target = tmp_path / ".env"
    key = create_env(target, template)
    assert key.startswith("sk-")
    text = target.read_text(encoding="utf-8")
    assert KEY_LINE.findall(text) == [key]
    assert text.count("API_KEYS=") == 1


def test_create_env_keeps_other_template_lines(tmp_path, template):
    target = tmp_path / ".env"
    key = create_env(target, template)
    expected = template.read_text(encoding="utf-8").replace("API_KEYS=\n", f"API_KEYS={key}\n")
    assert target.read_text(encoding="utf-8") == expected


def test_create_env_from_project_template(tmp_path):
    target = tmp_path / ".env"
    key = create_env(target, TEMPLATE)
    text = target.read_text(encoding="utf-8")
    assert KEY_LINE.findall(text) == [key]
    for line in TEMPLATE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("API_KEYS="):
            assert line in text.splitlines()


def test_create_env_file_is_private(tmp_path, template):
    target = tmp_path / ".env"
    create_env(target, template)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_create_env_key_differs_each_time(tmp_path, template):
    keys = {create_env(tmp_path / f".env{n}", template) for n in range(5)}
    assert len(keys) == 5
    assert all(len(key) >= 40 for key in keys)


def test_create_env_appends_key_when_template_has_none(tmp_path):
    template = tmp_path / "template.env"
    template.write_text("CLOUDFLARE_ACCOUNT_ID=\n# API_KEYS=commented\n", encoding="utf-8")
    target = tmp_path / ".env"
    key = create_env(target, template)
    assert KEY_LINE.findall(target.read_text(encoding="utf-8")) == [key]


def test_create_env_without_template_writes_key_only(tmp_path):
    target = tmp_path / ".env"
    key = create_env(target, tmp_path / "missing.env")
    assert target.read_text(encoding="utf-8") == f"API_KEYS={key}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("existing", [
    pytest.param("API_KEYS=sk-keep-me\nCLOUDFLARE_ACCOUNT_ID=abc\n", id="configured"),
    pytest.param("", id="empty-file"),
])
def test_create_env_leaves_existing_file_alone(tmp_path, template, existing):
    target = tmp_path / ".env"
    target.write_text(existing, encoding="utf-8")
    target.chmod(0o644)
    assert create_env(target, template) is None
    assert target.read_text(encoding="utf-8") == existing
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_create_env_leaves_template_untouched(tmp_path, template):
    before = template.read_text(encoding="utf-8")
    create_env(tmp_path / ".env", template)
    assert template.read_text(encoding="utf-8") == before
