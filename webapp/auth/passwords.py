"""The one password policy, for the registration form and ``manage.py create-admin`` (ASVS 5 V6,
NIST SP 800-63B): at least 8 characters, long passphrases allowed, no composition rules, and none
of the commonly used passwords that attackers try first.

``common-passwords.txt.gz`` is Django's list (django/contrib/auth, BSD-3-Clause): 20,000 passwords
from breach corpora, lower case, Chinese favourites such as 5201314 and woaini1314 among them. It
ships with the code: checking a password never needs the network.
"""

from __future__ import annotations

import gzip
import secrets
from functools import lru_cache
from pathlib import Path

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

MIN_LENGTH = 8
TEMPORARY_LENGTH = 16
# No 0/O/o, 1/l/I: the admin reads the temporary password out or copies it by hand.
TEMPORARY_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
MAX_LENGTH = 256
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common-passwords.txt.gz")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    return frozenset(gzip.decompress(COMMON_PASSWORDS_FILE.read_bytes()).decode().split())


def password_problem(password: str, username: str | None = None) -> LazyString | None:
    """Why ``password`` is refused, or None."""
    if len(password) < MIN_LENGTH:
        return _l("Use at least %(count)d characters.", count=MIN_LENGTH)
    if len(password) > MAX_LENGTH:
        return _l("Use at most %(count)d characters.", count=MAX_LENGTH)
    if password.strip().lower() in common_passwords():
        return _l("This password is one of the most common ones, which attackers try first; choose another.")
    if username and password.strip().lower() == username.strip().lower():
        return _l("The password must not be your username.")
    return None


def temporary_password(username: str) -> str:
    """A password for an admin's reset: 16 characters from an alphabet without look-alikes (about
    93 bits), drawn with ``secrets`` until this policy accepts it (in practice the first draw)."""
    while True:
        password = "".join(secrets.choice(TEMPORARY_ALPHABET) for _ in range(TEMPORARY_LENGTH))
        if password_problem(password, username) is None:
            return password
