"""Uploading a card folder (``card.write_card``) to the Hugging Face Hub with ``huggingface_hub``.

The token comes from the caller (the service layer's settings), else ``HF_TOKEN`` / the token
``hf auth login`` stored; it is sent to the Hub only and never appears in a message. Without a token,
offline, or when the Hub cannot be reached, the error is one line that names ``ldifs card`` (which
writes the same folder for an upload by other means).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import LdifsError

CARD_HINT = "`ldifs card RUN_DIR --out DIR` writes the folder to upload by other means"


class HubError(LdifsError):
    """The upload could not be made (no token, offline, refused)."""

    exit_code = 1
    exit_meaning = "the upload to the Hugging Face Hub failed"


def resolve_token(token: str | None = None) -> str | None:
    """The token to use: the one given, else ``HF_TOKEN``, else the one ``hf auth login`` stored."""
    if token and token.strip():
        return token.strip()
    if os.environ.get("HF_TOKEN", "").strip():
        return os.environ["HF_TOKEN"].strip()
    try:
        from huggingface_hub import get_token

        return get_token() or None
    except Exception:  # noqa: BLE001 — an unreadable token file is no token
        return None


def _scrub(text: str, token: str) -> str:
    return " ".join(text.replace(token, "***").split())[:200]


def push_folder(folder: str | Path, repo_id: str, *, token: str | None = None, endpoint: str | None = None,
                private: bool = True, message: str = "Upload from LDIFS Studio") -> str:
    """Create ``repo_id`` (private unless asked otherwise; an existing repository is kept) and upload
    ``folder`` in one commit. Returns the commit's URL; ``HubError`` (one line) when it cannot."""
    from .card import check_repo_id

    check_repo_id(repo_id)
    token = resolve_token(token)
    if not token:
        raise HubError(f"push: no Hugging Face token is configured (set HF_TOKEN); {CARD_HINT}")
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    where = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        raise HubError(f"push: huggingface_hub is in offline mode (HF_HUB_OFFLINE); {CARD_HINT}")
    api = HfApi(endpoint=where, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=message)
    except OfflineModeIsEnabled:
        raise HubError(f"push: huggingface_hub is in offline mode (HF_HUB_OFFLINE); {CARD_HINT}") from None
    except HfHubHTTPError as e:
        code = getattr(getattr(e, "response", None), "status_code", None)
        if code in (401, 403):
            raise HubError(f"push: the Hub at {where} refused the token (HTTP {code}); check HF_TOKEN and that it "
                           f"may write to {repo_id}") from None
        raise HubError(f"push: the Hub at {where} answered HTTP {code}: {_scrub(str(e), token)}") from None
    except ValueError as e:  # e.g. the Hub's check of the card's front matter
        raise HubError(f"push: the Hub at {where} refused the upload: {_scrub(str(e), token)}") from None
    except OSError as e:
        raise HubError(f"push: the Hub at {where} cannot be reached ({type(e).__name__}); {CARD_HINT}") from None
    except Exception as e:  # noqa: BLE001 — httpx's transport errors are not OSErrors
        if type(e).__module__.startswith(("httpx", "httpcore", "requests", "urllib3")):
            raise HubError(f"push: the Hub at {where} cannot be reached ({type(e).__name__}); {CARD_HINT}") from None
        raise
    return str(getattr(info, "commit_url", info))
