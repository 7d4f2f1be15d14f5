"""The store commands' shared options (where the store is, which model) and how they open it.

Opening order, so that nothing waits or is created in vain:

1. read-only commands open an existing store only (``create=False``): a missing ``--db`` folder or
   store name is an error, and nothing is created;
2. the model is settled from the flags and the store's record, and weights that certainly cannot
   be loaded (offline, not cached) fail at once with the fix (``--pretrained PATH``);
3. ``index`` creates the store only after the model has loaded;
4. a model other than the store's is refused with advice that is true (use that model, or another
   store name; ``mmgap calibrate --reset`` to re-record the same weights under a new identity).
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import CommandError

__all__ = [
    "add_store_args",
    "load_encoder",
    "open_engine_for",
    "open_store_for",
    "store_kwargs",
    "check_model_matches",
]

_REMOTE_ONLY = (
    "ssl", "ca_bundle", "insecure", "auth", "auth_env", "basic_user", "header", "header_env",
    "tenant", "database", "port",
)  # fmt: skip


def add_store_args(p: argparse.ArgumentParser, *, model: bool = True) -> None:
    """The ``store connection`` (and ``model``) option groups of a store command."""
    g = p.add_argument_group(
        "store connection",
        "An embedded store in a folder (--db), a Chroma server (--host), or Chroma Cloud "
        "(--cloud). Secrets are read from environment variables only: MMGAP_CHROMA_TOKEN "
        "(--auth token), MMGAP_CHROMA_BASIC_AUTH ('user:password', --auth basic), CHROMA_API_KEY "
        "(--cloud), or the variable --auth-env names.",
    )
    g.add_argument("--db", metavar="DIR", help="embedded store folder (default: ./mmgap-db)")
    g.add_argument("--name", default="mmgap", help="store name (collections are NAME-<modality>)")
    g.add_argument("--host", help="Chroma server host, or a TLS/auth proxy in front of one")
    g.add_argument(
        "--port", type=int, help="server port (default: 8000 on a server, 443 on Chroma Cloud)"
    )
    g.add_argument("--ssl", action="store_true", default=None, help="speak HTTPS to --host")
    tls = g.add_mutually_exclusive_group()
    tls.add_argument(
        "--ca-bundle", metavar="PATH", help="trust the server certificate signed by this PEM CA"
    )
    tls.add_argument(
        "--insecure", action="store_true", help="HTTPS without checking the certificate (tests)"
    )
    g.add_argument("--auth", choices=("token", "basic"), help="Chroma client auth to send")
    g.add_argument("--auth-env", metavar="NAME", help="environment variable holding the secret")
    g.add_argument(
        "--token-header",
        choices=("Authorization", "X-Chroma-Token"),
        default="Authorization",
        help="where --auth token travels ('Authorization: Bearer' or 'X-Chroma-Token')",
    )
    g.add_argument("--basic-user", metavar="NAME", help="--auth basic user (env: password only)")
    g.add_argument(
        "--header",
        action="append",
        metavar="NAME=VALUE",
        help="extra HTTP header for a proxy (repeatable; put secrets in --header-env)",
    )
    g.add_argument(
        "--header-env",
        action="append",
        metavar="NAME=ENVVAR",
        help="extra HTTP header whose value is read from ENVVAR (repeatable)",
    )
    g.add_argument("--tenant", help="Chroma tenant (default: the server's default tenant)")
    g.add_argument("--database", help="Chroma database (default: the server's default database)")
    g.add_argument("--cloud", action="store_true", help="Chroma Cloud (API key in $CHROMA_API_KEY)")
    if model:
        add_model_args(p)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The ``model`` option group: which open_clip encoder embeds queries and items."""
    g = p.add_argument_group(
        "model",
        "Default: the model the store was built with, else ViT-B-32 / laion2b_s34b_b79k "
        "(downloaded once). The store records local files by name and content hash only: name "
        "them again (--pretrained PATH, --model-config PATH) in every command that loads the "
        "model. Offline, give --pretrained PATH, or set HF_HUB_OFFLINE=1 to use cached weights.",
    )
    g.add_argument("--model", help="open_clip model name, e.g. ViT-B-32")
    g.add_argument(
        "--pretrained", metavar="TAG|PATH", help="open_clip pretrained tag, or a checkpoint file"
    )
    g.add_argument(
        "--model-config", metavar="PATH", help="open_clip model-config JSON for a custom model"
    )
    g.add_argument("--device", help="torch device: cuda, mps or cpu (default: the first present)")


def _pairs(values: list[str] | None, flag: str) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"{flag} expects NAME=VALUE, got {item.split('=')[0]!r}...")
        out[name.strip()] = value
    return out


def store_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``open_store`` keyword arguments from the connection flags."""
    remote = bool(args.host or args.cloud)
    if not remote:
        given = [
            "--" + key.replace("_", "-")
            for key in _REMOTE_ONLY
            if getattr(args, key, None) not in (None, False)
        ]
        if getattr(args, "token_header", "Authorization") != "Authorization":
            given.append("--token-header")
        if given:
            raise CommandError(
                f"{', '.join(given)}: only for a Chroma server (--host) or Chroma Cloud "
                "(--cloud), not for an embedded store (--db)"
            )
    elif args.db is not None:
        raise CommandError("give --db (an embedded store) or --host/--cloud (a server), not both")
    if args.host and args.cloud:
        raise CommandError("give --host (a server) or --cloud, not both")
    if args.auth_env and not (args.auth or args.cloud):
        raise CommandError("--auth-env names the secret of --auth: give --auth token or basic")
    if args.basic_user and args.auth != "basic":
        raise CommandError("--basic-user is for --auth basic")
    verify: Any = True
    if args.ca_bundle:
        verify = args.ca_bundle
    elif args.insecure:
        verify = False
    ssl = True if (args.ssl or args.insecure) else None
    kw: dict[str, Any] = {"name": args.name}
    if not remote:
        kw["db"] = args.db
        return kw
    kw.update(
        host=args.host,
        port=args.port,
        ssl=ssl,
        verify=verify,
        headers=_pairs(args.header, "--header"),
        header_env=_pairs(args.header_env, "--header-env"),
        auth=args.auth,
        auth_env=args.auth_env,
        token_header=args.token_header,
        username=args.basic_user,
        tenant=args.tenant,
        database=args.database,
        cloud=bool(args.cloud),
    )
    return kw


def where(args: argparse.Namespace) -> str:
    """The store's location in words, for messages (never a secret)."""
    if args.cloud:
        return f"store {args.name!r} on Chroma Cloud"
    if args.host:
        return f"store {args.name!r} on {args.host}:{args.port or 8000}"
    return f"store {args.name!r} in {args.db or 'mmgap-db'}"


def open_store_for(args: argparse.Namespace, *, create: bool = False):
    """The store the flags name; an existing one only unless ``create``."""
    from ..factory import StoreNotFoundError, open_store

    try:
        return open_store(**store_kwargs(args), create=create)
    except StoreNotFoundError as exc:
        raise CommandError(_not_found(exc)) from exc


def _not_found(exc: Exception) -> str:
    return f"{exc}: check --db and --name, or index into it first (`mmgap index PATH ...`)"


def load_encoder(args: argparse.Namespace, spec: Any = None):
    """The encoder the flags and the store's record (``spec``) describe; fails fast offline."""
    from collections.abc import Mapping

    from ..factory import build_encoder, encoder_args, weights_problem

    spec = spec if isinstance(spec, Mapping) else None
    settled = encoder_args(
        spec, model=args.model, pretrained=args.pretrained, model_config=args.model_config
    )
    if settled["kind"] == "open_clip":
        problem = weights_problem(settled["model"], settled["pretrained"])
        if problem:
            raise CommandError(problem)
    return build_encoder(
        spec,
        model=args.model,
        pretrained=args.pretrained,
        model_config=args.model_config,
        device=args.device,
    )


def check_model_matches(store, encoder, args: argparse.Namespace) -> None:
    """Refuse a model other than the store's, saying what is true and what to do."""
    stored = store.model_id
    if stored is None or encoder is None or encoder.model_id == stored:
        return
    raise CommandError(
        f"{where(args)} holds vectors of model {stored!r}, but this command loads "
        f"{encoder.model_id!r}: use that model (the --model/--pretrained/--model-config it was "
        "indexed with), or index into another store (--name NEW or another --db); if both are "
        "the same weights under another identity, `mmgap calibrate --reset` with this model "
        "re-records the store's model"
    )


def open_engine_for(
    args: argparse.Namespace, *, create: bool = False, needs_model: bool = True, **options
):
    """The engine over the flags' store: with its model, or without one (stored vectors only).

    With ``create`` (``index``), a missing store is created only after the model has loaded.
    """
    from ..engine import RetrievalEngine
    from ..factory import StoreNotFoundError, check_store_location, open_store

    kw = store_kwargs(args)
    try:
        store = open_store(**kw, create=False)
    except StoreNotFoundError as exc:
        if not create:
            raise CommandError(_not_found(exc)) from exc
        if "db" in kw:
            check_store_location(kw["db"])  # before the model loads
        store = None
    if not needs_model:
        return RetrievalEngine(store, None, **options)
    spec = store.read_manifest().get("encoder") if store is not None else None
    encoder = load_encoder(args, spec)
    if store is None:
        store = open_store(**kw, create=True)
    check_model_matches(store, encoder, args)
    return RetrievalEngine(store, encoder, **options)
