"""API tokens: the tokens file's lines, hashing, constant-time lookup and what scopes allow."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cerebelum.api.tokens import (
    ADMIN,
    CANCEL,
    READ,
    RELOAD_CHECK_S,
    SCOPES,
    SIGNAL,
    START,
    TOKEN_PREFIX,
    Caller,
    TokenBook,
    TokenFile,
    allows,
    hash_token,
    load_authenticator,
    new_token,
    parse_line,
    parse_scopes,
    parse_tokens,
    token_line,
)
from cerebelum.cli.main import main as cli
from cerebelum.config import DEFAULT_ALLOWED_HOSTS, ApiSettings
from cerebelum.errors import ConfigurationError

HASH = "a" * 64


def test_a_new_token_is_random_prefixed_and_long() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(t.startswith(TOKEN_PREFIX) and len(t) == len(TOKEN_PREFIX) + 43 for t in tokens)


def test_the_file_holds_the_sha256_and_never_the_token() -> None:
    token = new_token()
    line = token_line("ana", [START, READ], token)
    assert line == f"ana:read,start:sha256:{hashlib.sha256(token.encode()).hexdigest()}"
    assert token not in line and token[len(TOKEN_PREFIX) :] not in line
    assert hash_token(token) == line.rsplit(":", 1)[1]
    stored = parse_line(line)
    assert (stored.name, stored.scopes) == ("ana", frozenset({READ, START}))
    assert stored.digest == hashlib.sha256(token.encode()).digest()


def test_a_file_with_comments_and_blank_lines() -> None:
    text = f"# who:scopes:hash\n\nana:read:sha256:{HASH}\n  \nbot:admin:sha256:{'b' * 64}\n"
    assert [t.name for t in parse_tokens(text)] == ["ana", "bot"]


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("cbl_plaintexttoken", "expected name:scope,scope:sha256:<64 hex digits>"),
        (f"ana:read:{HASH}", "expected name:scope"),
        (f"ana:read:md5:{HASH}", "expected name:scope"),
        (f"ana:read:sha256:{HASH[:-1]}", "64 lowercase hex digits"),
        (f"ana:read:sha256:{HASH.upper()}", "64 lowercase hex digits"),
        (f"ana:write:sha256:{HASH}", "unknown scope 'write'"),
        (f"ana::sha256:{HASH}", "no scope given"),
        (f"-ana:read:sha256:{HASH}", "token name '-ana'"),
        (f"a na:read:sha256:{HASH}", "token name 'a na'"),
    ],
)
def test_a_bad_line_is_refused_naming_its_number(line: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_tokens(f"# first\n{line}\n", "tokens.txt")
    assert str(caught.value).startswith("tokens.txt, line 2: ")
    assert complaint in str(caught.value)


def test_names_and_hashes_are_unique() -> None:
    with pytest.raises(ConfigurationError, match="line 2: the same name as token 'ana'"):
        parse_tokens(f"ana:read:sha256:{HASH}\nana:admin:sha256:{'b' * 64}\n")
    with pytest.raises(ConfigurationError, match="line 2: the same hash as token 'ana'"):
        parse_tokens(f"ana:read:sha256:{HASH}\nbob:admin:sha256:{HASH}\n")


def test_the_book_finds_a_token_by_its_hash_only() -> None:
    ana, bot = new_token(), new_token()
    book = TokenBook(parse_tokens(f"{token_line('ana', [READ], ana)}\n"
                                  f"{token_line('bot', [ADMIN], bot)}\n"))  # fmt: skip
    assert book.authenticate(ana).name == "ana"  # type: ignore[union-attr]
    assert book.authenticate(bot).name == "bot"  # type: ignore[union-attr]
    for wrong in ("", ana[:-1], ana + "x", ana.upper(), hash_token(ana)):
        assert book.authenticate(wrong) is None


def test_scopes_and_admin() -> None:
    assert parse_scopes(" read , start ") == {READ, START}
    for scope in SCOPES:
        assert allows({ADMIN}, scope)
        assert allows({scope}, scope)
    assert not allows({READ}, START)
    assert not allows({START, SIGNAL, CANCEL, READ}, ADMIN)
    with pytest.raises(ConfigurationError, match="unknown scope 'Read'"):
        parse_scopes("Read")


def test_auth_on_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no tokens are configured"):
        load_authenticator(ApiSettings())
    with pytest.raises(ConfigurationError, match="cannot read the tokens file"):
        load_authenticator(ApiSettings(tokens_file=str(tmp_path / "absent")))
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    with pytest.raises(ConfigurationError, match="holds no token"):
        load_authenticator(ApiSettings(tokens_file=str(empty)))
    assert load_authenticator(ApiSettings(auth=False)) is None


async def test_the_authenticator_tells_our_tokens_from_jwts(tmp_path: Path) -> None:
    token = new_token()
    path = tmp_path / "tokens"
    path.write_text(token_line("ana", [READ, SIGNAL], token) + "\n")
    auth = load_authenticator(ApiSettings(tokens_file=str(path)))
    assert auth is not None
    assert await auth.authenticate(token) == Caller("ana", frozenset({READ, SIGNAL}))
    assert await auth.authenticate(token + "x") is None
    assert await auth.authenticate("eyJhbGciOiJSUzI1NiJ9.e30.x") is None  # no JWKS configured


def test_api_settings_from_the_environment(tmp_path: Path) -> None:
    assert ApiSettings.from_env({}) == ApiSettings()
    assert ApiSettings().auth and ApiSettings().allowed_hosts == DEFAULT_ALLOWED_HOSTS
    settings = ApiSettings.from_env({
        "CEREBELUM_API_TOKENS_FILE": "/etc/cerebelum/tokens",
        "CEREBELUM_API_AUTH": "OFF",
        "CEREBELUM_API_ALLOWED_HOSTS": "api.example.com, *.internal,",
        "CEREBELUM_API_CORS_ORIGINS": "https://ops.example.com",
    })  # fmt: skip
    assert settings == ApiSettings(
        tokens_file="/etc/cerebelum/tokens",
        auth=False,
        allowed_hosts=("api.example.com", "*.internal"),
        cors_origins=("https://ops.example.com",),
    )
    with pytest.raises(ConfigurationError, match="CEREBELUM_API_AUTH must be 'on' or 'off'"):
        ApiSettings.from_env({"CEREBELUM_API_AUTH": "no"})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_tokens_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    first, second = new_token(), new_token()
    path.write_text(token_line("first", [READ], first) + "\n")
    clock = Clock()
    tokens = TokenFile(path, clock)
    assert tokens.authenticate(first) is not None and tokens.authenticate(second) is None

    path.write_text(token_line("second", [READ], second) + "\n")  # first revoked, second made
    assert tokens.authenticate(first) is not None, "looked at again only every RELOAD_CHECK_S"
    clock.now += RELOAD_CHECK_S
    assert tokens.authenticate(first) is None
    found = tokens.authenticate(second)
    assert found is not None and found.name == "second"


def test_a_broken_tokens_file_leaves_the_previous_tokens_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    token = new_token()
    path.write_text(token_line("ops", [ADMIN], token) + "\n")
    clock = Clock()
    tokens = TokenFile(path, clock)
    for broken in ("ops:admin:sha256:half-writ", ""):
        path.write_text(broken)
        clock.now += RELOAD_CHECK_S
        assert tokens.authenticate(token) is not None, broken
        assert "previous tokens stay in force" in caplog.text
        caplog.clear()
    path.unlink()
    clock.now += RELOAD_CHECK_S
    assert tokens.authenticate(token) is not None
    assert "cannot read the tokens file" in caplog.text


def test_token_create_and_revoke_rewrite_the_file_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens"
    for name in ("alice", "bob"):
        assert cli(["api", "token", "create", "--name", name, "--scopes", "read",
                    "--file", str(path)]) == 0  # fmt: skip
    alice, bob = capsys.readouterr().out.split("\n")[:2]
    assert (path.stat().st_mode & 0o777) == 0o600
    assert cli(["api", "token", "revoke", "--name", "alice", "--file", str(path)]) == 0
    book = TokenBook(parse_tokens(path.read_text()))
    assert book.authenticate(alice) is None and book.authenticate(bob) is not None
    assert cli(["api", "token", "revoke", "--name", "alice", "--file", str(path)]) == 2
    assert "has no token named 'alice'" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["tokens"]  # no temporary file left
