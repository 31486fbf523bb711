"""The ``release``, ``verify`` and ``changelog`` subcommands of ``release-platform``.

``cli.py`` calls :func:`add_release_commands` with its subparsers; each subcommand sets ``func`` (returns the
exit status). :class:`~release_platform.errors.InputError` propagates to the CLI's handler (exit 2, one message).

::

    release-platform release --project NAME --version X.Y.Z --layout allen|dandi --dest DIR
    release-platform verify DIR [--manifest NAME]          # exit 1 if anything is missing, extra or mismatched
    release-platform changelog OLD_MANIFEST NEW_MANIFEST
    release-platform publish --release DIR --bucket s3://BUCKET [--endpoint-url URL]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from release_platform.errors import InputError
from release_platform.release.copy import VERIFY_MODES
from release_platform.release.layouts import LAYOUTS
from release_platform.release.modes import parse_mode


def _octal(text: str) -> int:
    """``--mode``: octal digits (:func:`~.modes.parse_mode`); group/other write is checked with its flag later."""
    try:
        return parse_mode(text, allow_group_write=True, what="--mode")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _progress(args, label: str):
    """A bar on a terminal, plain periodic lines otherwise, on stderr (``--no-progress``: none)."""
    from release_platform.progress import Progress

    return Progress(label, stream=sys.stderr, mode="off" if args.no_progress else None)


def _os_errors_as_input_errors(func):
    """A full disk or an unreadable file ends the command with one line naming the file, not a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(args) -> int:
        try:
            return func(args)
        except OSError as exc:
            raise InputError(exc.strerror or str(exc), path=exc.filename) from None

    return wrapper


@_os_errors_as_input_errors
def cmd_release(args) -> int:
    mode = parse_mode(f"{args.mode:03o}", allow_group_write=args.allow_group_write, what="--mode")
    dandiset = None
    if args.layout == "dandi":
        dandiset = _dandiset_from_lims(args.lims_project or args.project)
    with _progress(args, f"release {args.project} {args.version}") as progress:
        result = _make_release(args, mode, progress, dandiset)
    print(result.describe())
    if args.check:
        from release_platform.release.verify import verify_release

        with _progress(args, f"verify {args.project} {args.version}") as progress:
            report = verify_release(result.project_dir, manifest=result.manifest_path, max_workers=args.workers,
                                    progress=progress)
        print(report.describe())
        return 0 if report.ok else 1
    return 0


def _make_release(args, mode, progress, dandiset):
    from release_platform.release.build import make_release

    return make_release(
        args.dest,
        args.project,
        args.version,
        layout=args.layout,
        storage_root=args.storage_root,
        tables=args.tables or None,
        source_roots=args.source_root or None,
        base_url=args.base_url,
        max_workers=args.workers,
        mode=mode,
        verify=args.verify,
        rehash=args.rehash,
        prune=not args.keep_stale,
        progress=progress,
        dandiset=dandiset,
    )


def _dandiset_from_lims(code: str):
    """The dandiset.yaml fields of LIMS project ``code``; a note on stderr and None when they are incomplete."""
    from release_platform.lims import LimsClient
    from release_platform.lims.client import LimsUnavailableError
    from release_platform.release.dandi import dandiset_from_lims

    try:
        client = LimsClient()
        try:
            meta, why = dandiset_from_lims(client, code)
        finally:
            client.dispose()
    except LimsUnavailableError as exc:
        meta, why = None, f"LIMS unavailable ({exc})"
    if meta is None:
        print(f"note: no dandiset.yaml written: {why}", file=sys.stderr)
    return meta


@_os_errors_as_input_errors
def cmd_verify(args) -> int:
    from release_platform.release.verify import verify_release

    with _progress(args, f"verify {args.directory}") as progress:
        report = verify_release(args.directory, manifest=args.manifest, max_workers=args.workers, progress=progress)
    print(report.describe())
    return 0 if report.ok else 1


@_os_errors_as_input_errors
def cmd_changelog(args) -> int:
    from release_platform.release.changelog import compare_manifests
    from release_platform.release.manifest import load_manifest

    print(compare_manifests(load_manifest(args.old), load_manifest(args.new)).summary())
    return 0


@_os_errors_as_input_errors
def cmd_report(args) -> int:
    from release_platform.release.report import build_report, write_report

    report = build_report(args.directory, manifest=args.manifest, storage_root=args.storage_root)
    out = Path(args.output) if args.output else Path.cwd() / f"{report.project_dir.name}_release_report_v{report.version}.html"
    write_report(report, out)
    print(f"release {report.project_dir.name} {report.version}: {sum(report.kind_files.values())} data files, "
          f"{len(report.table_rows)} tables, {len(report.sessions)} released sessions "
          f"({sum(1 for v in report.sessions.values() if v is not None)} with QC figures); "
          f"changes since {report.previous_version or '-'}: {'listed' if report.changelog else 'first version'}")
    print(f"report: {out}")
    return 0


def add_progress_option(parser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress on stderr (default: a bar on a terminal, a line every few seconds otherwise)")


@_os_errors_as_input_errors
def cmd_publish(args) -> int:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from release_platform.release.publish import publish_release

    try:
        report = publish_release(args.release, args.bucket, endpoint_url=args.endpoint_url, manifest=args.manifest,
                                 part_size=args.part_size_mb << 20, workers=args.workers)
    except NoCredentialsError:
        raise InputError("no AWS credentials found: set them the standard AWS way (AWS_PROFILE or "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, SSO, an instance role)") from None
    except (BotoCoreError, ClientError) as exc:
        raise InputError(f"object store error: {exc}") from None
    print(report.summary())
    return 0


def add_release_commands(subparsers) -> None:
    """Register ``release``, ``verify`` and ``changelog`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "release", help="copy the release tables' data files and the tables into a layout, with a manifest",
        description="Discover the data files through the release-level metadata tables under the storage root, "
                    "copy them (verified; unchanged files skipped; an interrupted release resumes) and the tables "
                    "into DEST/<project>/ and write DEST/<project>/manifests/<project>_manifest_v<version>.json.")
    p.add_argument("--project", required=True, help="project name (one path segment), e.g. visual-behavior-ophys")
    p.add_argument("--version", required=True, help="semantic version of this release, e.g. 1.0.0")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="allen")
    p.add_argument("--lims-project", metavar="CODE",
                   help="dandi layout: the LIMS project whose publication metadata fills dandiset.yaml (default: --project)")
    p.add_argument("--dest", required=True, help="release root; the release goes to DEST/<project>/")
    p.add_argument("--storage-root", help="where the metadata tables are (default: the platform storage root)")
    p.add_argument("--tables", nargs="+", metavar="TABLE", help="release only these tables (default: every one found)")
    p.add_argument("--source-root", action="append", metavar="DIR",
                   help="directory data files may come from (repeatable; default: the storage root)")
    p.add_argument("--base-url", help="URL the project directory is published under (default https://<project>-data.s3.amazonaws.com)")
    p.add_argument("--workers", type=int, default=2, help="files copied in parallel (default 2)")
    p.add_argument("--mode", type=_octal, default=0o644,
                   help="octal mode of released files (default 644; at most 777; group/other write needs --allow-group-write)")
    p.add_argument("--allow-group-write", action="store_true",
                   help="allow a --mode that lets group or others write the released files")
    p.add_argument("--verify", choices=VERIFY_MODES, default="sha256",
                   help="check of each written file before it is renamed into place (default sha256: re-read it)")
    p.add_argument("--rehash", action="store_true",
                   help="trust nothing recorded: re-digest every source, re-read every released file and re-copy each "
                        "one that does not match (repairs bit rot or tampering that kept size and mtime)")
    p.add_argument("--keep-stale", action="store_true", help="keep files of earlier versions that this one drops")
    p.add_argument("--check", action="store_true", help="verify the release against its manifest afterwards")
    add_progress_option(p)
    p.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)  # progress is shown by default now
    p.set_defaults(func=cmd_release)

    p = subparsers.add_parser("verify", help="re-hash a release against its manifest; exit 1 on any problem",
                              description="Re-hash every file of a release against its manifest and report missing, "
                                          "extra and mismatched files with their paths.")
    p.add_argument("directory", help="release root (DEST) or project directory (DEST/<project>)")
    p.add_argument("--manifest", help="manifest file name or path (default: the highest version)")
    p.add_argument("--workers", type=int, default=2)
    add_progress_option(p)
    p.set_defaults(func=cmd_verify)

    p = subparsers.add_parser(
        "report", help="one HTML page about a release: rows per table, files and sizes per kind, changelog, QC thumbnails",
        description="Write one self-contained HTML page about a release: rows per metadata table, files and bytes per "
                    "file kind, the changelog against the previous version, and the QC thumbnails of every released "
                    "session (sessions found through the staging records under the storage root).")
    p.add_argument("directory", help="release root (DEST) or project directory (DEST/<project>)")
    p.add_argument("--manifest", help="manifest file name or path (default: the highest version)")
    p.add_argument("--storage-root", help="where the staging records and QC figures are (default: the platform storage root)")
    p.add_argument("-o", "--output", help="the HTML file to write (default ./<project>_release_report_v<version>.html)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("changelog", help="what changed between two release manifests")
    p.add_argument("old", help="older manifest JSON")
    p.add_argument("new", help="newer manifest JSON")
    p.set_defaults(func=cmd_changelog)

    p = subparsers.add_parser(
        "publish", help="upload a verified release to a versioned S3 bucket (AllenSDK S3CloudCache layout)",
        description="Verify the release, then upload its files to s3://BUCKET/<project>/... (multipart with per-part "
                    "digests, resumable, unchanged objects not re-sent) and its manifest, rewritten with each "
                    "object's S3 VersionId, to s3://BUCKET/<project>/manifests/. Credentials come from the standard "
                    "AWS chain only.")
    p.add_argument("--release", required=True, help="release root (DEST) or project directory (DEST/<project>)")
    p.add_argument("--bucket", required=True, help="s3://BUCKET (versioning enabled)")
    p.add_argument("--endpoint-url", help="endpoint of an S3-compatible store (default: AWS, or AWS_ENDPOINT_URL)")
    p.add_argument("--manifest", help="manifest file name or path (default: the highest version)")
    p.add_argument("--part-size-mb", type=int, default=8, help="multipart part size in MiB (default 8, at least 5)")
    p.add_argument("--workers", type=int, default=4, help="parallel uploads (default 4)")
    p.set_defaults(func=cmd_publish)
