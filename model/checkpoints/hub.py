"""Find a model: a local folder, or a Hugging Face repo id fetched into the hub cache.

`resolve_model` is shared by every loader (LM, Mimi, tokenizer, voices). `huggingface_hub` is
imported only when a repo id must be resolved.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from model.errors import ModelNotFoundError

DEFAULT_MODEL = "aufklarer/PersonaPlex-7B-MLX-4bit"

# What the app needs from either layout (docs/checkpoint-layouts.md); patterns absent from a
# repo match nothing.
MODEL_FILE_PATTERNS: tuple[str, ...] = (
    "config.json",
    "temporal.safetensors",
    "depformer.safetensors",
    "embeddings.safetensors",
    "mimi.safetensors",
    "tokenizer_spm_32k_3.model",
    "voices/*.safetensors",
    "model.safetensors",
    "tokenizer-e351c8d8-checkpoint125.safetensors",
    "voices.tgz",
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_USE_LOCAL = "give a local checkpoint folder"


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", ".", "~"))
        or os.sep in spec.replace("/", "")
        or spec.count("/") != 1
        or Path(spec).exists()
    )


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_model(
    spec: str | os.PathLike[str] | None = None,
    *,
    allow_patterns: list[str] | tuple[str, ...] | None = MODEL_FILE_PATTERNS,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    tqdm_class: Any = None,
    default: str = DEFAULT_MODEL,
    flag: str | None = None,
) -> Path:
    """The local folder of a model given as a folder path or a Hugging Face repo id.

    A repo id is fetched with `huggingface_hub.snapshot_download` into the hub cache (only files
    matching `allow_patterns`; already cached files are not fetched again; `HF_HUB_OFFLINE=1`
    uses the cache only). `tqdm_class` replaces the hub's progress bars (bytes, rate, ETA).
    Raises ModelNotFoundError with one sentence when the model cannot be found or fetched.
    `default` is the repo used when `spec` is None. `flag`: the command-line option that gave
    `spec`, for an app's messages to name ("pass --model PATH with a local checkpoint folder");
    without it they say what to give, not where.
    """
    spec = default if spec is None else os.fspath(spec)
    use_local = f"pass {flag} PATH with a local checkpoint folder" if flag else _USE_LOCAL
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelNotFoundError(
            f"{spec} is a file; {flag} expects a checkpoint folder or a Hugging Face repo id."
            if flag
            else f"{spec} is a file, not a checkpoint folder or a Hugging Face repo id."
        )
    if _looks_like_path(spec) or not _REPO_ID.match(spec) or not _valid_repo_id(spec):
        raise ModelNotFoundError(
            f"No model folder at {spec}; {use_local} or a Hugging Face repo id such as {default}."
        )
    return _download(spec, allow_patterns, revision, cache_dir, endpoint, tqdm_class, use_local)


def _valid_repo_id(spec: str) -> bool:
    """Whether the hub's own rules take `spec` (`me/-x`, `me/a--b` pass `_REPO_ID`, not them)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What the hub's HTTP client raises when a connection fails, stalls or is cut, after its
    own retries: the client that huggingface_hub loaded (httpx2, httpx or requests)."""
    found: list[type[BaseException]] = []
    for name, attribute in (
        ("httpx2", "HTTPError"),
        ("httpx", "HTTPError"),
        ("requests", "RequestException"),
    ):
        module = sys.modules.get(name)
        error = getattr(module, attribute, None) if module is not None else None
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)


# The hub's client waits forever on calls that give no timeout of their own (the repo's info and
# file list pass `timeout=None`; the files' reads have HF_HUB_DOWNLOAD_TIMEOUT): a network that
# takes the connection and never answers (a captive portal, a stalled proxy) hung the start, a
# cached model's too. A hook on the client's requests gives those calls these timeouts, so they
# fail, and a cached model is used (the hub's own fallback) or one sentence says why not.
HUB_CONNECT_TIMEOUT_S = 10.0
HUB_READ_TIMEOUT_S = 30.0
_bounded = False


def _bounded_timeouts(request: Any) -> None:
    """A request hook: a phase without a timeout gets ours (an explicit one is kept)."""
    given = dict(request.extensions.get("timeout") or {})
    ours = {"connect": HUB_CONNECT_TIMEOUT_S, "read": HUB_READ_TIMEOUT_S}
    ours |= {"write": HUB_READ_TIMEOUT_S, "pool": HUB_READ_TIMEOUT_S}
    request.extensions["timeout"] = {
        phase: ours[phase] if given.get(phase) is None else given[phase] for phase in ours
    }


def _bound_hub_calls() -> None:
    """Make huggingface_hub's HTTP clients add `_bounded_timeouts` (once)."""
    global _bounded
    if _bounded:
        return
    _bounded = True
    try:
        import huggingface_hub
        from huggingface_hub.utils import _http

        make = _http.default_client_factory
    except (ImportError, AttributeError):  # another version of the library: its own defaults
        return

    def bounded_client() -> Any:
        client = make()
        client.event_hooks["request"].append(_bounded_timeouts)
        return client

    huggingface_hub.set_client_factory(bounded_client)


def _not_no_match(record: logging.LogRecord) -> bool:
    """Drops the hub's warning for a repo with none of the files asked for ("No files matched
    allow_patterns=[...]", a second line on the terminal): what the repo lacks is said in the
    caller's own sentence."""
    return not str(record.msg).startswith("No files matched")


def _download(
    repo_id: str,
    allow_patterns: list[str] | tuple[str, ...] | None,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    endpoint: str | None,
    tqdm_class: Any,
    use_local: str = _USE_LOCAL,
) -> Path:
    from huggingface_hub import errors, snapshot_download

    _bound_hub_calls()
    logging.getLogger("huggingface_hub._snapshot_download").addFilter(_not_no_match)  # (once)
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            endpoint=endpoint,
            allow_patterns=list(allow_patterns) if allow_patterns is not None else None,
            tqdm_class=tqdm_class,
        )
    except errors.GatedRepoError:
        raise ModelNotFoundError(
            f"{repo_id} is gated on Hugging Face: accept its license on the website and log in with `hf auth login`, or {use_local}."
        ) from None
    except errors.RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{repo_id} does not exist on Hugging Face (or is private); check the name, or {use_local}."
        ) from None
    except errors.RevisionNotFoundError:
        raise ModelNotFoundError(
            f"{repo_id} has no revision {revision!r} on Hugging Face."
        ) from None
    except errors.IncompleteSnapshotError:
        if _hub_offline():
            raise ModelNotFoundError(
                f"The cached copy of {repo_id} is incomplete and HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to finish the download, or {use_local}."
            ) from None
        raise ModelNotFoundError(
            f"The cached copy of {repo_id} is incomplete and the hub cannot be reached to finish it; connect and retry, or {use_local}."
        ) from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as error:
        if _hub_offline():
            raise ModelNotFoundError(
                f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to download it, or {use_local}."
            ) from None
        status = getattr(getattr(error.__cause__, "response", None), "status_code", None)
        why = (
            f"the Hugging Face hub answered with an error, HTTP {status}"
            if isinstance(status, int) and status >= 500
            else "the Hugging Face hub is unreachable"
        )
        raise ModelNotFoundError(
            f"Could not download {repo_id} ({why}) and it is not cached; {use_local}, or connect and retry (HF_HUB_OFFLINE=1 uses the cache only)."
        ) from None
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ModelNotFoundError(
                f"The disk is full: downloading {repo_id} into the Hugging Face cache ({_cache_home(cache_dir)}) stopped ({error.strerror}); free some space (or set HF_HOME to a disk with room) and run again to resume, or {use_local}."
            ) from None
        raise ModelNotFoundError(
            f"Downloading {repo_id} from Hugging Face failed ({error.strerror or type(error).__name__}); retry, or {use_local}."
        ) from None
    except errors.HfHubHTTPError as error:
        raise ModelNotFoundError(
            f"Downloading {repo_id} from Hugging Face failed ({type(error).__name__}); retry, or {use_local}."
        ) from None
    except _transport_errors() as error:
        raise ModelNotFoundError(
            f"The connection to Hugging Face failed while downloading {repo_id} ({type(error).__name__}: {error}); run again to resume (the files already fetched are kept), or {use_local}."
        ) from None
    return Path(folder)


def repo_file_names(repo_id: str, revision: str | None = None) -> frozenset[str] | None:
    """The names of the files in Hugging Face repo `repo_id` at `revision` (paths inside it), or
    None when the hub cannot tell now (HF_HUB_OFFLINE, unreachable, an error): nothing is
    downloaded. For saying what a repo lacks without fetching its weights."""
    from huggingface_hub import HfApi, errors

    _bound_hub_calls()
    try:
        return frozenset(HfApi().list_repo_files(repo_id, revision=revision))
    except (errors.HfHubHTTPError, errors.OfflineModeIsEnabled, OSError, ValueError):
        return None
    except _transport_errors():
        return None


def _cache_home(cache_dir: str | os.PathLike[str] | None) -> str:
    from huggingface_hub import constants

    return os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE
