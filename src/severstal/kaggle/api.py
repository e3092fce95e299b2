"""The Kaggle API behind this project's own messages: credentials, a lazily imported client, errors.

The ``kaggle`` package authenticates when imported, prints a long help text without credentials
and may call ``exit``; it is therefore imported only by :func:`load_client`, after
:func:`credential_sources` found credentials, with its standard output swallowed. Errors it
raises (HTTP 401/403/404, network failures) become :class:`~severstal.infra.errors.UserError` with one
paragraph saying what to do. Credentials are never printed: only where they were found.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..core.constants import COMPETITION
from ..infra.errors import UserError

RULES_URL = f"https://www.kaggle.com/c/{COMPETITION}/rules"
TOKEN_HELP = (
    "Create a token at https://www.kaggle.com/settings -> API -> Create New Token and save it as "
    "~/.kaggle/kaggle.json (chmod 600) or put it in the environment variable KAGGLE_API_TOKEN "
    "(KAGGLE_USERNAME and KAGGLE_KEY, ~/.kaggle/access_token and a cached `kaggle auth login` work too)."
)


def _nonempty(environ: Mapping[str, str], name: str) -> str:
    """The stripped value of an environment variable; "" when unset or blank."""
    return environ.get(name, "").strip()


def _file_has_text(path: Path) -> bool:
    try:
        return path.is_file() and bool(path.read_text(errors="replace").strip())
    except OSError:
        return False


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; {} when missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def kaggle_config_dir(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where the kaggle package looks for ``kaggle.json`` (its own rule, kaggle 2.x).

    ``$KAGGLE_CONFIG_DIR``; otherwise ``~/.kaggle``, or on Linux ``$XDG_CONFIG_HOME/kaggle``
    (default ``~/.config/kaggle``) when ``~/.kaggle`` does not exist.
    """
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    if _nonempty(environ, "KAGGLE_CONFIG_DIR"):
        return Path(environ["KAGGLE_CONFIG_DIR"].strip())
    default = home / ".kaggle"
    if sys.platform.startswith("linux") and not default.exists():
        xdg = _nonempty(environ, "XDG_CONFIG_HOME") or str(home / ".config")
        return Path(xdg) / "kaggle"
    return default


def credential_sources(environ: Mapping[str, str] | None = None, home: Path | None = None) -> list[str]:
    """Where Kaggle credentials are available, in the kaggle package's order of preference.

    Checks (without importing kaggle or reading secrets into any output): ``KAGGLE_API_TOKEN``
    (a token, or the path of a file holding one), ``~/.kaggle/access_token[.txt]``,
    ``kaggle.json`` in :func:`kaggle_config_dir` together with ``KAGGLE_USERNAME``/``KAGGLE_KEY``
    (either may supply either value), and the OAuth cache ``~/.kaggle/credentials.json`` written
    by ``kaggle auth login``. Variables that are set but blank count as missing.

    Args:
        environ: environment variables (default ``os.environ``).
        home: home directory (default ``Path.home()``).

    Returns:
        Descriptions such as ``"~/.kaggle/kaggle.json"``; empty when there are none.
    """
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    sources = []
    token = _nonempty(environ, "KAGGLE_API_TOKEN")
    if token and (not Path(token).exists() or _file_has_text(Path(token))):
        sources.append("KAGGLE_API_TOKEN")
    for name in ("access_token", "access_token.txt"):
        if _file_has_text(home / ".kaggle" / name):
            sources.append(f"~/.kaggle/{name}")
            break
    config_file = kaggle_config_dir(environ, home) / "kaggle.json"
    stored = _read_json(config_file)
    username = _nonempty(environ, "KAGGLE_USERNAME") or str(stored.get("username") or "").strip()
    key = _nonempty(environ, "KAGGLE_KEY") or str(stored.get("key") or "").strip()
    if username and key:
        in_file = [name for name, variable in (("username", "KAGGLE_USERNAME"), ("key", "KAGGLE_KEY"))
                   if not _nonempty(environ, variable)]
        sources.append(str(config_file) if in_file else "KAGGLE_USERNAME/KAGGLE_KEY")
    if str(_read_json(home / ".kaggle" / "credentials.json").get("refresh_token") or "").strip():
        sources.append("~/.kaggle/credentials.json (kaggle auth login)")
    return sources


def credentials_available(environ: Mapping[str, str] | None = None, home: Path | None = None) -> bool:
    """True when :func:`credential_sources` finds any Kaggle credentials."""
    return bool(credential_sources(environ, home))


def missing_credentials_message(action: str) -> str:
    """The one-paragraph error for ``action`` (e.g. "download the competition") without credentials."""
    return (
        f"cannot {action}: no Kaggle API credentials found. {TOKEN_HELP} "
        f"Then accept the competition rules at {RULES_URL}. "
        "Without an account, `bash run_all.sh --demo` runs the whole workflow on the embedded demo data."
    )


def _status_code(error: BaseException) -> int | None:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean Kaggle could not be reached (requests' and the built-in ones)."""
    types: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    with contextlib.suppress(ImportError):
        import requests

        types += (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                  requests.exceptions.ChunkedEncodingError)
    return types


def translate_error(error: BaseException, action: str, note: str = "") -> UserError:
    """Turn an exception raised by the Kaggle client into this project's message.

    Args:
        error: what the client raised.
        action: what was being done, e.g. "download the competition".
        note: a sentence appended to the message of HTTP errors other than 401/403/404/429.

    Returns:
        A :class:`UserError` to raise (``from None``: no traceback).
    """
    status = _status_code(error)
    if status == 401:
        return UserError(f"cannot {action}: Kaggle rejected the API credentials (HTTP 401); the token may be "
                         f"expired or revoked. {TOKEN_HELP}")
    if status == 403:
        return UserError(
            f"cannot {action}: Kaggle refused access (HTTP 403). Accept the competition rules first, "
            f"signed in to your account in a browser: {RULES_URL} ('I Understand and Accept'); the API "
            "cannot accept them for you. If you have accepted them, check that the credentials belong to "
            "the same account."
        )
    if status == 404:
        return UserError(f"cannot {action}: Kaggle does not know the competition {COMPETITION!r} (HTTP 404).")
    if status == 429:
        return UserError(f"cannot {action}: Kaggle is rate-limiting requests (HTTP 429); wait a few minutes "
                         "and try again.")
    if status is not None:
        return UserError(f"cannot {action}: Kaggle answered HTTP {status}: {error}. {note}".rstrip())
    if isinstance(error, _network_error_types()):
        return UserError(
            f"cannot {action}: Kaggle could not be reached ({type(error).__name__}). Check the internet "
            "connection and any proxy (HTTPS_PROXY), then run the same command again; an interrupted "
            "download resumes where it stopped."
        )
    if isinstance(error, OSError):
        return UserError(f"cannot {action}: {error.strerror or error} ({error.filename or 'file system'}); "
                         "check the free disk space and permissions.")
    return UserError(f"cannot {action}: the Kaggle client failed with {type(error).__name__}: {error}")


def call_kaggle(action: str, call: Callable[[], Any], note: str = "") -> Any:
    """Call the Kaggle client with its standard output swallowed and its errors translated.

    Args:
        action: what the call does, for messages ("download the competition").
        call: a function of no arguments, e.g. ``functools.partial(client.competition_submit, ...)``.
        note: see :func:`translate_error`.

    Returns:
        What ``call`` returns.

    Raises:
        UserError: for every failure (HTTP errors, network, the client calling ``exit``).
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return call()
    except SystemExit:
        message = f"cannot {action}: the Kaggle client gave up on authentication. {TOKEN_HELP}"
        raise UserError(message) from None
    except Exception as error:  # every client failure becomes one message
        raise translate_error(error, action, note) from None


def load_client(action: str) -> Any:
    """Import the kaggle package and return an authenticated ``KaggleApi``.

    Args:
        action: what the client is for, for messages.

    Raises:
        UserError: without credentials (checked before importing kaggle), when kaggle is not
            installed, or when authentication fails.
    """
    if not credentials_available():
        raise UserError(missing_credentials_message(action))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise UserError(f"cannot {action}: the kaggle package is not installed; run "
                        "`pip install kaggle` in this project's environment.") from None
    except (SystemExit, OSError) as error:
        detail = "" if isinstance(error, SystemExit) else f" ({error})"
        message = f"cannot {action}: the kaggle package failed to start{detail}. {TOKEN_HELP}"
        raise UserError(message) from None
    client = KaggleApi()
    call_kaggle(action, client.authenticate)
    return client
