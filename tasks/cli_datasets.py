"""``ldifs dataset …``: import, list, show, edit and delete datasets from the command line.

``register(subparsers)`` adds the ``dataset`` command to the ``ldifs`` console script; every leaf sets
``func`` (``args.func(args)`` returns the exit code). Errors a user can cause print one line to stderr and
exit with the error's code (2 for a rejected upload), never a traceback.
"""
from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable, Sequence
from types import ModuleType

from ldifs_engine.cli import dispatch
from ldifs_engine.errors import SpecError


def _uploads() -> ModuleType:
    """``tasks.uploads``, imported when a dataset command runs: ``ldifs`` builds its whole parser for
    every command, and ``ldifs jobs`` must not pay for the dataset catalog."""
    from . import uploads

    return uploads


def _user(args: argparse.Namespace) -> str:
    return args.user or getpass.getuser()


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _print_report(r: dict) -> None:
    print(f"Imported {r['name']!r} as {r['key']}")
    wrapper = f" (unwrapped top folder {r['unwrapped_folder']!r})" if r.get("unwrapped_folder") else ""
    print(f"  layout: {r['layout']}{wrapper}")
    print(f"  {r['accepted']} images in {r['num_classes']} classes, {r['bytes_written']:,} bytes stored")
    width = max((len(c["name"]) for c in r["classes"]), default=5)
    print(f"  {'class'.ljust(width)}  {'images':>6}  {'train':>5}  {'test':>5}")
    for c in r["classes"]:
        print(f"  {c['name'].ljust(width)}  {c['count']:>6}  {c['train']:>5}  {c['test']:>5}")
    if r.get("ignored_junk"):
        print(f"  ignored {r['ignored_junk']} system file(s) (__MACOSX, .DS_Store, Thumbs.db)")
    if r["quarantined"]:
        print(f"  skipped {len(r['quarantined'])} file(s):")
        for q in r["quarantined"]:
            print(f"    {q['member']}: {q['reason']}")
    for w in r.get("warnings", []):
        print(f"  warning: {w}")
    q = r.get("quota")
    if q:
        print(f"  storage: {q['used_bytes']:,} of {q['quota_bytes']:,} bytes used")


def cmd_import(args: argparse.Namespace) -> int:
    report = _uploads().import_dataset(_user(args), args.file, name=args.name)
    _print_json(report) if args.json else _print_report(report)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = _uploads().list_user_datasets(_user(args))
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("No uploaded datasets. Import one with: ldifs dataset import FILE.zip")
        return 0
    for r in rows:
        print(f"{r['key']}  {r['name']!r}  {r['num_classes']} classes  {r['num_images']} images "
              f"({r['splits']['train']} train / {r['splits']['test']} test)  {r['bytes']:,} bytes  {r['created_at']}")
        for w in r["warnings"]:
            print(f"    warning: {w}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    info = _uploads().show_dataset(_user(args), args.key, preview=not args.no_preview)
    if args.json:
        _print_json(info)
        return 0
    print(f"{info['key']}  {info.get('title') or info.get('name')!r}  ({info['source']})")
    if not info.get("available", True):
        print(f"  not available: {info.get('message')}")
    print(f"  {info['num_classes']} classes; templates ({len(info['templates'])}):")
    for t in info["templates"][:5]:
        print(f"    {t}")
    if len(info["templates"]) > 5:
        print(f"    … and {len(info['templates']) - 5} more")
    for c in info.get("classes", [])[:50]:
        counts = " / ".join(f"{k} {c[k]}" for k in ("train", "test") if k in c)
        print(f"  {c['index']:>4}  {c['name']}  ({counts})")
    if len(info.get("classes", [])) > 50:
        print(f"  … and {len(info['classes']) - 50} more classes (use --json)")
    for w in info.get("warnings", []):
        print(f"  warning: {w}")
    if info.get("preview_png"):
        print(f"  preview: {info['preview_png']}")
    return 0


def _read_lines(path: str | None) -> list[str] | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def cmd_edit(args: argparse.Namespace) -> int:
    classnames, templates = _read_lines(args.classnames_file), _read_lines(args.templates_file)
    if args.key.startswith("upload:"):
        if args.reset:
            raise SpecError("--reset applies to catalog datasets; edit an upload's names or templates instead")
        out = _uploads().update_dataset(_user(args), args.key, classnames=classnames, templates=templates)
    else:
        out = _uploads().set_catalog_overrides(args.key, classnames=classnames, templates=templates, reset=args.reset)
    if args.json:
        _print_json(out)
    else:
        print(f"Updated {out['key']}: {len(out['classnames'])} class names, {len(out['templates'])} templates")
        for w in out.get("warnings", []):
            print(f"  warning: {w}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    out = _uploads().delete_dataset(_user(args), args.key)
    print(f"Deleted {out['key']} ({out['freed_bytes']:,} bytes freed)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``dataset import|list|show|edit|delete`` to the ``ldifs`` argument parser."""
    p = subparsers.add_parser("dataset", help="import, list, show and edit datasets",
                              description="Manage uploaded datasets and inspect catalog ones.")
    sub = p.add_subparsers(dest="dataset_command", required=True, metavar="{import,list,show,edit,delete}")

    def leaf(name: str, help: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help, description=help)
        q.add_argument("--user", help="act as this user (default: your OS user name)")
        q.add_argument("--json", action="store_true", help="print machine-readable JSON")
        q.set_defaults(func=fn)
        return q

    q = leaf("import", "import a zip of class folders (or with a labels.csv) and print the ingestion report",
             cmd_import)
    q.add_argument("file", metavar="FILE.zip", help="the archive")
    q.add_argument("--name", help="display name (default: the file name)")
    leaf("list", "list your uploaded datasets", cmd_list)
    q = leaf("show", "show a dataset's classes, counts and templates, and render a preview grid", cmd_show)
    q.add_argument("key", metavar="KEY", help="upload:<id> or a catalog key such as cifar10")
    q.add_argument("--no-preview", action="store_true", help="skip rendering the preview grid")
    q = leaf("edit", "change class names / prompt templates (catalog datasets: operator-wide overrides)", cmd_edit)
    q.add_argument("key", metavar="KEY")
    q.add_argument("--classnames-file", metavar="FILE", help="one class name per line, in label order")
    q.add_argument("--templates-file", metavar="FILE", help="one template per line, each with one {}")
    q.add_argument("--reset", action="store_true", help="drop a catalog dataset's overrides")
    q = leaf("delete", "delete one of your uploaded datasets", cmd_delete)
    q.add_argument("key", metavar="KEY")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dataset …`` on its own (``python -m tasks.cli_datasets dataset list``)."""
    parser = argparse.ArgumentParser(prog="ldifs")
    register(parser.add_subparsers(dest="command", required=True))
    return dispatch(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
