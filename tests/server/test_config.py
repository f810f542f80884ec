"""Key files for --key / --client-keys (real ssh-keygen output when available) and option validation."""

from __future__ import annotations

import shutil
import subprocess

import nacl.signing
import pytest

from asciichat_server.config import (
    ConfigError,
    ServerConfig,
    load_client_keys,
    load_identity_key,
    openssh_public_line,
)

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")


@needs_ssh_keygen
def test_openssh_private_key_matches_ssh_keygen_public(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(key)], check=True)
    signing = load_identity_key(key)
    public_line = (tmp_path / "id_ed25519.pub").read_text().split()
    assert openssh_public_line(signing.verify_key).split() == public_line[:2]
    # The .pub file is also a valid allow-list.
    assert load_client_keys(tmp_path / "id_ed25519.pub") == frozenset({bytes(signing.verify_key)})


@needs_ssh_keygen
def test_encrypted_openssh_key_is_refused(tmp_path):
    key = tmp_path / "enc"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(key)], check=True)
    with pytest.raises(ConfigError, match="encrypted"):
        load_identity_key(key)


@needs_ssh_keygen
def test_rsa_key_is_refused(tmp_path):
    key = tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(ConfigError, match="ed25519"):
        load_identity_key(key)


def test_raw_seed_binary_and_hex(tmp_path):
    seed = bytes(range(32))
    expected = bytes(nacl.signing.SigningKey(seed).verify_key)
    (tmp_path / "bin").write_bytes(seed)
    (tmp_path / "hex").write_text(seed.hex() + "\n")
    (tmp_path / "sk").write_bytes(seed + expected)
    for name in ("bin", "hex", "sk"):
        assert bytes(load_identity_key(tmp_path / name).verify_key) == expected
    (tmp_path / "bad").write_bytes(b"x" * 31)
    with pytest.raises(ConfigError, match="unrecognised"):
        load_identity_key(tmp_path / "bad")
    (tmp_path / "badsk").write_bytes(seed + bytes(32))
    with pytest.raises(ConfigError):
        load_identity_key(tmp_path / "badsk")


def test_client_keys_mixed_file(tmp_path):
    a = nacl.signing.SigningKey.generate().verify_key
    b = nacl.signing.SigningKey.generate().verify_key
    path = tmp_path / "keys"
    path.write_text(f"# allow-list\n\n{openssh_public_line(a, 'alice')}\n{bytes(b).hex()}\n")
    assert load_client_keys(path) == frozenset({bytes(a), bytes(b)})
    path.write_text("ssh-rsa AAAAB3Nza things\n")
    with pytest.raises(ConfigError, match=":1:"):
        load_client_keys(path)


def test_validate():
    ServerConfig().validate()
    with pytest.raises(ConfigError, match="max-clients"):
        ServerConfig(max_clients=33).validate()
    with pytest.raises(ConfigError, match="max-clients"):
        ServerConfig(max_clients=0).validate()
    with pytest.raises(ConfigError, match="too short"):
        ServerConfig(password="short").validate()
    with pytest.raises(ConfigError, match="no-encrypt"):
        ServerConfig(encrypt=False, password="longenough").validate()
